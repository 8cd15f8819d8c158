"""Reader of the official CAMELS-US download layout -> the dpljax dataset contract.

CAMELS-US (Newman et al. 2014, 2015; Addor et al. 2017) is distributed as text files:

* ``basin_mean_forcing/daymet/<huc2>/<id>_lump_cida_forcing_leap.txt``: Daymet basin-mean
  daily forcing. Three header lines (centroid latitude [deg N], mean elevation [m], area
  [m2]), one line of column names ``Year Mnth Day Hr dayl(s) prcp(mm/day) srad(W/m2)
  swe(mm) tmax(C) tmin(C) vp(Pa)``, then one whitespace-separated row per day.
* ``usgs_streamflow/<huc2>/<id>_streamflow_qc.txt``: USGS daily mean discharge, columns
  ``gauge_id year month day streamflow_cfs qc_flag``; ``-999`` marks a missing day.
* ``camels_attributes_v2.0/camels_{clim,geol,hydro,name,soil,topo,vege}.txt``: static
  catchment attributes, ``;``-separated, one row per ``gauge_id`` (8-character USGS id with
  leading zeros); ``NA`` marks a missing value.

:func:`read_camels_us` turns such a folder (with or without the HUC-02 sub-folders) into an
:class:`xarray.Dataset` with the same variables, dtypes, units and attributes as the
project's reference store ``camels_us.zarr`` (see ``shared/data/PROVENANCE.md``):

* dims ``(basin, time)`` for the dynamic variables ``prcp`` [mm/day], ``tmax``, ``tmin``
  [degC], ``srad`` [W/m2, daylight average], ``dayl`` [s], ``vp`` [Pa] (Daymet; ``swe`` is
  dropped, it is all zeros in CAMELS), ``pet`` [mm/day] (Hargreaves 1985, derived with
  :func:`dpljax.data.pet.hargreaves`) and ``streamflow`` [mm/day, NaN where missing], all
  float32;
* dims ``(basin,)`` for every CAMELS v2.0 attribute (numeric as float32, categorical as
  str; ``geol_porostiy`` renamed ``geol_porosity``), ``forcing_lat``, ``forcing_elev``,
  ``forcing_area`` [km2] from the Daymet header, and ``forcing_ok`` (bool).

The reference store also has ``in_531`` (the 531-basin subset); that list is not part of the
CAMELS download, so this reader does not produce it.

:func:`write_zarr` writes such a dataset as a consolidated zarr v2 store, atomically.

References
----------
Newman, A. J. et al. (2015): Development of a large-sample watershed-scale
hydrometeorological data set for the contiguous USA. HESS 19, 209-223,
doi:10.5194/hess-19-209-2015 (data: doi:10.5065/D6MW2F4D).

Addor, N. et al. (2017): The CAMELS data set: catchment attributes and meteorology for
large-sample studies. HESS 21, 5293-5313, doi:10.5194/hess-21-5293-2017
(data: doi:10.5065/D6G73C3Q).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from dpljax.data.pet import hargreaves

__all__ = [
    "CamelsFormatError",
    "read_attributes",
    "read_camels_us",
    "write_zarr",
]

PathLike = str | os.PathLike[str]

FORCING_SUFFIX = "_lump_cida_forcing_leap.txt"
STREAMFLOW_SUFFIX = "_streamflow_qc.txt"
ATTRIBUTE_GROUPS = ("clim", "geol", "hydro", "name", "soil", "topo", "vege")

#: Cubic feet to cubic metres (exact, 0.3048**3).
CFS_TO_M3S = 0.028316846592
#: CAMELS marker of a missing streamflow day.
MISSING_STREAMFLOW = -999.0

#: Dataset name -> (column header in the Daymet file, attributes).
_FORCING_VARIABLES: dict[str, tuple[str, dict[str, str]]] = {
    "prcp": (
        "prcp(mm/day)",
        {"units": "mm/day", "long_name": "basin-mean daily precipitation (Daymet)"},
    ),
    "tmax": (
        "tmax(C)",
        {"units": "degC", "long_name": "basin-mean daily maximum 2 m air temperature (Daymet)"},
    ),
    "tmin": (
        "tmin(C)",
        {"units": "degC", "long_name": "basin-mean daily minimum 2 m air temperature (Daymet)"},
    ),
    "srad": (
        "srad(W/m2)",
        {
            "units": "W/m2",
            "long_name": "basin-mean incident shortwave radiation flux density, "
            "daylight average (Daymet)",
        },
    ),
    "dayl": ("dayl(s)", {"units": "s", "long_name": "day length (Daymet)"}),
    "vp": (
        "vp(Pa)",
        {"units": "Pa", "long_name": "basin-mean daily average water vapour pressure (Daymet)"},
    ),
}
_DATE_COLUMNS = ("Year", "Mnth", "Day")

_PET_ATTRS = {
    "units": "mm/day",
    "long_name": "potential evapotranspiration, Hargreaves (1985), DERIVED here from "
    "tmax/tmin and forcing_lat",
    "method": "PET = 0.0023 * 0.408*Ra * (Tmean + 17.8) * sqrt(max(Tmax - Tmin, 0)); "
    "Ra = FAO-56 eq. 21 extraterrestrial radiation [MJ m-2 d-1] from forcing_lat and day "
    "of year",
    "derived": "true",
}
_STREAMFLOW_ATTRS = {
    "units": "mm/day",
    "long_name": "observed daily streamflow (USGS, CAMELS v1.2) normalised by basin area",
    "method": "streamflow_cfs * 0.028316846592 m3/s/cfs * 86400 s / (area_gages2 km2 * 1e6) "
    "* 1000; CAMELS -999 (missing) -> NaN",
    "source_name": "usgs_streamflow/<id>_streamflow_qc.txt column 5 (cfs)",
}
_HEADER_ATTRS = {
    "forcing_lat": {
        "units": "degrees_north",
        "long_name": "latitude written in the Daymet forcing file header (basin centroid)",
    },
    "forcing_elev": {
        "units": "m",
        "long_name": "mean elevation written in the Daymet forcing file header",
    },
    "forcing_area": {
        "units": "km2",
        "long_name": "basin area written in the Daymet forcing file header (geospatial fabric)",
    },
    "forcing_ok": {
        "units": "1",
        "long_name": "False where the Daymet file failed integrity checks (forcing set to "
        "NaN); see PROVENANCE.md",
    },
}
_BASIN_ATTRS = {"long_name": "USGS gauge id (8 characters, leading zeros kept)"}
_TIME_ATTRS = {
    "long_name": "date (daily values; Daymet day ends 24:00 local, USGS daily mean)"
}

#: Column renames applied to the attribute tables (typo in CAMELS v2.0).
ATTRIBUTE_RENAMES = {"geol_porostiy": "geol_porosity"}

#: Attribute columns kept as strings; every other column must be numeric.
CATEGORICAL_ATTRIBUTES = frozenset(
    {
        "huc_02",
        "gauge_name",
        "high_prec_timing",
        "low_prec_timing",
        "geol_1st_class",
        "geol_2nd_class",
        "dom_land_cover",
    }
)

#: Units of the CAMELS v2.0 attributes (Addor et al. 2017, table 1-5, with the corrections
#: documented in PROVENANCE.md), keyed by the name used in the dataset.
ATTRIBUTE_UNITS: dict[str, str] = {
    # clim
    "p_mean": "mm/day",
    "pet_mean": "mm/day",
    "p_seasonality": "1",
    "frac_snow": "1",
    "aridity": "1",
    "high_prec_freq": "days/yr",
    "high_prec_dur": "days",
    "high_prec_timing": "season",
    "low_prec_freq": "days/yr",
    "low_prec_dur": "days",
    "low_prec_timing": "season",
    # geol
    "geol_1st_class": "class",
    "glim_1st_class_frac": "1",
    "geol_2nd_class": "class",
    "glim_2nd_class_frac": "1",
    "carbonate_rocks_frac": "1",
    "geol_porosity": "1",
    "geol_permeability": "log10(m2)",
    # hydro
    "q_mean": "mm/day",
    "runoff_ratio": "1",
    "slope_fdc": "1",
    "baseflow_index": "1",
    "stream_elas": "1",
    "q5": "mm/day",
    "q95": "mm/day",
    "high_q_freq": "days/yr",
    "high_q_dur": "days",
    "low_q_freq": "days/yr",
    "low_q_dur": "days",
    "zero_q_freq": "1 (fraction of days; Addor et al. 2017 table says percent but values are 0-1)",
    "hfd_mean": "day (count from 1 October, water-year day of mean half-flow date)",
    # name
    "huc_02": "class",
    "gauge_name": "text",
    # soil
    "soil_depth_pelletier": "m",
    "soil_depth_statsgo": "m",
    "soil_porosity": "1",
    "soil_conductivity": "cm/hr",
    "max_water_content": "m",
    "sand_frac": "percent",
    "silt_frac": "percent",
    "clay_frac": "percent",
    "water_frac": "percent",
    "organic_frac": "percent",
    "other_frac": "percent",
    # topo
    "gauge_lat": "degrees_north",
    "gauge_lon": "degrees_east",
    "elev_mean": "m",
    "slope_mean": "m/km",
    "area_gages2": "km2",
    "area_geospa_fabric": "km2",
    # vege
    "frac_forest": "1",
    "lai_max": "1",
    "lai_diff": "1",
    "gvf_max": "1",
    "gvf_diff": "1",
    "dom_land_cover_frac": "1",
    "dom_land_cover": "class",
    "root_depth_50": "m",
    "root_depth_99": "m",
}

#: Tokens that mark a missing attribute value.
_MISSING_TOKENS = frozenset({"", "NA", "NaN", "nan"})
#: How a missing categorical attribute is stored. "nan" (not "") because that is what the
#: reference store holds (a pandas NaN turned into str); consumers must treat it as missing.
MISSING_CATEGORY = "nan"

_GLOBAL_ATTRS = {
    "source": "CAMELS time series v1.2 (Newman et al. 2014, doi:10.5065/D6MW2F4D; Newman et "
    "al. 2015, HESS 19, 209-223) and CAMELS attributes v2.0 (Addor et al. 2017, "
    "doi:10.5065/D6G73C3Q; HESS 21, 5293-5313)",
    "license": "CC-BY-4.0 (CAMELS); cite Newman et al. (2015) and Addor et al. (2017)",
    "history": "read from the CAMELS-US text layout by dpljax.data.camels.read_camels_us: "
    "text->float32, -999->NaN, streamflow cfs->mm/day with area_gages2, PET derived "
    "(Hargreaves)",
    "conventions": "dims (basin, time) for dynamic variables, (basin,) for static attributes",
}


class CamelsFormatError(ValueError):
    """A CAMELS file (or the set of files) does not have the expected content.

    The message names the file, and the line number where one applies.
    """


# --------------------------------------------------------------------------- file discovery


@dataclass
class _FileIndex:
    """Paths found under a source folder, by basin id (forcing, streamflow) or group."""

    forcing: dict[str, list[Path]]
    streamflow: dict[str, list[Path]]
    attributes: dict[str, list[Path]]


def _index_files(source_dir: Path) -> _FileIndex:
    """Walk ``source_dir`` once and collect every Daymet, streamflow and attribute file.

    Walking once (instead of a glob per basin) keeps this fast on a full CAMELS download,
    whose ``model_output`` folder alone holds tens of thousands of files.
    """
    forcing: dict[str, list[Path]] = {}
    streamflow: dict[str, list[Path]] = {}
    attributes: dict[str, list[Path]] = {}
    attribute_names = {f"camels_{g}.txt": g for g in ATTRIBUTE_GROUPS}
    for dirpath, dirnames, filenames in os.walk(source_dir):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.endswith(FORCING_SUFFIX):
                forcing.setdefault(name[: -len(FORCING_SUFFIX)], []).append(path)
            elif name.endswith(STREAMFLOW_SUFFIX):
                streamflow.setdefault(name[: -len(STREAMFLOW_SUFFIX)], []).append(path)
            elif name in attribute_names:
                attributes.setdefault(attribute_names[name], []).append(path)
    return _FileIndex(forcing, streamflow, attributes)


def _pick(candidates: list[Path], what: str, preferred_parent: str | None) -> Path:
    """Choose one file among ``candidates``; prefer a parent folder named ``preferred_parent``.

    Several copies of one basin's file can exist (e.g. re-made copies in the wrong HUC
    folder); the official layout puts each file in the folder of its HUC-02 region.
    """
    if len(candidates) == 1:
        return candidates[0]
    preferred = [p for p in candidates if p.parent.name == preferred_parent]
    if len(preferred) == 1:
        return preferred[0]
    listing = ", ".join(str(p) for p in candidates)
    raise CamelsFormatError(f"found {len(candidates)} files for {what}, cannot choose: {listing}")


def _normalise_basin_id(basin: str | int) -> str:
    """Basin id as the 8-character string with leading zeros (``1022500`` -> ``'01022500'``)."""
    text = str(basin).strip()
    return text.zfill(8) if text.isdigit() else text


# --------------------------------------------------------------------------- text parsing


def _bad_line(path: Path, lineno: int, line: str, reason: str) -> CamelsFormatError:
    return CamelsFormatError(f"{path}, line {lineno}: {reason}: {line.rstrip()!r}")


def _parse_table(
    path: Path,
    lines: Sequence[tuple[int, str]],
    usecols: Sequence[int],
    ncols: int | None = None,
) -> np.ndarray:
    """Parse whitespace-separated numeric rows -> float64 array of shape (n, len(usecols)).

    ``lines`` are ``(line number, text)`` pairs. With ``ncols`` every row must have exactly
    that many numeric columns; without, rows need at least ``max(usecols) + 1`` columns and
    only ``usecols`` must be numeric (the streamflow files end in a text flag). The fast
    path is :func:`numpy.loadtxt`; if it fails, the rows are re-scanned one by one so that
    the error names the first bad line of the file.
    """
    if not lines:
        raise CamelsFormatError(f"{path}: no data rows")
    texts = [text for _, text in lines]
    try:
        if ncols is None:
            return np.loadtxt(texts, usecols=usecols, ndmin=2)
        table = np.loadtxt(texts, ndmin=2)
        if table.shape[1] == ncols:
            return table[:, list(usecols)]
    except ValueError:
        pass
    min_cols = max(usecols) + 1 if ncols is None else ncols
    numeric = usecols if ncols is None else range(ncols)
    for lineno, text in lines:
        tokens = text.split()
        if len(tokens) < min_cols or (ncols is not None and len(tokens) != ncols):
            expected = f"{ncols}" if ncols is not None else f"at least {min_cols}"
            raise _bad_line(path, lineno, text, f"expected {expected} columns, found {len(tokens)}")
        for col in numeric:
            try:
                float(tokens[col])
            except ValueError:
                raise _bad_line(
                    path, lineno, text, f"column {col + 1} is not a number ({tokens[col]!r})"
                ) from None
    raise CamelsFormatError(f"{path}: cannot parse the data rows")  # pragma: no cover


def _dates(path: Path, lines: Sequence[tuple[int, str]], ymd: np.ndarray) -> np.ndarray:
    """Year/month/day columns -> ``datetime64[D]``; name the line of an invalid date."""
    try:
        if not np.isfinite(ymd).all():
            raise ValueError("non-finite date")
        ints = ymd.astype(np.int64)
        if not np.array_equal(ints, ymd):
            raise ValueError("non-integer date")
        dates = pd.to_datetime(
            pd.DataFrame({"year": ints[:, 0], "month": ints[:, 1], "day": ints[:, 2]}),
            errors="raise",
        ).to_numpy(dtype="datetime64[D]")
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
        for (lineno, text), row in zip(lines, ymd):
            try:
                if not all(math.isfinite(v) and float(v).is_integer() for v in row):
                    raise ValueError("non-integer date")
                _dt.date(int(row[0]), int(row[1]), int(row[2]))
            except (ValueError, OverflowError):
                raise _bad_line(path, lineno, text, "invalid date") from None
        raise
    order = np.argsort(dates, kind="stable")
    sorted_dates = dates[order]
    dup = np.flatnonzero(sorted_dates[1:] == sorted_dates[:-1])
    if dup.size:
        lineno, text = lines[order[dup[0] + 1]]
        raise _bad_line(path, lineno, text, f"duplicate date {sorted_dates[dup[0]]}")
    return dates


@dataclass
class _Forcing:
    """One Daymet file: header values (float64, as written) and daily columns."""

    lat: float
    elev: float
    area_m2: float
    dates: np.ndarray  # datetime64[D], (n,)
    values: dict[str, np.ndarray]  # dataset name -> float32 (n,)


def _read_forcing(path: Path) -> _Forcing:
    """Parse a ``*_lump_cida_forcing_leap.txt`` Daymet file."""
    with open(path, encoding="ascii", errors="replace") as fh:
        raw = fh.read().splitlines()
    if len(raw) < 5:
        raise CamelsFormatError(
            f"{path}: expected 3 header lines (lat, elev, area), a line of column names "
            f"and daily rows; the file has {len(raw)} lines"
        )
    header: list[float] = []
    for i, what in enumerate(("latitude", "elevation", "area")):
        try:
            header.append(float(raw[i]))
        except ValueError:
            raise _bad_line(path, i + 1, raw[i], f"header {what} is not a number") from None
    names = raw[3].split()
    missing = [c for c in (*_DATE_COLUMNS, *(c for c, _ in _FORCING_VARIABLES.values()))
               if c not in names]
    if missing:
        raise _bad_line(path, 4, raw[3], f"missing column(s) {', '.join(missing)}")
    wanted = [names.index(c) for c in _DATE_COLUMNS] + [
        names.index(col) for col, _ in _FORCING_VARIABLES.values()
    ]
    lines = [(i + 1, text) for i, text in enumerate(raw[4:], start=4) if text.strip()]
    table = _parse_table(path, lines, wanted, ncols=len(names))
    dates = _dates(path, lines, table[:, :3])
    values = {
        name: table[:, 3 + k].astype(np.float32) for k, name in enumerate(_FORCING_VARIABLES)
    }
    return _Forcing(header[0], header[1], header[2], dates, values)


def _read_streamflow(path: Path, basin: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse a ``*_streamflow_qc.txt`` file -> (dates, discharge [cfs] float64, NaN if missing)."""
    with open(path, encoding="ascii", errors="replace") as fh:
        raw = fh.read().splitlines()
    lines = [(i + 1, text) for i, text in enumerate(raw) if text.strip()]
    table = _parse_table(path, lines, (0, 1, 2, 3, 4))
    if basin.isdigit():
        wrong = np.flatnonzero(table[:, 0] != int(basin))
        if wrong.size:
            lineno, text = lines[wrong[0]]
            raise _bad_line(path, lineno, text, f"gauge id does not match basin {basin}")
    dates = _dates(path, lines, table[:, 1:4])
    q = table[:, 4]
    return dates, np.where(q == MISSING_STREAMFLOW, np.nan, q)


