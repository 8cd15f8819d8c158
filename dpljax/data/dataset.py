"""From a dataset on disk to the dense arrays training and evaluation run on.

:class:`DataConfig` says which data, basins, variables and periods an experiment uses;
:func:`load` opens and selects it and validates it against the contract before any compute;
:func:`prepare` turns it into a :class:`Arrays` pytree of ``(basin, time)`` device arrays:
the raw process-model forcing, the normalised network inputs and the observations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from . import contract
from .normalize import Normalizer

Period = tuple[str, str]


@dataclass
class DataConfig:
    """What data an experiment uses.

    Args:
      source: ``"sample"`` (the embedded 8-basin CAMELS-US sample) or a path to a zarr store
        following the dataset contract.
      basins: ``None`` (all), a list of ids, or the name of a boolean per-basin variable
        (``"in_531"``).
      test_basins: basins scored on the test period when they differ from the training
        basins (prediction in ungauged basins, PUB); same forms as ``basins``; ``None``: the
        training basins. Test basins need no observations in the training period.
      attributes: static attributes fed to the network (names in the store); default the 35
        CAMELS attributes of the reference studies (:data:`~dpljax.data.contract.ATTRIBUTES_35`).
        An empty list: no attribute. A sequence network (``net=lstm``) then learns parameters
        from each basin's forcings alone; a static one (``net=mlp``) gets one constant input and
        so learns one parameter set shared by every basin (a regional calibration), since
        nothing else tells the basins apart.
      variables: the store's own names of contract variables, ``{contract name: store name}``
        (e.g. ``{prcp: P_mm, tmean: T_C, streamflow: Q_mm}``); applied on load, so every other
        key (``attributes`` aside, which names the store's attributes) uses contract names.
      train, valid, test: ``(start, end)`` dates, inclusive; ``valid`` may be ``None``.
      test_warmup_days: days run before the test period and left out of its metrics;
        ``None`` uses the length of the training period (the reference practice), capped by
        the data available before the test period.
      on_bad_basin: ``"error"`` (default): bad forcing in the days the experiment uses, a
        basin without training observations, or a negative/inf observation raises a
        :class:`~dpljax.data.contract.DataError` naming variable, basins and dates;
        ``"exclude"``: such basins are dropped, each logged with its reason, and counted in
        the run's ``summary.json``.
      tmin_above_tmax: ``"error"`` (default) or ``"warn"``: days with tmin > tmax are then
        reported (logged, counted in ``data_report.json``) but accepted. Only
        ``tmean = (tmax + tmin) / 2`` enters the model; the Daymet basin means of CAMELS-US
        hold such days (3,352 basin-days in 98 basins, up to 14.7 degC), which the reference
        studies used as they are.
      attribute_missing_codes: numbers that mean "missing" in numeric attributes (e.g.
        ``[-999]``): read as NaN, i.e. filled with the training mean after normalisation.
        Without it an attribute holding -999 or -9999 is an error naming it and its basins,
        as is an infinite attribute or one missing for every basin.
    """

    source: str = "sample"
    basins: Sequence[str] | str | None = None
    test_basins: Sequence[str] | str | None = None
    attributes: Sequence[str] = contract.ATTRIBUTES_35
    net_forcing: Sequence[str] = contract.NET_FORCING
    target: str = contract.TARGET
    train: Period = ("1989-10-01", "1999-09-30")
    valid: Period | None = None
    test: Period = ("1999-10-01", "2008-09-30")
    test_warmup_days: int | None = None
    on_bad_basin: str = "error"
    tmin_above_tmax: str = "error"
    attribute_missing_codes: Sequence[float] = ()
    variables: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.source, (str, Path)):
            raise ValueError(f"data.source must be 'sample' or a path, got {self.source!r}")
        self.source = str(self.source)
        self.attributes = _names("data.attributes", self.attributes)
        self.variables = _mapping("data.variables", self.variables)
        self.net_forcing = _names("data.net_forcing", self.net_forcing)
        if not isinstance(self.target, str):
            raise ValueError(f"data.target must be a variable name, got {self.target!r}")
        self.train = _period("data.train", self.train)
        self.test = _period("data.test", self.test)
        self.valid = _period("data.valid", self.valid) if self.valid is not None else None
        self.basins = _basins("data.basins", self.basins)
        self.test_basins = _basins("data.test_basins", self.test_basins)
        if self.test_warmup_days is not None:
            if isinstance(self.test_warmup_days, bool) or not isinstance(self.test_warmup_days, int) \
                    or self.test_warmup_days < 0:
                raise ValueError(f"data.test_warmup_days must be null or an integer >= 0, "
                                 f"got {self.test_warmup_days!r}")
        if self.on_bad_basin not in ("error", "exclude"):
            raise ValueError(f"data.on_bad_basin must be 'error' or 'exclude', got {self.on_bad_basin!r}")
        codes = self.attribute_missing_codes
        if codes is None or isinstance(codes, (str, bool)) or not isinstance(codes, (list, tuple)) \
                or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in codes):
            raise ValueError(f"data.attribute_missing_codes must be a list of numbers, got {codes!r}")
        self.attribute_missing_codes = tuple(float(c) for c in codes)
        if self.tmin_above_tmax not in ("error", "warn"):
            raise ValueError(f"data.tmin_above_tmax must be 'error' or 'warn', got {self.tmin_above_tmax!r}")


def _basins(key: str, value):
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{key} must be null, a list of basin ids or the name of a "
                         f"per-basin boolean variable, got {value!r}")
    return [str(b) for b in value]


def _names(key: str, value) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of variable names, got {value!r}")
    return tuple(value)


def _mapping(key: str, value) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                              for k, v in value.items()):
        raise ValueError(f"{key} must map contract names to the store's names, e.g. "
                         f"{{prcp: P_mm, tmean: T_C}}, got {value!r}")
    seen: dict[str, str] = {}
    for k, v in value.items():
        if v in seen:
            raise ValueError(f"{key}: {seen[v]!r} and {k!r} are both read from {v!r}")
        seen[v] = k
    return dict(value)


def _period(key: str, value) -> Period:
    """A ``(start, end)`` pair of parseable dates, as ISO strings; errors name ``key``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{key} must be a pair of dates [start, end], got {value!r}")
    out = []
    for which, v in zip(("start", "end"), value):
        try:
            if isinstance(v, (bool, int, float)) or v is None:
                raise TypeError
            t = pd.Timestamp(v)
            if t is pd.NaT or pd.isna(t):
                raise TypeError
        except (TypeError, ValueError):
            raise ValueError(f"{key}: {which} {v!r} is not a date (use YYYY-MM-DD)") from None
        out.append(str(t.date()))
    if pd.Timestamp(out[0]) > pd.Timestamp(out[1]):
        raise ValueError(f"{key}: start {out[0]} is after end {out[1]}")
    return out[0], out[1]


class Arrays(NamedTuple):
    """Dense arrays of a set of basins over a contiguous span of days.

    forcing: ``{name: (N, T)}`` raw forcing of the process model, one entry per name the
    model declares (``model.forcing``), in the data's physical units;
    x_dynamic: ``(N, T, n_forcing)`` normalised network inputs; x_static: ``(N, n_attr)``;
    obs: ``(N, T)`` observed streamflow (mm/d, NaN where missing); obs_std: ``(N,)`` standard
    deviation of each basin's training observations (for the NSE-batch loss).
    """

    forcing: dict
    x_dynamic: jnp.ndarray
    x_static: jnp.ndarray
    obs: jnp.ndarray
    obs_std: jnp.ndarray


def open_source(source: str) -> xr.Dataset:
    if source == "sample":
        from .sample import load_sample

        return load_sample()
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset {str(path)!r} does not exist (data.source must be 'sample' or "
                                "the path of a zarr store)")
    if path.is_file():
        raise contract.DataError(f"data.source {str(path)!r} is a file, not a zarr store (a directory such as "
                                 "camels_us.zarr): write your data with xarray's ds.to_zarr(path), or convert "
                                 "the CAMELS-US download with `dpljax data camels-us`")
    raw = [n for n in ("basin_mean_forcing", "usgs_streamflow", "camels_attributes_v2.0") if (path / n).exists()]
    if raw or any(path.glob("camels_*.txt")):
        raise contract.DataError(f"data.source {str(path)!r} is the official CAMELS-US layout (found "
                                 f"{raw or 'camels_*.txt'}), not a zarr store: convert it once with "
                                 f"`dpljax data camels-us {path} camels_us.zarr` and set data.source to the result")
    if not any((path / n).exists() for n in (".zgroup", ".zmetadata", "zarr.json")):
        raise contract.DataError(f"data.source {str(path)!r} is a directory but not a zarr store (it has no "
                                 ".zgroup, .zmetadata or zarr.json)")
    try:
        return xr.open_zarr(path)
    except Exception as e:  # noqa: BLE001 - any failure to open is the store's
        raise contract.DataError(f"cannot open the zarr store {str(path)!r}: its metadata are corrupt or "
                                 f"unreadable ({type(e).__name__}: {e}); rebuild the store or restore it "
                                 "from its source") from None


def select_basins(ds: xr.Dataset, basins) -> xr.Dataset:
    if basins is None:
        return ds
    if isinstance(basins, str):
        if basins not in ds:
            raise contract.DataError(f"basin selector {basins!r} is not a variable of the dataset")
        mask = ds[basins].values.astype(bool)
        return ds.isel(basin=np.nonzero(mask)[0])
    have = set(ds["basin"].values.tolist())
    missing = [b for b in basins if b not in have]
    if missing:
        raise contract.DataError(f"basin(s) not in the dataset: {contract._fmt_basins(missing)}")
    return ds.sel(basin=list(basins))


@dataclass
class LoadReport:
    """What :func:`load_with_report` did to the data: basins it excluded, and why."""

    excluded: dict[str, str] = field(default_factory=dict)  # basin -> reason
    n_selected: int = 0  # basins selected before any exclusion
    warnings: dict = field(default_factory=dict)  # kind -> {message, basins, cells}: accepted

    def to_dict(self) -> dict:
        return {"n_selected": self.n_selected, "n_excluded": len(self.excluded),
                "excluded_basins": dict(self.excluded), "warnings": dict(self.warnings)}


def load(cfg: DataConfig, ds: xr.Dataset | None = None, log=None, *,
         forcing: Sequence[str] = ()) -> xr.Dataset:
    """Open, select and validate (no compute before this passes)."""
    return load_with_report(cfg, ds, log=log, forcing=forcing)[0]


def source_variables(names: Sequence[str], ds: xr.Dataset) -> list[str]:
    """The dataset variables that ``names`` are read or derived from (:data:`contract.DERIVED`)."""
    out = []
    for n in names:
        if n not in ds and n in contract.DERIVED:
            out.extend(contract.DERIVED[n][0])
        else:
            out.append(n)
    return list(dict.fromkeys(out))


def _shown_variables(ds: xr.Dataset, most: int = 30) -> str:
    """The store's data variables, sorted, for an error message (the first ``most``)."""
    have = sorted(str(v) for v in ds.data_vars)
    return ", ".join(have[:most]) + (f" (+{len(have) - most} more)" if len(have) > most else "")


def rename_variables(ds: xr.Dataset, mapping: dict[str, str], log=None) -> xr.Dataset:
    """The store's variables renamed to the contract's names (``data.variables``:
    ``{contract name: store name}``). A store variable that already has a contract name which
    the mapping reads from elsewhere is set aside (and said so)."""
    if not mapping:
        return ds
    missing = {k: v for k, v in mapping.items() if v not in ds.variables}
    if missing:
        raise contract.DataError("data.variables reads " + ", ".join(f"{k!r} from {v!r}" for k, v in missing.items())
                                 + f", but the store has no such variable (its variables: {_shown_variables(ds)})")
    shadowed = [k for k, v in mapping.items() if k != v and k in ds.variables]
    if shadowed:
        (log or print)(f"data: the store's own {shadowed} not used: data.variables reads "
                       + ", ".join(f"{k} from {mapping[k]!r}" for k in shadowed))
        ds = ds.drop_vars(shadowed)
    return ds.rename({v: k for k, v in mapping.items() if k != v})


def _check_present(ds: xr.Dataset, cfg: DataConfig, forcing: Sequence[str]) -> None:
    """Name what the experiment reads and the store lacks, in the config's own terms."""
    def has(n):
        return n in ds.variables or (n in contract.DERIVED and all(v in ds.variables for v in contract.DERIVED[n][0]))

    lacks = [n for n in dict.fromkeys([*forcing, *cfg.net_forcing, cfg.target]) if not has(n)]
    attrs = [a for a in cfg.attributes if a not in ds.variables]
    if not lacks and not attrs:
        return
    msg = f"dataset lacks variable(s) {[*lacks, *attrs]}"
    for n in lacks:
        if n in contract.DERIVED:
            msg += f"; {n!r} may instead be derived from {' and '.join(map(repr, contract.DERIVED[n][0]))}"
    if lacks:
        msg += "; if the store names them otherwise, map them: data.variables={" + ", ".join(
            f"{n}: <store name>" for n in lacks) + "}"
    if attrs:
        msg += (f"; {attrs} are listed in data.attributes: list only attributes the store has, or none "
                "(data.attributes=[])")
    raise contract.DataError(f"{msg}; the store has: {_shown_variables(ds)}")


def _say_which_tmean(ds: xr.Dataset, names, log) -> None:
    """``tmean`` may come from the store or be derived from ``tmax``/``tmin``; when the store
    has both, its own ``tmean`` is used: say so."""
    if "tmean" in names and "tmean" in ds.variables and "tmax" in ds.variables and "tmin" in ds.variables:
        (log or print)("data: the store has tmean as well as tmax and tmin: the model uses the store's "
                       "tmean (tmax and tmin are not read); drop tmean from the store to use "
                       "(tmax + tmin) / 2")


def load_with_report(cfg: DataConfig, ds: xr.Dataset | None = None, log=None, *,
                     require_train_obs: bool = True,
                     forcing: Sequence[str] = ()) -> tuple[xr.Dataset, LoadReport]:
    """:func:`load`, also returning a :class:`LoadReport`.

    ``forcing``: the process model's forcing names (``model.forcing``); they are validated
    with the network's inputs (``cfg.net_forcing``) and the target.

    ``require_train_obs=False`` (basins that are only scored, never trained on) drops the
    requirement of observations in the training period.

    Structure (dims, variables, time axis) and periods are always errors; bad values of a
    basin are errors unless ``cfg.on_bad_basin == "exclude"``, when the basin is dropped and
    logged (``log``, default ``print``) with its reason.
    """
    ds = open_source(cfg.source) if ds is None else ds
    ds = rename_variables(ds, cfg.variables, log=log)
    _check_present(ds, cfg, forcing)
    dyn_needed = sorted(set(source_variables([*forcing, *cfg.net_forcing], ds)))
    _say_which_tmean(ds, [*forcing, *cfg.net_forcing], log)
    contract.check_structure(ds, dyn_needed + [cfg.target], cfg.attributes)
    ds = select_basins(ds, cfg.basins)
    if ds.sizes["basin"] == 0:
        raise contract.DataError(f"data.basins={cfg.basins!r} selects no basin")
    periods = {"train": cfg.train, "test": cfg.test}
    if cfg.valid is not None:
        periods["valid"] = cfg.valid
    for name, (s, e) in periods.items():
        contract.check_period(ds, name, s, e)
    keep = list(dict.fromkeys(dyn_needed + [cfg.target] + list(cfg.attributes)))
    _check_chunk_files(cfg.source, [cfg.variables.get(v, v) for v in dyn_needed])
    ds = ds[keep]
    for v in keep:  # read now, one variable at a time, so that a bad chunk is named
        try:
            ds[v].load()
        except Exception as e:  # noqa: BLE001 - a chunk that cannot be read or decoded
            raise contract.DataError(f"cannot read variable {v!r} from {cfg.source!r}: a chunk of it is corrupt or "
                                     f"unreadable ({type(e).__name__}: {e}); rebuild the store or restore it "
                                     "from its source") from None
    ds = ds.load()
    if cfg.attribute_missing_codes:
        for a in cfg.attributes:
            if ds[a].dtype.kind in "fiu":
                ds[a] = ds[a].astype(np.float64).where(~ds[a].isin(list(cfg.attribute_missing_codes)))
    report = LoadReport(n_selected=int(ds.sizes["basin"]))
    span = span_of(cfg, ds)
    warn = ("tmin_above_tmax",) if cfg.tmin_above_tmax == "warn" else ()
    train_obs = cfg.train if require_train_obs else None
    ds, report.excluded = contract.screen_basins(ds, span, train_obs, dyn_needed, cfg.target,
                                                 cfg.on_bad_basin, warn=warn, warnings=report.warnings,
                                                 attributes=cfg.attributes)
    if require_train_obs:  # the basins the statistics are fitted on
        contract.check_attributes_defined(ds, cfg.attributes)
    log = print if log is None else log
    for kind, w in report.warnings.items():
        log(f"data: warning ({kind}: warn): {w['cells']} basin-days in {len(w['basins'])} basins "
            f"accepted: {w['message']}")
    if report.excluded:
        for b, why in report.excluded.items():
            log(f"data: excluded basin {b}: {why}")
        log(f"data: {len(report.excluded)} of {report.n_selected} basins excluded "
            f"(data.on_bad_basin=exclude); {ds.sizes['basin']} left")
    return ds, report


def _check_chunk_files(source: str, variables: Sequence[str]) -> None:
    """A zarr (format 2) directory store missing a chunk file of a forcing variable: zarr
    would read it as fill values (NaN), so name the file instead. (A missing streamflow chunk
    may be legitimate: zarr need not write a chunk that is all NaN.)"""
    import itertools
    import json

    path = Path(source).expanduser()
    if source == "sample" or not path.is_dir():
        return
    for v in variables:
        meta = path / v / ".zarray"
        try:
            z = json.loads(meta.read_text())
            shape, chunks = z["shape"], z["chunks"]
            sep = z.get("dimension_separator") or "."
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a zarr v2 array we can list; the read itself will tell
        grid = [range(-(-n // c)) for n, c in zip(shape, chunks)]
        missing = [sep.join(map(str, idx)) for idx in itertools.product(*grid)
                   if not (path / v / sep.join(map(str, idx))).exists()]
        if missing:
            raise contract.DataError(f"variable {v!r} of {str(path)!r} lacks chunk file(s) "
                                     f"{', '.join(f'{v}/{m}' for m in missing[:5])}"
                                     f"{f' (+{len(missing) - 5} more)' if len(missing) > 5 else ''}: zarr would "
                                     "read them as NaN; rebuild the store or restore it from its source")


def span_of(cfg: DataConfig, ds: xr.Dataset) -> Period:
    """The days any part of the experiment touches, test warm-up included."""
    starts = [cfg.train[0], test_start_with_warmup(cfg, ds)]
    ends = [cfg.train[1], cfg.test[1]]
    if cfg.valid is not None:
        starts.append(cfg.valid[0])
        ends.append(cfg.valid[1])
    return str(min(pd.Timestamp(s) for s in starts).date()), str(max(pd.Timestamp(e) for e in ends).date())


def test_start_with_warmup(cfg: DataConfig, ds: xr.Dataset, period: Period | None = None) -> str:
    start = pd.Timestamp((period or cfg.test)[0])
    if cfg.test_warmup_days is None:
        n = (pd.Timestamp(cfg.train[1]) - pd.Timestamp(cfg.train[0])).days + 1
    else:
        n = int(cfg.test_warmup_days)
    first = pd.Timestamp(ds["time"].values[0])
    return str(max(first, start - pd.Timedelta(days=n)).date())


def variables(ds: xr.Dataset, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{name: (basin, time) values}``, each read from ``ds`` or derived (:data:`contract.DERIVED`)."""
    out = {}
    for n in names:
        if n in ds:
            out[n] = ds[n].values
        elif n in contract.DERIVED:
            sources, fn = contract.DERIVED[n]
            out[n] = fn(*(ds[v].values for v in sources))
        else:
            raise contract.DataError(f"dataset lacks variable {n!r}")
    return out


def fit_normalizer(cfg: DataConfig, ds: xr.Dataset) -> Normalizer:
    train = ds.sel(time=slice(*cfg.train))
    return Normalizer.fit(variables(train, cfg.net_forcing), train, cfg.attributes)


def prepare(cfg: DataConfig, ds: xr.Dataset, norm: Normalizer, start: str, end: str, *,
            forcing: Sequence[str], dtype=jnp.float32) -> tuple[Arrays, pd.DatetimeIndex]:
    """Dense arrays of all selected basins over ``start..end``; ``forcing`` names the
    process model's forcing (``model.forcing``), which becomes ``Arrays.forcing``."""
    sub = ds.sel(time=slice(start, end))
    arr = variables(sub, list(dict.fromkeys([*forcing, *norm.dynamic])))
    obs = sub[cfg.target].values
    train_obs = ds[cfg.target].sel(time=slice(*cfg.train)).values
    obs_std = np.nanstd(train_obs, axis=1)
    arrays = Arrays(
        forcing={n: jnp.asarray(arr[n], dtype) for n in forcing},
        x_dynamic=jnp.asarray(norm.dynamic_inputs({v: arr[v] for v in norm.dynamic}), dtype),
        x_static=jnp.asarray(norm.static_inputs(sub), dtype),
        obs=jnp.asarray(obs, dtype),
        obs_std=jnp.asarray(np.nan_to_num(obs_std), dtype),
    )
    return arrays, pd.DatetimeIndex(sub["time"].values)
