"""Numerics and long runs: the NaN guard and its policies, gradient clipping, determinism,
atomic checkpoints with everything a resume needs, and exact resumption after a crash."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import small_config
import dpljax.train as T
from dpljax import build
from dpljax.data import fit_normalizer, load, prepare
from dpljax.checkpoint import load_checkpoint, load_training, read_checkpoint_meta, save_checkpoint
from dpljax.train import NonFiniteLoss, ResumeError, TrainConfig, TrainState, fit, make_train_step

BAD = 2  # index of the basin whose forcing is poisoned with NaN


@pytest.fixture(scope="module")
def setup(sample):
    exp = build(small_config(optim={"learning_rate": 1e-2}))
    ds = load(exp.data, sample)
    arrays, _ = prepare(exp.data, ds, fit_normalizer(exp.data, ds), *exp.data.train, forcing=exp.dpl.model.forcing)
    return exp, arrays, [str(b) for b in ds["basin"].values]


def tcfg(**kw):
    base = dict(epochs=2, iters_per_epoch=6, batch_basins=3, window=60, warmup=60, progress=False)
    return TrainConfig(**{**base, **kw})


def train(setup, cfg, arrays=None, tx=None, **kw):
    exp, a, basins = setup
    net = exp.make_net(a.x_dynamic.shape[-1], a.x_static.shape[-1], seed=cfg.seed)
    kw.setdefault("log", lambda *x: None)
    return fit(exp.dpl, net, tx or exp.tx, exp.loss, a if arrays is None else arrays, cfg, basins=basins, **kw)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def same(a, b):
    la, lb = leaves(a), leaves(b)
    return len(la) == len(lb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(la, lb))


def poisoned(arrays):
    return arrays._replace(forcing=dict(arrays.forcing, prcp=arrays.forcing["prcp"].at[BAD].set(jnp.nan)))


def crash_after_saves(n: int, monkeypatch, run) -> list:
    """``run()`` with the process "dying" (KeyboardInterrupt) right after its ``n``-th
    checkpoint write; the steps of the checkpoints written."""
    real_save, calls = T.save_training, []

    def dying_save(path, state, best, meta):
        if len(calls) == n:
            raise KeyboardInterrupt("simulated crash")
        real_save(path, state, best, meta)
        calls.append(meta.step)

    monkeypatch.setattr(T, "save_training", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(T, "save_training", real_save)
    return calls


def test_same_seed_same_parameters(setup):
    a = train(setup, tcfg(seed=4))
    b = train(setup, tcfg(seed=4))
    c = train(setup, tcfg(seed=5))
    assert same(a.state, b.state) and not same(a.state.theta, c.state.theta)


def test_nan_step_never_reaches_parameters_or_optimizer(setup):
    exp, arrays, _ = setup
    cfg = tcfg()
    net = exp.make_net(arrays.x_dynamic.shape[-1], arrays.x_static.shape[-1])
    graphdef, theta = nnx.split(net)
    state = TrainState.create(theta, exp.tx)
    step = make_train_step(exp.dpl, graphdef, exp.tx, exp.loss, cfg)
    bad_arrays, key = poisoned(arrays), jax.random.key(cfg.seed)
    seen = {True: 0, False: 0}
    for k in range(40):
        before = jax.tree.map(np.array, state)
        state, info = step(state, bad_arrays, key)
        ok = bool(info.ok)
        seen[ok] += 1
        assert int(state.step) == k + 1  # a skipped batch still moves the sampler on
        assert (BAD in np.asarray(info.basin_idx).tolist()) == (not ok)
        assert same(state.theta, before.theta) == (not ok) and same(state.opt_state, before.opt_state) == (not ok)
        assert all(np.isfinite(x).all() for x in leaves(state.theta))
    assert seen[True] and seen[False]


def test_non_finite_update_never_reaches_parameters(setup):
    """Finite loss and gradient, but an optimiser that turns them into NaN: still guarded."""
    exp, arrays, _ = setup
    net = exp.make_net(arrays.x_dynamic.shape[-1], arrays.x_static.shape[-1])
    graphdef, theta = nnx.split(net)
    tx = optax.scale(np.nan)
    before = jax.tree.map(np.array, theta)
    step = make_train_step(exp.dpl, graphdef, tx, exp.loss, tcfg())
    state, info = step(TrainState.create(theta, tx), arrays, jax.random.key(0))
    assert np.isfinite(float(info.loss)) and not bool(info.ok) and same(state.theta, before)


def test_nan_policy_skip_counts_and_names_basins(setup):
    _, arrays, basins = setup
    logs = []
    r = train(setup, tcfg(nan_policy="skip"), arrays=poisoned(arrays), log=logs.append)
    assert r.skipped_steps > 0 and len(r.skipped_batches) == r.skipped_steps
    assert all(basins[BAD] in s["basins"] for s in r.skipped_batches)
    skipped_logs = [l for l in logs if "step skipped" in l]
    assert len(skipped_logs) == r.skipped_steps and all(basins[BAD] in l for l in skipped_logs)
    assert sum(h["skipped"] for h in r.history) == r.skipped_steps
    assert all(np.isfinite(x).all() for x in leaves(r.state.theta))


def test_nan_policy_halt_names_basins_saves_and_resumes(setup, tmp_path):
    _, arrays, basins = setup
    bad = poisoned(arrays)
    with pytest.raises(NonFiniteLoss, match=rf"batch basins: \[.*'{basins[BAD]}'.*\].*train.nan_policy=skip") as e:
        train(setup, tcfg(nan_policy="halt"), arrays=bad, run_dir=tmp_path)
    step = int(str(e.value).split()[1])
    meta = read_checkpoint_meta(tmp_path / "checkpoints" / "last.npz")
    assert meta["step"] == step  # the state before the bad step, nothing lost
    r = train(setup, tcfg(nan_policy="skip", resume=True), arrays=bad, run_dir=tmp_path)
    assert r.resumed_from == step and r.step == 12 and r.skipped_steps >= 1
    assert r.skipped_batches[0]["step"] == step


def test_gradient_clipping_bounds_the_update(setup):
    exp, arrays, _ = setup
    net = exp.make_net(arrays.x_dynamic.shape[-1], arrays.x_static.shape[-1])
    graphdef, state0 = nnx.split(net)

    def update_norm(clip):
        cfg = tcfg(clip_grad_norm=clip)
        tx = T.make_optimizer(optax.sgd(1.0), cfg.clip_grad_norm)
        step = make_train_step(exp.dpl, graphdef, tx, exp.loss, cfg)
        s1, _ = step(TrainState.create(jax.tree.map(jnp.array, state0), tx), arrays, jax.random.key(0))
        return float(optax.tree_utils.tree_norm(jax.tree.map(lambda a, b: a - b, s1.theta, state0)))

    assert update_norm(None) > 1e-3  # the test can fail: unclipped, the step is larger
    assert update_norm(1e-3) <= 1e-3 * (1 + 1e-4)


def test_checkpoint_holds_everything_a_resume_needs(setup, tmp_path):
    r = train(setup, tcfg(seed=3), run_dir=tmp_path, meta={"normalizer": {"dynamic": {"prcp": [0.1, 0.2]}}})
    meta = read_checkpoint_meta(tmp_path / "checkpoints" / "last.npz")
    assert meta["step"] == 12 and meta["epoch"] == 2 and meta["iters_per_epoch"] == 6
    assert meta["seed"] == 3 and meta["key_data"] == np.asarray(jax.random.key_data(jax.random.key(3))).tolist()
    assert meta["sampler"]["position"] == 12
    assert meta["config"]["batch_basins"] == 3 and meta["normalizer"]["dynamic"]["prcp"] == [0.1, 0.2]
    assert [h["step"] for h in meta["history"]] == [6, 12]
    state, best, typed = load_training(tmp_path / "checkpoints" / "last.npz", r.state, r.state.theta)
    assert same(state, r.state) and int(state.step) == 12 and best is None
    assert typed.step == 12 and typed.record.history == r.history and typed.extra["normalizer"] == meta["normalizer"]
    counts = [x for x in leaves(state.opt_state) if x.dtype == np.int32 and x.ndim == 0]
    assert counts and all(int(c) == 12 for c in counts)  # Adam's step count travels too
    with pytest.raises(ResumeError, match="train.seed was 3, now 4"):
        train(setup, tcfg(seed=4, resume=True), run_dir=tmp_path)
    with pytest.raises(ResumeError, match="train.window was 60, now 50"):
        train(setup, tcfg(seed=3, window=50, resume=True), run_dir=tmp_path)
    with pytest.raises(ResumeError, match="normalizer differs"):
        train(setup, tcfg(seed=3, resume=True), run_dir=tmp_path, meta={"normalizer": {"dynamic": {"prcp": [0, 1]}}})
    with pytest.raises(ResumeError, match="beyond train.epochs=1"):
        train(setup, tcfg(seed=3, epochs=1, resume=True), run_dir=tmp_path)
    longer = train(setup, tcfg(seed=3, epochs=3, resume=True), run_dir=tmp_path)  # more epochs: fine
    assert longer.resumed_from == 12 and longer.step == 18


def test_crash_mid_epoch_then_resume_is_exact(setup, tmp_path, monkeypatch):
    """Checkpoints every step (checkpoint_minutes ~ 0); the process dies right after the one
    of step 12 (mid-epoch 3, after the best validation score of epoch 2); the resumed run ends
    bit-identical to an uninterrupted one, with the same history and the same best state."""
    cfg = tcfg(epochs=3, iters_per_epoch=5, checkpoint_minutes=1e-9, seed=11)
    # A deterministic stand-in for validation whose best epoch is not simply the last one.
    score = lambda s: float(np.sin(1e4 * sum(float(np.sum(x)) for x in leaves(s))))  # noqa: E731
    ref = train(setup, cfg, validate=score)
    calls = crash_after_saves(12, monkeypatch, lambda: train(setup, cfg, run_dir=tmp_path, validate=score))
    assert calls == list(range(1, 13))
    assert read_checkpoint_meta(tmp_path / "checkpoints" / "last.npz")["step"] == 12
    r = train(setup, TrainConfig(**{**cfg.__dict__, "resume": True}), run_dir=tmp_path, validate=score)
    assert r.resumed_from == 12
    assert same(r.state, ref.state)
    key = lambda h: (h["epoch"], h["step"], h["loss"], h["valid"])  # noqa: E731
    assert [key(h) for h in r.history] == [key(h) for h in ref.history] and len(r.history) == 3
    assert max(h["valid"] for h in ref.history) > ref.history[-1]["valid"]  # best is not the last
    assert ref.best_theta is not None and same(r.best_theta, ref.best_theta)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    p = tmp_path / "last.npz"
    good = {"w": np.arange(4.0)}
    save_checkpoint(p, good, {"step": 1})

    def torn_write(f, **arrays):  # the process dies half-way through writing
        f.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", torn_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(p, {"w": np.zeros(4)}, {"step": 2})
    monkeypatch.undo()
    back, meta = load_checkpoint(p, good)
    assert meta["step"] == 1 and np.array_equal(back["w"], good["w"])
    assert not (tmp_path / "last.npz.tmp").exists()
    (tmp_path / "last.npz.tmp").write_bytes(b"debris of a SIGKILL")  # a stale temp file is harmless
    save_checkpoint(p, {"w": np.ones(4)}, {"step": 3})
    assert read_checkpoint_meta(p)["step"] == 3 and sorted(os.listdir(tmp_path)) == ["last.npz"]