# --------------------------------------------------------------------------- attributes


@dataclass
class _AttributeTable:
    """One parsed ``camels_<group>.txt``: ``columns[name][gauge_id]`` is float64 or str."""

    path: Path
    ids: list[str]
    columns: dict[str, dict[str, Any]]


def _read_attribute_file(path: Path) -> _AttributeTable:
    """Parse one ``camels_<group>.txt`` (``;``-separated, keyed by ``gauge_id``).

    Columns named in :data:`CATEGORICAL_ATTRIBUTES` stay strings (stripped; missing ->
    :data:`MISSING_CATEGORY`); every other column must be numeric (missing -> NaN).
    """
    with open(path, encoding="utf-8", errors="replace") as fh:
        raw = fh.read().splitlines()
    if not raw:
        raise CamelsFormatError(f"{path}: empty attribute file")
    names = [ATTRIBUTE_RENAMES.get(c.strip(), c.strip()) for c in raw[0].split(";")]
    if names[0] != "gauge_id":
        raise _bad_line(path, 1, raw[0], "the first column must be 'gauge_id'")
    ids: list[str] = []
    columns: dict[str, dict[str, Any]] = {c: {} for c in names[1:]}
    for lineno, text in enumerate(raw[1:], start=2):
        if not text.strip():
            continue
        fields = [f.strip() for f in text.split(";")]
        if len(fields) != len(names):
            raise _bad_line(
                path, lineno, text,
                f"expected {len(names)} ';'-separated fields, found {len(fields)}",
            )
        gauge = _normalise_basin_id(fields[0])
        if gauge in columns[names[1]]:
            raise _bad_line(path, lineno, text, f"duplicate gauge_id {gauge}")
        ids.append(gauge)
        for column, field in zip(names[1:], fields[1:]):
            value: Any
            if column in CATEGORICAL_ATTRIBUTES:
                value = MISSING_CATEGORY if field in _MISSING_TOKENS else field
            elif field in _MISSING_TOKENS:
                value = math.nan
            else:
                try:
                    value = float(field)
                except ValueError:
                    raise _bad_line(
                        path, lineno, text, f"{column} is not a number ({field!r})"
                    ) from None
            columns[column][gauge] = value
    return _AttributeTable(path, ids, columns)


