"""HBV (Bergström 1976; Seibert 1997 "HBV-light" form), daily, lumped, differentiable.

The model is data (:data:`BOUNDS`, typed parameters, state and fluxes) plus one pure function
for one day, one basin and one component, :func:`step`. :class:`HBV` declares them through
the process-model protocol (:mod:`dpljax.models.base`), whose generic ``run`` scans the day
over time and ``simulate`` vmaps it over ``nmul`` parallel components and over basins and
averages the components' fluxes (Feng et al. 2022, WRR).

Units: storages and fluxes in mm (per day), temperature in degC. The equations, in the order
they are applied each day, are those of the project's design notes (DESIGN.md, "HBV as this
project implements it"):

1. phase: ``rain = prcp if tmean >= tt else 0``; ``snow = prcp - rain``; (optional
   precipitation correction, HBV-96's ``rfcf`` and ``sfcf``) ``rain *= rfcf``, ``snow *= sfcf``
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

Speed: by default (``adjoint="model"``) the backward pass is HBV's hand-written adjoint of
one day (:mod:`dpljax.models.hbv_adjoint`): the forward pass stores the five storages of each
day, the backward pass recomputes the day and applies its derivative. It equals autodiff
(tests/test_perf_vjp.py) and is faster than ``jax.checkpoint`` of the scan body on CPU
(benchmarks/README.md); ``adjoint="autodiff"`` selects plain autodiff.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from . import base
from .base import KeyedTuple, Output, ProcessModel, check_adjoint, float_dtype, floor_pos, register_model
from .routing import GammaRouting

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
#: Extra parameters of the precipitation-correction variant (HBV-96, Lindstroem et al. 1997):
#: rainfall and snowfall correction factors, for gauge undercatch and for a forcing whose
#: precipitation is biased over the basin (Daymet's, in mountains and snowy basins).
PRECIP_BOUNDS: dict[str, tuple[float, float]] = {
    "rfcf": (0.5, 1.5),       # rainfall correction factor (-)
    "sfcf": (0.5, 1.5),       # snowfall correction factor (-)
}

PARAM_NAMES: tuple[str, ...] = tuple(BOUNDS)
STATE_NAMES: tuple[str, ...] = ("snowpack", "meltwater", "sm", "suz", "slz")
FLUX_NAMES: tuple[str, ...] = ("q", "q0", "q1", "q2", "et", "prcp_in")
INITIAL_STORAGE = 0.001  # mm, every store, when not warmed up
SM_FLOOR = 1e-5  # mm, soil moisture after ET


class HBVParams(KeyedTuple, namedtuple("_HBVParams", PARAM_NAMES + ("c", "rfcf", "sfcf"),
                                        defaults=(0.0, 1.0, 1.0))):
    """The 13 HBV parameters (plus ``c`` of the capillary variant and ``rfcf``, ``sfcf`` of
    the precipitation correction), physical units."""

    __slots__ = ()


class HBVState(KeyedTuple, namedtuple("_HBVState", STATE_NAMES)):
    """HBV storages (mm): snowpack, meltwater (liquid in the pack), sm (soil), suz, slz."""

    __slots__ = ()


class HBVFluxes(KeyedTuple, namedtuple("_HBVFluxes", FLUX_NAMES)):
    """Daily fluxes (mm/d): total runoff q = q0 + q1 + q2, actual ET, and the precipitation
    entering the model (``prcp_in``: ``prcp``, or rain and snow after their correction)."""

    __slots__ = ()


class Forcing(NamedTuple):
    """HBV's daily forcing: prcp (mm/d), tmean (degC), pet (mm/d); any shape, broadcast together."""

    prcp: Any
    tmean: Any
    pet: Any


#: What :func:`run` returns: ``(fluxes, final_state)``, also answering ``out.q``.
HBVOutput = Output


def initial_state(like=0.0, value: float = INITIAL_STORAGE) -> HBVState:
    """All storages at ``value`` (mm), with the dtype and shape of ``like``."""
    v = jnp.full(jnp.shape(like), value, dtype=float_dtype(like))
    return HBVState(v, v, v, v, v)


def _pow(u, y):
    """``u ** y`` for ``u > 0``, as ``exp(y log u)``: the same value (to float rounding) and
    derivatives, and 1.5x faster per HBV day on a CPU, where XLA's ``pow`` is a slow path
    (benchmarks/README.md, "SCE-UA"); the hand-written adjoint computes it the same way."""
    return jnp.exp(y * jnp.log(u))


def step(
    p: HBVParams, s: HBVState, x: Forcing, *, capillary: bool = False, smooth_phase: float = 0.0,
    precip_correction: bool = False,
) -> tuple[HBVState, HBVFluxes]:
    """Advance one component of one basin by one day (all arguments scalars or same-shape)."""
    prcp, tmean, pet = x
    # 1. Phase (and the variant's correction of rain and snow).
    if smooth_phase > 0.0:
        frac_rain = jax.nn.sigmoid((tmean - p.tt) / smooth_phase)
    else:
        frac_rain = (tmean >= p.tt).astype(prcp.dtype)
    if precip_correction:
        rain = prcp * frac_rain * p.rfcf
        snow = prcp * (1.0 - frac_rain) * p.sfcf
        prcp_in = rain + snow
    else:
        rain = prcp * frac_rain
        snow = prcp - rain
        prcp_in = prcp
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
    wet = jnp.clip(_pow(floor_pos(s.sm) / p.fc, p.beta), 0.0, 1.0)
    infil = rain + tosoil
    recharge = infil * wet
    sm = s.sm + infil - recharge
    excess = jnp.maximum(sm - p.fc, 0.0)
    sm = sm - excess
    # 4. Evapotranspiration.
    ef = jnp.clip(_pow(floor_pos(sm) / (p.lp * p.fc), p.betaet), 0.0, 1.0)
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
    return (HBVState(snowpack, meltwater, sm, suz, slz),
            HBVFluxes(q0 + q1 + q2, q0, q1, q2, et, jnp.broadcast_to(prcp_in, jnp.shape(q0))))


