"""Regionalisation: parameters for basins without calibration, from calibrated donor basins.

The two baselines of Tsai et al. (2021) against which dPL's spatial generalisation is judged:

(a) *Spatial proximity in attribute space* (donor basins): :func:`nearest_donors` finds the
    ``k`` donors nearest to each target in standardised attribute space; the target then takes
    the nearest donor's parameter set (``k = 1``) or the per-parameter median / mean of the
    ``k`` sets (:func:`donor_params`; median and mean of points of a box stay in the box), or
    the average of the ``k`` donors' *simulations* on its own forcing (:func:`donor_simulations`).
(b) *Regression* (:func:`regression_params`): each calibrated parameter, expressed in the unit
    box ``(x - lower) / (upper - lower)``, is regressed on the attributes (scikit-learn's random
    forest or ordinary least squares), predicted for the targets and clipped back into the box.
    :func:`out_of_fold_r2` says how much of each parameter's variation across basins the
    attributes explain (the coherence table).

Standardisation: attributes are z-scored with the *donors'* mean and standard deviation (the
targets are unseen basins: their statistics must not shape the space). An attribute that is
constant over the donors (standard deviation 0) cannot tell donors apart and is left out of
the distance and the regression.

Missing attributes (NaN), ``nan=``:
  ``"error"`` (default): raise, naming the basins (rows) and attributes (columns).
  ``"impute"``: a missing value becomes the donors' mean (0 after standardisation; what the dPL
    networks' inputs do), so it adds nothing to a distance; an attribute missing in every donor
    is left out.
  ``"pairwise"`` (distances only): the distance of a pair is taken over the attributes both
    have and rescaled by ``sqrt(a / a_common)`` to stay comparable; a pair sharing no attribute
    is at infinite distance. Donor statistics ignore missing values.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .problem import Problem

NAN_POLICIES = ("error", "impute", "pairwise")
METHODS = ("random_forest", "linear")


# ------------------------------------------------------------------ attributes
def _as_2d(name: str, a, n_cols: int | None = None) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (basins, attributes), got shape {a.shape}")
    if n_cols is not None and a.shape[1] != n_cols:
        raise ValueError(f"{name} has {a.shape[1]} attributes (columns); the donors have "
                         f"{n_cols}: both must list the same attributes in the same order")
    if np.isinf(a).any():
        r, c = np.nonzero(np.isinf(a))
        raise ValueError(f"{name} has infinite values (rows {sorted(set(r.tolist()))[:10]}, "
                         f"columns {sorted(set(c.tolist()))[:10]})")
    return a


def _check_nan(name: str, a: np.ndarray, nan: str, names) -> None:
    if nan not in NAN_POLICIES:
        raise ValueError(f"nan must be one of {list(NAN_POLICIES)}, got {nan!r}")
    if nan == "error" and np.isnan(a).any():
        rows, cols = np.nonzero(np.isnan(a))
        cols = sorted(set(cols.tolist()))
        label = [names[c] for c in cols] if names is not None else cols
        raise ValueError(
            f"{name} has missing (NaN) attributes: basins (rows) {sorted(set(rows.tolist()))[:10]}"
            f"{' ...' if len(set(rows.tolist())) > 10 else ''}, attributes {label}; pass "
            f"nan='impute' (donor mean) or nan='pairwise' (distances over shared attributes)")


def standardise(attrs_donor, *others, nan: str = "error", names=None):
    """z-score attributes with the donors' statistics.

    ``attrs_donor (D, a)`` and any further ``(M, a)`` arrays -> the standardised arrays, each
    ``(., a')`` where the ``a'`` kept attributes are those with a finite, non-zero standard
    deviation over the donors; also returns ``(mean (a,), std (a,), keep (a,) bool)``.
    ``nan``: see the module doc (``"impute"`` replaces missing values by 0, the donor mean;
    ``"pairwise"`` leaves them NaN).
    """
    d = _as_2d("attrs_donor", attrs_donor)
    rest = [_as_2d("attrs_target", o, d.shape[1]) for o in others]
    for label, a in [("attrs_donor", d)] + [("attrs_target", o) for o in rest]:
        _check_nan(label, a, nan, names)
    if d.shape[0] < 1:
        raise ValueError("attrs_donor has no donor basins (0 rows)")
    with warnings.catch_warnings():      # an all-NaN column: its mean is NaN, and it is dropped
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(d, axis=0)
        std = np.nanstd(d, axis=0)
    keep = np.isfinite(std) & (std > 0)
    if not keep.any():
        raise ValueError("no attribute varies over the donors (every column is constant or "
                         "missing): distances and regressions are undefined")
    out = []
    for a in [d] + rest:
        z = (a[:, keep] - mean[keep]) / std[keep]
        if nan == "impute":
            z = np.where(np.isnan(z), 0.0, z)
        out.append(z)
    return (*out, (mean, std, keep))


# ------------------------------------------------------------------ donors
def nearest_donors(attrs_target, attrs_donor, k: int = 1, *, nan: str = "error", names=None):
    """The ``k`` donors nearest to each target in attribute space.

    Args:
      attrs_target: ``(M, a)`` attributes of the basins to regionalise.
      attrs_donor: ``(D, a)`` attributes of the calibrated donors (same columns).
      k: donors per target, ``1 <= k <= D``.
      nan: ``"error"`` | ``"impute"`` | ``"pairwise"`` (module doc). names: attribute names,
        for error messages.

    Returns ``(idx (M, k) int, dist (M, k))``: donor indices, nearest first (ties: the lower
    donor index first), and Euclidean distances in the donors' standardised space.
    """
    zd, zt, _ = standardise(attrs_donor, attrs_target, nan=nan, names=names)
    n_donors = zd.shape[0]
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n_donors:
        raise ValueError(f"k must be an integer in 1..{n_donors} (the number of donors), got {k!r}")
    diff = zt[:, None, :] - zd[None, :, :]                       # (M, D, a')
    if nan == "pairwise":
        both = ~np.isnan(diff)
        n_common = both.sum(-1)
        ss = np.where(both, diff, 0.0) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            dist2 = np.where(n_common > 0, ss.sum(-1) * diff.shape[-1] / n_common, np.inf)
    else:
        dist2 = (diff ** 2).sum(-1)
    idx = np.argsort(dist2, axis=1, kind="stable")[:, :k]
    dist = np.sqrt(np.take_along_axis(dist2, idx, axis=1))
    return idx, dist


def _check_params(params_donor, n_donors: int | None = None) -> np.ndarray:
    p = np.asarray(params_donor, np.float64)
    if p.ndim != 2:
        raise ValueError(f"params_donor must be (D donors, n parameters), got shape {p.shape}")
    if n_donors is not None and p.shape[0] != n_donors:
        raise ValueError(f"params_donor has {p.shape[0]} rows; attrs_donor has {n_donors} "
                         f"donors (one parameter set per donor)")
    if not np.isfinite(p).all():
        raise ValueError(f"params_donor has non-finite values in donors "
                         f"{sorted(set(np.nonzero(~np.isfinite(p))[0].tolist()))[:10]}")
    return p


def _check_idx(idx, n_donors: int) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"idx must be integer (M targets, k donors), got {idx.dtype} {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_donors):
        raise ValueError(f"idx holds donor indices outside 0..{n_donors - 1}")
    return idx


def donor_params(params_donor, idx, how: str = "median"):
    """Parameters of the targets from their donors: ``params_donor (D, n)`` physical sets,
    ``idx (M, k)`` from :func:`nearest_donors` -> ``(M, n)``: the nearest donor's set when
    ``k = 1``, else the per-parameter ``how`` (``"median"`` or ``"mean"``) of the ``k`` sets
    (inside the box whenever the donors are)."""
    p = _check_params(params_donor)
    idx = _check_idx(idx, p.shape[0])
    sets = p[idx]                                                # (M, k, n)
    if how == "median":
        return np.median(sets, axis=1)
    if how == "mean":
        return sets.mean(axis=1)
    raise ValueError(f"how must be 'median' or 'mean', got {how!r}")


def donor_simulations(problem: Problem, params_donor, idx, forcing_target: Mapping[str, Any]):
    """The average of the ``k`` donors' simulations on each target's own forcing.

    ``params_donor (D, n)`` physical, ``idx (M, k)``, ``forcing_target {name: (M, T)}`` ->
    ``(M, T)`` routed streamflow: target ``m`` runs each donor set ``params_donor[idx[m, j]]``
    through :meth:`Problem.simulate` and averages the ``k`` hydrographs (day by day)."""
    p = _check_params(params_donor)
    if p.shape[1] != problem.n:
        raise ValueError(f"params_donor has {p.shape[1]} parameters; the problem has "
                         f"{problem.n} ({list(problem.names)})")
    idx = _check_idx(idx, p.shape[0])
    m, k = idx.shape
    names = problem.dpl.chain.model.forcing
    missing = [n for n in names if n not in forcing_target]
    if missing:
        raise ValueError(f"forcing_target lacks {missing} (the model needs {list(names)})")
    forcing = {n: jnp.asarray(forcing_target[n]) for n in names}
    for n, v in forcing.items():
        if v.ndim != 2 or v.shape[0] != m:
            raise ValueError(f"forcing_target[{n!r}] must be ({m} targets, T days), got {v.shape}")
    dtype = forcing[names[0]].dtype
    x = jnp.asarray(p[idx.reshape(-1)], dtype)                   # (M * k, n), target-major
    rep = {n: jnp.repeat(v, k, axis=0) for n, v in forcing.items()}
    q = jax.jit(problem.simulate)(x, rep)
    return np.asarray(q).reshape(m, k, -1).mean(axis=1)


# ------------------------------------------------------------------ regression
def _box(box, n: int):
    if isinstance(box, Problem):
        lo, hi = box.lower, box.upper
    else:
        lo, hi = (np.asarray(v, np.float64) for v in box)
    lo, hi = np.broadcast_to(lo, (n,)).astype(np.float64), np.broadcast_to(hi, (n,)).astype(np.float64)
    if not (lo < hi).all():
        raise ValueError(f"the box needs lower < upper for every parameter; not so at "
                         f"{np.nonzero(~(lo < hi))[0].tolist()}")
    return lo, hi


def _regressor(method: str, random_state, **kwargs):
    if method == "random_forest":
        from sklearn.ensemble import RandomForestRegressor
        opts = dict(n_estimators=200, min_samples_leaf=3, random_state=random_state, n_jobs=1)
        opts.update(kwargs)
        return RandomForestRegressor(**opts)
    if method == "linear":
        from sklearn.linear_model import LinearRegression
        return LinearRegression(**kwargs)
    raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")


def _fit_predict(zd, u, zt, method, random_state, **kwargs):
    """One regressor per parameter (column of ``u``), predictions for ``zt``."""
    out = np.empty((zt.shape[0], u.shape[1]))
    for j in range(u.shape[1]):
        out[:, j] = _regressor(method, random_state, **kwargs).fit(zd, u[:, j]).predict(zt)
    return out


def regression_params(attrs_donor, params_donor, attrs_target, *, box, method: str = "random_forest",
                      nan: str = "error", random_state: int = 0, names=None, **kwargs):
    """Parameters of the targets regressed on attributes.

    Args:
      attrs_donor: ``(D, a)``; params_donor: ``(D, n)`` calibrated physical parameters;
      attrs_target: ``(M, a)``.
      box: a :class:`Problem` or ``(lower (n,), upper (n,))``: each parameter is regressed in
        the unit box ``(x - lower) / (upper - lower)`` and its prediction clipped into [0, 1].
      method: ``"random_forest"`` (scikit-learn's, 200 trees, leaves of >= 3 basins; one forest
        per parameter) or ``"linear"`` (ordinary least squares); ``kwargs`` go to the regressor.
      nan: ``"error"`` or ``"impute"`` (module doc). random_state: the forests' seed.

    Returns ``(M, n)`` physical parameters inside the box.
    """
    if nan == "pairwise":
        raise ValueError("nan='pairwise' applies to distances only; use 'error' or 'impute'")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    zd, zt, _ = standardise(attrs_donor, attrs_target, nan=nan, names=names)
    p = _check_params(params_donor, zd.shape[0])
    lo, hi = _box(box, p.shape[1])
    u = (p - lo) / (hi - lo)
    pred = np.clip(_fit_predict(zd, u, zt, method, random_state, **kwargs), 0.0, 1.0)
    return lo + pred * (hi - lo)


def out_of_fold_r2(attrs, params, n_folds: int = 5, method: str = "random_forest", *, box=None,
                   nan: str = "error", random_state: int = 0, names=None, **kwargs):
    """How much of each parameter's variation across basins the attributes explain.

    ``attrs (N, a)``, ``params (N, n)`` -> ``(n,)``: ``R^2 = 1 - SS_res / SS_tot`` of the
    pooled out-of-fold predictions of a ``n_folds``-fold cross-validation (basins shuffled
    with ``random_state``; every fold standardised by its own training basins and regressed
    with ``method`` as in :func:`regression_params`). 1: the attributes determine the
    parameter; about 0 or negative: they say nothing (negative: worse than the mean). With
    ``box`` the parameters are regressed in the unit box and predictions clipped into it.
    A parameter constant over the basins has ``SS_tot = 0``: its R^2 is NaN.
    """
    from sklearn.model_selection import KFold
    if nan == "pairwise":
        raise ValueError("nan='pairwise' applies to distances only; use 'error' or 'impute'")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    a = _as_2d("attrs", attrs)
    _check_nan("attrs", a, nan, names)
    p = _check_params(params, a.shape[0])
    if not isinstance(n_folds, (int, np.integer)) or not 2 <= n_folds <= a.shape[0]:
        raise ValueError(f"n_folds must be an integer in 2..{a.shape[0]} (the number of "
                         f"basins), got {n_folds!r}")
    if box is not None:
        lo, hi = _box(box, p.shape[1])
        p = (p - lo) / (hi - lo)
    pred = np.empty_like(p)
    for train, test in KFold(n_folds, shuffle=True, random_state=random_state).split(a):
        zd, zt, _ = standardise(a[train], a[test], nan=nan, names=names)
        f = _fit_predict(zd, p[train], zt, method, random_state, **kwargs)
        pred[test] = np.clip(f, 0.0, 1.0) if box is not None else f
    ss_res = ((p - pred) ** 2).sum(0)
    ss_tot = ((p - p.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)
