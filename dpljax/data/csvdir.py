"""Reader of a directory of CSV files, one per basin (a common export) -> the dataset contract.

Layout (``dpljax data csv SRC OUT.zarr``)::

    SRC/
      01022500.csv        one file per basin; the file name (without .csv) is the basin id
      01547700.csv
      ...
      attributes.csv      optional: one row per basin, static attributes

A basin file has a header line, a ``date`` column (``YYYY-MM-DD``, one row per day) and
one column per daily variable, named as in the contract (or mapped later with
``data.variables``)::

    date,prcp,tmean,pet,streamflow
    1989-10-01,0.0,11.2,2.31,0.84
    1989-10-02,12.5,9.8,1.02,

Units (those of the contract): ``prcp`` mm/day, ``tmean`` (or ``tmax`` and ``tmin``) degC,
``pet`` mm/day, ``streamflow`` mm/day (discharge divided by the basin's area: ``Q [m3/s] *
86.4 / area [km2]``). An empty cell (or ``NA``, ``NaN``) is missing: a missing streamflow is
masked in the loss and the metrics, a missing forcing is refused by training when it falls in
the days an experiment uses. Every basin file has the same columns; basins may cover different
spans (the store's time axis is their union, NaN outside a basin's span).

``attributes.csv`` has a ``basin`` column (or ``gauge_id``) and one column per attribute;
a column whose every non-empty cell is a number is numeric (float32, missing = NaN), any
other is categorical (text; a missing value is the text ``nan``, as in the CAMELS store).

Nothing is dropped silently: an unreadable file, a missing column, a date that cannot be
read or that repeats, a cell that is not a number, a value that cannot be right (negative
precipitation, PET or streamflow; precipitation above 2000 mm/day; a temperature outside
-90..65 degC; inf), a missing-value code (-999, -9999: pass ``missing_values`` to read it as
missing), an attribute row without a basin file or a basin without an attribute row: each is
a :class:`CsvFormatError` naming the file, the line, the date and the column.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from . import contract

__all__ = ["CsvFormatError", "UNITS", "read_csv_dir"]

#: Units of the contract's daily variables, written as the variables' ``units``.
UNITS = {"prcp": "mm/day", "tmean": "degC", "tmax": "degC", "tmin": "degC", "pet": "mm/day",
         "streamflow": "mm/day"}
_LONG_NAMES = {"prcp": "basin-mean daily precipitation", "tmean": "basin-mean daily mean air temperature",
               "tmax": "basin-mean daily maximum air temperature", "tmin": "basin-mean daily minimum air temperature",
               "pet": "potential evapotranspiration", "streamflow": "observed daily streamflow per unit basin area"}
#: Cell texts read as missing (besides the empty cell).
MISSING_TEXT = ("NA", "NaN", "nan", "N/A", "n/a", "null", "NULL", "None")
#: Numbers that look like missing-value codes: an error unless ``missing_values`` lists them.
MISSING_CODES = (-999.0, -9999.0)
ATTRIBUTES_FILE = "attributes.csv"
_NON_NEGATIVE = ("prcp", "pet", "streamflow")
_TEMPERATURES = ("tmean", "tmax", "tmin")


class CsvFormatError(contract.DataError):
    """A CSV file (or the set of files) does not follow the layout; the message names the
    file, and the line, date and column where one applies."""


def _where(path: Path, line: int | None = None, date=None, column: str | None = None) -> str:
    out = str(path)
    if line is not None:
        out += f", line {line}"
    if date is not None:
        out += f" (date {date})"
    if column is not None:
        out += f", column {column!r}"
    return out


def _read_text_table(path: Path) -> pd.DataFrame:
    """Every cell as text; the row index is the line number in the file. Blank lines are
    skipped; a row with more or fewer fields than the header is an error naming its line."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header, rows, lines = None, [], []
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                if header is None:
                    header, header_line = [c.strip() for c in row], reader.line_num
                    continue
                if len(row) != len(header):
                    raise CsvFormatError(f"{_where(path, reader.line_num)}: {len(row)} field(s), the header line "
                                         f"(line {header_line}) has {len(header)} (leave a missing value empty, "
                                         "but keep its comma)")
                rows.append(row)
                lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as e:
        raise CsvFormatError(f"{path}: cannot be read as CSV text ({type(e).__name__}: {e})") from None
    if header is None:
        raise CsvFormatError(f"{path}: the file is empty (expected a header line and one row per day)")
    if any(not c for c in header):
        raise CsvFormatError(f"{_where(path, header_line)}: a column has no name in the header line")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise CsvFormatError(f"{_where(path, header_line)}: column(s) {dup} appear more than once in the header line")
    df = pd.DataFrame(rows, columns=header, dtype=str, index=np.asarray(lines, dtype=np.int64))
    return df


