"""GR4J (Perrin, Michel & Andréassian 2003, J. Hydrol. 279, 275-289), daily, lumped,
differentiable, with an optional degree-day snow routine.

Written from the equations of the project's design notes (DESIGN.md, "GR4J as airGR defines
it"); units mm and mm/d, temperature degC. Each day, with ``P`` the liquid water input
(``prcp``, or rain + melt with ``snow=True``) and ``E = pet``:

0. (``snow=True``) ``rain = prcp if tmean >= tt else 0``; the rest falls as snow onto the
   pack; ``melt = min(cfmax max(tmean - tt, 0), snowpack)``; ``P = rain + melt``.
1. Production store ``S`` (capacity ``x1``): if ``P >= E``, ``ws = min((P - E)/x1, 13)``,
   ``Ps = x1 (1 - (S/x1)^2) tanh(ws) / (1 + (S/x1) tanh(ws))``, ``Pn = P - E``, ``S += Ps``;
   else ``ws = min((E - P)/x1, 13)``, ``Es = S (2 - S/x1) tanh(ws) / (1 + (1 - S/x1) tanh(ws))``,
   ``S -= Es``, ``Pn = Ps = 0``. Actual ET is ``E`` on wet days and ``Es + P`` on dry days.
2. Percolation ``Perc = S (1 - (1 + (S/(2.25 x1))^4)^(-1/4))``, ``S -= Perc``;
   ``Pr = Perc + Pn - Ps``.
3. Unit hydrographs from the S-curves ``SH1(t) = (t/x4)^2.5`` (0 < t < x4, 1 beyond) and
   ``SH2(t) = 0.5 (t/x4)^2.5`` (t <= x4), ``1 - 0.5 (2 - t/x4)^2.5`` (x4 < t < 2 x4, 1 beyond);
   ordinates ``UH(j) = SH(j) - SH(j-1)``, 20 for UH1 and 40 for UH2 in airGR. 90 % of ``Pr``
   enters UH1, 10 % UH2: each queue adds ``UH(j) * share * Pr`` to slot ``j``, emits slot 1
   (``Q9``, ``Q1``) and advances one day.
4. Groundwater exchange ``F = x2 (R/x3)^3.5``; routing store ``R = max(0, R + Q9 + F)``,
   ``Qr = R (1 - (1 + (R/x3)^4)^(-1/4))``, ``R -= Qr``; direct flow ``Qd = max(0, Q1 + F)``;
   ``Q = Qr + Qd``. The *actual* exchange (``exch``) is ``F`` where neither clip binds and
   what the clip lets through where it does, so the water balance closes exactly:
   ``prcp + exch - et - q = Δ(S + R + queues + snowpack)``. Note that ``F`` is applied twice
   (to ``R`` and to ``Qd``), as in the original model, so the potential exchange is ``2 F``.
   Within the bounds the clip on ``R`` never binds from a state with ``R < x3`` (which the
   routing outflow always leaves): ``|F| <= 5 (R/x3)^3.5 <= 5 R/x3 < R`` for ``x3 >= 20``.

Queues: the state holds the water still to leave each unit hydrograph (slot 1 first). Each
day adds ``UH(j) * share * Pr`` to slot ``j``, emits slot 1 and shifts the rest one day
forward (appending 0), which gives airGR's outputs while ``storage`` counts only water that
is still held. Only the first ``ceil(x4)`` ordinates of UH1 and ``ceil(2 x4)`` of UH2 are
non-zero, so the model keeps queues of ``ceil(x4_max)`` and ``ceil(2 x4_max)`` slots (3 and 6
within the bounds, against airGR's 20 and 40): the same outputs, and a backward pass several
times cheaper. The last slot takes ``1 - SH(n - 1)``, which is its ordinate whenever
``x4 <= x4_max`` and keeps the water balance closed otherwise; :func:`run` sizes the queues to
a (concrete) ``x4`` above ``x4_max``, and a parameter space with a larger upper bound of ``x4``
sizes them to it (:meth:`GR4J.with_bounds`). A state given with other queue lengths (airGR's 20 and 40)
runs with those.

Initial state (airGR's defaults): ``S = 0.3 x1``, ``R = 0.5 x3``, empty queues and pack.
GR4J's unit hydrographs are its routing (``default_routing = None``). Gradient safety: both
sides of the wet/dry branch are computed on non-negative inputs before ``jnp.where`` picks
one; the base of the exchange's power ``(R/x3)^3.5`` is floored at 1e-6 mm
(:func:`~dpljax.models.base.floor_pos`), the other powers are integer powers or have bases
>= 1, ``ws <= 13`` keeps ``tanh`` away from saturation, and the S-curves are powers (2.5) of
values clipped to ``[0, 1]``. ``x4`` may vary in time: the ordinates are computed each day.
The rain/snow split is a hard threshold at ``tt`` (no gradient in ``tt`` through it).

Reference: Perrin, C., Michel, C., Andréassian, V. (2003), Improvement of a parsimonious
model for streamflow simulation, J. Hydrol. 279, 275-289.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from . import base
from .base import ProcessModel, check_adjoint, float_dtype, floor_pos, record, register_model

#: Physical bounds of the GR4J parameters (Perrin et al. 2003; the design notes).
BOUNDS: dict[str, tuple[float, float]] = {
    "x1": (100.0, 1200.0),   # production store capacity (mm)
    "x2": (-5.0, 3.0),       # groundwater exchange coefficient (mm/d)
    "x3": (20.0, 300.0),     # routing store capacity (mm)
    "x4": (1.1, 2.9),        # unit-hydrograph time base (d)
}
#: Parameters of the degree-day snow routine (``snow=True``).
SNOW_BOUNDS: dict[str, tuple[float, float]] = {
    "tt": (-2.5, 2.5),       # threshold temperature of snowfall and melt (degC)
    "cfmax": (0.5, 10.0),    # degree-day factor (mm/degC/d)
}
N_UH1, N_UH2 = 20, 40
WS_MAX = 13.0

GR4JParams = record("GR4JParams", ("x1", "x2", "x3", "x4", "tt", "cfmax"),
                    "GR4J parameters (physical units); tt and cfmax only with snow.", defaults=(0.0, 1.0))
GR4JState = record("GR4JState", ("S", "R", "uh1", "uh2", "snowpack"),
                   "Production store S, routing store R (mm), the unit-hydrograph queues "
                   "uh1 (20,) and uh2 (40,) (mm still to leave them) and the snowpack (mm).")
GR4JFluxes = record("GR4JFluxes", ("q", "qr", "qd", "et", "perc", "exch"),
                    "Daily fluxes (mm/d): q = qr + qd, actual ET, percolation, actual exchange.")
GR4JForcing = record("GR4JForcing", ("prcp", "pet", "tmean"),
                     "prcp (mm/d), pet (mm/d), tmean (degC, snow routine only).", defaults=(None,))


def s_curve1(t, x4):
    """S-curve of UH1 (-): ``(t/x4)^2.5`` for ``0 <= t < x4``, 1 beyond (``t`` in days)."""
    return jnp.clip(t / x4, 0.0, 1.0) ** 2.5


def s_curve2(t, x4):
    """S-curve of UH2 (-): ``0.5 (t/x4)^2.5`` for ``t <= x4``, ``1 - 0.5 (2 - t/x4)^2.5`` for
    ``x4 < t < 2 x4``, 1 beyond. Both sides are computed on clipped bases (finite gradients)."""
    u = t / x4
    return jnp.where(u <= 1.0, 0.5 * jnp.clip(u, 0.0, 1.0) ** 2.5,
                     1.0 - 0.5 * jnp.clip(2.0 - u, 0.0, 1.0) ** 2.5)


def queue_lengths(x4_max: float) -> tuple[int, int]:
    """Slots of the UH1 and UH2 queues that hold every non-zero ordinate for ``x4 <= x4_max``:
    ``(ceil(x4_max), ceil(2 x4_max))``, at most airGR's ``(20, 40)``."""
    if not 0.0 < x4_max <= N_UH1:
        raise ValueError(f"GR4J: x4_max must be in (0, {N_UH1}] days, got {x4_max}")
    return min(N_UH1, math.ceil(x4_max)), min(N_UH2, math.ceil(2.0 * x4_max))


