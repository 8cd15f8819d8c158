"""Property-based tests (hypothesis) of one HBV day: for any non-negative storages, forcing
with prcp >= 0 and pet >= 0, any temperature, and parameters anywhere inside their bounds,
one step conserves water (up to the 1e-5 mm floor on soil moisture), keeps every store and
flux non-negative, and has finite gradients; so does a short run through the production
(custom-gradient) path."""
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dpljax.models import hbv
from dpljax.models.hbv import Forcing

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
STORES = {"snowpack": 1000.0, "meltwater": 200.0, "sm": 1500.0, "suz": 500.0, "slz": 1000.0}


def within(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


params_st = st.fixed_dictionaries({k: within(lo, hi) for k, (lo, hi) in
                                   {**hbv.BOUNDS, **hbv.CAPILLARY_BOUNDS,
                                    **hbv.PRECIP_BOUNDS}.items()})
state_st = st.fixed_dictionaries({k: within(0.0, hi) for k, hi in STORES.items()})
forcing_st = st.tuples(within(0.0, 300.0), within(-50.0, 50.0), within(0.0, 30.0))


def _day(p, s, x, capillary, precip=False):
    new, f = hbv.step(hbv.HBVParams(**p), hbv.HBVState(**s), Forcing(*x), capillary=capillary,
                      precip_correction=precip)
    return new, f


_day_jit = jax.jit(_day, static_argnums=(3, 4))


@jax.jit
def _day_grads(p, s, x):
    def total(p, s, x):
        new, f = _day(p, s, x, True, True)
        w = jnp.arange(1.0, 7.0)  # distinct weights, so no cancellation hides a NaN
        return jnp.sum(w[:5] * jnp.stack(list(new))) + jnp.sum(w * jnp.stack(list(f)))

    return jax.grad(total, argnums=(0, 1, 2))(p, s, x)


def _f64(tree):
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), tree)


@SETTINGS
@given(p=params_st, s=state_st, x=forcing_st, capillary=st.booleans(), precip=st.booleans())
def test_one_day_conserves_water_and_stays_non_negative(p, s, x, capillary, precip):
    if not capillary:
        p = {**p, "c": 0.0}
    if not precip:
        p = {**p, "rfcf": 1.0, "sfcf": 1.0}
    with jax.enable_x64(True):
        new, f = _day_jit(_f64(p), _f64(s), _f64(x), capillary, precip)
        new = {k: float(v) for k, v in new._asdict().items()}
        f = {k: float(v) for k, v in f._asdict().items()}
    for k, v in {**new, **f}.items():
        assert np.isfinite(v) and v >= 0.0, (k, v)
    assert new["sm"] >= hbv.SM_FLOOR * (1 - 1e-12)
    assert abs(f["q"] - (f["q0"] + f["q1"] + f["q2"])) <= 1e-12 * (1 + f["q"])
    storage_in, storage_out = sum(s.values()), sum(new.values())
    water_in = x[0] * (p["rfcf"] if x[1] >= p["tt"] else p["sfcf"])  # rain or snow, corrected
    assert abs(f["prcp_in"] - water_in) <= 1e-12 * (1.0 + water_in)
    residual = water_in - f["q"] - f["et"] - (storage_out - storage_in)  # in = q + et + change
    tol = 1e-11 * (1.0 + storage_in + water_in)
    # The only source of water is the floor that keeps sm >= 1e-5 mm after ET.
    assert -hbv.SM_FLOOR - tol <= residual <= tol, residual


@SETTINGS
@given(p=params_st, s=state_st, x=forcing_st)
def test_one_day_gradients_are_finite(p, s, x):
    with jax.enable_x64(True):
        grads = _day_grads(_f64(p), _f64(s), _f64(x))
    for g in jax.tree.leaves(grads):
        assert np.isfinite(np.asarray(g)).all()


@jax.jit
def _run_grads(p, prcp, tmean, pet):
    def total(p, prcp, tmean, pet):
        fluxes, final = hbv.run(p, prcp, tmean, pet)
        return jnp.sum(fluxes.q) + jnp.sum(fluxes.et) + sum(jnp.sum(v) for v in final)

    return jax.value_and_grad(total, argnums=(0, 1, 2, 3))(p, prcp, tmean, pet)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(p=st.fixed_dictionaries({k: within(lo, hi) for k, (lo, hi) in hbv.BOUNDS.items()}),
       x=st.lists(forcing_st, min_size=6, max_size=6))
def test_short_run_gradients_are_finite(p, x):
    prcp, tmean, pet = (np.array(c, dtype=np.float64) for c in zip(*x))
    with jax.enable_x64(True):
        value, grads = _run_grads(_f64(p), prcp, tmean, pet)
    assert np.isfinite(float(value))
    for g in jax.tree.leaves(grads):
        assert np.isfinite(np.asarray(g)).all()
