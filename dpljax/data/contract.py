"""The dataset contract and its validation.

A dataset is an :class:`xarray.Dataset` with dims ``(basin, time)`` for time series and
``(basin,)`` for attributes, daily, using the variable names of the CAMELS-US store
(``prcp`` mm/d, ``tmax``/``tmin`` degC, ``pet`` mm/d, ``streamflow`` mm/d, attribute names of
CAMELS v2.0). :func:`validate` checks what an experiment will use *before any compute* and
raises :class:`DataError` naming the variable, the basins and the dates.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

#: Variables a dataset may derive when it lacks them: name -> (sources, function).
#: ``tmean = (tmax + tmin) / 2`` (the Daymet/CAMELS-US layout has only the extremes).
DERIVED = {"tmean": (("tmax", "tmin"), lambda tmax, tmin: (tmax + tmin) / 2.0)}
#: Inputs of a sequence network (``tmean`` derived when absent): the reference practice.
NET_FORCING = ("prcp", "tmean", "pet")
TARGET = "streamflow"

#: The 35 static CAMELS attributes of the reference dPL studies (Tsai et al. 2021).
ATTRIBUTES_35 = (
    "p_mean", "pet_mean", "p_seasonality", "frac_snow", "aridity", "high_prec_freq",
    "high_prec_dur", "low_prec_freq", "low_prec_dur", "elev_mean", "slope_mean", "area_gages2",
    "frac_forest", "lai_max", "lai_diff", "gvf_max", "gvf_diff", "dom_land_cover_frac",
    "dom_land_cover", "root_depth_50", "soil_depth_pelletier", "soil_depth_statsgo",
    "soil_porosity", "soil_conductivity", "max_water_content", "sand_frac", "silt_frac",
    "clay_frac", "geol_1st_class", "glim_1st_class_frac", "geol_2nd_class",
    "glim_2nd_class_frac", "carbonate_rocks_frac", "geol_porosity", "geol_permeability",
)


class DataError(ValueError):
    """Input data violate the dataset contract; the message names variable, basins, dates."""


def _fmt_basins(basins: Iterable, limit: int = 8) -> str:
    b = [str(x) for x in basins]
    more = f" (+{len(b) - limit} more)" if len(b) > limit else ""
    return ", ".join(b[:limit]) + more


def _fmt_dates(times: np.ndarray, limit: int = 5) -> str:
    t = pd.DatetimeIndex(times)
    s = ", ".join(d.strftime("%Y-%m-%d") for d in t[:limit])
    return s + (f" ... ({len(t)} days)" if len(t) > limit else "")


def _bad_cells(da: xr.DataArray, bad: np.ndarray) -> str:
    """Describe where ``bad`` (basin, time) is True: per basin, the first dates."""
    parts = []
    rows = np.nonzero(bad.any(axis=1))[0]
    for i in rows[:5]:
        parts.append(f"basin {da['basin'].values[i]}: {_fmt_dates(da['time'].values[bad[i]])}")
    if len(rows) > 5:
        parts.append(f"... and {len(rows) - 5} more basins")
    return "; ".join(parts)


def check_structure(ds: xr.Dataset, variables: Sequence[str], attributes: Sequence[str]) -> None:
    """Dims, presence of variables, and a sorted, unique, daily time axis."""
    for dim in ("basin", "time"):
        if dim not in ds.dims:
            raise DataError(f"dataset has no {dim!r} dimension (dims: {dict(ds.sizes)}); "
                            "the contract is dims (basin, time)")
    missing = [v for v in list(variables) + list(attributes) if v not in ds.variables]
    if missing:
        raise DataError(f"dataset lacks variable(s) {missing}")
    for v in variables:
        if ds[v].dims != ("basin", "time"):
            raise DataError(f"variable {v!r} has dims {ds[v].dims}; expected ('basin', 'time')")
    for a in attributes:
        if ds[a].dims != ("basin",):
            raise DataError(f"attribute {a!r} has dims {ds[a].dims}; expected ('basin',)")
    for v in list(variables) + list(attributes):
        if ds[v].dtype == np.float16:
            raise DataError(f"variable {v!r} is float16 (3 significant digits, at most 65504): too coarse "
                            f"for hydrological data; store it as float32: ds[{v!r}] = ds[{v!r}].astype('float32')")
    if ds["basin"].dtype.kind in "iuf":
        ex = ds["basin"].values[:1].tolist()
        raise DataError(f"basin ids are numbers (dtype {ds['basin'].dtype}, e.g. {ex[0] if ex else ''}), which loses "
                        "their leading zeros (USGS ids are 8 characters): store them as strings, e.g. "
                        "ds['basin'] = [f'{int(b):08d}' for b in ds['basin'].values]")
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise DataError(f"the time coordinate has dtype {ds['time'].dtype}, not dates (a time axis with a time-zone "
                        "offset is stored as objects): store naive daily dates, e.g. "
                        "ds['time'] = pd.DatetimeIndex(ds['time'].values).tz_localize(None).normalize()")
    basins = pd.Index(ds["basin"].values)
    if basins.has_duplicates:
        raise DataError(f"duplicated basin ids: {_fmt_basins(basins[basins.duplicated()].unique())}")
    t = pd.DatetimeIndex(ds["time"].values)
    if t.has_duplicates:
        raise DataError(f"duplicated time stamps: {_fmt_dates(t[t.duplicated()].unique())}")
    if not t.is_monotonic_increasing:
        i = int(np.nonzero(np.diff(t.values) < np.timedelta64(0))[0][0])
        raise DataError(f"time is not sorted: {t[i].date()} is followed by {t[i + 1].date()}")
    if len(t) > 1:
        step = np.diff(t.values)
        if (step > np.timedelta64(0)).all() and np.median(step) < np.timedelta64(1, "D"):
            raise DataError(f"time axis is sub-daily (steps of {pd.Timedelta(np.median(step))}, e.g. {t[0]} -> "
                            f"{t[1]}); the contract is daily: aggregate to daily values first (e.g. "
                            "ds.resample(time='1D').mean(), with prcp summed)")
    off_midnight = t != t.normalize()
    if off_midnight.any():
        raise DataError(f"time stamps carry a time of day (first: {t[off_midnight][0]}), e.g. from a time-zone "
                        "offset; daily data are dated by their day at 00:00: set "
                        "ds['time'] = pd.DatetimeIndex(ds['time'].values).normalize() if each value is one day's")
    if len(t) > 1:
        step = np.diff(t.values)
        off = np.nonzero(step != np.timedelta64(1, "D"))[0]
        if len(off):
            i = int(off[0])
            raise DataError(f"time axis is not daily and continuous: {t[i].date()} -> "
                            f"{t[i + 1].date()} ({len(off)} gaps)")


def check_period(ds: xr.Dataset, name: str, start, end) -> None:
    """``start..end`` is ordered and lies inside the data's time axis."""
    t0, t1 = pd.Timestamp(ds["time"].values[0]), pd.Timestamp(ds["time"].values[-1])
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    if s > e:
        raise DataError(f"{name} period starts ({s.date()}) after it ends ({e.date()})")
    if s < t0 or e > t1:
        why = []
        if s < t0:
            why.append(f"it starts {(t0 - s).days} days before the data start")
        if e > t1:
            why.append(f"it ends {(e - t1).days} days after the data end")
        raise DataError(f"{name} period {s.date()}..{e.date()} lies outside the data "
                        f"({t0.date()}..{t1.date()}): {' and '.join(why)}; "
                        f"set data.{name} inside the data")


