"""HBV (one component) + gamma unit-hydrograph routing + the training loss, written as a
spotpy user would: one day loop over float64 NumPy arrays, from the design notes (DESIGN.md,
"HBV as this project implements it"). The same source runs as plain Python/NumPy
(:func:`objective_numpy`) and compiled by numba (:func:`objective_numba`), the fastest set-up
a spotpy user would write. Benchmark-only (not part of the library); checked against
dpljax's own chain in ``benchmarks/sceua.py`` before any timing.

Parameter vector (15): the 13 HBV parameters in :data:`dpljax.models.hbv.BOUNDS` order, then
``route_a``, ``route_b``.
"""
from __future__ import annotations

import math

import numpy as np

N_TAPS = 15


def hbv_loop(x, prcp, tmean, pet, q):
    """Fill ``q (T,)`` with HBV's daily runoff (mm/d) for parameters ``x`` (15,)."""
    beta, fc, k0, k1, k2, lp, perc, uzl, tt, cfmax, cfr, cwh, betaet = (
        x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], x[9], x[10], x[11], x[12])
    snowpack = meltwater = sm = suz = slz = 0.001
    for t in range(prcp.shape[0]):
        p, tm, ep = prcp[t], tmean[t], pet[t]
        rain = p if tm >= tt else 0.0
        snow = p - rain
        snowpack += snow
        melt = min(max(cfmax * (tm - tt), 0.0), snowpack)
        meltwater += melt
        snowpack -= melt
        refreeze = min(max(cfr * cfmax * (tt - tm), 0.0), meltwater)
        snowpack += refreeze
        meltwater -= refreeze
        tosoil = max(meltwater - cwh * snowpack, 0.0)
        meltwater -= tosoil
        wet = min(max((max(sm, 1e-6) / fc) ** beta, 0.0), 1.0)
        infil = rain + tosoil
        recharge = infil * wet
        sm = sm + infil - recharge
        excess = max(sm - fc, 0.0)
        sm -= excess
        ef = min(max((max(sm, 1e-6) / (lp * fc)) ** betaet, 0.0), 1.0)
        et = min(sm, ep * ef)
        sm = max(sm - et, 1e-5)
        suz = suz + recharge + excess
        pc = min(suz, perc)
        suz -= pc
        q0 = k0 * max(suz - uzl, 0.0)
        suz -= q0
        q1 = k1 * suz
        suz -= q1
        slz += pc
        q2 = k2 * slz
        slz -= q2
        q[t] = q0 + q1 + q2


def route_loop(x, q, out):
    """Gamma unit hydrograph (``alpha = relu(route_a) + 0.1``, ``theta = relu(route_b) + 0.5``,
    weights at t = 0.5..14.5 normalised) and the causal convolution into ``out``."""
    alpha = max(x[13], 0.0) + 0.1
    theta = max(x[14], 0.0) + 0.5
    logw = np.empty(N_TAPS)
    for k in range(N_TAPS):
        tk = k + 0.5
        logw[k] = (alpha - 1.0) * math.log(tk) - tk / theta
    mx = logw.max()
    w = np.exp(logw - mx)
    w /= w.sum()
    for t in range(q.shape[0]):
        acc = 0.0
        for k in range(min(N_TAPS, t + 1)):
            acc += w[k] * q[t - k]
        out[t] = acc


def loss_loop(pred, obs, warm):
    """The project's default training loss (``rmse_combined``): ``0.75 RMSE(q) + 0.25
    RMSE(log10(sqrt(q + 1e-6) + 0.1))`` over the valid observations after ``warm`` days."""
    s1 = s2 = 0.0
    n = 0
    for t in range(warm, pred.shape[0]):
        o = obs[t]
        if math.isfinite(o):
            d = pred[t] - o
            s1 += d * d
            lp = math.log10(math.sqrt(max(pred[t], 0.0) + 1e-6) + 0.1)
            lo = math.log10(math.sqrt(max(o, 0.0) + 1e-6) + 0.1)
            s2 += (lp - lo) ** 2
            n += 1
    n = max(n, 1)
    return 0.75 * math.sqrt(s1 / n) + 0.25 * math.sqrt(s2 / n)


def simulate_python(x, prcp, tmean, pet):
    q = np.empty(prcp.shape[0])
    hbv_loop(x, prcp, tmean, pet, q)
    out = np.empty_like(q)
    route_loop(x, q, out)
    return out


def objective_python(x, prcp, tmean, pet, obs, warm):
    return loss_loop(simulate_python(x, prcp, tmean, pet), obs, warm)


_NUMBA = {}


def _numba():
    if not _NUMBA:
        import numba

        hbv = numba.njit(cache=False, fastmath=False)(hbv_loop)
        route = numba.njit(cache=False)(route_loop)
        loss = numba.njit(cache=False)(loss_loop)

        @numba.njit
        def simulate(x, prcp, tmean, pet):
            q = np.empty(prcp.shape[0])
            hbv(x, prcp, tmean, pet, q)
            out = np.empty_like(q)
            route(x, q, out)
            return out

        @numba.njit
        def objective(x, prcp, tmean, pet, obs, warm):
            return loss(simulate(x, prcp, tmean, pet), obs, warm)

        _NUMBA.update(simulate=simulate, objective=objective)
    return _NUMBA


def simulate_numba(x, prcp, tmean, pet):
    return _numba()["simulate"](np.asarray(x, np.float64), prcp, tmean, pet)


def objective_numba(x, prcp, tmean, pet, obs, warm):
    return _numba()["objective"](np.asarray(x, np.float64), prcp, tmean, pet, obs, warm)
