"""net.stride: the LSTM steps through blocks of days. Outputs stay daily, a day's parameters
depend on no input after the end of its block, blocks end on the last day (static parameters
are read there), gradients match finite differences and the warm-up run forward only keeps the
values, for lengths that are and are not multiples of the stride."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_directional_derivatives
from flax import nnx
from jax.flatten_util import ravel_pytree

from dpljax import DPL, HBV, ParameterSpace
from dpljax.data import Arrays
from dpljax.dpl import NetworkSource, simulate
from dpljax.models.routing import BOUNDS as RB
from dpljax.nets import LSTM, LSTMMLP

B = 3


def _x(t, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(B, t, 3)), dtype), jnp.asarray(rng.normal(size=(B, 4)), dtype)


@pytest.mark.parametrize("t", [42, 40])  # a multiple of 7, and one that needs 2 days of padding
def test_outputs_are_daily_and_depend_on_no_input_after_their_block(t):
    s = 7
    net = LSTM(3, 4, 5, hidden=8, dropout=0.0, stride=s, rngs=nnx.Rngs(0))
    xd, xs = _x(t)
    raw = np.asarray(net(xd, xs))
    assert raw.shape == (B, t, 5)
    pad = (-t) % s
    for day in (0, 12, t - 1):
        start = (day + pad) // s * s - pad  # first day of the block that holds `day`
        bumped = np.asarray(net(xd.at[:, day].add(1.0), xs))
        np.testing.assert_array_equal(bumped[:, :max(start, 0)], raw[:, :max(start, 0)])
        assert np.abs(bumped[:, max(start, 0):day + 1] - raw[:, max(start, 0):day + 1]).min() > 0
        if day + 1 < t:
            assert np.abs(bumped[:, day + 1:] - raw[:, day + 1:]).max() > 0  # memory carries it on
    # within a block each day has its own row (the head emits stride rows per step)
    assert np.abs(np.diff(raw[:, t - s:], axis=1)).min() > 0


def test_stride_one_is_the_daily_lstm_and_bad_strides_are_refused():
    xd, xs = _x(30)
    a = LSTM(3, 4, 5, hidden=8, rngs=nnx.Rngs(0))
    b = LSTM(3, 4, 5, hidden=8, stride=1, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(a(xd, xs)), np.asarray(b(xd, xs)))
    for bad in (0, 1.5, True, -7):
        with pytest.raises(ValueError, match="stride must be an integer >= 1"):
            LSTM(3, 4, 5, hidden=8, stride=bad, rngs=nnx.Rngs(0))


def _loss_fn(net_cls, t, detach, dtype=jnp.float64, input_size=None):
    space = ParameterSpace(HBV().bounds, nmul=2, dynamic=("beta", "betaet"), routing_bounds=RB)
    kw = {"dynamic_columns": space.dynamic_columns, "mlp_hidden": (8,)} if net_cls is LSTMMLP else {}
    net = net_cls(3, 4, space.n_outputs, hidden=6, dropout=0.0, stride=7, input_size=input_size, param_dtype=dtype,
                  rngs=nnx.Rngs(2), **kw)
    rng = np.random.default_rng(3)
    forcing = {"prcp": rng.gamma(0.6, 5.0, (B, t)), "tmean": rng.normal(4.0, 9.0, (B, t)),
               "pet": rng.uniform(0.0, 4.0, (B, t))}
    forcing = {k: jnp.asarray(v, dtype) for k, v in forcing.items()}
    obs = jnp.asarray(rng.gamma(1.0, 1.5, (B, t)), dtype)
    xd, xs = _x(t, np.float64 if dtype == jnp.float64 else np.float32)
    batch = Arrays(forcing, xd, xs, obs, jnp.ones(B, dtype))
    dpl = DPL(HBV(), space)
    graphdef, state = nnx.split(net)
    flat, unravel = ravel_pytree(state)

    def f(v):
        q = simulate(dpl, NetworkSource(graphdef), unravel(v), batch, detach=detach).q
        return jnp.mean((q[:, 20:] - obs[:, 20:]) ** 2)

    return jax.jit(f), flat


@pytest.mark.parametrize("net_cls,input_size", [(LSTM, None), (LSTMMLP, None), (LSTMMLP, 3)])
def test_gradient_matches_finite_differences(net_cls, input_size):
    with jax.enable_x64(True):
        f, flat = _loss_fn(net_cls, 47, 0, input_size=input_size)
        g = np.asarray(jax.grad(f)(flat))
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
        assert_directional_derivatives(f, flat, g)


@pytest.mark.parametrize("detach", [20, 21, 3])  # inside a block, on a block's edge, before the first edge
def test_warmup_forward_only_keeps_the_values(detach):
    with jax.enable_x64(True):
        f0, flat = _loss_fn(LSTM, 47, 0)
        f1, _ = _loss_fn(LSTM, 47, detach)
        assert float(f1(flat)) == pytest.approx(float(f0(flat)), rel=1e-12)
        g1 = np.asarray(jax.grad(f1)(flat))
        assert np.all(np.isfinite(g1)) and np.abs(g1).max() > 0


def test_input_size_sets_the_input_layer_and_defaults_to_hidden():
    """net.input_size: the width of the linear+ReLU layer the gates read. null is the reference
    design (width = hidden, the same network and initial weights as before the option); another
    width changes the input layer and W_ih only, and bad widths are refused by name."""
    xd, xs = _x(30)
    a = LSTM(3, 4, 5, hidden=8, stride=7, rngs=nnx.Rngs(0))
    b = LSTM(3, 4, 5, hidden=8, stride=7, input_size=8, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(a(xd, xs)), np.asarray(b(xd, xs)))
    n = LSTM(3, 4, 5, hidden=8, stride=7, input_size=3, rngs=nnx.Rngs(0))
    assert n.inp.kernel.shape == (7 * 3 + 4, 3) and n.w_ih.shape == (3, 32) and n.w_hh.shape == (8, 32)
    raw = np.asarray(n(xd, xs))
    assert raw.shape == (B, 30, 5) and np.all(np.isfinite(raw))
    m = LSTMMLP(3, 4, 6, dynamic_columns=[1, 4], hidden=8, stride=7, input_size=3, rngs=nnx.Rngs(0))
    assert m.seq.w_ih.shape == (3, 32)
    for bad in (0, 2.5, True, -4):
        with pytest.raises(ValueError, match="input_size must be an integer >= 1 or null"):
            LSTM(3, 4, 5, hidden=8, input_size=bad, rngs=nnx.Rngs(0))
