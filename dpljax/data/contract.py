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

#: Forcing the process model needs (``tmean`` is derived as (tmax + tmin) / 2).
MODEL_FORCING = ("prcp", "tmax", "tmin", "pet")
#: Inputs of a sequence network (after deriving ``tmean``): the reference practice.
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
        off = np.nonzero(step != np.timedelta64(1, "D"))[0]
        if len(off):
            i = int(off[0])
            raise DataError(f"time axis is not daily and continuous: {t[i].date()} -> "
                            f"{t[i + 1].date()} ({len(off)} gaps)")


def check_period(ds: xr.Dataset, name: str, start, end) -> None:
    t0, t1 = pd.Timestamp(ds["time"].values[0]), pd.Timestamp(ds["time"].values[-1])
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    if s > e:
        raise DataError(f"{name} period starts ({s.date()}) after it ends ({e.date()})")
    if s < t0 or e > t1:
        raise DataError(f"{name} period {s.date()}..{e.date()} lies outside the data "
                        f"({t0.date()}..{t1.date()})")


def check_values(ds: xr.Dataset, start, end, forcing: Sequence[str] = MODEL_FORCING) -> None:
    """Finite forcing, non-negative prcp/pet, tmin <= tmax over ``start..end``."""
    sub = ds[list(forcing)].sel(time=slice(start, end))
    for v in forcing:
        a = sub[v].values
        bad = ~np.isfinite(a)
        if bad.any():
            raise DataError(f"forcing {v!r} has NaN or inf: {_bad_cells(sub[v], bad)}")
        if v in ("prcp", "pet"):
            neg = a < 0
            if neg.any():
                raise DataError(f"forcing {v!r} is negative: {_bad_cells(sub[v], neg)}")
    if "tmax" in forcing and "tmin" in forcing:
        inv = sub["tmin"].values > sub["tmax"].values
        if inv.any():
            raise DataError(f"tmin > tmax: {_bad_cells(sub['tmin'], inv)}")


def check_observations(ds: xr.Dataset, start, end, target: str = TARGET) -> None:
    """Every basin has at least one observation in the training period; none is negative."""
    obs = ds[target].sel(time=slice(start, end))
    a = obs.values
    empty = ~np.isfinite(a).any(axis=1)
    if empty.any():
        raise DataError(f"{target!r}: no observations between {pd.Timestamp(start).date()} and "
                        f"{pd.Timestamp(end).date()} for basin(s) "
                        f"{_fmt_basins(obs['basin'].values[empty])}")
    neg = np.isfinite(a) & (a < 0)
    if neg.any():
        raise DataError(f"{target!r} is negative: {_bad_cells(obs, neg)}")
