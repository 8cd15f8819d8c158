"""A trained dPL model on basins and periods of one's choosing, with or without observations.

``dpljax predict RUN_DIR DATA`` runs the network and process model saved in ``RUN_DIR`` on
the store ``DATA``: basins it never saw (ungauged), periods after its data (future
forcing), or both. ``DATA`` needs the forcings and attributes the run was trained with
(named as the contract names them, or mapped with ``variables``); streamflow is optional.
The output directory gets::

    predictions.zarr   q_sim (basin, time) mm/day; q_obs where the store has streamflow;
                       the physical parameters: static (basin, component), time-varying
                       (basin, time, component), routing (basin,)
    metrics.csv        per-basin metrics, only where the store has observations in the period
    summary.json       what was run: run directory, data, basins, period, warm-up

The period is run after a warm-up taken from the store's days before it: as many as the
run's own evaluation used (``data.test_warmup_days``, else the length of its training
period), fewer when the store starts later (said so). A per-basin calibration has no
parameters for a basin it did not calibrate, so it is refused (``dpljax evaluate`` re-runs
it on its own basins).
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from . import evaluate as E
from .data import contract
from .data.dataset import load_with_report, open_source, prepare, rename_variables, source_variables
from .rundir import RunDirError, read_config, run_lock, write_json


def _refuse_non_dpl(run_dir: Path) -> None:
    if (run_dir / "pub.json").exists():
        raise RunDirError(f"{run_dir} is a PUB cross-validation: it holds one trained model per fold "
                          f"({run_dir}/fold_0, ...); predict with one of them, e.g. `dpljax predict "
                          f"{run_dir}/fold_0 DATA`")
    config = read_config(run_dir)
    if config.get("calibrate"):
        raise RunDirError(f"{run_dir} is a per-basin calibration ({config['calibrate'].get('method')}): it has "
                          "parameters only for the basins it calibrated, none for a basin it did not see, and "
                          "`dpljax predict` runs trained dPL models only. Re-run the calibration on its own "
                          f"basins with `dpljax evaluate {run_dir}`, or train a dPL model to predict other basins")


def predict_run(run_dir: str | Path, data: str, *, out: str | Path | None = None, start: str | None = None,
                end: str | None = None, basins: Sequence[str] | None = None, warmup_days: int | None = None,
                variables: dict | None = None, log=print) -> dict:
    """Run the trained model of ``run_dir`` on the store ``data`` (a zarr path, or
    ``"sample"``) over ``start..end`` (default: the store's days after the warm-up) and
    write ``predictions.zarr`` (+ ``metrics.csv`` where there are observations and
    ``summary.json``) to ``out`` (default ``run_dir/prediction``). Returns the summary."""
    run_dir = Path(run_dir)
    _refuse_non_dpl(run_dir)
    exp, norm, graphdef, state = E.load_trained(run_dir)
    mapping = dict(exp.data.variables if variables is None else variables)
    ds = open_source(data)
    absent = {k: v for k, v in mapping.items() if v not in ds.variables}  # named below if needed
    ds = rename_variables(ds, {k: v for k, v in mapping.items() if k not in absent}, log=log)
    ds = _check_inputs(ds, data, exp, norm, run_dir, absent)
    has_obs = exp.data.target in ds.variables
    if not has_obs:  # ungauged: no streamflow at all (all-NaN is the same to what follows)
        ds = ds.assign({exp.data.target: (("basin", "time"), np.full((ds.sizes["basin"], ds.sizes["time"]),
                                                                     np.nan, np.float32))})
    t = pd.DatetimeIndex(ds["time"].values)
    if warmup_days is None:
        warmup_days = (exp.data.test_warmup_days if exp.data.test_warmup_days is not None
                       else (pd.Timestamp(exp.data.train[1]) - pd.Timestamp(exp.data.train[0])).days + 1)
    if isinstance(warmup_days, bool) or int(warmup_days) != warmup_days or warmup_days < 0:
        raise ValueError(f"--warmup-days must be an integer >= 0, got {warmup_days!r}")
    warmup_days = int(warmup_days)
    if start is None:  # the store's days after a full warm-up (all of them if it is shorter)
        s = t[0] + pd.Timedelta(days=warmup_days)
        start = str((s if s <= t[-1] else t[0]).date())
    period = (str(pd.Timestamp(start).date()), str(pd.Timestamp(end if end is not None else t[-1]).date()))
    _check_period(ds, period, data)
    cfg = replace(exp.data, source=str(data), basins=list(basins) if basins else None, test_basins=None,
                  train=period, valid=None, test=period, test_warmup_days=warmup_days, variables={})
    ds, report = load_with_report(cfg, ds, log=log, require_train_obs=False, forcing=exp.dpl.model.forcing)
    with warnings.catch_warnings():  # all-NaN streamflow: its (unused) spread is NaN, as it should
        warnings.simplefilter("ignore", RuntimeWarning)
        arrays, times, skip = E.period_arrays(replace(exp, data=cfg), ds, norm, period)
    run_start = str(times[0].date())
    if skip < warmup_days:
        log(f"predict: warm-up of {skip} day(s) from {run_start} (the store starts there; the run's evaluation "
            f"used {warmup_days}): the first months of {period[0]}..{period[1]} start from nearly empty stores"
            if skip else f"predict: no warm-up (the store starts on {period[0]}): the first months start from "
            "nearly empty stores; choose a later --start to leave days for one")
    ids = [str(b) for b in ds["basin"].values.tolist()]
    res = E.predict(exp.dpl, graphdef, state, arrays, return_all=True)
    q = np.asarray(res.q)
    E.check_outputs(q, ids)
    obs = np.asarray(arrays.obs)
    out = run_dir / "prediction" if out is None else Path(out)
    inside = out.resolve().is_relative_to(run_dir.resolve())
    with run_lock(run_dir) if inside else contextlib.nullcontext():
        out.mkdir(parents=True, exist_ok=True)
        pred = _dataset(q[:, skip:], obs[:, skip:] if has_obs else None, res, skip, ids, times[skip:])
        pred.attrs.update({"run_dir": str(run_dir), "data": str(data), "warmup_start": run_start})
        E.write_zarr(pred, out / "predictions.zarr")
        summary = {"run_dir": str(run_dir), "data": str(data), "basins": ids, "period": list(period),
                   "warmup_start": run_start, "warmup_days": int(skip), "n_days": int(len(times) - skip),
                   "observations": bool(has_obs and np.isfinite(obs[:, skip:]).any()),
                   "excluded_basins": report.excluded}
        if summary["observations"]:
            table = E.score(q, obs, ids, skip)
            table.to_csv(out / "metrics.csv", float_format="%.6f")
            summary.update({k: v for k, v in E.summarise(table).items()})
            log(E.median_line(summary, "predicted-period"))
        write_json(out / "summary.json", summary)
    log(f"wrote {out / 'predictions.zarr'}: {len(ids)} basin(s) x {len(times) - skip} days "
        f"({period[0]}..{period[1]}, after a warm-up from {run_start})")
    return summary


def _check_period(ds: xr.Dataset, period, data) -> None:
    t0, t1 = pd.Timestamp(ds["time"].values[0]), pd.Timestamp(ds["time"].values[-1])
    s, e = pd.Timestamp(period[0]), pd.Timestamp(period[1])
    if s > e:
        raise contract.DataError(f"--start {period[0]} is after --end {period[1]}")
    if s < t0 or e > t1:
        raise contract.DataError(f"the period {period[0]}..{period[1]} lies outside the days of {data!r} "
                                 f"({t0.date()}..{t1.date()}); choose --start and --end inside them")


def _check_inputs(ds: xr.Dataset, data: str, exp, norm, run_dir: Path, absent: dict | None = None) -> xr.Dataset:
    """Everything the run's model reads is in the store (names after ``variables``; ``absent``:
    the mapped names the store lacks, ``{contract name: store name}``). Streamflow is optional."""
    absent = absent or {}
    name = lambda v: f"{v} (read from {absent[v]!r})" if v in absent else v  # noqa: E731
    needed = source_variables([*exp.dpl.model.forcing, *norm.dynamic], ds)
    lacks_dyn = [name(v) for v in needed if v not in ds.variables]
    lacks_attr = [name(a) for a in norm.static if a not in ds.variables]
    if lacks_dyn or lacks_attr:
        parts = []
        if lacks_dyn:
            parts.append(f"daily variable(s) {lacks_dyn}")
        if lacks_attr:
            parts.append(f"attribute(s) {lacks_attr}")
        raise contract.DataError(
            f"{data!r} lacks {' and '.join(parts)} that the model of {run_dir} was trained with (forcing "
            f"{list(exp.dpl.model.forcing)}, network inputs {list(norm.dynamic)}, attributes {list(norm.static)}); "
            "add them to the store, or map the store's own names with --variables NAME=STORE_NAME "
            "(tmean may be given as tmax and tmin)")
    return ds


def _dataset(q, obs, res, skip: int, basins, times) -> xr.Dataset:
    coords = {"basin": basins, "time": pd.DatetimeIndex(times)}
    v = {"q_sim": (("basin", "time"), q.astype(np.float32),
                   {"units": "mm/day", "long_name": "simulated streamflow (routed)"})}
    if obs is not None:
        v["q_obs"] = (("basin", "time"), obs.astype(np.float32), {"units": "mm/day", "long_name": "observed streamflow"})
    for name, p in res.params.items():
        p = np.asarray(p)
        if p.ndim == 3:  # time-varying: (basin, time, component), over the period
            v[f"param_{name}"] = (("basin", "time", "component"), p[:, skip:].astype(np.float32),
                                  {"long_name": f"{name} (physical units, time-varying)"})
        else:
            v[f"param_{name}"] = (("basin", "component"), p.astype(np.float32),
                                  {"long_name": f"{name} (physical units)"})
    for name, p in res.routing.items():  # (basin,), or (basin, member) for an ensemble (net.members)
        p = np.asarray(p)
        v[f"param_{name}"] = (("basin", "member")[:p.ndim], p.astype(np.float32), {"long_name": f"{name} (routing)"})
    return xr.Dataset(v, coords=coords)
