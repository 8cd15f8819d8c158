"""Hypothesis-drawn days of HBV from drawn states: ``hbv.run`` on a day (or three) started from
a given state equals the plain-Python reference started from it at 1e-9, with parameters
anywhere inside their bounds and a soil possibly above fc; and the gradient of the day through
``hbv.run`` (its hand-written adjoint) equals central finite differences of the reference
wherever no branch of the day changes within the difference step."""
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dpljax.models import hbv
from reference_hbv import FLUXES, SM_FLOOR, reference_hbv

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)
ALL_BOUNDS = {**hbv.BOUNDS, **hbv.CAPILLARY_BOUNDS}


def within(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


params_st = st.fixed_dictionaries({k: within(lo, hi) for k, (lo, hi) in ALL_BOUNDS.items()})
# sm as a fraction of fc (up to 1.6 fc: a soil above field capacity, as after capillary rise);
# never below the 1e-5 mm floor that every day of a run leaves it at.
state_st = st.tuples(within(0.0, 300.0), within(0.0, 60.0), within(0.0, 1.6),
                     within(0.0, 300.0), within(0.0, 300.0))
day_st = st.tuples(within(0.0, 100.0), within(-20.0, 30.0), within(0.0, 15.0))


def _state(s, fc):
    snowpack, meltwater, sm_frac, suz, slz = s
    return (snowpack, meltwater, max(sm_frac * fc, SM_FLOOR), suz, slz)


def _active(p, capillary):
    return {k: v for k, v in p.items() if capillary or k != "c"}


def _run(p, forcing, state, capillary):
    out = hbv.run(p, *forcing, state=state, capillary=capillary)
    return out.fluxes, out.state


_run_jit = jax.jit(_run, static_argnums=3)
WEIGHTS = np.arange(1.0, 11.0)  # distinct weights for the 5 fluxes and the 5 final stores


def _total(fluxes, state):
    return sum(w * v for w, v in zip(WEIGHTS, [fluxes[k] for k in FLUXES] + list(state)))


@jax.jit
def _grad_day(p, forcing, state):
    def total(p):
        fluxes, final = _run(p, forcing, state, "c" in p)
        return _total({k: getattr(fluxes, k)[0] for k in FLUXES}, final)

    return jax.grad(total)(p)


def _ref_total(p, day, state, capillary):
    ref = reference_hbv(p, *([v] for v in day), state=state, capillary=capillary)
    return _total({k: v[0] for k, v in ref.fluxes.items()}, ref.state), ref.counts


@SETTINGS
@given(p=params_st, s=state_st, days=st.lists(day_st, min_size=1, max_size=3), capillary=st.booleans())
def test_days_from_any_state_match_reference(p, s, days, capillary):
    p = _active(p, capillary)
    state = _state(s, p["fc"])
    forcing = tuple(np.array(v, np.float64) for v in zip(*days))
    ref = reference_hbv(p, *forcing, state=state, capillary=capillary)
    with jax.enable_x64(True):
        fluxes, final = _run_jit({k: jnp.float64(v) for k, v in p.items()},
                                 tuple(map(jnp.asarray, forcing)), tuple(map(jnp.float64, state)),
                                 capillary)
    for k in FLUXES:
        np.testing.assert_allclose(np.asarray(getattr(fluxes, k)), ref.fluxes[k], rtol=1e-9,
                                   atol=1e-10, err_msg=k)
    np.testing.assert_allclose([float(v) for v in final], ref.state, rtol=1e-9, atol=1e-10)