# ------------------------------------------------------------------------- value checks
#: Plausible range of daily basin-mean air temperature (degC); outside it, the data are
#: almost surely in other units (Kelvin, Fahrenheit) or corrupt.
TEMPERATURE_RANGE = (-90.0, 65.0)
#: Highest plausible daily precipitation (mm/d; the world record is about 1,825 mm).
PRCP_MAX = 2000.0


class Problem:
    """One kind of bad value in a ``(basin, time)`` (or per-basin) mask.

    ``what`` says what is wrong ("forcing 'prcp' is negative"); ``bad`` is the boolean mask
    of the offending cells, ``(basin, time)``, or ``(basin,)`` for a per-basin problem;
    ``hint`` is appended to the message.
    """

    def __init__(self, what: str, da: xr.DataArray, bad: np.ndarray, hint: str = "", kind: str = ""):
        self.what, self.da, self.bad, self.hint, self.kind = what, da, bad, hint, kind

    @property
    def basin_mask(self) -> np.ndarray:
        return self.bad if self.bad.ndim == 1 else self.bad.any(axis=1)

    @property
    def basins(self) -> list[str]:
        return [str(b) for b in self.da["basin"].values[self.basin_mask]]

    def message(self) -> str:
        if self.bad.ndim == 1:
            return f"{self.what} for basin(s) {_fmt_basins(self.basins)}{self.hint}"
        return f"{self.what}: {_bad_cells(self.da, self.bad)}{self.hint}"

    def reason(self, basin) -> str:
        """The problem as it concerns one basin (for the exclusion log)."""
        if self.bad.ndim == 1:
            return self.what
        i = int(np.nonzero(self.da["basin"].values.astype(str) == str(basin))[0][0])
        return f"{self.what} on {_fmt_dates(self.da['time'].values[self.bad[i]])}"