def _ordinates(curve, n: int, x4):
    """``SH(j) - SH(j-1)`` for ``j = 1..n``, the last one ``1 - SH(n-1)`` (all the rest)."""
    j = jnp.arange(1, n + 1, dtype=float_dtype(x4))
    sh = curve(j, x4)
    return jnp.concatenate([sh[:-1], jnp.ones_like(sh[-1:])]) - curve(j - 1.0, x4)


def unit_hydrographs(x4, n1: int = N_UH1, n2: int = N_UH2):
    """Ordinates ``UH(j) = SH(j) - SH(j-1)``, ``(UH1 (n1,), UH2 (n2,))`` (airGR: 20 and 40),
    for a scalar ``x4`` (d). The last ordinate of each takes what is left (``1 - SH(n-1)``), so
    each sums to 1; it equals ``SH(n) - SH(n-1)`` when ``x4 <= n1`` and ``2 x4 <= n2``."""
    return _ordinates(s_curve1, n1, x4), _ordinates(s_curve2, n2, x4)


def _advance(queue, inflow):
    """Add ``inflow (n,)`` to the queue, emit slot 1, shift the rest one day forward."""
    full = queue + inflow
    return full[0], jnp.concatenate([full[1:], jnp.zeros_like(full[:1])])


def step(p, s, x, *, snow: bool = False):
    """One day of GR4J for one basin and one component (scalars; the queues' lengths are
    those of the state's, see :func:`queue_lengths`)."""
    prcp, pet = x.prcp, x.pet
    snowpack = s.snowpack
    if snow:
        rain = prcp * (x.tmean >= p.tt).astype(prcp.dtype)
        pack = snowpack + prcp - rain
        melt = jnp.minimum(p.cfmax * jnp.maximum(x.tmean - p.tt, 0.0), pack)
        snowpack = pack - melt
        P = rain + melt
    else:
        P = prcp
    E = pet
    wet = P >= E
    sr = s.S / p.x1
    # 1. Production store: both branches on non-negative inputs, then one is kept.
    tw = jnp.tanh(jnp.minimum(jnp.maximum(P - E, 0.0) / p.x1, WS_MAX))
    ps = p.x1 * (1.0 - sr ** 2) * tw / (1.0 + sr * tw)
    td = jnp.tanh(jnp.minimum(jnp.maximum(E - P, 0.0) / p.x1, WS_MAX))
    es = s.S * (2.0 - sr) * td / (1.0 + (1.0 - sr) * td)
    ps = jnp.where(wet, ps, 0.0)
    es = jnp.where(wet, 0.0, es)
    pn = jnp.where(wet, P - E, 0.0)
    et = jnp.where(wet, E, es + P)
    S = s.S + ps - es
    # 2. Percolation.
    perc = S * (1.0 - (1.0 + (S / (2.25 * p.x1)) ** 4) ** -0.25)
    S = S - perc
    pr = perc + pn - ps
    # 3. Unit hydrographs.
    uh1, uh2 = unit_hydrographs(p.x4, s.uh1.shape[-1], s.uh2.shape[-1])
    q9, q_uh1 = _advance(s.uh1, uh1 * (0.9 * pr))
    q1, q_uh2 = _advance(s.uh2, uh2 * (0.1 * pr))
    # 4. Exchange, routing store, direct flow.
    f = p.x2 * (floor_pos(s.R) / p.x3) ** 3.5
    r1 = s.R + q9 + f
    exch_r = jnp.where(r1 >= 0.0, f, -(s.R + q9))
    r1 = jnp.maximum(r1, 0.0)
    qr = r1 * (1.0 - (1.0 + (r1 / p.x3) ** 4) ** -0.25)
    R = r1 - qr
    qd_raw = q1 + f
    exch_d = jnp.where(qd_raw >= 0.0, f, -q1)
    qd = jnp.maximum(qd_raw, 0.0)
    fluxes = GR4JFluxes(qr + qd, qr, qd, et, perc, exch_r + exch_d)
    return GR4JState(S, R, q_uh1, q_uh2, snowpack), fluxes


