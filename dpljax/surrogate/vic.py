"""A VIC-style soil-moisture model in plain NumPy: the example black box of :mod:`dpljax.surrogate`.

Written for this project from the published equations (not from VIC's source): the variable
infiltration capacity curve of Zhao (1992) / Wood et al. (1992) as used in VIC (Liang et al.
1994, JGR 99(D7), 14415-14428), the ARNO baseflow of Todini (1996, J. Hydrol. 175, 339-382)
in VIC's form, ET limited by soil water, gravity drainage between layers, and a degree-day
snow store. It is deliberately *not* JAX: it stands for a model one cannot rewrite, run
through :class:`~dpljax.surrogate.BlackBox`.

Daily, lumped; storages in mm, fluxes in mm/d, temperature in degC. Forcing: ``prcp`` (mm/d),
``tmean`` (degC), ``pet`` (mm/d). Three soil layers: a thin surface layer (1), a root zone
(2), a deep layer (3), with capacities ``w1max``, ``w2max``, ``w3max`` (mm).

Parameters (:data:`BOUNDS`):

========= ============== =====================================================================
name      bounds         meaning
========= ============== =====================================================================
binf      0.01 .. 0.5    shape of the variable-infiltration-capacity curve (-)
w1max     10 .. 80       surface-layer capacity (mm)
w2max     50 .. 400      root-zone capacity (mm)
w3max     100 .. 800     deep-layer capacity (mm)
ksat      2 .. 100       drainage rate of a saturated layer (mm/d)
dsmax     0.5 .. 30      ARNO maximum baseflow (mm/d)
ds        0.02 .. 0.9    ARNO fraction of dsmax where non-linear baseflow begins (-)
ws        0.3 .. 0.95    ARNO fraction of w3max where non-linear baseflow begins (-)
ddf       1 .. 6         degree-day melt factor (mm/degC/d)
========= ============== =====================================================================

One day, in this order (``W = w1 + w2`` is the upper-zone storage, ``Wc = w1max + w2max``):

1. Snow: ``snow = prcp`` where ``tmean < 0``, else ``rain = prcp``; ``swe += snow``;
   ``melt = min(ddf * max(tmean, 0), swe)``; ``swe -= melt``; water input ``P = rain + melt``.
2. Infiltration (VIC curve over the upper zone): point capacities are distributed as
   ``i = im (1 - (1 - A)^(1/b))`` over the area fraction ``A``, ``im = Wc (1 + b)``; the
   current level is ``i0 = im (1 - (1 - W/Wc)^(1/(1+b)))``. Surface runoff
   ``R = P - (Wc - W)`` if ``i0 + P >= im``, else
   ``R = P - (Wc - W) + Wc (1 - (i0 + P)/im)^(1+b)``; infiltration ``I = P - R`` fills the
   surface layer first and the root zone with the rest (``I <= Wc - W``, so it always fits).
3. Evapotranspiration, limited by soil water (stress begins below 70 % of capacity):
   soil evaporation ``e1 = min(w1, 0.3 pet min(1, w1/(0.7 w1max)))`` from the surface layer,
   transpiration ``e2 = min(w2, 0.7 pet min(1, w2/(0.7 w2max)))`` from the root zone;
   ``et = e1 + e2 <= pet``.
4. Gravity drainage, Brooks-Corey-like with exponent 4: root zone -> deep layer
   ``d23 = min(ksat (w2/w2max)^4, w2, w3max - w3)``, then surface -> root zone
   ``d12 = min(ksat (w1/w1max)^4, w1, w2max - w2)``.
5. ARNO baseflow from the deep layer (``x = w3``):
   ``Qb = ds dsmax x / (ws w3max)`` for ``x <= ws w3max``, else
   ``Qb = ds dsmax x / (ws w3max) + (dsmax - ds dsmax / ws) ((x - ws w3max)/(w3max - ws w3max))^2``
   (continuous, ``Qb(w3max) = dsmax``); ``Qb = min(max(Qb, 0), w3)``.
6. Runoff ``q = R + Qb``.

Outputs (:data:`OUTPUTS`, each ``(..., T)``): ``sm1``, ``sm2``, ``sm3`` (mm, end of day),
``swe`` (mm), ``et``, ``runoff`` (surface, ``R``), ``baseflow`` (``Qb``), ``q`` (mm/d).
Initial state: every soil layer half full, no snow. Water balance per run:
``sum(prcp) = sum(et) + sum(q) + Δ(swe + sm1 + sm2 + sm3)`` to float rounding (every flux is
capped by the water there, so no store goes negative and nothing is clipped away).

Vectorised over any leading shape: parameters ``(...)`` (or scalars) and forcing ``(..., T)``
run as many independent cells at once (the loop over days is in Python, over arrays).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

BOUNDS: dict[str, tuple[float, float]] = {
    "binf": (0.01, 0.5),
    "w1max": (10.0, 80.0),
    "w2max": (50.0, 400.0),
    "w3max": (100.0, 800.0),
    "ksat": (2.0, 100.0),
    "dsmax": (0.5, 30.0),
    "ds": (0.02, 0.9),
    "ws": (0.3, 0.95),
    "ddf": (1.0, 6.0),
}
FORCING: tuple[str, ...] = ("prcp", "tmean", "pet")
OUTPUTS: tuple[str, ...] = ("sm1", "sm2", "sm3", "swe", "et", "runoff", "baseflow", "q")
STATES: tuple[str, ...] = ("swe", "sm1", "sm2", "sm3")
T_SNOW = 0.0      # degC: rain/snow threshold and melt base temperature
STRESS = 0.7      # fraction of a layer's capacity below which ET is water-limited
BARE = 0.3        # share of pet available to soil evaporation (the rest: transpiration)
DRAIN_EXP = 4.0   # exponent of gravity drainage


def initial_state(p: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Soil layers half full, no snow (mm)."""
    shape = np.broadcast(*[np.asarray(v) for v in p.values()]).shape
    return {"swe": np.zeros(shape), "sm1": 0.5 * np.broadcast_to(p["w1max"], shape).astype(float),
            "sm2": 0.5 * np.broadcast_to(p["w2max"], shape).astype(float),
            "sm3": 0.5 * np.broadcast_to(p["w3max"], shape).astype(float)}


