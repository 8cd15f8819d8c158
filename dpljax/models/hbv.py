"""HBV (Bergström 1976; Seibert 1997 "HBV-light" form), daily, lumped, differentiable.

The model is one pure function for one day, one basin and one component, :func:`step`;
:func:`run` scans it over time; :class:`HBV` vmaps :func:`run` over ``nmul`` parallel
components and over basins and averages the components' fluxes (Feng et al. 2022, WRR).

Units: storages and fluxes in mm (per day), temperature in degC. The equations, in the order
they are applied each day, are those of the project's design notes (DESIGN.md, "HBV as this
project implements it"):

1. phase: ``rain = prcp if tmean >= tt else 0``; ``snow = prcp - rain``
2. snow: degree-day melt ``min(max(cfmax (tmean - tt), 0), snowpack)``; refreezing
   ``min(max(cfr cfmax (tt - tmean), 0), meltwater)``; liquid water beyond
   ``cwh * snowpack`` leaves the pack as ``tosoil``
3. soil: ``recharge = (rain + tosoil) * clip((sm / fc) ** beta, 0, 1)``; the soil overflows
   above ``fc`` (``excess``)
4. ET: ``et = min(sm, pet * clip((sm / (lp fc)) ** betaet, 0, 1))``; ``sm >= 1e-5`` afterwards
5. (optional) capillary rise ``cap = min(slz, c * slz * (1 - min(sm / fc, 1)))`` from the
   lower zone to the soil
6. response: percolation ``min(suz, perc)`` to the lower zone; ``q0 = k0 max(suz - uzl, 0)``,
   ``q1 = k1 suz``, ``q2 = k2 slz``; ``q = q0 + q1 + q2``.

Gradient safety: the bases of the powers are floored at 1e-6 mm (never 0, so ``x ** y``
has finite derivatives in both ``x`` and ``y``). The rain/snow split is a hard threshold at
``tt`` (zero gradient in ``tt`` through the split, as in the reference studies); pass
``smooth_phase > 0`` (degC) to use a logistic split of that width instead.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from .base import Forcing, KeyedTuple, check_params, float_dtype, floor_pos, register_model

#: Physical bounds of the learnable HBV parameters, in the order the network emits them.
BOUNDS: dict[str, tuple[float, float]] = {
    "beta": (1.0, 6.0),       # shape of the soil recharge curve (-)
    "fc": (50.0, 1000.0),     # field capacity, maximum soil storage (mm)
    "k0": (0.05, 0.9),        # fast upper-zone recession above uzl (1/d)
    "k1": (0.01, 0.5),        # upper-zone recession (1/d)
    "k2": (0.001, 0.2),       # lower-zone (baseflow) recession (1/d)
    "lp": (0.2, 1.0),         # fraction of fc above which ET is potential (-)
    "perc": (0.0, 10.0),      # maximum percolation upper -> lower zone (mm/d)
    "uzl": (0.0, 100.0),      # threshold of the fast upper-zone outflow (mm)
    "tt": (-2.5, 2.5),        # threshold temperature of snow and melt (degC)
    "cfmax": (0.5, 10.0),     # degree-day factor (mm/degC/d)
    "cfr": (0.0, 0.1),        # refreezing coefficient (-)
    "cwh": (0.0, 0.2),        # liquid-water holding capacity of the snowpack (-)
    "betaet": (0.3, 5.0),     # shape of the ET curve (-)
}
#: Extra parameter of the capillary-rise variant.
CAPILLARY_BOUNDS: dict[str, tuple[float, float]] = {"c": (0.0, 1.0)}

PARAM_NAMES: tuple[str, ...] = tuple(BOUNDS)
STATE_NAMES: tuple[str, ...] = ("snowpack", "meltwater", "sm", "suz", "slz")
FLUX_NAMES: tuple[str, ...] = ("q", "q0", "q1", "q2", "et")
INITIAL_STORAGE = 0.001  # mm, every store, when not warmed up
SM_FLOOR = 1e-5  # mm, soil moisture after ET


class HBVParams(KeyedTuple, namedtuple("_HBVParams", PARAM_NAMES + ("c",), defaults=(0.0,))):
    """The 13 HBV parameters (plus ``c`` of the capillary variant), physical units."""

    __slots__ = ()


class HBVState(KeyedTuple, namedtuple("_HBVState", STATE_NAMES)):
    """HBV storages (mm): snowpack, meltwater (liquid in the pack), sm (soil), suz, slz."""

    __slots__ = ()


class HBVFluxes(KeyedTuple, namedtuple("_HBVFluxes", FLUX_NAMES)):
    """Daily fluxes (mm/d): total runoff q = q0 + q1 + q2, and actual ET."""

    __slots__ = ()


class HBVOutput(KeyedTuple, namedtuple("_HBVOutput", ("fluxes", "state"))):
    """What :func:`run` returns: ``(fluxes, final_state)``.

    Unpacks as a pair, and also answers ``out.q`` / ``out["q"]`` for the fluxes directly.
    """

    __slots__ = ()

    def __getattr__(self, name):
        if name in FLUX_NAMES:
            return getattr(self.fluxes, name)
        raise AttributeError(name)


def initial_state(like=0.0, value: float = INITIAL_STORAGE) -> HBVState:
    """All storages at ``value`` (mm), with the dtype and shape of ``like``."""
    v = jnp.full(jnp.shape(like), value, dtype=float_dtype(like))
    return HBVState(v, v, v, v, v)


def step(
    p: HBVParams, s: HBVState, x: Forcing, *, capillary: bool = False, smooth_phase: float = 0.0
) -> tuple[HBVState, HBVFluxes]:
    """Advance one component of one basin by one day (all arguments scalars or same-shape)."""
    prcp, tmean, pet = x
    # 1. Phase.
    if smooth_phase > 0.0:
        frac_rain = jax.nn.sigmoid((tmean - p.tt) / smooth_phase)
    else:
        frac_rain = (tmean >= p.tt).astype(prcp.dtype)
    rain = prcp * frac_rain
    snow = prcp - rain
    # 2. Snow.
    snowpack = s.snowpack + snow
    melt = jnp.minimum(jnp.maximum(p.cfmax * (tmean - p.tt), 0.0), snowpack)
    meltwater = s.meltwater + melt
    snowpack = snowpack - melt
    refreeze = jnp.minimum(jnp.maximum(p.cfr * p.cfmax * (p.tt - tmean), 0.0), meltwater)
    snowpack = snowpack + refreeze
    meltwater = meltwater - refreeze
    tosoil = jnp.maximum(meltwater - p.cwh * snowpack, 0.0)
    meltwater = meltwater - tosoil
    # 3. Soil.
    wet = jnp.clip((floor_pos(s.sm) / p.fc) ** p.beta, 0.0, 1.0)
    infil = rain + tosoil
    recharge = infil * wet
    sm = s.sm + infil - recharge
    excess = jnp.maximum(sm - p.fc, 0.0)
    sm = sm - excess
    # 4. Evapotranspiration.
    ef = jnp.clip((floor_pos(sm) / (p.lp * p.fc)) ** p.betaet, 0.0, 1.0)
    et = jnp.minimum(sm, pet * ef)
    sm = jnp.maximum(sm - et, SM_FLOOR)
    slz = s.slz
    # 5. Capillary rise (variant).
    if capillary:
        cap = jnp.minimum(slz, p.c * slz * (1.0 - jnp.minimum(sm / p.fc, 1.0)))
        sm = sm + cap
        slz = slz - cap
    # 6. Response.
    suz = s.suz + recharge + excess
    perc = jnp.minimum(suz, p.perc)
    suz = suz - perc
    q0 = p.k0 * jnp.maximum(suz - p.uzl, 0.0)
    suz = suz - q0
    q1 = p.k1 * suz
    suz = suz - q1
    slz = slz + perc
    q2 = p.k2 * slz
    slz = slz - q2
    return HBVState(snowpack, meltwater, sm, suz, slz), HBVFluxes(q0 + q1 + q2, q0, q1, q2, et)


def _as_params(params: Mapping[str, Any] | HBVParams, capillary: bool) -> dict[str, Any]:
    if isinstance(params, HBVParams):
        params = params._asdict()
        if not capillary:
            params.pop("c")
    names = PARAM_NAMES + (("c",) if capillary else ())
    check_params(params, names, "HBV")
    return {k: params[k] for k in names}


def run(
    params: Mapping[str, Any] | HBVParams,
    prcp,
    tmean,
    pet,
    state: HBVState | None = None,
    *,
    capillary: bool = False,
    smooth_phase: float = 0.0,
    remat: bool = True,
) -> HBVOutput:
    """Run HBV for one basin and one component over ``T`` days.

    Args:
      params: maps the 13 names of :data:`BOUNDS` (plus ``c`` with ``capillary=True``) to
        scalars (static) or ``(T,)`` arrays (time-varying), physical units.
      prcp, tmean, pet: ``(T,)`` forcing: mm/d, degC, mm/d (not normalised).
      state: initial :class:`HBVState` (scalars); all stores at 0.001 mm when ``None``.
      remat: recompute each day's intermediates in the backward pass (``jax.checkpoint`` on
        the scan body) instead of storing them: same values, less memory, usually faster.

    Returns:
      :class:`HBVOutput` ``(fluxes, final_state)``; ``fluxes.q, .q0, .q1, .q2, .et`` are
      ``(T,)`` (mm/d). Use ``jax.vmap`` over components and basins.
    """
    p = _as_params(params, capillary)
    prcp = jnp.asarray(prcp)
    dtype = float_dtype(prcp)
    forcing = Forcing(prcp.astype(dtype), jnp.asarray(tmean, dtype), jnp.asarray(pet, dtype))
    n_t = forcing.prcp.shape[0]
    # Static parameters are closed over; time-varying ones are scanned with the forcing.
    static, dynamic = {}, {}
    for k, v in p.items():
        v = jnp.asarray(v, dtype)
        if v.ndim == 0:
            static[k] = v
        elif v.shape == (n_t,):
            dynamic[k] = v
        else:
            raise ValueError(f"HBV parameter {k!r} has shape {v.shape}; expected () or ({n_t},)")
    s0 = initial_state(jnp.zeros((), dtype)) if state is None else HBVState(
        *(jnp.asarray(v, dtype) for v in state)
    )

    def body(s, xs):
        x, dyn = xs
        return step(HBVParams(**static, **dyn), s, x, capillary=capillary, smooth_phase=smooth_phase)

    if remat:
        body = jax.checkpoint(body)
    final, fluxes = jax.lax.scan(body, s0, (forcing, dynamic))
    return HBVOutput(fluxes, final)


@register_model("hbv")
class HBV:
    """HBV with ``nmul`` parallel components per basin, batched over basins.

    ``simulate(params, forcing, state=None)``: ``params[name]`` is ``(B, nmul)`` for a static
    parameter or ``(B, T, nmul)`` for a dynamic one; ``forcing`` holds ``(B, T)`` arrays.
    Returns ``({flux: (B, T)} averaged over components, final state of (B, nmul) arrays)``.
    """

    name = "hbv"

    def __init__(self, *, capillary: bool = False, smooth_phase: float = 0.0, remat: bool = True):
        self.capillary = capillary
        self.smooth_phase = float(smooth_phase)
        self.remat = remat
        self.bounds = dict(BOUNDS, **(CAPILLARY_BOUNDS if capillary else {}))

    def run(self, params, prcp, tmean, pet, state=None) -> HBVOutput:
        """:func:`run` with this instance's options (one basin, one component)."""
        return run(params, prcp, tmean, pet, state, capillary=self.capillary,
                   smooth_phase=self.smooth_phase, remat=self.remat)

    def simulate(self, params: Mapping[str, Any], forcing: Forcing, state: HBVState | None = None):
        nmul = jnp.shape(next(iter(params.values())))[-1]
        batch = forcing.prcp.shape[0]
        if state is None:
            state = initial_state(jnp.zeros((batch, nmul), forcing.prcp.dtype))
        per_comp = jax.vmap(self.run, in_axes=(-1, None, None, None, 0))  # over components
        per_basin = jax.vmap(per_comp, in_axes=(0, 0, 0, 0, 0))  # over basins
        fluxes, final = per_basin(dict(params), forcing.prcp, forcing.tmean, forcing.pet, state)
        return {k: v.mean(axis=1) for k, v in fluxes._asdict().items()}, final
