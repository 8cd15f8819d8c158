"""Evaluation metrics per basin (NumPy, NaN observations excluded pairwise).

nse: Nash-Sutcliffe efficiency (Nash & Sutcliffe 1970). kge: Kling-Gupta efficiency
(Gupta et al. 2009), ``1 - sqrt((r-1)^2 + (alpha-1)^2 + (beta-1)^2)``. rmse (mm/d).
bias: relative volume bias ``(sum sim - sum obs) / sum obs`` (fraction). r: Pearson
correlation. fhv: percent bias of the high-flow volume, top 2 % of the flow-duration curve;
flv: percent bias of the low-flow volume, bottom 30 %, in log space (Yilmaz et al. 2008).

Every metric is defined for any input and returns NaN where it is undefined instead of
raising: a simulation that is NaN or inf on a day with an observation,
no valid pair (or fewer than two, for nse, kge, r and flv), observations of zero
variance (nse, kge, r), a zero observed volume (bias, fhv) or mean (kge), fewer than two
low-flow days (flv). A table's medians are then taken over the basins where the metric is
defined, and ``summary.json`` says over how many (``n_basins_nse``, ``n_basins_kge``).
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

METRICS = ("nse", "kge", "rmse", "bias", "r", "fhv", "flv")


class _NonFiniteSim(Exception):
    pass


def _pair(sim, obs):
    """The days with an observation; a simulation that is NaN or inf on any of them makes
    every metric NaN (it is never scored over the remaining days)."""
    sim = np.asarray(sim, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    ok = np.isfinite(obs)
    if not np.isfinite(sim[ok]).all():
        raise _NonFiniteSim
    return sim[ok], obs[ok]


def _undefined_is_nan(fn, undefined=lambda: np.nan):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with np.errstate(all="ignore"):
                return fn(*args, **kwargs)
        except _NonFiniteSim:
            return undefined()

    return wrapper


def nse(sim, obs) -> float:
    """Nash-Sutcliffe efficiency (Nash & Sutcliffe 1970, J. Hydrol. 10, 282-290), unitless:
    ``1 - sum (sim - obs)^2 / sum (obs - mean obs)^2`` over days with an observation; ``sim``
    and ``obs`` are ``(T,)`` (mm/d). 1 is perfect, 0 is the skill of the observed mean."""
    s, o = _pair(sim, obs)
    if len(o) < 2:
        return np.nan
    den = np.sum((o - o.mean()) ** 2)
    return float(1.0 - np.sum((s - o) ** 2) / den) if den > 0 else np.nan


def pearson_r(sim, obs) -> float:
    """Pearson correlation of ``sim`` and ``obs`` (``(T,)``) over days with an observation."""
    s, o = _pair(sim, obs)
    if len(o) < 2 or s.std() == 0 or o.std() == 0:
        return np.nan
    return float(np.corrcoef(s, o)[0, 1])


def kge(sim, obs) -> float:
    """Kling-Gupta efficiency (Gupta et al. 2009, J. Hydrol. 377, 80-91), unitless:
    ``1 - sqrt((r - 1)^2 + (alpha - 1)^2 + (beta - 1)^2)`` with ``r`` the correlation,
    ``alpha = std(sim) / std(obs)`` and ``beta = mean(sim) / mean(obs)``; ``(T,)`` inputs."""
    s, o = _pair(sim, obs)
    if len(o) < 2 or o.mean() == 0 or o.std() == 0:
        return np.nan
    r = pearson_r(s, o)
    return float(1.0 - np.sqrt((r - 1) ** 2 + (s.std() / o.std() - 1) ** 2 + (s.mean() / o.mean() - 1) ** 2))


def rmse(sim, obs) -> float:
    """Root-mean-square error ``sqrt(mean (sim - obs)^2)`` in the units of the inputs (mm/d)."""
    s, o = _pair(sim, obs)
    return float(np.sqrt(np.mean((s - o) ** 2))) if len(o) else np.nan


def bias(sim, obs) -> float:
    """Relative volume bias ``(sum sim - sum obs) / sum obs`` (a fraction; 0.1 = 10 % too much)."""
    s, o = _pair(sim, obs)
    return float((s.sum() - o.sum()) / o.sum()) if len(o) and o.sum() != 0 else np.nan


def fhv(sim, obs, h: float = 0.02) -> float:
    """Percent bias of the high-flow volume (Yilmaz et al. 2008, WRR 44, W09417): the top
    ``h`` (2 %) of each flow-duration curve, ``100 (sum sim_h - sum obs_h) / sum obs_h`` (%)."""
    s, o = _pair(sim, obs)
    if len(o) == 0:
        return np.nan
    s, o = np.sort(s)[::-1], np.sort(o)[::-1]
    k = max(int(round(h * len(o))), 1)
    den = o[:k].sum()
    return float(100.0 * (s[:k].sum() - den) / den) if den > 0 else np.nan


def flv(sim, obs, low: float = 0.3, eps: float = 1e-6) -> float:
    """Percent bias of the low-flow volume (Yilmaz et al. 2008): the bottom ``low`` (30 %)
    of each flow-duration curve in log space, each measured above its own minimum,
    ``-100 (QS - QO) / QO`` with ``Q = sum (log(q + eps) - min log(q + eps))`` (%)."""
    s, o = _pair(sim, obs)
    if len(o) == 0:
        return np.nan
    s, o = np.sort(np.maximum(s, 0))[::-1], np.sort(np.maximum(o, 0))[::-1]
    k = max(int(round((1 - low) * len(o))), 0)
    if len(o) - k < 2:  # fewer than two low flows: no volume above the minimum to compare
        return np.nan
    ls, lo = np.log(s[k:] + eps), np.log(o[k:] + eps)
    qs, qo = np.sum(ls - ls.min()), np.sum(lo - lo.min())
    return float(-100.0 * (qs - qo) / qo) if qo > 0 else np.nan


TERMS = ("r", "alpha", "timing", "variability", "volume")


def nse_terms(sim, obs) -> dict:
    """Where a basin's NSE is lost: ``1 - NSE = (1 - r^2) + (alpha - r)^2 + beta_n^2`` exactly
    (Murphy 1988; Gupta et al. 2009), with ``r`` the correlation, ``alpha = std(sim)/std(obs)``
    and ``beta_n = (mean sim - mean obs) / std(obs)`` (population statistics over the days with
    an observation). ``timing`` = 1 - r^2, the loss no rescaling can remove; ``variability`` =
    (alpha - r)^2, too flashy (alpha > r) or too damped; ``volume`` = beta_n^2, the mean's bias.
    Returns those three with ``r`` and ``alpha``; all NaN where NSE is undefined."""
    s, o = _pair(sim, obs)
    if len(o) < 2 or o.std() == 0:
        return dict.fromkeys(TERMS, np.nan)
    r = float(np.corrcoef(s, o)[0, 1]) if s.std() > 0 else 0.0
    a = float(s.std() / o.std())
    return dict(zip(TERMS, (r, a, 1.0 - r * r, (a - r) ** 2, float((s.mean() - o.mean()) / o.std()) ** 2)))


nse, pearson_r, kge, rmse, bias, fhv, flv = map(_undefined_is_nan, (nse, pearson_r, kge, rmse, bias, fhv, flv))
nse_terms = _undefined_is_nan(nse_terms, lambda: dict.fromkeys(TERMS, np.nan))
FUNCS = {"nse": nse, "kge": kge, "rmse": rmse, "bias": bias, "r": pearson_r, "fhv": fhv, "flv": flv}


def table(sim: np.ndarray, obs: np.ndarray, basins, metrics=METRICS) -> pd.DataFrame:
    """Per-basin metrics of ``sim, obs (N, T)`` as a DataFrame indexed by basin, with the
    number of valid observations in ``n_obs`` and of missing (NaN, masked) ones in
    ``n_missing``."""
    rows = []
    for i, b in enumerate(basins):
        row = {m: FUNCS[m](sim[i], obs[i]) for m in metrics}  # undefined: NaN, no warning
        row["n_obs"] = int(np.isfinite(obs[i]).sum())
        row["n_missing"] = int((~np.isfinite(np.asarray(obs[i], dtype=np.float64))).sum())
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index([str(b) for b in basins], name="basin"))