def _header_line(path: Path) -> int:
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip(" ,\t\r\n"):
                return i
    return 1


def _numbers(path: Path, text: pd.Series, dates, missing_values: Sequence[float]) -> np.ndarray:
    """A column of text -> float64 (missing cells NaN); a cell that is not a number is named."""
    s = text.str.strip()
    missing = (s == "") | s.isin(MISSING_TEXT)
    x = pd.to_numeric(s.where(~missing), errors="coerce").to_numpy(np.float64, copy=True)
    bad = np.flatnonzero(~missing.to_numpy() & np.isnan(x))
    if bad.size:
        i = bad[0]
        raise CsvFormatError(f"{_where(path, int(text.index[i]), _date(dates, i), str(text.name))} is not a number "
                             f"({text.iloc[i]!r}){f' (and {bad.size - 1} more cells)' if bad.size > 1 else ''}")
    if missing_values:
        x[np.isin(x, list(missing_values))] = np.nan
    code = np.flatnonzero(np.isin(x, MISSING_CODES))
    if code.size:
        i = code[0]
        raise CsvFormatError(f"{_where(path, int(text.index[i]), _date(dates, i), str(text.name))} is {x[i]:g}, which "
                             f"looks like a missing-value code ({code.size} cell(s) in all): leave missing cells empty, "
                             f"or pass --missing-values {x[i]:g} to read them as missing")
    return x


def _date(dates, i):
    return None if dates is None else str(pd.Timestamp(dates[i]).date())


@dataclass
class _Basin:
    path: Path
    dates: np.ndarray  # datetime64[D], sorted
    values: dict[str, np.ndarray]  # float64, in date order
    lines: np.ndarray  # line numbers, in date order
    notes: list[str] = field(default_factory=list)


def _date_column(df: pd.DataFrame, path: Path, name: str) -> str:
    cols = {c.lower(): c for c in df.columns}
    if name.lower() not in cols:
        raise CsvFormatError(f"{_where(path, _header_line(path))}: no {name!r} column (found {list(df.columns)}); every basin file "
                             f"needs a column of dates YYYY-MM-DD named {name!r} (or pass --date-column)")
    return cols[name.lower()]


def _read_basin(path: Path, date_column: str, missing_values: Sequence[float]) -> _Basin:
    df = _read_text_table(path)
    col = _date_column(df, path, date_column)
    if df.empty:
        raise CsvFormatError(f"{path}: no data rows after the header line")
    variables = [c for c in df.columns if c != col]
    if not variables:
        raise CsvFormatError(f"{_where(path, _header_line(path))}: no variable column beside {col!r}")
    text = df[col].str.strip()
    dates = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
    if dates.isna().any():
        i = int(np.flatnonzero(dates.isna().to_numpy())[0])
        try:
            stamp = pd.Timestamp(text.iloc[i])
            timed = not pd.isna(stamp) and stamp != stamp.normalize()
        except (ValueError, TypeError):
            timed = False
        why = (" (a date with a time of day: the contract is daily, one row per day dated YYYY-MM-DD)"
               if timed else " (dates must be YYYY-MM-DD)")
        raise CsvFormatError(f"{_where(path, int(df.index[i]), column=col)}: {text.iloc[i]!r} is not a date{why}")
    d = dates.to_numpy().astype("datetime64[D]")
    order = np.argsort(d, kind="stable")
    d_sorted, lines = d[order], df.index.to_numpy()[order]
    dup = np.flatnonzero(d_sorted[1:] == d_sorted[:-1])
    if dup.size:
        j = dup[0]
        raise CsvFormatError(f"{path}, lines {lines[j]} and {lines[j + 1]}: the date {d_sorted[j]} appears twice "
                             "(one row per day)")
    values = {}
    for v in variables:
        x = _numbers(path, df[v], d, missing_values)[order]
        values[v] = x
        _check_values(path, v, x, d_sorted, lines)
    notes = []
    span = (d_sorted[-1] - d_sorted[0]).astype(int) + 1
    if span != len(d_sorted):
        notes.append(f"{path.name}: {span - len(d_sorted)} day(s) without a row between {d_sorted[0]} and "
                     f"{d_sorted[-1]} (stored as missing, NaN)")
    return _Basin(path, d_sorted, values, lines, notes)


