"""HBV physics and maths: water balance, the plain-Python reference, gradients, batching."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpljax.models import HBV, hbv
from dpljax.models.hbv import Forcing
from reference_hbv import reference_hbv  # tests/reference_hbv.py: plain Python, from DESIGN.md

NAMES = hbv.PARAM_NAMES


def random_params(rng, n=None, capillary=False, precip=False):
    bounds = dict(hbv.BOUNDS, **(hbv.CAPILLARY_BOUNDS if capillary else {}),
                  **(hbv.PRECIP_BOUNDS if precip else {}))
    shape = () if n is None else (n,)
    return {k: rng.uniform(lo, hi, shape) for k, (lo, hi) in bounds.items()}


VARIANTS = {"plain": {}, "capillary": {"capillary": True},
            "precip_correction": {"capillary": True, "precip_correction": True}}


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_plain_python_reference(forcing10y, variant):
    prcp, tmean, pet = (a[6, :730] for a in forcing10y)  # 09081600: snowmelt-dominated
    opts = VARIANTS[variant]
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        for _ in range(3):
            p = random_params(rng, capillary=opts.get("capillary", False),
                              precip=opts.get("precip_correction", False))
            ref, ref_state, _ = reference_hbv(p, prcp, tmean, pet, **opts)
            out = hbv.run(p, prcp, tmean, pet, **opts)
            assert set(ref) == set(out.fluxes._fields)
            for k in ref:
                np.testing.assert_allclose(np.asarray(out.fluxes[k]), ref[k], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(np.asarray(out.state), ref_state, rtol=1e-9, atol=1e-12)


def test_hand_computed_first_day():
    p = {k: (lo + hi) / 2 for k, (lo, hi) in hbv.BOUNDS.items()}
    p.update(tt=0.0, fc=100.0, beta=2.0, lp=0.5, betaet=1.0, perc=1.0, uzl=10.0, k0=0.5, k1=0.1, k2=0.05)
    with jax.enable_x64(True):
        out = hbv.run(p, np.array([10.0]), np.array([5.0]), np.array([2.0]))
    s0 = 0.001
    # all rain; the initial 0.001 mm snowpack melts (cfmax*5 > 0.001) and, with no pack left
    # to hold it, goes to the soil with the 0.001 mm of initial meltwater; wet = (0.001/100)^2
    infil = 10.0 + 2 * s0
    recharge = infil * 1e-10
    sm = s0 + infil - recharge
    et = min(sm, 2.0 * min((sm / 50.0) ** 1.0, 1.0))
    suz = s0 + recharge
    perc = min(suz, 1.0)
    suz -= perc
    q1 = 0.1 * suz
    slz = s0 + perc
    q2 = 0.05 * slz
    np.testing.assert_allclose(float(out.q[0]), q1 + q2, rtol=1e-12)
    np.testing.assert_allclose(float(out.et[0]), et, rtol=1e-12)
    np.testing.assert_allclose(float(out.state.sm), sm - et, rtol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_water_balance_closes_over_ten_years(forcing10y, variant):
    prcp, tmean, pet = forcing10y
    opts = VARIANTS[variant]
    precip = opts.get("precip_correction", False)
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        run = jax.jit(jax.vmap(lambda p, a, b, c: hbv.run(p, a, b, c, **opts)))
        for _ in range(4):
            p = random_params(rng, prcp.shape[0], opts.get("capillary", False), precip)
            fluxes, state = run(p, prcp, tmean, pet)
            storage_change = sum(np.asarray(s) for s in state) - 5 * hbv.INITIAL_STORAGE
            if precip:  # rain (tmean >= tt) scaled by rfcf, snow by sfcf: computed here
                rain = tmean >= p["tt"][:, None]
                factor = np.where(rain, p["rfcf"][:, None], p["sfcf"][:, None])
                water_in = (prcp * factor).sum(axis=1)
                assert abs(water_in - prcp.sum(axis=1)).min() > 1.0  # the correction acts
                np.testing.assert_allclose(np.asarray(fluxes.prcp_in).sum(1), water_in, rtol=1e-9)
            else:
                water_in = prcp.sum(axis=1)
            water_out = np.asarray(fluxes.et).sum(1) + np.asarray(fluxes.q).sum(1) + storage_change
            assert prcp.shape[1] >= 3652
            np.testing.assert_allclose(water_out, water_in, rtol=1e-6)


def test_dynamic_constant_equals_static(forcing10y):
    prcp, tmean, pet = (a[0, :400] for a in forcing10y)
    p = random_params(np.random.default_rng(3))
    pd_ = dict(p, beta=np.full(400, p["beta"]), betaet=np.full(400, p["betaet"]))
    with jax.enable_x64(True):
        a = hbv.run(p, prcp, tmean, pet).q
        b = hbv.run(pd_, prcp, tmean, pet).q
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_vmap_over_basins_equals_loop(forcing10y):
    prcp, tmean, pet = (a[:, :500].astype(np.float32) for a in forcing10y)
    rng = np.random.default_rng(4)
    nmul = 3
    params = {k: rng.uniform(lo, hi, (prcp.shape[0], nmul)).astype(np.float32) for k, (lo, hi) in hbv.BOUNDS.items()}
    model = HBV()
    batched, _ = jax.jit(model.simulate)(params, Forcing(prcp, tmean, pet))
    one = jax.jit(lambda pp, a, b, c: hbv.run(pp, a, b, c).q)  # one basin, one component; compiled once
    for i in range(prcp.shape[0]):
        comps = [one({k: v[i, j] for k, v in params.items()}, prcp[i], tmean[i], pet[i])
                 for j in range(nmul)]
        np.testing.assert_allclose(batched["q"][i], np.mean(comps, axis=0), rtol=2e-5, atol=1e-6)


def test_remat_changes_nothing(forcing10y):
    prcp, tmean, pet = (a[1, :300] for a in forcing10y)
    p = random_params(np.random.default_rng(5))
    with jax.enable_x64(True):
        f = lambda remat: jax.grad(lambda fc: hbv.run(dict(p, fc=fc), prcp, tmean, pet, remat=remat).q.sum())(p["fc"])
        np.testing.assert_allclose(f(True), f(False), rtol=1e-12)


def test_gradient_matches_finite_differences(forcing10y):
    prcp, tmean, pet = (a[6, :365] for a in forcing10y)
    rng = np.random.default_rng(6)
    p = random_params(rng)
    p["tt"] = 0.3  # away from any day's tmean so the hard phase switch is not crossed by FD
    with jax.enable_x64(True):
        def loss(vec):
            out = hbv.run(dict(zip(NAMES, vec)), prcp, tmean, pet)
            return jnp.mean((out.q - 1.0) ** 2) + 0.1 * jnp.mean(out.et)

        x = jnp.array([p[k] for k in NAMES])
        g = np.asarray(jax.grad(loss)(x))
        loss = jax.jit(loss)  # the finite differences: one compiled forward run, 26 calls
        for i, k in enumerate(NAMES):
            lo, hi = hbv.BOUNDS[k]
            h = 1e-6 * (hi - lo)
            e = np.zeros(len(NAMES))
            e[i] = h
            fd = (float(loss(x + e)) - float(loss(x - e))) / (2 * h)
            assert np.isclose(g[i], fd, rtol=1e-4, atol=1e-9), (k, g[i], fd)


def _grads(p, prcp, tmean, pet):
    def loss(pp):
        out = hbv.run(pp, prcp, tmean, pet)
        return jnp.sum(out.q) + jnp.sum(out.et) + jnp.sum(jnp.stack(jax.tree.leaves(out.state)))

    return jax.grad(loss)(p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["real", "zero_prcp", "all_snow", "dry_soil"])
def test_gradients_finite_on_and_inside_bounds(forcing10y, dtype, case):
    prcp, tmean, pet = (a[4, :730].astype(dtype) for a in forcing10y)
    if case == "zero_prcp":
        prcp = np.zeros_like(prcp)
    elif case == "all_snow":
        tmean = np.full_like(tmean, -15.0)
    elif case == "dry_soil":
        prcp, pet = np.zeros_like(prcp), np.full_like(pet, 15.0)
    rng = np.random.default_rng(7)
    corners = [{k: lo for k, (lo, hi) in hbv.BOUNDS.items()}, {k: hi for k, (lo, hi) in hbv.BOUNDS.items()}]
    corners += [{k: (lo, hi)[rng.integers(2)] for k, (lo, hi) in hbv.BOUNDS.items()} for _ in range(4)]
    corners += [random_params(rng)]
    with jax.enable_x64(dtype == np.float64):
        f = jax.jit(_grads)
        for p in corners:
            g = f({k: jnp.asarray(v, dtype) for k, v in p.items()}, prcp, tmean, pet)
            for k, v in g.items():
                assert np.all(np.isfinite(np.asarray(v))), (case, k, p)


def test_dry_soil_stays_at_floor_without_nan():
    T = 200
    p = {k: lo for k, (lo, hi) in hbv.BOUNDS.items()}
    out = hbv.run(p, np.zeros(T, np.float32), np.full(T, 20.0, np.float32), np.full(T, 10.0, np.float32))
    assert float(out.state.sm) == pytest.approx(hbv.SM_FLOOR, rel=1e-3)
    assert np.all(np.isfinite(out.q)) and np.all(np.asarray(out.q) >= 0)


def test_run_rejects_bad_params():
    x = np.zeros(5, np.float32)
    p = {k: 1.0 for k in NAMES if k != "fc"}
    with pytest.raises(KeyError, match="missing \\['fc'\\]"):
        hbv.run(p, x, x, x)
    with pytest.raises(ValueError, match="shape"):
        hbv.run(dict(p, fc=np.ones(3)), x, x, x)


def test_output_access_styles(forcing10y):
    prcp, tmean, pet = (a[0, :50] for a in forcing10y)
    p = random_params(np.random.default_rng(8))
    out = hbv.run(p, prcp, tmean, pet)
    fluxes, state = out
    assert out.q is fluxes.q and out["q"] is fluxes["q"]
    assert set(fluxes._fields) == {"q", "q0", "q1", "q2", "et", "prcp_in"}
    np.testing.assert_array_equal(fluxes.prcp_in, prcp)  # no correction: the forcing itself
    np.testing.assert_allclose(fluxes.q, fluxes.q0 + fluxes.q1 + fluxes.q2, rtol=1e-6)
    assert state.sm.shape == ()