def vic_curve_runoff(P, W, Wc, b):
    """Surface runoff (mm) of water input ``P`` on an upper zone holding ``W`` of ``Wc`` (mm)
    with VIC shape ``b`` (Liang et al. 1994, eqs. 3-5); ``0 <= R <= P`` and ``P - R <= Wc - W``."""
    im = Wc * (1.0 + b)
    rel = np.clip(1.0 - W / Wc, 0.0, 1.0)
    i0 = im * (1.0 - rel ** (1.0 / (1.0 + b)))
    deficit = Wc - W
    full = i0 + P >= im
    frac = np.clip(1.0 - (i0 + P) / im, 0.0, 1.0)
    R = np.where(full, P - deficit, P - deficit + Wc * frac ** (1.0 + b))
    return np.clip(R, np.maximum(P - deficit, 0.0), P)


def arno_baseflow(w3, w3max, dsmax, ds, ws):
    """ARNO baseflow (mm/d) from the deep layer (Todini 1996; Liang et al. 1994, eq. 21)."""
    lin = ds * dsmax * w3 / (ws * w3max)
    over = np.maximum(w3 - ws * w3max, 0.0) / (w3max - ws * w3max)
    qb = lin + (dsmax - ds * dsmax / ws) * over ** 2
    return np.minimum(np.maximum(qb, 0.0), w3)


def run(params: Mapping[str, np.ndarray], forcing: Mapping[str, np.ndarray],
        state: Mapping[str, np.ndarray] | None = None, *, return_state: bool = False):
    """Run the model: ``params[name]`` scalars or ``(...)`` arrays (the names of :data:`BOUNDS`,
    physical units), ``forcing[name]`` ``(..., T)`` (mm/d, degC, mm/d). Returns
    ``{name: (..., T)}`` for :data:`OUTPUTS` (float64), and the final state with ``return_state``.
    """
    missing = [k for k in BOUNDS if k not in params]
    if missing:
        raise KeyError(f"vic: missing parameters {missing}")
    p = {k: np.asarray(params[k], np.float64) for k in BOUNDS}
    prcp, tmean, pet = (np.asarray(forcing[k], np.float64) for k in FORCING)
    shape = np.broadcast(prcp[..., 0], *p.values()).shape
    n_t = prcp.shape[-1]
    p = {k: np.broadcast_to(v, shape) for k, v in p.items()}
    s = initial_state(p) if state is None else {k: np.array(np.broadcast_to(state[k], shape), np.float64)
                                                 for k in STATES}
    swe, w1, w2, w3 = (s[k].copy() for k in STATES)
    out = {k: np.empty(shape + (n_t,)) for k in OUTPUTS}
    w1max, w2max, w3max = p["w1max"], p["w2max"], p["w3max"]
    wc = w1max + w2max
    for t in range(n_t):
        pr = np.broadcast_to(prcp[..., t], shape)
        tm = np.broadcast_to(tmean[..., t], shape)
        pe = np.broadcast_to(pet[..., t], shape)
        # 1. snow
        cold = tm < T_SNOW
        swe = swe + np.where(cold, pr, 0.0)
        melt = np.minimum(p["ddf"] * np.maximum(tm - T_SNOW, 0.0), swe)
        swe = swe - melt
        P = np.where(cold, 0.0, pr) + melt
        # 2. infiltration over the upper zone
        R = vic_curve_runoff(P, w1 + w2, wc, p["binf"])
        inf = P - R
        to1 = np.minimum(inf, w1max - w1)
        w1 = w1 + to1
        w2 = w2 + (inf - to1)
        # 3. ET limited by soil water
        e1 = np.minimum(w1, BARE * pe * np.minimum(1.0, w1 / (STRESS * w1max)))
        w1 = w1 - e1
        e2 = np.minimum(w2, (1.0 - BARE) * pe * np.minimum(1.0, w2 / (STRESS * w2max)))
        w2 = w2 - e2
        # 4. gravity drainage, deepest first (so the layer above can drain into the room made)
        d23 = np.minimum(np.minimum(p["ksat"] * (w2 / w2max) ** DRAIN_EXP, w2), w3max - w3)
        w2 = w2 - d23
        w3 = w3 + d23
        d12 = np.minimum(np.minimum(p["ksat"] * (w1 / w1max) ** DRAIN_EXP, w1), w2max - w2)
        w1 = w1 - d12
        w2 = w2 + d12
        # 5. ARNO baseflow
        qb = arno_baseflow(w3, w3max, p["dsmax"], p["ds"], p["ws"])
        w3 = w3 - qb
        for k, v in (("sm1", w1), ("sm2", w2), ("sm3", w3), ("swe", swe), ("et", e1 + e2),
                     ("runoff", R), ("baseflow", qb), ("q", R + qb)):
            out[k][..., t] = v
    if return_state:
        return out, {"swe": swe, "sm1": w1, "sm2": w2, "sm3": w3}
    return out


def vic(params, forcing):
    """The black-box form: ``run`` without a state argument (what :data:`VIC` wraps)."""
    return run(params, forcing)