def run(
    params: Mapping[str, Any] | HBVParams,
    prcp,
    tmean,
    pet,
    state: HBVState | None = None,
    *,
    capillary: bool = False,
    smooth_phase: float = 0.0,
    precip_correction: bool = False,
    adjoint: str = "model",
    remat: bool | None = None,
) -> Output:
    """Run HBV for one basin and one component over ``T`` days.

    Args:
      params: maps the 13 names of :data:`BOUNDS` (plus ``c`` with ``capillary=True``, and
        ``rfcf``, ``sfcf`` with ``precip_correction=True``) to scalars (static) or ``(T,)``
        arrays (time-varying), physical units.
      prcp, tmean, pet: ``(T,)`` forcing: mm/d, degC, mm/d (not normalised).
      state: initial :class:`HBVState` (scalars); all stores at 0.001 mm when ``None``.
      adjoint: ``"model"`` (default): the backward pass is the hand-written adjoint of one
        day, which stores only the five storages per day and recomputes the day (fast, little
        memory); ``"autodiff"``: plain autodiff of the scan, every intermediate stored (the
        reference the adjoint is tested against); ``"checkpoint"``: autodiff of a
        rematerialised day. Same values either way. ``remat`` is the older spelling
        (``True`` = ``"model"``, ``False`` = ``"autodiff"``).

    Returns:
      :class:`~dpljax.models.base.Output` ``(fluxes, final_state)``; ``fluxes.q, .q0, .q1,
      .q2, .et, .prcp_in`` are ``(T,)`` (mm/d). Use ``jax.vmap`` over components and basins: the
      vmapped function is exactly what :meth:`HBV.simulate` runs.

    Raises:
      KeyError: a parameter name missing or unknown. ValueError: a forcing or parameter of
      the wrong shape; on concrete inputs (not traced under ``jit``/``vmap``/``grad``) also a
      NaN or inf forcing value, or a parameter outside :data:`BOUNDS` (``c`` in 0..1). Under
      a transformation the values are not checked: out-of-bounds parameters are used as
      given and NaN forcing gives NaN fluxes.
    """
    model = HBV(capillary=capillary, smooth_phase=smooth_phase,
                precip_correction=precip_correction, adjoint=adjoint, remat=remat)
    return base.run(model, params, Forcing(prcp, tmean, pet), state)


@register_model("hbv", static=("capillary", "smooth_phase", "precip_correction", "adjoint"))
class HBV(ProcessModel):
    """HBV through the process-model protocol; ``simulate`` batches it over components and
    basins (see :func:`dpljax.models.base.simulate`).

    Options: ``capillary`` (capillary rise from the lower zone, adds parameter ``c``),
    ``smooth_phase`` (> 0: logistic rain/snow split of that width in degC),
    ``precip_correction`` (rain and snow scaled by ``rfcf`` and ``sfcf``), ``adjoint``
    (``"model"``, ``"autodiff"`` or ``"checkpoint"``; ``remat`` is its older spelling).
    Runoff is routed by the gamma unit hydrograph (:class:`~dpljax.models.routing.GammaRouting`).
    """

    Params = HBVParams
    State = HBVState
    Fluxes = HBVFluxes
    Forcing = Forcing
    forcing = ("prcp", "tmean", "pet")
    default_routing = GammaRouting()

    def __init__(self, *, capillary: bool = False, smooth_phase: float = 0.0,
                 precip_correction: bool = False, adjoint: str = "model", remat: bool | None = None):
        if remat is not None:  # the older option, kept so that saved configs still load
            adjoint = "model" if remat else "autodiff"
        self.capillary = bool(capillary)
        self.smooth_phase = float(smooth_phase)
        self.precip_correction = bool(precip_correction)
        self.adjoint = check_adjoint(self, adjoint)

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return dict(BOUNDS, **(CAPILLARY_BOUNDS if self.capillary else {}),
                    **(PRECIP_BOUNDS if self.precip_correction else {}))

    def initial_state(self, params) -> HBVState:
        return initial_state(params.fc)

    def step(self, params, state, x):
        return step(params, state, x, capillary=self.capillary, smooth_phase=self.smooth_phase,
                    precip_correction=self.precip_correction)

    def storage(self, state):
        return state.snowpack + state.meltwater + state.sm + state.suz + state.slz

    def net_inflow(self, x, fluxes):
        return fluxes.prcp_in - fluxes.q - fluxes.et

    def scan_adjoint(self, static, dynamic, forcing, s0):
        from .hbv_adjoint import hbv_scan

        return hbv_scan(static, dynamic, forcing, s0, self.capillary, self.smooth_phase,
                        self.precip_correction)