def _attribute_tables(index: _FileIndex, source_dir: Path) -> dict[str, _AttributeTable]:
    """Read the 7 attribute files found under ``source_dir``, by group name."""
    tables = {}
    for group in ATTRIBUTE_GROUPS:
        candidates = index.attributes.get(group, [])
        if not candidates:
            raise FileNotFoundError(
                f"CAMELS attribute file camels_{group}.txt not found under {source_dir}"
            )
        path = _pick(candidates, f"camels_{group}.txt", "camels_attributes_v2.0")
        tables[group] = _read_attribute_file(path)
    return tables


def _attributes_dataset(
    tables: dict[str, _AttributeTable], basins: Sequence[str]
) -> tuple[xr.Dataset, dict[str, np.ndarray]]:
    """Assemble the static attributes of ``basins`` -> (Dataset, float64 values by column).

    The float64 values are those written in the files, before the float32 cast; the
    streamflow conversion uses them.
    """
    variables: dict[str, xr.DataArray] = {}
    exact: dict[str, np.ndarray] = {}
    source_names = {new: old for old, new in ATTRIBUTE_RENAMES.items()}
    for table in tables.values():
        known = set(table.ids)
        missing = [b for b in basins if b not in known]
        if missing:
            raise CamelsFormatError(
                f"basin(s) {', '.join(missing)} missing from the attribute table {table.path}"
            )
        for column, by_id in table.columns.items():
            values = [by_id[b] for b in basins]
            attrs = {
                "units": ATTRIBUTE_UNITS.get(column, "unknown"),
                "source_name": source_names.get(column, column),
            }
            if column in CATEGORICAL_ATTRIBUTES:
                data = np.asarray(values, dtype=str)
            else:
                exact[column] = np.asarray(values, dtype=np.float64)
                data = exact[column].astype(np.float32)
            variables[column] = xr.DataArray(data, dims=("basin",), attrs=attrs)
    return xr.Dataset(variables), exact