def _check_values(path: Path, name: str, x: np.ndarray, dates, lines) -> None:
    """Values no contract variable can take, named by line, date and column."""
    problems = [(np.isinf(x), "is infinite (store a missing value as an empty cell)")]
    if name in _NON_NEGATIVE:
        problems.append((x < 0, f"is negative ({name} must be >= 0, in {UNITS[name]})"))
    if name == "prcp":
        problems.append((x > contract.PRCP_MAX, f"exceeds {contract.PRCP_MAX:g} mm/day (prcp must be in mm/day)"))
    if name in _TEMPERATURES:
        lo, hi = contract.TEMPERATURE_RANGE
        problems.append(((x < lo) | (x > hi), f"lies outside {lo:g}..{hi:g} degC (temperatures must be in degC, "
                                              "not Kelvin or Fahrenheit)"))
    for bad, why in problems:
        idx = np.flatnonzero(bad)
        if idx.size:
            i = idx[0]
            more = f" ({idx.size} such days)" if idx.size > 1 else ""
            raise CsvFormatError(f"{_where(path, int(lines[i]), str(dates[i]), name)}: {x[i]:g} {why}{more}")


def _read_attributes(path: Path, missing_values: Sequence[float]) -> tuple[list[str], dict[str, np.ndarray], list[str],
                                                                            list[int]]:
    df = _read_text_table(path)
    key = next((c for c in df.columns if c.lower() in ("basin", "gauge_id")), None)
    if key is None:
        raise CsvFormatError(f"{_where(path, _header_line(path))}: no 'basin' column (found {list(df.columns)[:10]}); the attributes "
                             "file needs a column 'basin' holding each basin's id (its file name without .csv)")
    ids = df[key].str.strip()
    empty = np.flatnonzero((ids == "").to_numpy())
    if empty.size:
        raise CsvFormatError(f"{_where(path, int(df.index[empty[0]]), column=key)}: no basin id")
    dup = ids[ids.duplicated()]
    if len(dup):
        first = int(df.index[np.flatnonzero((ids == dup.iloc[0]).to_numpy())[0]])
        raise CsvFormatError(f"{_where(path, int(dup.index[0]), column=key)}: basin {dup.iloc[0]!r} already has a row "
                             f"(line {first})")
    columns, categorical = {}, []
    for c in df.columns:
        if c == key:
            continue
        s = df[c].str.strip()
        missing = (s == "") | s.isin(MISSING_TEXT)
        x = pd.to_numeric(s.where(~missing), errors="coerce").to_numpy(np.float64)
        if (missing.to_numpy() | ~np.isnan(x)).all():
            columns[c] = _numbers(path, df[c], None, missing_values)
        else:  # text: categorical; missing as the text 'nan' (CAMELS store convention)
            columns[c] = np.where(missing.to_numpy(), "nan", s.to_numpy()).astype(str)
            categorical.append(c)
    return ids.tolist(), columns, categorical, df.index.tolist()


