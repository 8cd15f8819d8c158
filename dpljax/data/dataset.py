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
      attributes: static attributes fed to the network.
      train, valid, test: ``(start, end)`` dates, inclusive; ``valid`` may be ``None``.
      test_warmup_days: days run before the test period and left out of its metrics;
        ``None`` uses the length of the training period (the reference practice), capped by
        the data available before the test period.
    """

    source: str = "sample"
    basins: Sequence[str] | str | None = None
    attributes: Sequence[str] = contract.ATTRIBUTES_35
    net_forcing: Sequence[str] = contract.NET_FORCING
    target: str = contract.TARGET
    train: Period = ("1989-10-01", "1999-09-30")
    valid: Period | None = None
    test: Period = ("1999-10-01", "2008-09-30")
    test_warmup_days: int | None = None

    def __post_init__(self):
        self.attributes = tuple(self.attributes)
        self.net_forcing = tuple(self.net_forcing)
        self.train = tuple(self.train)
        self.test = tuple(self.test)
        self.valid = tuple(self.valid) if self.valid is not None else None
        if self.basins is not None and not isinstance(self.basins, str):
            self.basins = [str(b) for b in self.basins]


class Arrays(NamedTuple):
    """Dense arrays of a set of basins over a contiguous span of days.

    forcing: ``(N, T, 3)`` raw prcp (mm/d), tmean (degC), pet (mm/d) for the process model;
    x_dynamic: ``(N, T, n_forcing)`` normalised network inputs; x_static: ``(N, n_attr)``;
    obs: ``(N, T)`` observed streamflow (mm/d, NaN where missing); obs_std: ``(N,)`` standard
    deviation of each basin's training observations (for the NSE-batch loss).
    """

    forcing: jnp.ndarray
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
        raise FileNotFoundError(f"dataset {str(path)!r} does not exist")
    return xr.open_zarr(path)


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


def load(cfg: DataConfig, ds: xr.Dataset | None = None) -> xr.Dataset:
    """Open, select and validate (no compute before this passes)."""
    ds = open_source(cfg.source) if ds is None else ds
    dyn_needed = sorted(set(contract.MODEL_FORCING) | {v for v in cfg.net_forcing if v != "tmean"})
    contract.check_structure(ds, dyn_needed + [cfg.target], cfg.attributes)
    ds = select_basins(ds, cfg.basins)
    periods = {"train": cfg.train, "test": cfg.test}
    if cfg.valid is not None:
        periods["valid"] = cfg.valid
    for name, (s, e) in periods.items():
        contract.check_period(ds, name, s, e)
    keep = list(dict.fromkeys(dyn_needed + [cfg.target] + list(cfg.attributes)))
    ds = ds[keep].load()
    span = span_of(cfg, ds)
    contract.check_values(ds, *span, forcing=dyn_needed)
    contract.check_observations(ds, *cfg.train, target=cfg.target)
    return ds


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


def forcing_arrays(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Raw dynamic variables with the derived ``tmean`` = (tmax + tmin) / 2."""
    out = {v: ds[v].values for v in ("prcp", "tmax", "tmin", "pet")}
    out["tmean"] = (out["tmax"] + out["tmin"]) / 2.0
    for v in ds.data_vars:
        if ds[v].dims == ("basin", "time") and v not in out:
            out[v] = ds[v].values
    return out


def fit_normalizer(cfg: DataConfig, ds: xr.Dataset) -> Normalizer:
    train = ds.sel(time=slice(*cfg.train))
    arr = forcing_arrays(train)
    return Normalizer.fit({v: arr[v] for v in cfg.net_forcing}, train, cfg.attributes)


def prepare(cfg: DataConfig, ds: xr.Dataset, norm: Normalizer, start: str, end: str,
            dtype=jnp.float32) -> tuple[Arrays, pd.DatetimeIndex]:
    """Dense arrays of all selected basins over ``start..end``."""
    sub = ds.sel(time=slice(start, end))
    arr = forcing_arrays(sub)
    forcing = np.stack([arr["prcp"], arr["tmean"], arr["pet"]], axis=-1)
    obs = sub[cfg.target].values
    train_obs = ds[cfg.target].sel(time=slice(*cfg.train)).values
    obs_std = np.nanstd(train_obs, axis=1)
    arrays = Arrays(
        forcing=jnp.asarray(forcing, dtype),
        x_dynamic=jnp.asarray(norm.dynamic_inputs({v: arr[v] for v in norm.dynamic}), dtype),
        x_static=jnp.asarray(norm.static_inputs(sub), dtype),
        obs=jnp.asarray(obs, dtype),
        obs_std=jnp.asarray(np.nan_to_num(obs_std), dtype),
    )
    return arrays, pd.DatetimeIndex(sub["time"].values)
