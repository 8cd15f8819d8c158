"""net.cell=gru: a gated recurrent unit in place of the LSTM cell.

The recurrence has a hand-written backward pass (as the LSTM's): its values and every
cotangent (gates, W_hh, b_hn, the start state) are checked against JAX's autodiff of a plain
loop written here from the equations; the whole network's gradient against finite
differences, with and without the warm-up run forward only, at a stride whose blocks do not
divide the sequence; and the option through the config to a short fit that learns."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_directional_derivatives, short_fit_learns, small_config
from flax import nnx

from dpljax import ConfigError, build
from dpljax.nets import LSTM, LSTMMLP
from dpljax.nets.lstm import gru_recurrence

B, H, T = 3, 5, 11


def _reference(gates_x, w_hh, b_hn, h0):
    """The GRU from its equations (gate order r, z, n), a Python loop autodiff goes through."""
    h, hs = h0, []
    for gx in gates_x:
        gh = h @ w_hh
        r = 1.0 / (1.0 + jnp.exp(-(gx[:, :H] + gh[:, :H])))
        z = 1.0 / (1.0 + jnp.exp(-(gx[:, H:2 * H] + gh[:, H:2 * H])))
        n = jnp.tanh(gx[:, 2 * H:] + r * (gh[:, 2 * H:] + b_hn))
        h = (1.0 - z) * n + z * h
        hs.append(h)
    return h, jnp.stack(hs)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(T, B, 3 * H))), jnp.asarray(rng.normal(size=(H, 3 * H)) * 0.6),
            jnp.asarray(rng.normal(size=(H,))), jnp.asarray(rng.normal(size=(B, H)) * 0.5))


def test_recurrence_values_and_every_cotangent_match_autodiff_of_the_equations():
    with jax.enable_x64(True):
        args = _inputs()
        w_h, w_hs = jnp.asarray(np.random.default_rng(1).normal(size=(B, H))), \
            jnp.asarray(np.random.default_rng(2).normal(size=(T, B, H)))

        def loss(fn):
            def f(*a):
                h, hs = fn(*a)
                return jnp.sum(w_h * h) + jnp.sum(w_hs * hs ** 2)  # both outputs carry a cotangent
            return f

        h, hs = gru_recurrence(*args)
        h_ref, hs_ref = _reference(*args)
        np.testing.assert_allclose(np.asarray(hs), np.asarray(hs_ref), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(h), np.asarray(h_ref), rtol=1e-12, atol=1e-12)
        got = jax.grad(loss(gru_recurrence), argnums=(0, 1, 2, 3))(*args)
        want = jax.grad(loss(_reference), argnums=(0, 1, 2, 3))(*args)
        for name, g, w in zip(("gates_x", "w_hh", "b_hn", "h0"), got, want):
            assert np.abs(np.asarray(w)).max() > 1e-3, name  # each cotangent is exercised
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-10, atol=1e-12, err_msg=name)


def test_mixed_precision_recurrence_stays_close_to_float32():
    args = tuple(a.astype(jnp.float32) for a in _inputs(3))
    f = lambda *a, dt=None: jnp.sum(gru_recurrence(*a, dt)[1] ** 2)  # noqa: E731
    v32, g32 = jax.value_and_grad(f, argnums=(0, 1, 2, 3))(*args)
    v16, g16 = jax.value_and_grad(lambda *a: f(*a, dt="bfloat16"), argnums=(0, 1, 2, 3))(*args)
    assert float(v16) == pytest.approx(float(v32), rel=3e-2)
    for a, b in zip(g32, g16):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 0.05 * np.abs(np.asarray(a)).max()


def _net_loss(net_cls, detach, stride=4):
    from jax.flatten_util import ravel_pytree

    kw = {"dynamic_columns": [1, 4], "mlp_hidden": (6,)} if net_cls is LSTMMLP else {}
    net = net_cls(3, 4, 6, hidden=H, dropout=0.0, stride=stride, cell="gru", param_dtype=jnp.float64,
                  rngs=nnx.Rngs(2), **kw)
    rng = np.random.default_rng(5)
    xd, xs = jnp.asarray(rng.normal(size=(B, 23, 3))), jnp.asarray(rng.normal(size=(B, 4)))
    target = jnp.asarray(rng.normal(size=(B, 23, 6)))
    graphdef, state = nnx.split(net)
    flat, unravel = ravel_pytree(state)

    def f(v):
        out = nnx.merge(graphdef, unravel(v))(xd, xs, detach=detach)
        return jnp.mean((jnp.tanh(out[:, 9:]) - target[:, 9:]) ** 2)

    return jax.jit(f), flat


@pytest.mark.parametrize("net_cls", [LSTM, LSTMMLP])
def test_network_gradient_matches_finite_differences_and_detach_keeps_the_values(net_cls):
    """23 days at stride 4 (one padded day). Without detach the gradient is the loss's own
    (finite differences); with the warm-up forward only (detach inside a block) the loss is the
    same and its gradient a different, finite one (the warm-up is a constant)."""
    with jax.enable_x64(True):
        f0, flat = _net_loss(net_cls, 0)
        g0 = np.asarray(jax.grad(f0)(flat))
        assert np.all(np.isfinite(g0)) and np.abs(g0).max() > 0
        assert_directional_derivatives(f0, flat, g0)
        f9, _ = _net_loss(net_cls, 9)
        g9 = np.asarray(jax.grad(f9)(flat))
        assert float(f9(flat)) == pytest.approx(float(f0(flat)), rel=1e-12)
        assert np.all(np.isfinite(g9)) and np.abs(g9).max() > 0 and not np.allclose(g0, g9, rtol=1e-6)


def test_gru_has_three_gates_and_bad_cells_are_refused():
    n = LSTM(3, 4, 5, hidden=8, stride=7, cell="gru", rngs=nnx.Rngs(0))
    assert n.w_ih.shape == (8, 24) and n.w_hh.shape == (8, 24) and n.b_hn.shape == (8,)
    assert LSTM(3, 4, 5, hidden=8, rngs=nnx.Rngs(0)).w_hh.shape == (8, 32)  # the default stays the LSTM
    for bad in ("GRU", "rnn", None):
        with pytest.raises(ValueError, match="cell must be one of"):
            LSTM(3, 4, 5, hidden=8, cell=bad, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="cell must be one of"):
        build(small_config(model={"dynamic": ["beta"]}, net={"name": "lstm_mlp", "hidden": 8, "cell": "rnn"})).make_net(3, 5)


def test_a_short_fit_learns_on_the_sample(sample):
    short_fit_learns(sample, small_config(model={"dynamic": ["beta", "betaet"]}, optim={"learning_rate": 1e-2},
                                          net={"name": "lstm_mlp", "hidden": 16, "mlp_hidden": [32], "dropout": 0.0,
                                               "cell": "gru", "stride": 7}))
