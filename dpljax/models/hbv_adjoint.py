"""HBV's hand-written adjoint: the reverse-mode derivative of one day, written out by hand.

Selected with ``adjoint="model"`` (HBV's default); :func:`hbv_scan` is a ``jax.custom_vjp``
around the scan over days. The forward pass stores only the five storages at the start of
each day; the backward pass recomputes that one day and applies its derivative. It equals
autodiff (tests/test_perf_vjp.py) and is faster than ``jax.checkpoint`` of the scan body on
CPU (benchmarks/README.md).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .base import floor_pos
from .hbv import FLUX_NAMES, SM_FLOOR, Forcing, HBVFluxes, HBVParams, HBVState, step

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
              capillary: bool, smooth_phase: float, need_x: bool, precip_correction: bool = False):
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
    if precip_correction:
        rain0 = prcp * fr  # before the correction
        snow0 = prcp * (1.0 - fr)
        rain = rain0 * p.rfcf
        snow = snow0 * p.sfcf
    else:
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
    g_in = ct(g_f.prcp_in)
    if precip_correction:
        g_rain = g_infil + g_in  # cotangents of the corrected rain and snow
        g_snow = g_sp1 + g_in
        gp["rfcf"] = g_rain * rain0
        gp["sfcf"] = g_snow * snow0
        g_fr = prcp * (g_rain * p.rfcf - g_snow * p.sfcf)
        g_prcp = g_rain * p.rfcf * fr + g_snow * p.sfcf * (1.0 - fr)
    else:
        g_rain = g_infil - g_sp1  # snow = prcp - rain
        g_fr = g_rain * prcp
        g_prcp = g_sp1 + g_rain * fr + g_in
    if smooth_phase > 0.0:
        g_z = g_fr * fr * (1.0 - fr) / smooth_phase  # z = (tmean - tt) / width
        g_dtt = g_dtt - g_z
    gp["tt"] = g_dtt
    g_state = HBVState(g_sp1, g_mw1, g_sm_old, g_suz1, g_slz_old)
    g_x = None
    if need_x:
        g_x = Forcing(g_prcp, -g_dtt, g_pe * ef)
    return g_state, gp, g_x


def _perturbed(tree) -> bool:
    return any(leaf.perturbed for leaf in jax.tree.leaves(
        tree, is_leaf=lambda l: isinstance(l, jax.custom_derivatives.CustomVJPPrimal)))


def _values(tree):
    return jax.custom_derivatives.custom_vjp_primal_tree_values(tree)


def _scan_primal(static, dynamic, forcing, s0, capillary, smooth_phase, precip_correction,
                 keep_states):
    def body(s, xs):
        x, dyn = xs
        s_new, f = step(HBVParams(**static, **dyn), s, x, capillary=capillary,
                        smooth_phase=smooth_phase, precip_correction=precip_correction)
        return s_new, ((f, s) if keep_states else f)

    return jax.lax.scan(body, s0, (forcing, dynamic))


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def hbv_scan(static, dynamic, forcing, s0, capillary, smooth_phase, precip_correction=False):
    """``(final_state, fluxes)`` of HBV over the leading (time) axis, hand-written adjoint."""
    return _scan_primal(static, dynamic, forcing, s0, capillary, smooth_phase, precip_correction,
                        False)


def _hbv_scan_fwd(static, dynamic, forcing, s0, capillary, smooth_phase, precip_correction):
    # Which inputs are differentiated, as pytree structure (() yes, None no): residuals
    # may only hold arrays, and this must be known when the backward scan is traced.
    need = tuple(() if _perturbed(t) else None for t in (static, dynamic, forcing))
    static, dynamic, forcing, s0 = _values((static, dynamic, forcing, s0))
    final, (fluxes, states) = _scan_primal(static, dynamic, forcing, s0, capillary,
                                           smooth_phase, precip_correction, True)
    return (final, fluxes), (static, dynamic, forcing, states, need)


def _hbv_scan_bwd(capillary, smooth_phase, precip_correction, res, cts):
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
                                    need_x=need_x, precip_correction=precip_correction)
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


hbv_scan.defvjp(_hbv_scan_fwd, _hbv_scan_bwd, symbolic_zeros=True)
