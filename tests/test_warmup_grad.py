"""train.warmup_grad=false: the warm-up days run forward only (dpljax.dpl.simulate's ``detach``).

The values are those of the ordinary run; the gradient is the gradient of the window's loss
with the warm-up's end held constant (process state, the warm-up runoff routing carries into
the window, an LSTM's hidden state), checked against a reference that builds those constants
as concrete arrays and differentiates a window-only program (plain autodiff, no
stop_gradient); the backward pass covers the window only and uses the hand-written adjoints.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import short_fit_learns, small_config
from dpljax.data.dataset import Arrays
from dpljax.dpl import DPL, TableSource, as_source, simulate
from dpljax.models import GR4J, HBV
from dpljax.models import hbv_adjoint
from dpljax.models.routing import route, unit_hydrograph
from dpljax.nets import LSTM, MLP
from dpljax.nets import lstm as lstm_mod
from dpljax.train import TrainConfig, make_train_step

B, D, W = 3, 50, 30
T = D + W


def _batch(dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    f = {"prcp": rng.gamma(0.6, 5.0, (B, T)), "tmean": rng.normal(4.0, 9.0, (B, T)),
         "pet": rng.uniform(0.0, 4.0, (B, T))}
    f = {k: jnp.asarray(v, dtype) for k, v in f.items()}
    xd = jnp.asarray(rng.normal(size=(B, T, 3)), dtype)
    xs = jnp.asarray(rng.normal(size=(B, 4)), dtype)
    obs = jnp.asarray(rng.gamma(1.0, 1.5, (B, T)), dtype)
    return Arrays(f, xd, xs, obs, jnp.ones(B, dtype))


def _net(kind, dpl, dtype=jnp.float32, dropout=0.0):
    if kind == "mlp":
        net = MLP(3, 4, dpl.space.n_outputs, hidden=(8,), param_dtype=dtype, rngs=nnx.Rngs(1))
    else:
        net = LSTM(3, 4, dpl.space.n_outputs, hidden=6, dropout=dropout, param_dtype=dtype, rngs=nnx.Rngs(1))
    return nnx.split(net)


def _loss(q, obs):
    return jnp.mean((q[:, D:] - obs[:, D:]) ** 2)


CASES = [("mlp", "hbv", ()), ("lstm", "hbv", ("beta", "betaet")), ("lstm", "hbv", ()),
         ("mlp", "gr4j", ())]


def _dpl(model, dynamic, adjoint=None):
    m = HBV(adjoint=adjoint or "model") if model == "hbv" else GR4J()
    return DPL.of(m, nmul=2, dynamic=dynamic)


@pytest.mark.parametrize("kind,model,dynamic", CASES)
def test_values_are_unchanged(kind, model, dynamic):
    """Same routed flow, fluxes and final state with and without detach (dropout on too)."""
    dpl = _dpl(model, dynamic)
    graphdef, theta = _net(kind, dpl, dropout=0.5)
    b, key = _batch(), jax.random.key(7)
    run = jax.jit(lambda th, d: simulate(dpl, as_source(graphdef), th, b, key=key, detach=d), static_argnums=1)
    a, c = run(theta, 0), run(theta, D)
    np.testing.assert_allclose(np.asarray(c.q), np.asarray(a.q), rtol=1e-5, atol=1e-6)
    for x, y in zip(jax.tree.leaves((a.fluxes, a.state)), jax.tree.leaves((c.fluxes, c.state))):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the gradient: a reference
def _lstm_reference(net_state, graphdef, b, d):
    """The LSTM's raw outputs as a function of its weights with the warm-up part (and the
    hidden state at step ``d``) concrete constants: a plain autodiff scan over the window."""
    net = nnx.merge(graphdef, net_state)
    const = np.asarray(net(b.x_dynamic, b.x_static))  # forward values of every step
    x = jnp.concatenate([b.x_dynamic, jnp.broadcast_to(b.x_static[:, None], (B, T, b.x_static.shape[-1]))], -1)
    g = jnp.swapaxes(jax.nn.relu(net.inp(x)) @ net.w_ih[...] + net.b[...], 0, 1)
    h0 = jnp.zeros((B, net.hidden), x.dtype)
    (h_d, c_d), _ = jax.lax.scan(lambda cr, gx: lstm_mod._cell(net.w_hh[...], cr, gx)[:2], (h0, h0), g[:d])
    h_d, c_d = np.asarray(h_d), np.asarray(c_d)

    def raw(state):
        n = nnx.merge(graphdef, state)
        xv = jax.nn.relu(n.inp(x[:, d:]))
        gv = jnp.swapaxes(xv @ n.w_ih[...] + n.b[...], 0, 1)
        _, hs = jax.lax.scan(lambda cr, gx: (lambda c2, o: (c2, o[0]))(*lstm_mod._cell(n.w_hh[...], cr, gx)[:2]),
                             (jnp.asarray(h_d), jnp.asarray(c_d)), gv)
        return jnp.concatenate([jnp.asarray(const[:, :d]), n.head(jnp.swapaxes(hs, 0, 1))], 1)

    return raw


def _reference_loss(dpl_ref, graphdef, theta, b, kind, d):
    """Loss of the window with the warm-up's state, runoff (and hidden state) as constants."""
    model, space = dpl_ref.model, dpl_ref.space
    net_raw = (lambda th: nnx.merge(graphdef, th)(b.x_dynamic, b.x_static)) if kind == "mlp" \
        else _lstm_reference(theta, graphdef, b, d)
    params0, _ = space.to_physical(net_raw(theta))
    cut = lambda v, sl: v[:, sl] if v.ndim == 3 else v  # noqa: E731
    warm = model.simulate({k: np.asarray(cut(v, slice(None, d))) for k, v in params0.items()},
                          {k: np.asarray(v[:, :d]) for k, v in b.forcing.items() if k in model.forcing})
    s_d = jax.tree.map(np.asarray, warm.state)
    q_w = np.asarray(getattr(warm.fluxes, model.output))

    def loss(th):
        params, rp = space.to_physical(net_raw(th))
        out = model.simulate({k: cut(v, slice(d, None)) for k, v in params.items()},
                             {k: v[:, d:] for k, v in b.forcing.items() if k in model.forcing}, s_d)
        q = jnp.concatenate([jnp.asarray(q_w), getattr(out.fluxes, model.output)], 1)
        if dpl_ref.chain.routing is not None:
            q = route(q, unit_hydrograph(rp["route_a"], rp["route_b"]))
        return _loss(q, b.obs)

    return loss


