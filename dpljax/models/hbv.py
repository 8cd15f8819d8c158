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

Speed: :func:`run` is differentiated through a hand-written adjoint of one day
(``_step_vjp``, a ``jax.custom_vjp`` around the scan): the forward pass stores the five
storages of each day, the backward pass recomputes the day and applies its derivative. It
equals autodiff (tests/test_perf_vjp.py) and is faster than ``jax.checkpoint`` of the scan
body on CPU (benchmarks/README.md); ``remat=False`` selects plain autodiff.
"""
from __future__ import annotations

from collections import namedtuple
from functools import partial
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


# ------------------------------------------------------------------ hand-written adjoint
# Reverse-mode derivative of one day, written out by hand. Autodiff of the scan body gives
# the same numbers, but XLA's CPU backend has no multi-output fusion: every one of the ~20
# values a transposed day produces becomes its own kernel that recomputes (or re-reads) the
# forward chain, and the checkpointed body also recomputes the forward twice. Here the
# forward pass stores only the five storages at the start of each day; the backward pass
# recomputes that one day once, reuses each power for its own derivative
# (d x**b / dx = b x**b / x, d x**b / db = x**b log x), and skips whatever is not being
# differentiated (forcing, unused fluxes). Ties of min/max split the cotangent in halves,
# as jax.numpy.minimum/maximum do, so the result equals autodiff (tests/test_perf_vjp.py).


def _materialise(v, one):
    """``v / one`` with ``one == 1`` known only at run time: the value is unchanged (exact in
    IEEE arithmetic), but XLA does not duplicate a division into each consumer's kernel, so
    the value is computed once and read, instead of being re-evaluated, with its whole chain,
    inside every kernel that needs it (-7% fwd+bwd time on one core at 671 x 730, noise
    level with two threads: benchmarks/results/optimisations.json)."""
    return v / one


def _w_min(a, b):
    """d min(a, b) / da with JAX's tie convention (1/2 on a tie)."""
    return jnp.where(a < b, 1.0, jnp.where(a == b, 0.5, 0.0)).astype(jnp.result_type(a, b))


def _w_max(a, b):
    """d max(a, b) / da with JAX's tie convention (1/2 on a tie)."""
    return jnp.where(a > b, 1.0, jnp.where(a == b, 0.5, 0.0)).astype(jnp.result_type(a, b))


