"""The dPL composition: gradients through network -> HBV -> routing -> loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_directional_derivatives
from flax import nnx
from jax.flatten_util import ravel_pytree

from dpljax.data import Arrays
from dpljax import DPL, HBV, LSTM, MLP, ParameterSpace, RMSECombined
from dpljax.dpl import NetworkSource, simulate
from dpljax.models.routing import BOUNDS as RB


def _batch(sample, n_days=240, dtype=np.float64):
    sub = sample.isel(basin=[0, 4, 6]).sel(time=slice("1995-10-01", None)).isel(time=slice(0, n_days))
    tmean = (sub.tmax + sub.tmin) / 2
    forcing = {"prcp": sub.prcp.values.astype(dtype), "tmean": tmean.values.astype(dtype),
               "pet": sub.pet.values.astype(dtype)}
    rng = np.random.default_rng(0)
    x_dyn = rng.normal(size=(3, n_days, 3)).astype(dtype)
    x_static = rng.normal(size=(3, 5)).astype(dtype)
    return x_dyn, x_static, forcing, sub.streamflow.values.astype(dtype)


@pytest.mark.parametrize("net_cls,dynamic,opts", [
    (MLP, (), {}), (LSTM, ("beta", "betaet"), {}),
    (LSTM, ("beta", "sfcf"), {"capillary": True, "precip_correction": True})])
def test_grad_wrt_network_matches_finite_differences(sample, net_cls, dynamic, opts):
    with jax.enable_x64(True):
        x_dyn, x_static, forcing, obs = _batch(sample)
        model = HBV(**opts)
        space = ParameterSpace(model.bounds, nmul=2, dynamic=dynamic, routing_bounds=RB)
        dpl = DPL(model, space)
        kw = {"hidden": [8]} if net_cls is MLP else {"hidden": 6, "dropout": 0.0}
        net = net_cls(3, 5, space.n_outputs, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **kw)
        graphdef, state = nnx.split(net)
        flat, unravel = ravel_pytree(state)
        loss = RMSECombined()

        @jax.jit
        def f(v):
            batch = Arrays(forcing, x_dyn, x_static, obs, np.ones(3))
            q = simulate(dpl, NetworkSource(graphdef), unravel(v), batch).q
            return loss(q[:, 60:], obs[:, 60:])

        g = np.asarray(jax.grad(f)(flat))
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
        assert_directional_derivatives(f, flat, g)


def test_grad_wrt_physical_parameters_matches_finite_differences(sample):
    with jax.enable_x64(True):
        _, _, forcing, obs = _batch(sample, 365)
        model = HBV()
        names = list(model.bounds)
        rng = np.random.default_rng(2)
        base = {k: rng.uniform(lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo), (3, 2)) for k, (lo, hi) in model.bounds.items()}
        base["tt"] = np.full((3, 2), 0.31)

        def f(vec):
            p = {k: base[k] * vec[i] for i, k in enumerate(names)}
            fl, _ = model.simulate(p, forcing)
            return RMSECombined()(fl["q"][:, 30:], obs[:, 30:])

        x = jnp.ones(len(names))
        g = np.asarray(jax.grad(f)(x))
        f = jax.jit(f)  # the finite differences: one compiled forward run, 26 calls
        for i, k in enumerate(names):
            e = np.zeros(len(names))
            e[i] = 1e-6
            fd = (float(f(x + e)) - float(f(x - e))) / 2e-6
            assert np.isclose(g[i], fd, rtol=2e-4, atol=1e-9), (k, g[i], fd)


def test_dynamic_parameters_vary_in_time(sample):
    x_dyn, x_static, forcing, _ = _batch(sample, 100, np.float32)
    space = ParameterSpace(HBV().bounds, nmul=2, dynamic=("beta",), routing_bounds=RB)
    net = LSTM(3, 5, space.n_outputs, hidden=8, dropout=0.0, rngs=nnx.Rngs(0))
    aux = DPL(HBV(), space)(net, x_dyn, x_static, forcing, return_all=True)
    assert aux.q.shape == (3, 100)
    assert aux.params["beta"].shape == (3, 100, 2) and aux.params["fc"].shape == (3, 2)
    assert float(jnp.std(aux.params["beta"], axis=1).max()) > 0


def test_a_per_basin_table_drives_the_chain_without_a_network(sample):
    """Calibration's set-up: raw parameters from a table, one row per basin, no network; the
    per-basin loss gives each row a gradient from its own basin alone, and the chain gives
    the same streamflow as a network emitting the same raw values."""
    from dpljax.dpl import TableSource

    with jax.enable_x64(True):
        x_dyn, x_static, forcing, obs = _batch(sample, 200)
        dpl = DPL.of(HBV(), nmul=1)
        rng = np.random.default_rng(3)
        theta = jnp.asarray(rng.normal(size=(3, dpl.space.n_outputs)))
        batch = Arrays(forcing, x_dyn, x_static, obs, np.nanstd(obs, axis=1))
        res = simulate(dpl, TableSource(), theta, batch)
        assert res.q.shape == (3, 200) and res.params["fc"].shape == (3, 1)
        assert set(res.routing) == {"route_a", "route_b"}
        np.testing.assert_allclose(res.q, dpl.from_raw(theta, forcing).q, rtol=1e-12)
        loss = RMSECombined()
        g = jax.jit(jax.jacrev(lambda t: loss.per_basin(simulate(dpl, TableSource(), t, batch).q[:, 30:],
                                                        jnp.asarray(obs[:, 30:]))))(theta)  # (3, 3, n)
        for i in range(3):
            for j in range(3):
                assert (np.abs(np.asarray(g[i, j])).max() > 0) == (i == j), (i, j)