@pytest.mark.parametrize("kind,model,dynamic", CASES)
def test_gradient_is_that_of_the_window_with_the_warmup_held_constant(kind, model, dynamic):
    with jax.enable_x64(True):
        dpl = _dpl(model, dynamic)
        dpl_ref = _dpl(model, dynamic, adjoint="autodiff")  # reference: plain autodiff of the scan
        graphdef, theta = _net(kind, dpl, jnp.float64)
        b = _batch(jnp.float64)
        src = as_source(graphdef)
        got = jax.grad(lambda th: _loss(simulate(dpl, src, th, b, detach=D).q, b.obs))(theta)
        ref_loss = _reference_loss(dpl_ref, graphdef, theta, b, kind, D)
        want = jax.grad(ref_loss)(theta)
        full = jax.grad(lambda th: _loss(simulate(dpl, src, th, b).q, b.obs))(theta)
        assert float(ref_loss(theta)) == pytest.approx(float(_loss(simulate(dpl, src, theta, b).q, b.obs)), rel=1e-12)
        for g, r, f in zip(jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(full)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-7, atol=1e-12)
        # ... and it is another gradient than the full one (the test could fail)
        diff = max(float(jnp.max(jnp.abs(g - f))) for g, f in zip(jax.tree.leaves(got), jax.tree.leaves(full)))
        assert diff > 1e-6