def _unique_ids(basins: Iterable[str | int]) -> list[str]:
    """Normalised basin ids, in the given order; a repeated id is an error."""
    ids = [_normalise_basin_id(b) for b in basins]
    repeated = sorted(b for b, n in Counter(ids).items() if n > 1)
    if repeated:
        raise ValueError(f"basin id(s) requested more than once: {', '.join(repeated)}")
    return ids


def _basin_coord(ids: Sequence[str]) -> xr.DataArray:
    return xr.DataArray(np.asarray(ids, dtype=str), dims="basin", attrs=dict(_BASIN_ATTRS))


def read_attributes(
    source_dir: PathLike, basins: Iterable[str | int] | None = None
) -> xr.Dataset:
    """Read the CAMELS v2.0 attribute tables found under ``source_dir``.

    Parameters
    ----------
    source_dir
        Folder holding (at any depth) ``camels_{clim,geol,hydro,name,soil,topo,vege}.txt``.
    basins
        Gauge ids to keep (str or int; ints get their leading zeros back); default: all ids
        of ``camels_name.txt``, in file order.

    Returns
    -------
    Dataset with dim ``basin`` (8-character str ids): numeric attributes float32 (``NA`` ->
    NaN), categorical ones str (``NA`` -> ``"nan"``, as in the reference store), each with
    ``units`` and ``source_name``; ``geol_porostiy`` is renamed ``geol_porosity``.

    Raises
    ------
    FileNotFoundError
        An attribute file is missing.
    CamelsFormatError
        A line cannot be parsed (file and line number in the message) or a basin is missing
        from a table.
    """
    source = Path(source_dir)
    tables = _attribute_tables(_index_files(source), source)
    ids = list(tables["name"].ids) if basins is None else _unique_ids(basins)
    ds, _ = _attributes_dataset(tables, ids)
    return ds.assign_coords(basin=_basin_coord(ids))


