"""train.ema: the moving average of the parameters. Its arithmetic against an explicit
weighted mean of the iterates, its indifference to the training path, the NaN guard, what is
validated and written, and exact resumption with it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dpljax.train as T
from dpljax.train import Average, TrainConfig, TrainState, make_train_step
from test_reliability_train import crash_after_saves, leaves, poisoned, same, setup, tcfg, train  # noqa: F401

D = 0.9


def weighted_mean(iterates, decay):
    """The average the docstring promises: iterate k = 0 .. n-1 weighted (1 - d) d^(n-1-k), normalised."""
    n = len(iterates)
    w = np.array([(1 - decay) * decay ** (n - 1 - k) for k in range(n)])
    w = w / w.sum()
    return [sum(wk * np.asarray(x, np.float64) for wk, x in zip(w, xs)) for xs in zip(*map(leaves, iterates))]


def test_average_is_the_weighted_mean_of_the_iterates():
    rng = np.random.default_rng(0)
    iterates = [{"a": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "b": jnp.asarray(rng.normal(), jnp.float32)}
                for _ in range(7)]
    avg = Average.zeros(iterates[0])
    assert same(avg.value(iterates[0]), iterates[0])  # before any update: the parameters themselves
    for x in iterates:
        avg = avg.update(x, D)
    for got, want in zip(leaves(avg.value(iterates[0])), weighted_mean(iterates, D)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert float(avg.weight) == pytest.approx(1 - D ** 7, rel=1e-6)
    const = Average.zeros(iterates[0])
    for _ in range(5):
        const = const.update(iterates[3], D)
    for got, want in zip(leaves(const.value(iterates[0])), leaves(iterates[3])):
        np.testing.assert_allclose(got, want, rtol=1e-5)  # the average of a constant is that constant


def test_step_keeps_the_average_of_its_iterates_and_leaves_training_alone(setup):
    exp, arrays, _ = setup
    cfg, key = tcfg(ema=D), jax.random.key(0)
    net = exp.make_net(arrays.x_dynamic.shape[-1], arrays.x_static.shape[-1])
    graphdef, theta = nnx.split(net)
    plain = make_train_step(exp.dpl, graphdef, exp.tx, exp.loss, tcfg())
    averaged = make_train_step(exp.dpl, graphdef, exp.tx, exp.loss, cfg)
    s0 = TrainState.create(jax.tree.map(jnp.copy, theta), exp.tx)
    s1 = TrainState.create(jax.tree.map(jnp.copy, theta), exp.tx, ema=True)
    iterates = []
    for _ in range(6):
        s0, _ = plain(s0, arrays, key)
        s1, _ = averaged(s1, arrays, key)
        iterates.append(jax.tree.map(np.array, s1.theta))
    assert same(s0.theta, s1.theta) and same(s0.opt_state, s1.opt_state)  # the path is the same
    assert s0.model() is s0.theta
    model = s1.model()
    for got, want in zip(leaves(model), weighted_mean(iterates, D)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert not same(model, s1.theta)  # the average really differs from the last iterate


def test_skipped_step_leaves_the_average_unchanged(setup):
    exp, arrays, _ = setup
    net = exp.make_net(arrays.x_dynamic.shape[-1], arrays.x_static.shape[-1])
    graphdef, theta = nnx.split(net)
    step = make_train_step(exp.dpl, graphdef, exp.tx, exp.loss, tcfg(ema=D))
    state, bad, key = TrainState.create(theta, exp.tx, ema=True), poisoned(arrays), jax.random.key(0)
    seen = set()
    for _ in range(30):
        before = jax.tree.map(np.array, state.avg)
        state, info = step(state, bad, key)
        seen.add(bool(info.ok))
        assert same(state.avg, before) == (not bool(info.ok))
        assert all(np.isfinite(x).all() for x in leaves(state.avg))
    assert seen == {True, False}


def test_fit_validates_and_keeps_the_average(setup, tmp_path, monkeypatch):
    """What validation sees and what the best state holds is the moving average; the
    checkpoint carries it, and a crash mid-run resumes to the same average bit for bit."""
    cfg = tcfg(epochs=3, iters_per_epoch=5, checkpoint_minutes=1e-9, seed=2, ema=0.8)
    seen = []

    def score(s):
        seen.append(jax.tree.map(np.array, s))
        return float(np.sin(1e4 * sum(float(np.sum(x)) for x in leaves(s))))

    ref = train(setup, cfg, validate=score)
    assert len(seen) == 3 and same(seen[-1], ref.state.model()) and not same(seen[-1], ref.state.theta)
    best = int(np.argmax([h["valid"] for h in ref.history]))
    assert same(ref.best_theta, seen[best])
    crash_after_saves(7, monkeypatch, lambda: train(setup, cfg, run_dir=tmp_path, validate=score))
    r = train(setup, TrainConfig(**{**cfg.__dict__, "resume": True}), run_dir=tmp_path, validate=score)
    assert r.resumed_from == 7 and same(r.state, ref.state) and same(r.state.model(), ref.state.model())
    with pytest.raises(T.ResumeError, match="train.ema was 0.8, now 0.9"):
        train(setup, TrainConfig(**{**cfg.__dict__, "resume": True, "ema": 0.9}), run_dir=tmp_path)


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.1, True, "0.9"])
def test_bad_decay_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="train.ema must be null or a decay per step in \\(0, 1\\)"):
        TrainConfig(ema=bad)


def test_experiment_writes_the_average_and_evaluate_reproduces_it(tmp_path):
    """weights.npz is the moving average kept in the last checkpoint (sum / weight), not the
    last iterate; ``dpljax evaluate`` scores it again. ``--which last`` scores the last iterate
    into evaluation_last/: the parameters of the same run without the average (whose
    weights.npz is its last step), bit for bit, and their median NSE."""
    import json

    from conftest import small_config
    from dpljax.checkpoint import read_checkpoint_meta
    from dpljax.cli import main
    from dpljax.evaluate import _untrained, evaluate_run, last_training_state, load_trained
    from dpljax.experiment import run_experiment

    train = {"epochs": 2, "iters_per_epoch": 5, "batch_basins": 4, "window": 120, "warmup": 120}
    run, plain = tmp_path / "ema", tmp_path / "plain"
    summary = run_experiment(small_config(train={**train, "ema": 0.9}), run, log=lambda *a: None)
    plain_summary = run_experiment(small_config(train=train), plain, log=lambda *a: None)
    assert read_checkpoint_meta(run / "weights.npz")["which"] == "last (moving average)"
    exp, _, _, written = load_trained(run)
    state, step = last_training_state(run, exp, _untrained(run)[3])
    for w, x in zip(leaves(written), leaves(state.avg.sum)):
        np.testing.assert_allclose(w, x / state.avg.weight, rtol=1e-6, atol=1e-9)
    theta_last = state.theta
    _, _, _, plain_last = load_trained(plain)
    assert step == 10 and same(theta_last, plain_last)
    assert max(float(np.max(np.abs(w - t))) for w, t in zip(leaves(written), leaves(theta_last))) > 1e-4
    again = evaluate_run(run, write=False, log=lambda *a: None)
    assert abs(again["median_nse"] - summary["median_nse"]) < 1e-6
    assert main(["evaluate", str(run), "--which", "last"]) is None
    last = json.loads((run / "evaluation_last" / "summary.json").read_text())
    assert last["which"].startswith("last iterate") and last["step"] == 10
    assert abs(last["median_nse"] - plain_summary["median_nse"]) < 1e-6 and last["median_nse"] != summary["median_nse"]
    assert not (run / "evaluation").exists()  # the written model's evaluation is another folder