def _numeric(ds: xr.Dataset, variables: Sequence[str]) -> None:
    for v in variables:
        if ds[v].dtype.kind not in "fiu":
            raise DataError(f"variable {v!r} has dtype {ds[v].dtype}; expected numbers")


def find_problems(ds: xr.Dataset, start, end, forcing: Sequence[str],
                  target: str | None = None, train: tuple | None = None) -> list[Problem]:
    """Every bad value of ``forcing`` (and ``target``) over ``start..end``.

    Forcing must be finite; ``prcp`` and ``pet`` non-negative; ``prcp`` at most
    :data:`PRCP_MAX`; temperatures inside :data:`TEMPERATURE_RANGE`; ``tmin <= tmax``.
    Observations may be NaN (missing, masked later) but never inf or negative, and every
    basin needs at least one observation in ``train`` (when given).
    """
    _numeric(ds, list(forcing) + ([target] if target else []))
    sub = ds.sel(time=slice(start, end))
    out: list[Problem] = []
    for v in forcing:
        a = sub[v].values
        finite = np.isfinite(a)
        if (~finite).any():
            out.append(Problem(f"forcing {v!r} has NaN or inf", sub[v], ~finite))
        if v in ("prcp", "pet"):
            neg = finite & (a < 0)
            if neg.any():
                out.append(Problem(f"forcing {v!r} is negative", sub[v], neg, _sentinel_hint(a[neg])))
        if v == "prcp":
            big = finite & (a > PRCP_MAX)
            if big.any():
                out.append(Problem(f"forcing 'prcp' exceeds {PRCP_MAX:g} mm/d", sub[v], big,
                                   " (prcp must be in mm/d)"))
        if v in ("tmax", "tmin", "tmean"):
            lo, hi = TEMPERATURE_RANGE
            odd = finite & ((a < lo) | (a > hi))
            if odd.any():
                out.append(Problem(f"forcing {v!r} lies outside {lo:g}..{hi:g} degC", sub[v], odd,
                                   f" (values {np.nanmin(a[odd]):g}..{np.nanmax(a[odd]):g}: "
                                   "temperatures must be in degC, not Kelvin or Fahrenheit)"))
    if "tmax" in forcing and "tmin" in forcing:
        inv = sub["tmin"].values > sub["tmax"].values
        if inv.any():
            out.append(Problem("tmin > tmax", sub["tmin"], inv, kind="tmin_above_tmax"))
    if target is not None:
        obs = sub[target]
        a = obs.values
        inf = np.isinf(a)
        if inf.any():
            out.append(Problem(f"{target!r} has inf (store missing observations as NaN)", obs, inf))
        neg = np.isfinite(a) & (a < 0)
        if neg.any():
            out.append(Problem(f"{target!r} is negative", obs, neg, _sentinel_hint(a[neg])))
        if train is not None:
            tr = ds[target].sel(time=slice(*train))
            empty = ~np.isfinite(tr.values).any(axis=1)
            if empty.any():
                out.append(Problem(f"{target!r}: no observations between "
                                   f"{pd.Timestamp(train[0]).date()} and {pd.Timestamp(train[1]).date()}",
                                   tr, empty))
    return out