def test_gradient_matches_finite_differences():
    """Central differences of the reference loss along a random direction (float64)."""
    with jax.enable_x64(True):
        dpl = _dpl("hbv", ())
        graphdef, theta = _net("mlp", dpl, jnp.float64)
        b = _batch(jnp.float64, seed=3)
        got = jax.grad(lambda th: _loss(simulate(dpl, as_source(graphdef), th, b, detach=D).q, b.obs))(theta)
        ref = _reference_loss(dpl, graphdef, theta, b, "mlp", D)
        rng = np.random.default_rng(0)
        v = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), theta)
        eps = 1e-6
        shift = lambda s: jax.tree.map(lambda x, y: x + s * y, theta, v)  # noqa: E731
        fd = (float(ref(shift(eps))) - float(ref(shift(-eps)))) / (2 * eps)
        ad = sum(float(jnp.vdot(g, y)) for g, y in zip(jax.tree.leaves(got), jax.tree.leaves(v)))
        assert ad == pytest.approx(fd, rel=1e-5)


@pytest.mark.parametrize("model", ["hbv", "gr4j"])
@pytest.mark.parametrize("side", [-40.0, 40.0])
def test_no_nan_at_the_parameter_bounds(model, side):
    """Every parameter at its lower (upper) bound: the detached gradient is finite."""
    dpl = _dpl(model, ())
    b = _batch()
    theta = jnp.full((B, dpl.space.n_outputs), side, jnp.float32)
    g = jax.grad(lambda th: _loss(simulate(dpl, TableSource(), th, b, detach=D).q, b.obs))(theta)
    assert np.isfinite(np.asarray(g)).all()


# ------------------------------------------------------------ the backward skips the warm-up
def _scans(jaxpr, out):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            out.append((eqn.params["length"], eqn.params["reverse"]))
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (list, tuple)) else [p]):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _scans(inner, out)
    return out


@pytest.mark.parametrize("kind,dynamic", [("mlp", ()), ("lstm", ("beta", "betaet"))])
def test_backward_runs_over_the_window_only_with_the_hand_written_adjoints(kind, dynamic, monkeypatch):
    dpl = _dpl("hbv", dynamic)
    graphdef, theta = _net(kind, dpl)
    b, src = _batch(), as_source(graphdef)
    hbv_days, lstm_lengths = [], []
    step_vjp, bwd_core = hbv_adjoint._step_vjp, lstm_mod._recurrence_bwd_core

    def counting_step_vjp(*a, **k):
        hbv_days.append(1)
        return step_vjp(*a, **k)

    def counting_core(w_hh, h0, c0, hs, *a):
        lstm_lengths.append(hs.shape[0])
        return bwd_core(w_hh, h0, c0, hs, *a)

    monkeypatch.setattr(hbv_adjoint, "_step_vjp", counting_step_vjp)
    monkeypatch.setattr(lstm_mod, "_recurrence_bwd_core", counting_core)

    def scans(d):
        f = jax.value_and_grad(lambda th: _loss(simulate(dpl, src, th, b, detach=d).q, b.obs))
        return _scans(jax.make_jaxpr(f)(theta).jaxpr, [])

    full = scans(0)
    assert (T, True) in full  # today: a reverse scan over warm-up + window
    assert hbv_days and (lstm_lengths == [T] if kind == "lstm" else not lstm_lengths)
    hbv_days.clear(), lstm_lengths.clear()
    cut = scans(D)
    assert {n for n, rev in cut if rev} == {W}  # every reverse scan is over the window
    assert (D, False) in cut  # the warm-up still runs forward
    assert hbv_days  # HBV's hand-written adjoint ...
    assert lstm_lengths == ([W] if kind == "lstm" else [])  # ... and the LSTM's, over W steps