# --------------------------------------------------------------------------- main reader


def _time_axis(
    forcings: Sequence[_Forcing], start: Any, end: Any
) -> pd.DatetimeIndex:
    """Continuous daily axis: union of the forcing dates, or bounded by ``start``/``end``."""
    first = min(f.dates.min() for f in forcings)
    last = max(f.dates.max() for f in forcings)
    t0 = pd.Timestamp(first) if start is None else pd.Timestamp(start).normalize()
    t1 = pd.Timestamp(last) if end is None else pd.Timestamp(end).normalize()
    if t1 < t0:
        raise ValueError(f"empty time range: start {t0.date()} is after end {t1.date()}")
    return pd.date_range(t0, t1, freq="D", name="time")


def _place(
    time: pd.DatetimeIndex, dates: np.ndarray, values: np.ndarray, out: np.ndarray
) -> None:
    """Write ``values`` at their ``dates`` into the row ``out`` laid on ``time``; drop the rest."""
    offset = (dates - time[0].to_datetime64().astype("datetime64[D]")).astype(np.int64)
    keep = (offset >= 0) & (offset < len(time))
    out[offset[keep]] = values[keep]


def read_camels_us(
    source_dir: PathLike,
    basins: Iterable[str | int] | None = None,
    start: str | _dt.date | np.datetime64 | pd.Timestamp | None = None,
    end: str | _dt.date | np.datetime64 | pd.Timestamp | None = None,
) -> xr.Dataset:
    """Read CAMELS-US from its official text layout into the dpljax dataset contract.

    Parameters
    ----------
    source_dir
        Folder holding, at any depth, the Daymet files ``<id>_lump_cida_forcing_leap.txt``,
        the streamflow files ``<id>_streamflow_qc.txt`` and the seven
        ``camels_<group>.txt`` attribute files: the official layout (HUC-02 sub-folders under
        ``basin_mean_forcing/daymet`` and ``usgs_streamflow``) or all files in one folder. If
        a basin has several copies of a file, the one in the folder named after its
        ``huc_02`` is used.
    basins
        Gauge ids (str or int). Default: every basin with a Daymet file, sorted.
    start, end
        Inclusive bounds of the daily time axis. Default: the union of the forcing dates
        of the selected basins. Days without a value in a file are NaN.

    Returns
    -------
    xarray.Dataset with coords ``basin`` (8-character str) and ``time`` (daily
    ``datetime64``), and

    * (basin, time) float32: ``prcp`` [mm/day], ``tmax``, ``tmin`` [degC], ``srad``
      [W/m2], ``dayl`` [s], ``vp`` [Pa] as written in the Daymet files; ``pet`` [mm/day]
      from :func:`dpljax.data.pet.hargreaves` (float64 arithmetic on the float32
      temperatures and the header latitude, then float32); ``streamflow`` [mm/day] =
      ``cfs * 0.028316846592 * 86400 / (area_gages2 * 1e6) * 1000``, NaN where CAMELS has
      -999 or no row;
    * (basin,): all CAMELS v2.0 attributes (see :func:`read_attributes`),
      ``forcing_lat`` [deg N], ``forcing_elev`` [m], ``forcing_area`` [km2] from the
      Daymet header (float32), and ``forcing_ok`` (True for every basin: a file that
      cannot be read raises instead).

    Every variable carries ``units``; names, dtypes and attributes match
    ``camels_us.zarr``, except that ``in_531`` (not part of the download) is absent.

    Raises
    ------
    FileNotFoundError
        No Daymet file at all, or a requested basin has no Daymet or no streamflow file,
        or an attribute file is missing.
    CamelsFormatError
        A line cannot be parsed (the message gives file and line number), a basin is not
        in the attribute tables, or a basin has ambiguous duplicate files.
    ValueError
        A basin id is requested twice, or ``start`` is after ``end``.
    """
    source = Path(source_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"CAMELS source folder {source} does not exist")
    index = _index_files(source)
    if basins is None:
        ids = sorted(index.forcing)
        if not ids:
            raise FileNotFoundError(f"no Daymet file '*{FORCING_SUFFIX}' under {source}")
    else:
        ids = _unique_ids(basins)
        if not ids:
            raise ValueError("basins is empty")

    tables = _attribute_tables(index, source)
    static, exact = _attributes_dataset(tables, ids)
    huc = dict(zip(ids, static["huc_02"].values.tolist()))

    forcings: list[_Forcing] = []
    flows: list[tuple[np.ndarray, np.ndarray]] = []
    for basin in ids:
        if basin not in index.forcing:
            raise FileNotFoundError(
                f"no Daymet forcing file {basin}{FORCING_SUFFIX} for basin {basin} under {source}"
            )
        if basin not in index.streamflow:
            raise FileNotFoundError(
                f"no streamflow file {basin}{STREAMFLOW_SUFFIX} for basin {basin} under {source}"
            )
        forcing_path = _pick(index.forcing[basin], f"basin {basin} (Daymet)", huc[basin])
        flow_path = _pick(index.streamflow[basin], f"basin {basin} (streamflow)", huc[basin])
        forcings.append(_read_forcing(forcing_path))
        flows.append(_read_streamflow(flow_path, basin))

    time = _time_axis(forcings, start, end)
    shape = (len(ids), len(time))
    dynamic = {name: np.full(shape, np.nan, dtype=np.float32) for name in _FORCING_VARIABLES}
    streamflow = np.full(shape, np.nan, dtype=np.float32)
    # m3/s -> mm/day over the basin: * 86400 s/day / (km2 * 1e6 m2/km2) * 1000 mm/m
    area_km2 = exact["area_gages2"]
    for i, (forcing, (qdates, qcfs)) in enumerate(zip(forcings, flows)):
        for name in _FORCING_VARIABLES:
            _place(time, forcing.dates, forcing.values[name], dynamic[name][i])
        q_mm = qcfs * CFS_TO_M3S * 86400.0 / (area_km2[i] * 1e6) * 1000.0
        _place(time, qdates, q_mm.astype(np.float32), streamflow[i])

    lat = np.array([f.lat for f in forcings], dtype=np.float64)
    pet = hargreaves(
        dynamic["tmax"].astype(np.float64),
        dynamic["tmin"].astype(np.float64),
        lat[:, None],
        np.asarray(time.day_of_year, dtype=np.float64)[None, :],
        xp=np,
    ).astype(np.float32)

    dims = ("basin", "time")
    data_vars: dict[str, xr.DataArray] = {}
    for name, (column, attrs) in _FORCING_VARIABLES.items():
        data_vars[name] = xr.DataArray(
            dynamic[name], dims=dims, attrs={**attrs, "source_name": column}
        )
    data_vars["pet"] = xr.DataArray(pet, dims=dims, attrs=dict(_PET_ATTRS))
    data_vars["streamflow"] = xr.DataArray(streamflow, dims=dims, attrs=dict(_STREAMFLOW_ATTRS))
    data_vars.update(static.data_vars)
    header = {
        "forcing_lat": lat,
        "forcing_elev": np.array([f.elev for f in forcings]),
        "forcing_area": np.array([f.area_m2 for f in forcings]) / 1e6,
    }
    for name, values in header.items():
        data_vars[name] = xr.DataArray(
            values.astype(np.float32), dims=("basin",), attrs=dict(_HEADER_ATTRS[name])
        )
    data_vars["forcing_ok"] = xr.DataArray(
        np.ones(len(ids), dtype=bool), dims=("basin",), attrs=dict(_HEADER_ATTRS["forcing_ok"])
    )

    coords = {
        "basin": _basin_coord(ids),
        "time": xr.DataArray(
            time.values.astype("datetime64[ns]"), dims="time", attrs=dict(_TIME_ATTRS)
        ),
    }
    title = (
        "CAMELS-US: Daymet basin-mean forcing, USGS streamflow and catchment attributes "
        f"({len(ids)} basins, {time[0].date()}..{time[-1].date()})"
    )
    return xr.Dataset(data_vars, coords=coords, attrs={"title": title, **_GLOBAL_ATTRS})