def _step_vjp(p: HBVParams, s: HBVState, x: Forcing, g_s: HBVState, g_f: HBVFluxes, *,
              capillary: bool, smooth_phase: float, need_x: bool):
    """Cotangents ``(g_state_before, g_params: dict, g_forcing | None)`` of one day.

    ``g_s`` / ``g_f`` are the cotangents of the day's new state and fluxes (``None`` entries of
    ``g_f`` are zeros). Recomputes the day's forward values from the state at its start.
    """
    prcp, tmean, pet = x
    dt = s.sm.dtype
    one = jnp.where(p.fc > -1e30, 1.0, 2.0).astype(dt)  # 1, not a compile-time constant
    zero = jnp.zeros((), dt)
    # ---- forward, keeping what the derivative needs (same operations as `step`)
    if smooth_phase > 0.0:
        fr = jax.nn.sigmoid((tmean - p.tt) / smooth_phase)
    else:
        fr = (tmean >= p.tt).astype(dt)
    rain = prcp * fr
    snow = prcp - rain
    sp1 = s.snowpack + snow
    a_m = p.cfmax * (tmean - p.tt)
    m0 = jnp.maximum(a_m, 0.0)
    melt = jnp.minimum(m0, sp1)
    mw1 = s.meltwater + melt
    sp2 = sp1 - melt
    cfrmax = p.cfr * p.cfmax
    dtt = p.tt - tmean
    a_r = cfrmax * dtt
    r0 = jnp.maximum(a_r, 0.0)
    refr = jnp.minimum(r0, mw1)
    sp3 = sp2 + refr
    mw2 = mw1 - refr
    a_t = mw2 - p.cwh * sp3
    tosoil = jnp.maximum(a_t, 0.0)
    smf = floor_pos(s.sm)
    u = smf / p.fc
    log_u = jnp.log(u)
    y1 = jnp.exp(p.beta * log_u)  # = u ** beta, sharing log(u) with d/d beta
    y1c = jnp.maximum(0.0, y1)
    wet = jnp.minimum(1.0, y1c)
    infil = _materialise(rain + tosoil, one)
    sm1 = s.sm + infil - infil * wet
    a_e = sm1 - p.fc
    sm2 = _materialise(sm1 - jnp.maximum(a_e, 0.0), one)
    sm2f = floor_pos(sm2)
    lpfc = p.lp * p.fc
    v = sm2f / lpfc
    log_v = jnp.log(v)
    y2 = jnp.exp(p.betaet * log_v)
    y2c = jnp.maximum(0.0, y2)
    ef = jnp.minimum(1.0, y2c)
    pe = pet * ef
    et = jnp.minimum(sm2, pe)
    a_s = sm2 - et
    sm3 = jnp.maximum(a_s, SM_FLOOR)
    slz1 = s.slz
    if capillary:
        w1 = sm3 / p.fc
        mn = jnp.minimum(w1, 1.0)
        one_mn = 1.0 - mn
        c_slz = p.c * s.slz
        cc = c_slz * one_mn
        cap = jnp.minimum(s.slz, cc)
        slz1 = s.slz - cap
    suz1 = _materialise(s.suz + infil * wet + jnp.maximum(a_e, 0.0), one)
    perc = jnp.minimum(suz1, p.perc)
    suz2 = suz1 - perc
    a_q = suz2 - p.uzl
    mq = jnp.maximum(a_q, 0.0)
    q0 = p.k0 * mq
    suz3 = suz2 - q0
    slz2 = slz1 + perc

    # ---- backward
    def ct(v):
        return zero if v is None else v

    g_q = ct(g_f.q)
    g_q0 = ct(g_f.q0) + g_q
    g_q1 = ct(g_f.q1) + g_q
    g_q2 = ct(g_f.q2) + g_q - g_s.slz
    g_slz2 = g_s.slz + g_q2 * p.k2
    gp = {"k2": g_q2 * slz2}
    g_q1 = g_q1 - g_s.suz
    gp["k1"] = g_q1 * suz3
    g_suz3 = g_s.suz + g_q1 * p.k1
    g_q0 = g_q0 - g_suz3
    gp["k0"] = g_q0 * mq
    g_aq = g_q0 * p.k0 * _w_max(a_q, 0.0)
    gp["uzl"] = -g_aq
    g_suz2 = g_suz3 + g_aq
    g_perc = g_slz2 - g_suz2
    w_perc = _w_min(suz1, p.perc)
    g_suz1 = _materialise(g_suz2 + g_perc * w_perc, one)
    gp["perc"] = g_perc * (1.0 - w_perc)
    g_rech = g_suz1
    g_excess = g_suz1
    g_sm3 = g_s.sm
    g_slz_old = g_slz2
    if capillary:
        g_cap = g_s.sm - g_slz2
        w_cap = _w_min(s.slz, cc)
        g_cc = g_cap * (1.0 - w_cap)
        g_slz_old = g_slz_old + g_cap * w_cap + g_cc * p.c * one_mn
        gp["c"] = g_cc * s.slz * one_mn
        g_w1 = -g_cc * c_slz * _w_min(w1, 1.0)
        g_sm3 = g_sm3 + g_w1 / p.fc
        g_fc = -g_w1 * w1 / p.fc
    else:
        g_fc = zero
    g_as = g_sm3 * _w_max(a_s, SM_FLOOR)
    g_et = ct(g_f.et) - g_as
    w_et = _w_min(sm2, pe)
    g_sm2 = g_as + g_et * w_et
    g_pe = g_et * (1.0 - w_et)
    g_y2 = g_pe * pet * _w_min(y2c, 1.0) * _w_max(y2, 0.0)
    gp["betaet"] = g_y2 * y2 * log_v
    g_v = g_y2 * p.betaet * (y2 / v)
    g_lpfc = -g_v * v / lpfc
    gp["lp"] = g_lpfc * p.fc
    g_fc = g_fc + g_lpfc * p.lp
    g_sm2 = g_sm2 + g_v / lpfc * _w_max(sm2, 1e-6)
    g_sm1 = g_sm2
    g_excess = g_excess - g_sm2
    g_ae = g_excess * _w_max(a_e, 0.0)
    g_sm1 = g_sm1 + g_ae
    g_fc = g_fc - g_ae
    g_sm1 = _materialise(g_sm1, one)
    g_rech = g_rech - g_sm1
    g_infil = _materialise(g_sm1 + g_rech * wet, one)
    g_wet = g_rech * infil
    g_y1 = g_wet * _w_min(y1c, 1.0) * _w_max(y1, 0.0)
    gp["beta"] = g_y1 * y1 * log_u
    g_u = g_y1 * p.beta * (y1 / u)
    g_fc = g_fc - g_u * u / p.fc
    gp["fc"] = g_fc
    g_sm_old = g_sm1 + g_u / p.fc * _w_max(s.sm, 1e-6)
    g_tosoil = g_infil - g_s.meltwater
    g_at = g_tosoil * _w_max(a_t, 0.0)
    g_mw2 = g_s.meltwater + g_at
    gp["cwh"] = -g_at * sp3
    g_sp3 = g_s.snowpack - g_at * p.cwh
    g_refr = g_sp3 - g_mw2
    w_refr = _w_min(r0, mw1)
    g_mw1 = g_mw2 + g_refr * (1.0 - w_refr)
    g_ar = g_refr * w_refr * _w_max(a_r, 0.0)
    g_cfrmax = g_ar * dtt
    gp["cfr"] = g_cfrmax * p.cfmax
    g_melt = g_mw1 - g_sp3
    w_melt = _w_min(m0, sp1)
    g_sp1 = g_sp3 + g_melt * (1.0 - w_melt)
    g_am = g_melt * w_melt * _w_max(a_m, 0.0)
    dtm = tmean - p.tt
    gp["cfmax"] = g_cfrmax * p.cfr + g_am * dtm
    g_dtt = g_ar * cfrmax - g_am * p.cfmax  # d/d(tt - tmean)
    g_rain = g_infil - g_sp1
    if smooth_phase > 0.0:
        g_z = g_rain * prcp * fr * (1.0 - fr) / smooth_phase  # z = (tmean - tt) / width
        g_dtt = g_dtt - g_z
    gp["tt"] = g_dtt
    g_state = HBVState(g_sp1, g_mw1, g_sm_old, g_suz1, g_slz_old)
    g_x = None
    if need_x:
        g_x = Forcing(g_sp1 + g_rain * fr, -g_dtt, g_pe * ef)
    return g_state, gp, g_x