# -------------------------------------------------------------------------- the train step
def _step_setup(kind, dynamic, warmup_grad, devices=1):
    dpl = _dpl("hbv", dynamic)
    graphdef, theta = _net(kind, dpl)
    rng = np.random.default_rng(5)
    n, nt = 6, 200
    f = {"prcp": rng.gamma(0.6, 5.0, (n, nt)), "tmean": rng.normal(4.0, 9.0, (n, nt)),
         "pet": rng.uniform(0.0, 4.0, (n, nt))}
    arrays = Arrays({k: jnp.asarray(v, jnp.float32) for k, v in f.items()},
                    jnp.asarray(rng.normal(size=(n, nt, 3)), jnp.float32),
                    jnp.asarray(rng.normal(size=(n, 4)), jnp.float32),
                    jnp.asarray(rng.gamma(1.0, 1.5, (n, nt)), jnp.float32), jnp.ones(n, jnp.float32))
    cfg = TrainConfig(batch_basins=4, window=W, warmup=D, progress=False, warmup_grad=warmup_grad, devices=devices)
    tx = optax.adam(1e-2)
    from dpljax.losses import RMSECombined
    from dpljax.parallel import replicate
    from dpljax.train import TrainState

    step = make_train_step(dpl, graphdef, tx, RMSECombined(), cfg)
    state, arrays = replicate((TrainState.create(theta, tx), arrays), devices)
    return step, state, arrays


@pytest.mark.parametrize("kind,dynamic", [("mlp", ()), ("lstm", ("beta",))])
def test_train_step_same_loss_other_update(kind, dynamic):
    key = jax.random.key(0)
    s1, st1, a1 = _step_setup(kind, dynamic, True)
    s0, st0, a0 = _step_setup(kind, dynamic, False)
    n1, i1 = s1(st1, a1, key)
    n0, i0 = s0(st0, a0, key)
    assert bool(i0.ok) and float(i0.loss) == pytest.approx(float(i1.loss), rel=1e-6)
    d = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(n0.theta), jax.tree.leaves(n1.theta)))
    assert d > 0


@pytest.mark.skipif(len(jax.devices()) < 2, reason="needs 2 devices (tests/conftest.py asks for them)")
def test_train_step_on_two_devices_equals_one():
    key = jax.random.key(1)
    s1, st1, a1 = _step_setup("lstm", ("beta",), False, devices=1)
    s2, st2, a2 = _step_setup("lstm", ("beta",), False, devices=2)
    for _ in range(2):
        st1, i1 = s1(st1, a1, key)
        st2, i2 = s2(st2, a2, key)
    assert float(i2.loss) == pytest.approx(float(i1.loss), rel=1e-5)
    for a, b in zip(jax.tree.leaves(st1.theta), jax.tree.leaves(st2.theta)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=2e-6)


# ------------------------------------------------------------------ config, resume, old runs
def test_config_key_validated_and_built():
    from dpljax import build

    assert TrainConfig().warmup_grad is True
    with pytest.raises(ValueError, match="train.warmup_grad must be true or false"):
        TrainConfig(warmup_grad="no")
    assert build(small_config(train={"warmup_grad": False, "progress": False})).train.warmup_grad is False


def test_older_configs_and_checkpoints_mean_warmup_grad_true():
    from dpljax.checkpoint import CheckpointMeta, RunRecord
    from dpljax.resume import changes, differences

    old = {"train": {"epochs": 2, "warmup": 365}, "model": {"name": "hbv"}}
    assert changes(old, {"train": {"epochs": 2, "warmup": 365, "warmup_grad": True}, "model": {"name": "hbv"}}) == []
    assert changes(old, {"train": {"epochs": 2, "warmup": 365, "warmup_grad": False}, "model": {"name": "hbv"}}) \
        == [("train.warmup_grad", True, False)]
    cfg_old = {k: v for k, v in TrainConfig().__dict__.items() if k != "warmup_grad"}
    meta = CheckpointMeta(1, 10, 0, None, cfg_old, None, RunRecord())
    assert differences(meta, TrainConfig(), {}) == []
    assert differences(meta, TrainConfig(warmup_grad=False), {}) == ["train.warmup_grad was True, now False"]


def test_a_short_fit_with_warmup_grad_false_learns(sample):
    short_fit_learns(sample, small_config(train={"warmup_grad": False, "progress": False},
                                          optim={"learning_rate": 1e-2}))