# --------------------------------------------------------------------------- zarr output


def _zarr_encoding(ds: xr.Dataset, basin_chunk: int) -> dict[str, dict[str, Any]]:
    """Per-variable zarr v2 encoding like the reference store.

    Floats: float32, Blosc zstd level 7 with byte shuffle, NaN fill; (basin, time) variables
    in chunks of ``basin_chunk`` basins x the whole record (a training batch reads a few
    basins' full series). Everything else: Blosc lz4 level 5. ``time``: int32 days since
    1980-01-01.
    """
    import zarr
    from numcodecs import Blosc

    def codec(cname: str, clevel: int) -> dict[str, Any]:
        blosc = Blosc(cname=cname, clevel=clevel, shuffle=Blosc.SHUFFLE)
        # zarr-python 3 takes a tuple under "compressors"; zarr-python 2 one "compressor".
        if int(zarr.__version__.split(".")[0]) >= 3:
            return {"compressors": (blosc,)}
        return {"compressor": blosc}

    zstd = codec("zstd", 7)
    lz4 = codec("lz4", 5)
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        chunks = tuple(
            min(basin_chunk, n) if dim == "basin" and var.ndim > 1 else n
            for dim, n in zip(var.dims, var.shape)
        )
        enc: dict[str, Any] = {"chunks": chunks}
        if name == "time":
            enc.update(
                lz4, dtype="int32", units="days since 1980-01-01", calendar="proleptic_gregorian"
            )
        elif np.issubdtype(var.dtype, np.floating):
            enc.update(zstd, dtype="float32", _FillValue=np.float32(np.nan))
        else:
            enc.update(lz4)
        encoding[str(name)] = enc
    return encoding


