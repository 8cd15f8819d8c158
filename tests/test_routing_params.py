"""Unit hydrograph, routing and the parameter space."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpljax.models import hbv
from dpljax.models.routing import BOUNDS as RB, route, unit_hydrograph
from dpljax.params import ParameterSpace


@pytest.mark.parametrize("a,b", [(0.0, 0.0), (2.9, 6.5), (0.0, 6.5), (2.9, 0.0), (1.3, 2.2), (-1.0, -1.0)])
def test_unit_hydrograph_sums_to_one(a, b):
    w = unit_hydrograph(jnp.array(a), jnp.array(b))
    assert w.shape == (15,)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.asarray(w) >= 0)


def test_unit_hydrograph_is_gamma_density():
    a, b = 1.7, 2.4
    alpha, theta = a + 0.1, b + 0.5
    t = np.arange(15) + 0.5
    w = t ** (alpha - 1) * np.exp(-t / theta)
    with jax.enable_x64(True):
        np.testing.assert_allclose(unit_hydrograph(jnp.array(a), jnp.array(b)), w / w.sum(), rtol=1e-12)


def test_routing_is_causal_and_conserves_mass():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        w = unit_hydrograph(jnp.array([0.5, 2.0]), jnp.array([3.0, 1.0]))
        q = np.zeros((2, 100))
        q[:, :80] = rng.gamma(0.6, 2.0, (2, 80))  # >= 14 zero days at the end: all water leaves
        Q = np.asarray(route(jnp.asarray(q), w))
        np.testing.assert_allclose(Q.sum(1), q.sum(1), rtol=1e-12)
        impulse = np.zeros((2, 30))
        impulse[:, 5] = 1.0
        R = np.asarray(route(jnp.asarray(impulse), w))
        assert np.all(R[:, :5] == 0)  # nothing arrives before the rain
        np.testing.assert_allclose(R[:, 5:20], np.asarray(w), rtol=1e-12)


def test_routing_gradients_finite_on_bounds():
    q = jnp.asarray(np.random.default_rng(1).gamma(0.5, 2.0, 60))
    for a in RB["route_a"]:
        for b in RB["route_b"]:
            g = jax.grad(lambda ab: route(q, unit_hydrograph(ab[0], ab[1])).sum() + route(q, unit_hydrograph(ab[0], ab[1]))[10])(jnp.array([a, b]))
            assert np.all(np.isfinite(g))


def test_parameter_space_layout_and_bounds():
    space = ParameterSpace(hbv.BOUNDS, nmul=4, dynamic=("beta", "betaet"), routing_bounds=RB)
    assert space.n_outputs == 13 * 4 + 2
    raw = jnp.asarray(np.random.default_rng(2).normal(0, 5, (3, 10, space.n_outputs)))
    p, r = space.to_physical(raw)
    for k, (lo, hi) in hbv.BOUNDS.items():
        want = (3, 10, 4) if k in ("beta", "betaet") else (3, 4)
        assert p[k].shape == want
        assert np.all((np.asarray(p[k]) >= lo) & (np.asarray(p[k]) <= hi))
    assert r["route_a"].shape == (3,)
    # static parameters come from the last step
    np.testing.assert_allclose(p["fc"], 50 + jax.nn.sigmoid(raw[:, -1, 4:8]) * 950, rtol=1e-6)
    # extreme raw values give exactly the bounds, never beyond
    p_hi, _ = space.to_physical(jnp.full((1, 2, space.n_outputs), 1e4))
    assert float(p_hi["fc"].max()) == pytest.approx(1000.0)


def test_parameter_space_errors():
    with pytest.raises(ValueError, match="lower bound"):
        ParameterSpace({"a": (1.0, 1.0)})
    with pytest.raises(ValueError, match="not parameters"):
        ParameterSpace(hbv.BOUNDS, dynamic=("nope",))
    space = ParameterSpace(hbv.BOUNDS, nmul=2, dynamic=("beta",))
    with pytest.raises(ValueError, match="sequence network"):
        space.to_physical(jnp.zeros((2, space.n_outputs)))
    with pytest.raises(ValueError, match="emits"):
        space.to_physical(jnp.zeros((2, 5, 3)))


def test_to_raw_inverts_scaling():
    space = ParameterSpace(hbv.BOUNDS, nmul=1)
    vals = {k: lo + 0.3 * (hi - lo) for k, (lo, hi) in hbv.BOUNDS.items()}
    raw = space.to_raw(vals)
    p, _ = space.to_physical(jnp.stack([raw[k] for k in hbv.BOUNDS])[None, :])
    for k in hbv.BOUNDS:
        assert float(p[k][0, 0]) == pytest.approx(vals[k], rel=1e-5)