def initial_state(p, n1: int = N_UH1, n2: int = N_UH2) -> GR4JState:
    """airGR's defaults: ``S = 0.3 x1``, ``R = 0.5 x3``, empty queues (``n1``, ``n2`` slots),
    no snow."""
    z = jnp.zeros_like(p.x1)
    return GR4JState(0.3 * p.x1, 0.5 * p.x3, jnp.zeros(n1, z.dtype), jnp.zeros(n2, z.dtype), z)


def run(params: Mapping[str, Any], prcp, tmean, pet, state=None, *, snow: bool = False,
        adjoint: str = "autodiff"):
    """Run GR4J for one basin and one component over ``T`` days: the same call as
    :func:`dpljax.models.hbv.run` (``tmean`` is read only with ``snow=True``).

    ``params`` maps x1..x4 (plus tt, cfmax with ``snow``) to scalars or ``(T,)`` arrays;
    returns :class:`~dpljax.models.base.Output` ``(fluxes, final_state)``.
    """
    forcing = {"prcp": prcp, "pet": pet, "tmean": tmean}
    model = GR4J(snow=snow, adjoint=adjoint)
    x4 = params.get("x4") if hasattr(params, "get") else getattr(params, "x4", None)
    if x4 is not None and not isinstance(x4, jax.core.Tracer) and np.any(np.asarray(x4) > model.x4_max):
        model = model.with_bounds({"x4": (BOUNDS["x4"][0], float(np.max(x4)))})
    return base.run(model, params, forcing, state)