def write_zarr(
    ds: xr.Dataset, path: PathLike, *, overwrite: bool = False, basin_chunk: int = 32
) -> Path:
    """Write ``ds`` as a consolidated zarr format-2 store at ``path``, atomically.

    The store is written to a hidden temporary sibling folder and renamed into place only
    once complete, so a crash leaves either no store or the previous one, never a
    half-written one. With ``overwrite=True`` an existing store is swapped out (renamed
    aside, then deleted after the new one is in place).

    Floating-point variables are stored as float32 (NaN fill) with Blosc zstd-7 + shuffle,
    (basin, time) variables in chunks of ``basin_chunk`` basins x all days; other variables
    with Blosc lz4-5; ``time`` as int32 days since 1980-01-01 - the layout of
    ``camels_us.zarr``. Existing encodings on ``ds`` (e.g. from ``open_zarr``) are ignored.
    Read it back with ``xarray.open_zarr(path)``.

    Returns the final path.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists (pass overwrite=True to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    out = ds.drop_encoding()
    encoding = _zarr_encoding(out, basin_chunk)
    # Dask-backed inputs: align dask chunks with the zarr chunks so no two tasks share one.
    for name, var in out.data_vars.items():
        if var.chunks is not None:
            out[name] = var.chunk(dict(zip(var.dims, encoding[str(name)]["chunks"])))
    try:
        out.to_zarr(tmp, mode="w-", zarr_format=2, consolidated=True, encoding=encoding)
        if target.exists():
            trash = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
            os.replace(target, trash)
            os.replace(tmp, target)
            if trash.is_dir():
                shutil.rmtree(trash, ignore_errors=True)
            else:
                trash.unlink()
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