def _perturbed(tree) -> bool:
    return any(leaf.perturbed for leaf in jax.tree.leaves(
        tree, is_leaf=lambda l: isinstance(l, jax.custom_derivatives.CustomVJPPrimal)))


def _values(tree):
    return jax.custom_derivatives.custom_vjp_primal_tree_values(tree)


def _scan_primal(static, dynamic, forcing, s0, capillary, smooth_phase, keep_states):
    def body(s, xs):
        x, dyn = xs
        s_new, f = step(HBVParams(**static, **dyn), s, x, capillary=capillary,
                        smooth_phase=smooth_phase)
        return s_new, ((f, s) if keep_states else f)

    return jax.lax.scan(body, s0, (forcing, dynamic))


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _hbv_scan(static, dynamic, forcing, s0, capillary, smooth_phase):
    """``(final_state, fluxes)`` of HBV over the leading (time) axis, hand-written adjoint."""
    return _scan_primal(static, dynamic, forcing, s0, capillary, smooth_phase, False)


def _hbv_scan_fwd(static, dynamic, forcing, s0, capillary, smooth_phase):
    # Which inputs are differentiated, as pytree structure (() yes, None no): residuals
    # may only hold arrays, and this must be known when the backward scan is traced.
    need = tuple(() if _perturbed(t) else None for t in (static, dynamic, forcing))
    static, dynamic, forcing, s0 = _values((static, dynamic, forcing, s0))
    final, (fluxes, states) = _scan_primal(static, dynamic, forcing, s0, capillary,
                                           smooth_phase, True)
    return (final, fluxes), (static, dynamic, forcing, states, need)


