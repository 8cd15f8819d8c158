"""Plain-Python HBV, day by day in scalar Python floats, written straight from the design notes
(DESIGN.md, "HBV as this project implements it"), which also counts how often each branch of
the day fires (so that a test can show its inputs reach every min/max/clip of the physics).

Independent of ``dpljax``: nothing here imports it. The one convention taken from the model
rather than the notes is where capillary rise sits in the day (after ET, before the response
routine), the only place the notes' formula for it makes sense (``sm`` after ET).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

FLUXES = ("q", "q0", "q1", "q2", "et", "prcp_in")
STATES = ("snowpack", "meltwater", "sm", "suz", "slz")
INITIAL = 0.001  # mm, every store
SM_FLOOR = 1e-5  # mm, soil moisture after ET

#: The branches of one day that are counted, and what each one means.
BRANCHES = {
    "rain": "rain > 0 (tmean >= tt, prcp > 0)",
    "snow": "snow > 0 (tmean < tt, prcp > 0)",
    "melt_limited": "melt > 0 and melt == snowpack (the whole pack melts)",
    "melt_unlimited": "0 < cfmax*(tmean-tt) < snowpack",
    "refreeze": "refreeze > 0",
    "refreeze_limited": "refreeze > 0 and refreeze == meltwater (all liquid refreezes)",
    "tosoil": "tosoil > 0 (liquid water beyond cwh*snowpack leaves the pack)",
    "wet_clipped": "(sm/fc)**beta > 1: the soil starts the day above fc",
    "excess": "soil overflow: sm > fc after infiltration",
    "ef_clipped": "(sm/(lp*fc))**betaet >= 1: ET at potential",
    "et_below_potential": "ef < 1 with pet > 0",
    "et_soil_limited": "sm < pet*ef: the min of ET picks sm",
    "sm_floor": "sm - et < 1e-5: soil moisture set to the floor",
    "perc_suz_limited": "suz <= perc: percolation takes all of suz",
    "perc_param_limited": "suz > perc: percolation at its maximum",
    "fast_flow": "suz > uzl after percolation: q0 > 0",
    "cap": "capillary rise > 0 (capillary variant)",
    "cap_slz_limited": "capillary rise == slz > 0 (needs c*(1 - sm/fc) >= 1, i.e. c > 1)",
    "cap_soil_full": "sm >= fc after ET: no capillary rise (capillary variant)",
}


class Reference(NamedTuple):
    fluxes: dict  # name -> (T,) float64 array
    state: tuple  # final (snowpack, meltwater, sm, suz, slz), floats
    counts: dict  # branch name -> number of days it fired


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def reference_hbv(p, prcp, tmean, pet, state=None, capillary=False, smooth_phase=0.0,
                  precip_correction=False) -> Reference:
    """Run HBV over the days of ``prcp, tmean, pet`` (sequences of floats).

    ``p`` maps each parameter name to a scalar or to a sequence with one value per day;
    ``state`` is the initial ``(snowpack, meltwater, sm, suz, slz)`` (all 0.001 mm if None);
    ``smooth_phase > 0`` splits rain and snow by a logistic of that width (degC) around tt;
    ``precip_correction`` multiplies rain by ``rfcf`` and snow by ``sfcf`` (HBV-96).
    """
    n = len(prcp)
    prcp, tmean, pet = (np.asarray(a, np.float64).tolist() for a in (prcp, tmean, pet))
    series = {k: (np.asarray(v, np.float64).tolist() if np.ndim(v) else [float(v)] * n)
              for k, v in p.items()}
    if state is None:
        state = (INITIAL,) * 5
    snowpack, meltwater, sm, suz, slz = (float(s) for s in state)
    out = {k: [0.0] * n for k in FLUXES}
    counts = dict.fromkeys(BRANCHES, 0)

    def fired(name, cond):
        if cond:
            counts[name] += 1

    for t in range(n):
        P = {k: v[t] for k, v in series.items()}
        tt, fc = P["tt"], P["fc"]
        # 1. phase
        if smooth_phase > 0.0:
            rain = prcp[t] * _sigmoid((tmean[t] - tt) / smooth_phase)
        else:
            rain = prcp[t] if tmean[t] >= tt else 0.0
        snow = prcp[t] - rain
        if precip_correction:
            rain, snow = rain * P["rfcf"], snow * P["sfcf"]
        out["prcp_in"][t] = rain + snow
        fired("rain", rain > 0)
        fired("snow", snow > 0)
        # 2. snow
        snowpack += snow
        potential_melt = max(P["cfmax"] * (tmean[t] - tt), 0.0)
        melt = min(potential_melt, snowpack)
        fired("melt_limited", melt > 0 and potential_melt >= snowpack)
        fired("melt_unlimited", 0 < potential_melt < snowpack)
        meltwater += melt
        snowpack -= melt
        potential_refreeze = max(P["cfr"] * P["cfmax"] * (tt - tmean[t]), 0.0)
        refreeze = min(potential_refreeze, meltwater)
        fired("refreeze", refreeze > 0)
        fired("refreeze_limited", refreeze > 0 and potential_refreeze >= meltwater)
        snowpack += refreeze
        meltwater -= refreeze
        tosoil = max(meltwater - P["cwh"] * snowpack, 0.0)
        fired("tosoil", tosoil > 0)
        meltwater -= tosoil
        # 3. soil
        y = (sm / fc) ** P["beta"]
        fired("wet_clipped", y > 1.0)
        wet = min(max(y, 0.0), 1.0)
        recharge = (rain + tosoil) * wet
        sm += rain + tosoil - recharge
        excess = max(sm - fc, 0.0)
        fired("excess", excess > 0)
        sm -= excess
        # 4. evapotranspiration
        y = (sm / (P["lp"] * fc)) ** P["betaet"]
        fired("ef_clipped", y >= 1.0)
        ef = min(max(y, 0.0), 1.0)
        fired("et_below_potential", ef < 1.0 and pet[t] > 0)
        fired("et_soil_limited", sm < pet[t] * ef)
        et = min(sm, pet[t] * ef)
        fired("sm_floor", sm - et < SM_FLOOR)
        sm = max(sm - et, SM_FLOOR)
        # capillary rise (variant)
        if capillary:
            potential_cap = P["c"] * slz * (1.0 - min(sm / fc, 1.0))
            cap = min(slz, potential_cap)
            fired("cap", cap > 0)
            fired("cap_slz_limited", slz > 0 and potential_cap >= slz)
            fired("cap_soil_full", sm >= fc)
            sm += cap
            slz -= cap
        # 5. response
        suz += recharge + excess
        perc = min(suz, P["perc"])
        fired("perc_suz_limited", suz <= P["perc"])
        fired("perc_param_limited", suz > P["perc"])
        suz -= perc
        fired("fast_flow", suz > P["uzl"])
        q0 = P["k0"] * max(suz - P["uzl"], 0.0)
        suz -= q0
        q1 = P["k1"] * suz
        suz -= q1
        slz += perc
        q2 = P["k2"] * slz
        slz -= q2
        out["q"][t], out["q0"][t], out["q1"][t], out["q2"][t], out["et"][t] = q0 + q1 + q2, q0, q1, q2, et
    fluxes = {k: np.array(v) for k, v in out.items()}
    return Reference(fluxes, (snowpack, meltwater, sm, suz, slz), counts)
