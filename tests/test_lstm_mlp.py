"""net=lstm_mlp: an LSTM for the time-varying parameters only, an MLP on the attributes for the
static and routing ones. The layout it writes is the one the parameter space reads, static
columns depend on the attributes alone, gradients match finite differences (also with the
warm-up run forward only), and the experiment builds, refuses and trains it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_directional_derivatives, short_fit_learns, small_config
from flax import nnx
from jax.flatten_util import ravel_pytree

from dpljax import DPL, HBV, ConfigError, ParameterSpace, build
from dpljax.data import Arrays
from dpljax.dpl import NetworkSource, simulate
from dpljax.models.routing import BOUNDS as RB
from dpljax.nets import LSTMMLP

B, T = 3, 40


def _space(dynamic=("beta", "betaet", "k0")):
    return ParameterSpace(HBV().bounds, nmul=2, dynamic=dynamic, routing_bounds=RB)


def _net(space, dtype=jnp.float32, dropout=0.0, seed=0):
    return LSTMMLP(3, 4, space.n_outputs, dynamic_columns=space.dynamic_columns, hidden=6, dropout=dropout,
                   mlp_hidden=(8,), param_dtype=dtype, rngs=nnx.Rngs(seed))


def _inputs(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(B, T, 3)), dtype), jnp.asarray(rng.normal(size=(B, 4)), dtype)


def test_dynamic_columns_are_the_ones_the_space_reads_at_every_step():
    space = _space(("beta", "k0"))
    names = list(space.bounds)
    m = space.nmul
    want = [c for n in ("beta", "k0") for c in range(names.index(n) * m, (names.index(n) + 1) * m)]
    assert space.dynamic_columns == tuple(sorted(want))
    # A raw output that varies in time only in those columns: exactly beta and k0 vary.
    raw = np.zeros((B, T, space.n_outputs), np.float32)
    raw[..., list(space.dynamic_columns)] = np.linspace(-2, 2, T)[None, :, None]
    params, _ = space.to_physical(jnp.asarray(raw))
    assert {n for n, v in params.items() if v.ndim == 3} == {"beta", "k0"}
    assert all(float(jnp.std(params[n], 1).min()) > 0 for n in ("beta", "k0"))


def test_static_columns_come_from_the_attributes_alone_and_the_dynamic_ones_vary():
    space = _space()
    net = _net(space)
    xd, xs = _inputs()
    raw = np.asarray(net(xd, xs))
    assert raw.shape == (B, T, space.n_outputs)
    dyn = list(space.dynamic_columns)
    static = [c for c in range(space.n_outputs) if c not in dyn]
    np.testing.assert_array_equal(raw[:, :1, static].repeat(T, 1), raw[..., static])  # constant in time
    assert np.std(raw[..., dyn], axis=1).min() > 0
    # other forcings: the static columns are unchanged, the dynamic ones are not
    raw2 = np.asarray(net(xd + 1.0, xs))
    np.testing.assert_array_equal(raw2[..., static], raw[..., static])
    assert np.abs(raw2[..., dyn] - raw[..., dyn]).max() > 1e-3
    # other attributes change both
    raw3 = np.asarray(net(xd, xs + 1.0))
    assert np.abs(raw3[..., static] - raw[..., static]).max() > 1e-3
    # ... and the static columns are the MLP's, in the space's order
    mlp = np.asarray(net.mlp(xd, xs))
    np.testing.assert_allclose(raw[:, 0, static], mlp, rtol=1e-6)
    np.testing.assert_allclose(raw[..., dyn], np.asarray(net.seq(xd, xs)), rtol=1e-6)


def _chain_loss(space, dtype, detach=0):
    rng = np.random.default_rng(3)
    forcing = {"prcp": rng.gamma(0.6, 5.0, (B, T)), "tmean": rng.normal(4.0, 9.0, (B, T)),
               "pet": rng.uniform(0.0, 4.0, (B, T))}
    forcing = {k: jnp.asarray(v, dtype) for k, v in forcing.items()}
    obs = jnp.asarray(rng.gamma(1.0, 1.5, (B, T)), dtype)
    xd, xs = _inputs(dtype)
    batch = Arrays(forcing, xd, xs, obs, jnp.ones(B, dtype))
    dpl = DPL(HBV(), space)
    graphdef, state = nnx.split(_net(space, dtype))
    flat, unravel = ravel_pytree(state)

    def f(v):
        q = simulate(dpl, NetworkSource(graphdef), unravel(v), batch, detach=detach).q
        return jnp.mean((q[:, 15:] - obs[:, 15:]) ** 2)

    return jax.jit(f), flat


def _parts(space, g):
    """The gradient split into the MLP's and the LSTM's weights (state order: mlp, seq)."""
    _, st = nnx.split(_net(space, jnp.float64))
    n_mlp = ravel_pytree(st["mlp"])[0].size
    assert n_mlp + ravel_pytree(st["seq"])[0].size == g.size
    return g[:n_mlp], g[n_mlp:]


def test_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        space = _space()
        f, flat = _chain_loss(space, jnp.float64)
        g = np.asarray(jax.grad(f)(flat))
        g_mlp, g_seq = _parts(space, g)
        assert np.all(np.isfinite(g)) and np.abs(g_mlp).max() > 0 and np.abs(g_seq).max() > 0
        assert_directional_derivatives(f, flat, g)


def test_warmup_forward_only_keeps_the_values_and_both_parts_learn():
    """train.warmup_grad=false (detach): the same loss; the LSTM's warm-up and the model's
    warm-up state are constants, so the gradient differs, and both parts still get one."""
    with jax.enable_x64(True):
        space = _space()
        f0, flat = _chain_loss(space, jnp.float64, 0)
        f1, _ = _chain_loss(space, jnp.float64, 15)
        assert float(f1(flat)) == pytest.approx(float(f0(flat)), rel=1e-12)
        g0, g1 = np.asarray(jax.grad(f0)(flat)), np.asarray(jax.grad(f1)(flat))
        assert np.all(np.isfinite(g1)) and not np.allclose(g0, g1, rtol=1e-6)
        assert all(np.abs(part).max() > 0 for part in _parts(space, g1))


def test_the_experiment_builds_it_with_the_layout_and_refuses_it_without_dynamic_parameters():
    exp = build(small_config(model={"dynamic": ["beta", "betaet"]},
                             net={"name": "lstm_mlp", "hidden": 8, "mlp_hidden": [16], "dropout": 0.0}))
    net = exp.make_net(3, 5)
    assert isinstance(net, LSTMMLP) and net.seq.head.kernel.shape == (8, 2 * 2)
    with pytest.raises(ConfigError, match="needs some: set model.dynamic"):
        build(small_config(net={"name": "lstm_mlp", "hidden": 8}))
    with pytest.raises(ConfigError, match="unknown key"):
        build(small_config(model={"dynamic": ["beta"]}, net={"name": "lstm_mlp", "dynamic_columns": [0]}))
    with pytest.raises(ConfigError, match="net.mlp_hidden must be a list"):
        build(small_config(model={"dynamic": ["beta"]}, net={"name": "lstm_mlp", "hidden": 8, "mlp_hidden": 16}))


def test_a_short_fit_learns_on_the_sample(sample):
    short_fit_learns(sample, small_config(model={"dynamic": ["beta", "betaet"]}, optim={"learning_rate": 1e-2},
                                          net={"name": "lstm_mlp", "hidden": 16, "mlp_hidden": [32], "dropout": 0.0}))


@pytest.mark.parametrize("dynamic", [("beta", "betaet", "k0"), ("k0",), ("beta", "k2")])
def test_parts_read_as_the_dense_output(dynamic):
    """Training reads RawParts (no (B, T, n_outputs) array): the same physical parameters as
    the dense output, for dynamic names at the start, the middle and the end of the layout, and
    the same flow and gradient through the whole chain."""
    space = _space(dynamic)
    net = _net(space)
    xd, xs = _inputs()
    parts = net.parts(xd, xs)
    assert parts.static.shape == (B, space.n_outputs - len(space.dynamic_columns))
    p_dense, r_dense = space.to_physical(net(xd, xs))
    p_parts, r_parts = space.to_physical(parts)
    assert set(p_parts) == set(p_dense) and set(r_parts) == set(r_dense) == set(RB)
    for k in p_dense:
        assert p_parts[k].shape == p_dense[k].shape, k
        np.testing.assert_array_equal(np.asarray(p_parts[k]), np.asarray(p_dense[k]), err_msg=k)
    for k in r_dense:
        np.testing.assert_array_equal(np.asarray(r_parts[k]), np.asarray(r_dense[k]), err_msg=k)
    # the distinct values: a parameter's columns are its own, not a neighbour's
    assert len({float(np.asarray(v).ravel()[0]) for v in p_parts.values()}) == len(p_parts)


def test_training_path_matches_the_dense_path_in_value_and_gradient():
    space = _space(("beta", "k0"))
    f_parts, flat = _chain_loss(space, jnp.float32)
    rng = np.random.default_rng(3)
    forcing = {"prcp": rng.gamma(0.6, 5.0, (B, T)), "tmean": rng.normal(4.0, 9.0, (B, T)),
               "pet": rng.uniform(0.0, 4.0, (B, T))}
    forcing = {k: jnp.asarray(v, jnp.float32) for k, v in forcing.items()}
    obs = jnp.asarray(rng.gamma(1.0, 1.5, (B, T)), jnp.float32)
    xd, xs = _inputs()
    dpl = DPL(HBV(), space)
    graphdef, state = nnx.split(_net(space))
    _, unravel = ravel_pytree(state)

    def f_dense(v):
        q = dpl.from_raw(nnx.merge(graphdef, unravel(v))(xd, xs), forcing).q
        return jnp.mean((q[:, 15:] - obs[:, 15:]) ** 2)
    (a, ga), (b, gb) = jax.value_and_grad(f_parts)(flat), jax.jit(jax.value_and_grad(f_dense))(flat)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=1e-4, atol=1e-6 * float(jnp.abs(gb).max()))


def test_parts_of_the_wrong_shape_are_named():
    from dpljax.params import RawParts

    space = _space()
    parts = _net(space).parts(*_inputs())
    with pytest.raises(ValueError, match=r"RawParts must be static \(B, \d+\) and dynamic \(B, T, \d+\)"):
        space.to_physical(RawParts(parts.static[:, :-1], parts.dynamic))