def _hbv_scan_bwd(capillary, smooth_phase, res, cts):
    static, dynamic, forcing, states, need = res
    need_static, need_dyn, need_x = (n is not None for n in need)
    g_final, g_fluxes = cts
    zeros = lambda a: jnp.zeros(jnp.shape(a), a.dtype)
    sz = jax.custom_derivatives.SymbolicZero
    g_final = HBVState(*(zeros(st[0]) if isinstance(g, sz) else g
                         for g, st in zip(g_final, states)))
    # Unused fluxes arrive as symbolic zeros: they are left out of the scan altogether.
    g_fl = HBVFluxes(*(None if isinstance(g, sz) else g for g in g_fluxes))
    flux_xs = {k: v for k, v in g_fl._asdict().items() if v is not None}
    acc0 = {k: zeros(v) for k, v in static.items()} if need_static else {}

    def body(carry, xs):
        g_s, acc = carry
        s, x, dyn, gf = xs
        g_f = HBVFluxes(*(gf.get(k) for k in FLUX_NAMES))
        g_prev, gp, g_x = _step_vjp(HBVParams(**static, **dyn), s, x, g_s, g_f,
                                    capillary=capillary, smooth_phase=smooth_phase,
                                    need_x=need_x)
        acc = {k: a + gp[k] for k, a in acc.items()}
        ys = ({k: gp[k] for k in dyn} if need_dyn else {}, g_x)
        return (g_prev, acc), ys

    (g_s0, g_static), (g_dyn, g_x) = jax.lax.scan(
        body, (g_final, acc0), (states, forcing, dynamic, flux_xs), reverse=True)
    if not need_static:
        g_static = {k: zeros(v) for k, v in static.items()}
    if not need_dyn:
        g_dyn = {k: zeros(v) for k, v in dynamic.items()}
    g_x = Forcing(*(zeros(v) for v in forcing)) if g_x is None else Forcing(*g_x)
    return g_static, g_dyn, g_x, g_s0


_hbv_scan.defvjp(_hbv_scan_fwd, _hbv_scan_bwd, symbolic_zeros=True)


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
      remat: ``True`` (default): the backward pass is the hand-written adjoint of one day,
        which stores only the five storages per day and recomputes the day (fast, little
        memory). ``False``: plain autodiff of the scan, every intermediate stored (the
        reference the adjoint is tested against). Same values either way.

    Returns:
      :class:`HBVOutput` ``(fluxes, final_state)``; ``fluxes.q, .q0, .q1, .q2, .et`` are
      ``(T,)`` (mm/d). Use ``jax.vmap`` over components and basins: the vmapped function
      is exactly what :meth:`HBV.simulate` runs.
    """
    p = _as_params(params, capillary)
    dtype = float_dtype(prcp)
    # jnp.array(copy=True), not asarray: under vmap a NumPy input stays a NumPy value inside
    # its batch tracer, which the custom_vjp below cannot take as a constant (free under jit).
    arr = lambda v: jnp.array(v, dtype=dtype, copy=True)
    forcing = Forcing(arr(prcp), arr(tmean), arr(pet))
    n_t = forcing.prcp.shape[0]
    # Static parameters are closed over; time-varying ones are scanned with the forcing.
    static, dynamic = {}, {}
    for k, v in p.items():
        v = arr(v)
        if v.ndim == 0:
            static[k] = v
        elif v.shape == (n_t,):
            dynamic[k] = v
        else:
            raise ValueError(f"HBV parameter {k!r} has shape {v.shape}; expected () or ({n_t},)")
    s0 = initial_state(jnp.zeros((), dtype)) if state is None else HBVState(*map(arr, state))
    if remat:
        final, fluxes = _hbv_scan(static, dynamic, forcing, s0, capillary, float(smooth_phase))
    else:
        final, fluxes = _scan_primal(static, dynamic, forcing, s0, capillary,
                                     float(smooth_phase), False)
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