def read_csv_dir(source_dir, *, attributes: str | os.PathLike | None = None, date_column: str = "date",
                 basins: Iterable[str] | None = None, missing_values: Sequence[float] = (),
                 log=None) -> xr.Dataset:
    """Read a directory of per-basin CSV files (see the module doc) into the dataset contract.

    ``attributes``: the attributes CSV (default ``SRC/attributes.csv`` when it exists);
    ``basins``: read only these (default: every ``*.csv`` file but the attributes file);
    ``missing_values``: numbers read as missing (e.g. ``[-999]``). Notes on what was filled
    (days without a row, basins of different spans) go to ``log`` (default ``print``).

    Returns a Dataset with dims ``(basin, time)`` (float32 daily variables) and ``(basin,)``
    (attributes), checked with :func:`dpljax.data.contract.check_structure`.
    """
    log = print if log is None else log
    src = Path(source_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"CSV source folder {src} does not exist" if not src.exists()
                                else f"{src} is a file; pass the folder that holds one CSV file per basin")
    attr_path = Path(attributes) if attributes is not None else (src / ATTRIBUTES_FILE)
    if attributes is not None and not attr_path.is_file():
        raise FileNotFoundError(f"attributes file {attr_path} does not exist")
    files = {p.stem: p for p in sorted(src.glob("*.csv")) if p.resolve() != attr_path.resolve()}
    if basins is not None:
        want = [str(b) for b in basins]
        absent = [b for b in want if b not in files]
        if absent:
            raise FileNotFoundError(f"no file {src}/<basin>.csv for basin(s) {', '.join(absent)}")
        files = {b: files[b] for b in want}
    if not files:
        raise FileNotFoundError(f"no basin file *.csv in {src} (one CSV file per basin, named <basin id>.csv)")
    read = {b: _read_basin(p, date_column, missing_values) for b, p in files.items()}
    first_b, first = next(iter(read.items()))
    names = list(first.values)
    for b, r in read.items():
        if set(r.values) != set(names):
            lacks, extra = sorted(set(names) - set(r.values)), sorted(set(r.values) - set(names))
            raise CsvFormatError(f"{_where(r.path, _header_line(r.path))}: columns differ from those of {first.path.name} "
                                 f"({', '.join(names)})" + (f": lacks {lacks}" if lacks else "")
                                 + (f"; has {extra} in addition" if extra else "")
                                 + "; every basin file needs the same columns (leave unknown values empty)")
    t0 = min(r.dates[0] for r in read.values())
    t1 = max(r.dates[-1] for r in read.values())
    time = pd.date_range(pd.Timestamp(t0), pd.Timestamp(t1), freq="D")
    ids = list(read)
    data = {v: np.full((len(ids), len(time)), np.nan, np.float32) for v in names}
    for i, r in enumerate(read.values()):
        pos = (r.dates - t0).astype(np.int64)
        for v in names:
            data[v][i, pos] = r.values[v].astype(np.float32)
        for n in r.notes:
            log(f"note: {n}")
        if (r.dates[0], r.dates[-1]) != (t0, t1):
            log(f"note: {r.path.name} covers {r.dates[0]}..{r.dates[-1]}; the store spans {t0}..{t1} "
                "(missing, NaN, outside the basin's span)")
    out = xr.Dataset(
        {v: (("basin", "time"), a, {"units": UNITS[v], "long_name": _LONG_NAMES[v]} if v in UNITS else {})
         for v, a in data.items()},
        coords={"basin": np.array(ids, dtype=str), "time": time.values.astype("datetime64[ns]")},
        attrs={"title": f"{len(ids)} basins read from the CSV files of {src.name}",
               "source": f"dpljax data csv {src}", "conventions": "dims (basin, time) for daily variables, "
               "(basin,) for static attributes; prcp, pet, streamflow mm/day; temperatures degC"})
    attrs: list[str] = []
    if attr_path.is_file():
        a_ids, columns, categorical, a_lines = _read_attributes(attr_path, missing_values)
        row = {b: i for i, b in enumerate(a_ids)}
        extra = [b for b in a_ids if b not in read]
        if extra and basins is None:
            line = a_lines[row[extra[0]]]
            raise CsvFormatError(f"{_where(attr_path, line)}: basin {extra[0]!r} has attributes but no file "
                                 f"{src / (extra[0] + '.csv')}" + (f" (nor do {contract._fmt_basins(extra[1:])})"
                                                                    if len(extra) > 1 else "")
                                 + "; add the basin's file, or remove its row")
        lacking = [b for b in ids if b not in row]
        if lacking:
            raise CsvFormatError(f"{attr_path}: no row for basin(s) {contract._fmt_basins(lacking)} (one row per basin "
                                 "file; leave cells empty where an attribute is unknown)")
        clash = sorted(set(columns) & set(names))
        if clash:
            raise CsvFormatError(f"{_where(attr_path, _header_line(attr_path))}: column(s) {clash} are also daily variables of the basin files")
        take = np.array([row[b] for b in ids])
        for c, vals in columns.items():
            out[c] = ("basin", vals[take].astype(np.float32) if vals.dtype.kind == "f" else vals[take])
            attrs.append(c)
        if categorical:
            log(f"note: attribute(s) {categorical} are text, read as categories")
    contract.check_structure(out, names, attrs)
    return out