@register_model("gr4j", static=("snow", "adjoint", "x4_max"))
class GR4J(ProcessModel):
    """GR4J through the process-model protocol. ``snow``: degree-day snow routine before the
    production store (adds ``tt`` and ``cfmax``, reads ``tmean``); ``adjoint``: ``"autodiff"``
    or ``"checkpoint"`` (GR4J has no hand-written adjoint); ``x4_max``: the largest ``x4`` (d)
    it will be run with, which sizes the unit-hydrograph queues (:func:`queue_lengths`)."""

    Params = GR4JParams
    State = GR4JState
    Fluxes = GR4JFluxes
    Forcing = GR4JForcing
    default_routing = None  # its unit hydrographs are its routing

    def __init__(self, *, snow: bool = False, adjoint: str = "autodiff", x4_max: float = BOUNDS["x4"][1]):
        self.snow = bool(snow)
        self.adjoint = check_adjoint(self, adjoint)
        queue_lengths(float(x4_max))
        self.x4_max = float(x4_max)

    def with_bounds(self, bounds) -> "GR4J":
        """This model with queues long enough for ``bounds["x4"]``'s upper bound."""
        hi = float(bounds["x4"][1]) if "x4" in bounds else self.x4_max
        return self if hi == self.x4_max else GR4J(snow=self.snow, adjoint=self.adjoint, x4_max=hi)

    @property
    def forcing(self) -> tuple[str, ...]:
        return ("prcp", "tmean", "pet") if self.snow else ("prcp", "pet")

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return dict(BOUNDS, **(SNOW_BOUNDS if self.snow else {}))

    @property
    def valid_bounds(self) -> dict[str, tuple[float, float]]:
        """:attr:`bounds`, with ``x4`` up to the ``x4_max`` the queues were sized for."""
        b = self.bounds
        return dict(b, x4=(b["x4"][0], max(b["x4"][1], self.x4_max)))

    def initial_state(self, params) -> GR4JState:
        return initial_state(params, *queue_lengths(self.x4_max))

    def step(self, params, state, x):
        return step(params, state, x, snow=self.snow)

    def storage(self, state):
        return state.S + state.R + state.uh1.sum(-1) + state.uh2.sum(-1) + state.snowpack

    def net_inflow(self, x, fluxes):
        return x.prcp + fluxes.exch - fluxes.et - fluxes.q
