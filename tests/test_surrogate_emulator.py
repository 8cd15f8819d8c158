"""Emulators: they learn, they save and load, and as process models they compile, batch and
differentiate, and dPL training and calibration run through them."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dpljax import DPL, MLP
from dpljax.calibrate import Problem, sce_ua
from dpljax.losses import RMSECombined
from dpljax.models import base
from dpljax.surrogate import (BlackBox, Surrogate, TrainData, emulator_errors, load_emulator, make_design,
                              run_blackbox, train_emulator)
from dpljax.surrogate.emulator import EmulatorSpec, make_spec

BOUNDS = {"k": (0.1, 0.6), "f": (0.2, 1.0)}


def reservoir(params, forcing):
    """Vectorised toy black box: a share ``f`` of rain enters a linear store emptied at rate ``k``."""
    k, f = params["k"][:, None], params["f"][:, None]
    s = np.zeros(k.shape[0])
    n_t = forcing["prcp"].shape[-1]
    store, q = np.empty((k.shape[0], n_t)), np.empty((k.shape[0], n_t))
    for t in range(n_t):
        s = s + f[:, 0] * forcing["prcp"][:, t]
        q[:, t] = k[:, 0] * s
        s = s - q[:, t]
        store[:, t] = s
    return {"store": store, "q": q}


RES = BlackBox(reservoir, BOUNDS, ("store", "q"), ("prcp",), vectorized=True)


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    forcing = {"prcp": rng.gamma(0.4, 6.0, (4, 120))}
    d = make_design(BOUNDS, 4, 40, test_params=0.2, test_basins=0.25, seed=0)
    runs = run_blackbox(RES, d.x, forcing, d.basin).raise_on_failure()
    data = TrainData(d.x, d.basin, forcing, runs.outputs)
    tr = d.subset("train")
    sub = TrainData(d.x[tr], d.basin[tr], forcing, {k: v[tr] for k, v in runs.outputs.items()})
    fit = train_emulator(sub, BOUNDS, ("prcp",), ("store", "q"), hidden=16, steps=300, batch=16,
                         learning_rate=4e-2, seed=0)
    return d, data, fit


def test_the_emulator_learns_a_tiny_problem(tiny):
    d, data, fit = tiny
    untrained = train_emulator(TrainData(d.x, d.basin, data.forcing, data.y), BOUNDS, ("prcp",), ("store", "q"),
                               hidden=16, steps=0, seed=0)
    for split in ("test_params", "test_basins"):
        err = emulator_errors(fit.emulator, data, d.subset(split))
        base_err = emulator_errors(untrained.emulator, data, d.subset(split))
        for k in ("store", "q"):
            assert err[k]["nrmse"] < 0.3, (split, k, err[k])   # 1.0 = predicting the mean
            assert err[k]["nrmse"] < 0.4 * base_err[k]["nrmse"], (split, k)
    assert fit.history[-1]["loss"] < 0.2 * fit.history[0]["loss"] or fit.history[-1]["loss"] < 0.05


def test_save_and_load_give_the_same_emulator(tiny, tmp_path):
    d, data, fit = tiny
    fit.emulator.save(tmp_path / "emu")
    emu = load_emulator(tmp_path / "emu")
    assert emu.spec == fit.emulator.spec
    f = {"prcp": data.forcing["prcp"][d.basin[:5]]}
    a, b = fit.emulator.predict(d.x[:5], f), emu.predict(d.x[:5], f)
    np.testing.assert_array_equal(a["q"], b["q"])
    np.savez(tmp_path / "emu" / "weights.npz", **{k: v[:1] for k, v in emu.weights.items()})
    with pytest.raises(ValueError, match="do not match spec.json"):
        load_emulator(tmp_path / "emu")
    with pytest.raises(FileNotFoundError):
        load_emulator(tmp_path / "nothing")


def test_the_process_model_is_the_emulator(tiny, tmp_path):
    d, data, fit = tiny
    fit.emulator.save(tmp_path / "emu")
    m = Surrogate(str(tmp_path / "emu"), output="store")
    assert m.output == "store" and Surrogate(emulator=fit.emulator).output == "q"
    with pytest.raises(ValueError, match="not emulated"):
        Surrogate(emulator=fit.emulator, output="et")
    DPL.of(m, nmul=1, routing=False, bounds={"k": (0.2, 0.5), "f": (0.2, 1.0)})  # narrower: fine
    with pytest.raises(ValueError, match="wider than the surrogate's training range: k"):
        DPL.of(m, nmul=1, routing=False, bounds={"k": (0.05, 0.5), "f": (0.2, 1.0)})
    idx = d.subset("test_params")[:3]
    f = {"prcp": data.forcing["prcp"][d.basin[idx]].astype(np.float32)}
    pred = fit.emulator.predict(d.x[idx], f)
    params = {k: jnp.asarray(d.x[idx, j], jnp.float32)[:, None] for j, k in enumerate(BOUNDS)}  # (B, nmul=1)
    out = jax.jit(m.simulate)(params, f)
    for k in ("store", "q"):
        np.testing.assert_allclose(np.asarray(getattr(out.fluxes, k)), pred[k], rtol=1e-4, atol=1e-4)
    assert out.state.h.shape == (3, 1, 16)
    # time-varying parameters are accepted like any model's
    dyn = {k: jnp.broadcast_to(v[:, None, :], (3, 120, 1)) for k, v in params.items()}
    np.testing.assert_allclose(m.simulate(dyn, f).q, out.q, rtol=1e-5, atol=1e-5)


def test_gradients_through_the_surrogate_match_finite_differences(tiny):
    _, data, fit = tiny
    m = Surrogate(emulator=fit.emulator, output="store")
    with jax.enable_x64(True):
        x = {"prcp": data.forcing["prcp"][0]}

        def loss(u):
            p = {"k": 0.1 + 0.5 * u[0], "f": 0.2 + 0.8 * u[1]}
            out = base.run(m, p, x)
            return jnp.mean((out.store - 5.0) ** 2) + jnp.mean(out.q)

        u = jnp.array([0.3, 0.6])
        g = np.asarray(jax.jit(jax.grad(loss))(u))
        assert np.all(np.isfinite(g)) and np.all(g != 0)
        f = jax.jit(loss)
        for i in range(2):
            e = np.zeros(2)
            e[i] = 1e-6
            fd = (float(f(u + e)) - float(f(u - e))) / 2e-6
            assert np.isclose(g[i], fd, rtol=1e-5, atol=1e-9), (i, g[i], fd)


def _twin_batch(m, n_b=6, n_t=150, seed=0):
    """Attributes, forcing and the surrogate's own output at parameters that are a function of
    the attributes: what dPL should recover."""
    rng = np.random.default_rng(seed)
    attrs = rng.uniform(-1, 1, (n_b, 2)).astype(np.float32)
    true = {"k": 0.35 + 0.2 * attrs[:, 0], "f": 0.6 + 0.35 * attrs[:, 1]}
    forcing = {"prcp": rng.gamma(0.4, 6.0, (n_b, n_t)).astype(np.float32)}
    obs = m.simulate({k: jnp.asarray(v, jnp.float32)[:, None] for k, v in true.items()}, forcing).fluxes
    return attrs, forcing, np.asarray(getattr(obs, m.output)), true


def test_dpl_training_through_the_surrogate_reduces_the_loss(tiny):
    _, _, fit = tiny
    m = Surrogate(emulator=fit.emulator, output="store")
    dpl = DPL.of(m, nmul=1, routing=False)
    attrs, forcing, obs, _ = _twin_batch(m)
    net = MLP(0, 2, dpl.space.n_outputs, hidden=(16,), dropout=0.0, rngs=nnx.Rngs(0))
    graphdef, theta = nnx.split(net)
    tx = optax.adam(3e-2)
    opt = tx.init(theta)
    x_dyn = np.zeros((attrs.shape[0], obs.shape[1], 0), np.float32)

    @jax.jit
    def step(theta, opt):
        def loss(theta):
            q = dpl(nnx.merge(graphdef, theta), x_dyn, attrs, forcing)
            return jnp.sqrt(jnp.mean((q[:, 20:] - obs[:, 20:]) ** 2))

        v, g = jax.value_and_grad(loss)(theta)
        upd, opt = tx.update(g, opt, theta)
        return optax.apply_updates(theta, upd), opt, v, g

    losses = []
    for _ in range(60):
        theta, opt, v, g = step(theta, opt)
        assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(g))
        losses.append(float(v))
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_sce_ua_calibrates_the_surrogate_per_basin(tiny):
    _, _, fit = tiny
    m = Surrogate(emulator=fit.emulator, output="store")
    dpl = DPL.of(m, nmul=1, routing=False)
    problem = Problem(dpl, RMSECombined(alpha=0.0), warmup=20)
    attrs, forcing, obs, true = _twin_batch(m, n_b=2)
    lo, hi = (jnp.asarray(v, jnp.float32) for v in (problem.lower, problem.upper))

    def one(key, f, o):
        fun = lambda x: problem.objective(x, {"prcp": f}, o, jnp.float32(1.0))
        return sce_ua(fun, lo, hi, key=key, max_evals=300, n_complexes=2)

    res = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 2), forcing["prcp"], obs)
    assert np.all(np.asarray(res.n_evals) <= 300 + 2 * (2 * problem.n + 1))
    start = [float(problem.objective(jnp.asarray((problem.lower + problem.upper) / 2, jnp.float32),
                                     {"prcp": forcing["prcp"][b]}, obs[b], jnp.float32(1.0))) for b in range(2)]
    assert np.all(np.asarray(res.fun) < 0.2 * np.asarray(start)), (res.fun, start)


def test_a_random_surrogate_spec_round_trips_json():
    spec = make_spec(BOUNDS, ("prcp",), ("store",), {"prcp": np.ones((2, 5))}, {"store": np.arange(10.0)}, hidden=4)
    assert EmulatorSpec.from_json(spec.to_json()) == spec
    m = Surrogate.random(spec, jax.random.key(1))
    leaves, tree = jax.tree.flatten(m)
    assert len(leaves) == 6 and jax.tree.unflatten(tree, leaves) == m


@pytest.mark.slow
def test_emulator_training_resumes_from_its_checkpoint_exactly(tiny, tmp_path):
    d, data, _ = tiny
    tr = d.subset("train")
    sub = TrainData(d.x[tr], d.basin[tr], data.forcing, {k: v[tr] for k, v in data.y.items()})
    kw = dict(hidden=8, steps=12, batch=8, learning_rate=1e-2, seed=1, log_every=4)
    whole = train_emulator(sub, BOUNDS, ("prcp",), ("store", "q"), **kw)

    def kill(msg):
        if "step 8/" in msg:
            raise KeyboardInterrupt

    ck = tmp_path / "ckpt.npz"
    with pytest.raises(KeyboardInterrupt):
        train_emulator(sub, BOUNDS, ("prcp",), ("store", "q"), checkpoint=ck, checkpoint_every=4, log=kill, **kw)
    logs = []
    resumed = train_emulator(sub, BOUNDS, ("prcp",), ("store", "q"), checkpoint=ck, checkpoint_every=4,
                             log=logs.append, **kw)
    assert "resumed" in logs[0] and "at step 8" in logs[0]
    for k, v in whole.emulator.weights.items():
        np.testing.assert_array_equal(resumed.emulator.weights[k], v)
    with pytest.raises(ValueError, match="another emulator training"):
        train_emulator(sub, BOUNDS, ("prcp",), ("store", "q"), checkpoint=ck, **{**kw, "steps": 13})


def test_an_output_relative_to_a_parameter_is_multiplied_by_it():
    """``out_scale``: the network's (de-normalised) output is ``y / p``; the emulator returns it
    times ``p`` (recovered from the input, also on a log scale), in ``predict`` and in the
    process model alike; old specs (no such fields) still load."""
    import json as _json
    from dpljax.surrogate import Emulator
    from dpljax.surrogate.emulator import init_weights

    spec = make_spec(BOUNDS, ("prcp",), ("store", "q"), {"prcp": np.ones((2, 5))},
                     {"store": np.array([1.0, 3.0]), "q": np.array([0.0, 4.0])}, hidden=4,
                     out_scale={"store": "f"}, param_log=("k",))
    assert spec.out_scale == ("f", "") and spec.param_log == (True, False) and spec.scale_index() == (1, -1)
    assert EmulatorSpec.from_json(spec.to_json()) == spec
    old = {k: v for k, v in spec.to_json().items() if k not in ("out_scale", "param_log")}
    assert EmulatorSpec.from_json(_json.loads(_json.dumps(old))).scale_index() == (-1, -1)
    w = {k: np.zeros_like(np.asarray(v)) for k, v in init_weights(spec, jax.random.key(0)).items()}
    w["b_out"] = np.array([0.5, 0.5], np.float32)            # normalised output 0.5 for both
    emu = Emulator(spec, w)
    x = np.array([[0.1, 0.2], [0.35, 0.6], [0.6, 1.0]])
    f = {"prcp": np.ones((3, 7))}
    y = emu.predict(x, f)
    ratio = 0.5 * spec.out_std[0] + spec.out_mean[0]          # 3.0: mean 2, sd 1
    np.testing.assert_allclose(y["store"], ratio * x[:, 1:2] * np.ones(7), rtol=1e-5)
    np.testing.assert_allclose(y["q"], np.full((3, 7), 0.5 * spec.out_std[1] + spec.out_mean[1]), rtol=1e-5)
    m = Surrogate(emulator=emu, output="store")
    out = m.simulate({k: jnp.asarray(x[:, j], jnp.float32)[:, None] for j, k in enumerate(BOUNDS)},
                     {"prcp": jnp.ones((3, 7), jnp.float32)})
    np.testing.assert_allclose(np.asarray(out.fluxes.store), y["store"], rtol=1e-5)
    # k on a log scale: its ends at -1 and +1, its geometric mean at 0
    from dpljax.surrogate.emulator import encode
    k = np.array([0.1, np.sqrt(0.1 * 0.6), 0.6])
    u = np.asarray(encode(spec, np.stack([k, np.full(3, 0.6)], -1), np.ones((3, 1))))[:, 1]
    np.testing.assert_allclose(u, [-1.0, 0.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="out_scale"):
        make_spec(BOUNDS, ("prcp",), ("store",), {"prcp": np.ones(2)}, {"store": np.ones(2)}, out_scale={"store": "x"})
    with pytest.raises(ValueError, match="param_log"):
        make_spec({"a": (-1.0, 1.0)}, ("prcp",), ("store",), {"prcp": np.ones(2)}, {"store": np.ones(2)},
                  param_log=("a",))


def test_training_relative_to_a_parameter_learns_the_ratio(tiny):
    """The toy store is exactly ``f`` times a function of ``k`` and the rain: learned relative
    to ``f`` it is an easier target, and the emulator, in physical units, is more accurate than
    the plain one at the same budget."""
    d, data, _ = tiny
    tr = d.subset("train")
    sub = TrainData(d.x[tr], d.basin[tr], data.forcing, {"store": data.y["store"][tr]})
    kw = dict(hidden=8, steps=120, batch=16, learning_rate=4e-2, seed=0)
    plain = train_emulator(sub, BOUNDS, ("prcp",), ("store",), **kw)
    rel = train_emulator(sub, BOUNDS, ("prcp",), ("store",), out_scale={"store": "f"}, param_log=("k",), **kw)
    assert rel.emulator.spec.out_scale == ("f",)
    # the normalisation is that of store / f
    ratio = sub.y["store"] / sub.x[:, 1:2]
    assert np.isclose(rel.emulator.spec.out_mean[0], ratio.mean(), rtol=1e-6)
    e_plain = emulator_errors(plain.emulator, data, d.subset("test_params"))["store"]["nrmse"]
    e_rel = emulator_errors(rel.emulator, data, d.subset("test_params"))["store"]["nrmse"]
    assert e_rel < 0.8 * e_plain, (e_rel, e_plain)
    with pytest.raises(ValueError, match="out_scale"):
        train_emulator(sub, BOUNDS, ("prcp",), ("store",), out_scale={"q": "f"}, **{**kw, "steps": 0})


def test_warm_up_days_forward_only_truncate_the_gradient_there():
    """``forward_after``: the same outputs as the full forward on the later days, and the
    gradient of a loss on them equals that of a plain scan whose state entering day ``d`` is a
    constant (the warm-up still sets the state's value); training with it runs."""
    from dpljax.surrogate.emulator import cell, forward, forward_after, init_weights

    spec = make_spec(BOUNDS, ("prcp",), ("store", "q"), {"prcp": np.ones(4)}, {"store": np.ones(2), "q": np.ones(2)},
                     hidden=5)
    with jax.enable_x64(True):
        w = {k: jnp.asarray(v, jnp.float64) for k, v in init_weights(spec, jax.random.key(3), jnp.float64).items()}
        w["w_x"] = w["w_x"] + 0.1
        x = jax.random.normal(jax.random.key(4), (2, 12, spec.n_in), jnp.float64)
        d = 7
        np.testing.assert_allclose(jax.jit(forward_after, static_argnums=2)(w, x, d), jax.jit(forward)(w, x)[:, d:],
                                   rtol=1e-12)

        def reference(w):
            h = c = jnp.zeros((2, 5))
            for t in range(12):
                ww = w if t >= d else jax.tree.map(jax.lax.stop_gradient, w)
                if t == d:
                    h, c = jax.lax.stop_gradient(h), jax.lax.stop_gradient(c)
                h, c = cell(ww["w_hh"], h, c, x[:, t] @ ww["w_ih"] + ww["b"])
                if t == d:
                    ys = []
                if t >= d:
                    ys.append(h @ w["w_out"] + x[:, t] @ w["w_x"] + w["b_out"])
            return jnp.sum(jnp.stack(ys, 1) ** 3)

        g = jax.jit(jax.grad(lambda w: jnp.sum(forward_after(w, x, d) ** 3)))(w)
        g_ref = jax.jit(jax.grad(reference))(w)
        g_full = jax.jit(jax.grad(lambda w: jnp.sum(forward(w, x)[:, d:] ** 3)))(w)
        for k in w:
            np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-9, atol=1e-12, err_msg=k)
        assert not np.allclose(g["w_hh"], g_full["w_hh"])   # the truncation is real
    rng = np.random.default_rng(0)
    f = {"prcp": rng.gamma(0.4, 6.0, (2, 60))}
    xs = rng.uniform([0.1, 0.2], [0.6, 1.0], (8, 2))
    y = {"store": rng.normal(size=(8, 60)), "q": rng.normal(size=(8, 60))}
    fit = train_emulator(TrainData(xs, np.repeat([0, 1], 4), f, y), BOUNDS, ("prcp",), ("store", "q"), hidden=4,
                         steps=3, batch=4, window=40, warmup=20, warmup_grad=False, log_every=1)
    assert len(fit.history) == 3 and all(np.isfinite(h["loss"]) for h in fit.history)
