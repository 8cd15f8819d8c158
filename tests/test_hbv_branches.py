"""HBV against the plain-Python reference on every sample basin over ten years, with inputs
chosen so that every branch of the day (each min, max and clip of DESIGN.md's equations) fires
on many days: a change to the physics that the water balance does not see (water sent to the
wrong store, a limit dropped) changes some flux or final store here by far more than 1e-9.

Each case is one parameter set per basin (targeted values, or random within bounds), a
transformation of the basins' real forcing, and the model options; ``targets`` are the
branches that case exists for, each of which must fire on >= MIN_DAYS days in every basin.
The counts are printed (``pytest -s``) and every branch must fire on >= MIN_DAYS days of every
basin over all cases (the capillary branches over the capillary cases).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import jax
import numpy as np
import pytest

from dpljax.models import hbv
from reference_hbv import BRANCHES, reference_hbv

MIN_DAYS = 20
CAPILLARY_ONLY = ("cap", "cap_slz_limited", "cap_soil_full")
RTOL, ATOL = 1e-9, 1e-12

# Small fc with beta near 1, lp = 1 and betaet < 1: the soil dries to the floor, ET limited
# by soil moisture; small uzl, percolation often limited by suz.
DRY = dict(beta=1.0, fc=60.0, k0=0.6, k1=0.1, k2=0.05, lp=1.0, perc=3.0, uzl=3.0, tt=1.0,
           cfmax=3.0, cfr=0.1, cwh=0.2, betaet=0.3)
# Large beta (rain stays in the soil) with fc at its minimum and ET weak below fc: the soil
# fills and overflows; uzl = 1 mm and k0 = 0.5, so the fast flow runs on many days.
WET = dict(DRY, beta=6.0, fc=50.0, lp=0.9, betaet=5.0, uzl=1.0, k0=0.5, perc=1.0)
# Threshold high, strong refreezing; fast melt (whole packs melt on warm days) or slow melt
# with a pack that holds little liquid (all of it refreezes on cold days).
SNOW_MELT = dict(DRY, tt=2.5, cfmax=10.0, cfr=0.1, cwh=0.05)
SNOW_REFREEZE = dict(DRY, tt=2.5, cfmax=2.0, cfr=0.1, cwh=0.02)
# c = 1 with a slow, large lower zone (k2 at its minimum, perc at its maximum): capillary rise
# pushes the soil above fc (slz > fc), so the next day starts above fc (wet clipped).
CAPILLARY = dict(DRY, c=1.0, k2=0.001, perc=10.0, fc=50.0, beta=3.0)


def _real(prcp, tmean, pet):
    return prcp, tmean, pet


def _colder(prcp, tmean, pet):
    """7 degC colder: snow, refreezing and a melt season in every basin, Texas included."""
    return prcp, tmean - 7.0, pet


def _no_pet_on_wet_days(prcp, tmean, pet):
    """No ET on days of >= 5 mm of rain: a soil that overflows stays at fc (no capillary rise
    into a full soil)."""
    return prcp, tmean, np.where(prcp >= 5.0, 0.0, pet)


def _random(seed, capillary=False):
    def draw(n_basins, n_days):
        rng = np.random.default_rng(seed)
        bounds = dict(hbv.BOUNDS, **(hbv.CAPILLARY_BOUNDS if capillary else {}))
        return [{k: rng.uniform(lo, hi) for k, (lo, hi) in bounds.items()} for _ in range(n_basins)]

    return draw


def _same(p):
    return lambda n_basins, n_days: [dict(p) for _ in range(n_basins)]


def _dynamic(seed):
    """Random static parameters, with beta, betaet and k0 following a seasonal cycle within
    their bounds (the reference's time-varying set)."""
    def draw(n_basins, n_days):
        rng = np.random.default_rng(seed)
        sets = _random(seed)(n_basins, n_days)
        t = np.arange(n_days)
        for p in sets:
            for k in ("beta", "betaet", "k0"):
                lo, hi = hbv.BOUNDS[k]
                p[k] = lo + (hi - lo) * (0.5 + 0.45 * np.sin(2 * np.pi * t / 365.25 + rng.uniform(0, 6.3)))
        return sets

    return draw


@dataclass(frozen=True)
class Case:
    name: str
    params: Callable  # (n_basins, n_days) -> list of parameter dicts, one per basin
    forcing: Callable = _real
    capillary: bool = False
    smooth_phase: float = 0.0
    targets: tuple = field(default=())


CASES = [
    Case("random", _random(10)),
    Case("random_capillary", _random(11, capillary=True), capillary=True, targets=("cap",)),
    Case("dynamic", _dynamic(12)),
    Case("smooth_phase", _random(13), smooth_phase=1.0),
    Case("dry", _same(DRY),
         targets=("et_soil_limited", "sm_floor", "et_below_potential", "perc_suz_limited",
                  "perc_param_limited", "fast_flow")),
    Case("wet", _same(WET), targets=("excess", "ef_clipped", "fast_flow", "perc_param_limited")),
    Case("snow_melt", _same(SNOW_MELT), _colder,
         targets=("rain", "snow", "melt_limited", "melt_unlimited", "refreeze", "tosoil")),
    Case("snow_refreeze", _same(SNOW_REFREEZE), _colder,
         targets=("snow", "melt_unlimited", "refreeze", "refreeze_limited", "tosoil")),
    Case("capillary", _same(CAPILLARY), _no_pet_on_wet_days, capillary=True,
         targets=("cap", "cap_soil_full", "wet_clipped", "excess", "ef_clipped")),
    # c = 1.5 is beyond CAPILLARY_BOUNDS on purpose: with c <= 1 and sm >= 1e-5 the rise
    # c*slz*(1 - sm/fc) is always below slz, so its min with slz could never be reached.
    Case("capillary_beyond_bounds", _same(dict(CAPILLARY, c=1.5, k2=0.05, perc=3.0)),
         capillary=True, targets=("cap", "cap_slz_limited")),
]


@pytest.fixture(scope="module")
def cases(forcing10y):
    """For each case: (params per basin, forcing, reference results per basin)."""
    out = {}
    n_basins, n_days = forcing10y[0].shape
    for case in CASES:
        prcp, tmean, pet = case.forcing(*forcing10y)
        sets = case.params(n_basins, n_days)
        refs = [reference_hbv(sets[i], prcp[i], tmean[i], pet[i], capillary=case.capillary,
                              smooth_phase=case.smooth_phase) for i in range(n_basins)]
        out[case.name] = (sets, (prcp, tmean, pet), refs)
    return out


_RUNS = {}


def _batched_run(capillary, smooth_phase):
    key = (capillary, smooth_phase)
    if key not in _RUNS:
        _RUNS[key] = jax.jit(jax.vmap(lambda p, a, b, c: hbv.run(
            p, a, b, c, capillary=capillary, smooth_phase=smooth_phase)))
    return _RUNS[key]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_reference_on_every_basin(cases, case):
    sets, (prcp, tmean, pet), refs = cases[case.name]
    params = {k: np.stack([np.asarray(p[k], np.float64) for p in sets]) for k in sets[0]}
    with jax.enable_x64(True):
        fluxes, state = _batched_run(case.capillary, case.smooth_phase)(params, prcp, tmean, pet)
    for i, ref in enumerate(refs):
        for k, want in ref.fluxes.items():
            np.testing.assert_allclose(np.asarray(getattr(fluxes, k)[i]), want, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{case.name}, basin {i}, flux {k}")
        got = [float(s[i]) for s in state]
        np.testing.assert_allclose(got, ref.state, rtol=RTOL, atol=ATOL,
                                   err_msg=f"{case.name}, basin {i}, final state")


def _table(cases):
    lines = [f"{'branch':20s} " + " ".join(f"{c.name[:9]:>9s}" for c in CASES) + "   min/basin"]
    for b in BRANCHES:
        per_case = [[r.counts[b] for r in cases[c.name][2]] for c in CASES]
        lines.append(f"{b:20s} " + " ".join(f"{min(x):9d}" for x in per_case)
                     + f"   {min(np.sum(per_case, axis=0)):6d}")
    return "\n".join(lines)


def test_every_branch_fires_on_many_days_in_every_basin(cases):
    print("\nfewest days per basin on which each branch fires, per case:\n" + _table(cases))
    for case in CASES:
        for b in case.targets:
            days = [r.counts[b] for r in cases[case.name][2]]
            assert min(days) >= MIN_DAYS, (case.name, b, days)
    for b in BRANCHES:
        pool = [c for c in CASES if c.capillary or b not in CAPILLARY_ONLY]
        days = np.sum([[r.counts[b] for r in cases[c.name][2]] for c in pool], axis=0)
        assert days.min() >= MIN_DAYS, (b, days.tolist())