#: Values of a numeric attribute read as missing-value codes (never as measurements): an
#: attribute holding one is an error naming it, unless ``data.attribute_missing_codes`` lists
#: the code, which then reads as missing (NaN, filled with the training mean).
MISSING_CODES = (-9999.0, -999.0)


def attribute_problems(ds: xr.Dataset, attributes: Sequence[str]) -> list[Problem]:
    """Per-basin problems of numeric attributes: inf, and missing-value codes
    (:data:`MISSING_CODES`). NaN is allowed: missing, filled with the training mean."""
    out: list[Problem] = []
    for a in attributes:
        da = ds[a]
        if da.dtype.kind not in "fiu":
            continue  # categorical
        x = da.values.astype(np.float64)
        inf = np.isinf(x)
        if inf.any():
            out.append(Problem(f"attribute {a!r} is infinite", da, inf,
                               " (store a missing attribute as NaN: it is then filled with the training mean)"))
        code = np.isin(x, MISSING_CODES)
        if code.any():
            c = float(x[code][0])
            out.append(Problem(f"attribute {a!r} is {c:g}", da, code,
                               f" ({c:g} looks like a missing-value code: store missing attributes as NaN, or set "
                               f"+data.attribute_missing_codes=[{c:g}] to read it as missing)"))
    return out


def check_attributes_defined(ds: xr.Dataset, attributes: Sequence[str]) -> None:
    """Every numeric attribute has a value for at least one basin (its statistics exist)."""
    n = int(ds.sizes["basin"])
    for a in attributes:
        da = ds[a]
        if da.dtype.kind in "fiu" and not np.isfinite(da.values.astype(np.float64)).any():
            raise DataError(f"attribute {a!r} is missing (NaN) for all {n} basins: it cannot be normalised "
                            "and carries no information; remove it from data.attributes, or fill it")


def _sentinel_hint(values: np.ndarray) -> str:
    codes = {-9999.0, -999.0, -99.0, -9.0}
    found = sorted({float(x) for x in np.unique(values)} & codes)
    if found:
        return (f" (values such as {found[0]:g} look like a missing-value code: "
                "store missing data as NaN)")
    return ""


def screen_basins(ds: xr.Dataset, span: tuple, train: tuple, forcing: Sequence[str],
                  target: str, on_bad_basin: str = "error", warn: Sequence[str] = (),
                  warnings: dict | None = None, attributes: Sequence[str] = ()) -> tuple[xr.Dataset, dict[str, str]]:
    """Validate values; on a problem raise (``"error"``) or drop the basins (``"exclude"``).

    Problems whose kind is in ``warn`` (e.g. ``"tmin_above_tmax"``) neither raise nor exclude:
    they are described in ``warnings`` (kind -> {message, basins, cells}) instead.
    Returns the (possibly reduced) dataset and ``{basin: reason}`` of the excluded basins.
    """
    problems = find_problems(ds, *span, forcing=forcing, target=target, train=train)
    problems += attribute_problems(ds, attributes)
    for p in [p for p in problems if p.kind and p.kind in warn]:
        problems.remove(p)
        if warnings is not None:
            warnings[p.kind] = {"message": p.message(), "basins": p.basins, "cells": int(p.bad.sum())}
    if not problems:
        return ds, {}
    if on_bad_basin != "exclude":
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise DataError(problems[0].message() + more + "; set data.on_bad_basin=exclude to "
                        "drop the affected basins instead")
    reasons: dict[str, list[str]] = {}
    for p in problems:
        for b in p.basins:
            reasons.setdefault(b, []).append(p.reason(b))
    basins = ds["basin"].values.astype(str)
    keep = np.array([b not in reasons for b in basins])
    if not keep.any():
        raise DataError(f"every basin has bad data, none is left to use: "
                        + "; ".join(f"{b}: {r[0]}" for b, r in list(reasons.items())[:5]))
    return ds.isel(basin=np.nonzero(keep)[0]), {b: "; ".join(r) for b, r in reasons.items()}
