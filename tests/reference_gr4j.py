"""A plain-Python, day-by-day GR4J written straight from the design notes' equations (scalar
floats, lists for the unit-hydrograph queues), counting how often each branch fires.

Independent of dpljax (no JAX): the test compares dpljax.models.gr4j with it day by day. Each
queue holds the water still to leave it; a day adds UH(j) * share * Pr to slot j, emits slot 1
and shifts the rest forward (appending 0). Counts: production (P >= E), evaporation (P < E),
exchange_gain / exchange_loss (sign of F), routing_store_emptied (R + Q9 + F < 0, R set to
0), direct_flow_clipped (Q1 + F < 0, Qd set to 0), melt (melt > 0) and melt_limited_by_pack
(potential melt above a non-empty pack)."""
import math


def _sh1(t, x4):
    if t <= 0:
        return 0.0
    return (t / x4) ** 2.5 if t < x4 else 1.0


def _sh2(t, x4):
    if t <= 0:
        return 0.0
    if t <= x4:
        return 0.5 * (t / x4) ** 2.5
    if t < 2 * x4:
        return 1.0 - 0.5 * (2.0 - t / x4) ** 2.5
    return 1.0


def reference_gr4j(p, prcp, pet, tmean=None, snow=False, state=None):
    """GR4J over ``len(prcp)`` days. ``p``: x1..x4 (and tt, cfmax with ``snow``), scalars;
    ``prcp``, ``pet`` (mm/d), ``tmean`` (degC): sequences; ``state``: initial
    ``{S, R, uh1, uh2, snowpack}`` (airGR's defaults when None).

    Returns ``(fluxes: dict of lists, final state: dict, counts: dict)``."""
    x1, x2, x3, x4 = p["x1"], p["x2"], p["x3"], p["x4"]
    S, R, pack = 0.3 * x1, 0.5 * x3, 0.0
    q1s, q2s = [0.0] * 20, [0.0] * 40
    if state is not None:
        S, R, pack = state["S"], state["R"], state["snowpack"]
        q1s, q2s = list(state["uh1"]), list(state["uh2"])
    uh1 = [_sh1(j, x4) - _sh1(j - 1, x4) for j in range(1, 21)]
    uh2 = [_sh2(j, x4) - _sh2(j - 1, x4) for j in range(1, 41)]
    out = {k: [] for k in ("q", "qr", "qd", "et", "perc", "exch")}
    n = {k: 0 for k in ("production", "evaporation", "exchange_gain", "exchange_loss",
                        "routing_store_emptied", "direct_flow_clipped", "melt_limited_by_pack", "melt")}
    for t in range(len(prcp)):
        P = prcp[t]
        if snow:
            rain = P if tmean[t] >= p["tt"] else 0.0
            pack += P - rain
            pot = p["cfmax"] * max(tmean[t] - p["tt"], 0.0)
            melt = min(pot, pack)
            n["melt"] += melt > 0
            n["melt_limited_by_pack"] += pot > pack > 0
            pack -= melt
            P = rain + melt
        E = pet[t]
        if P >= E:
            n["production"] += 1
            ws = min((P - E) / x1, 13.0)
            ps = x1 * (1 - (S / x1) ** 2) * math.tanh(ws) / (1 + S / x1 * math.tanh(ws))
            pn, S, et = P - E, S + ps, E
        else:
            n["evaporation"] += 1
            ws = min((E - P) / x1, 13.0)
            es = S * (2 - S / x1) * math.tanh(ws) / (1 + (1 - S / x1) * math.tanh(ws))
            S -= es
            pn = ps = 0.0
            et = es + P
        perc = S * (1 - (1 + (S / (2.25 * x1)) ** 4) ** -0.25)
        S -= perc
        pr = perc + pn - ps
        q1s = [q1s[j] + uh1[j] * 0.9 * pr for j in range(20)]
        q2s = [q2s[j] + uh2[j] * 0.1 * pr for j in range(40)]
        q9, q1 = q1s[0], q2s[0]
        q1s, q2s = q1s[1:] + [0.0], q2s[1:] + [0.0]
        F = x2 * (R / x3) ** 3.5
        n["exchange_gain"] += F > 0
        n["exchange_loss"] += F < 0
        if R + q9 + F < 0:
            n["routing_store_emptied"] += 1
            exch, R = -(R + q9), 0.0
        else:
            exch, R = F, R + q9 + F
        qr = R * (1 - (1 + (R / x3) ** 4) ** -0.25)
        R -= qr
        if q1 + F < 0:
            n["direct_flow_clipped"] += 1
            exch, qd = exch - q1, 0.0
        else:
            exch, qd = exch + F, q1 + F
        for k, v in zip(out, (qr + qd, qr, qd, et, perc, exch)):
            out[k].append(v)
    state = {"S": S, "R": R, "uh1": q1s, "uh2": q2s, "snowpack": pack}
    return out, state, n
