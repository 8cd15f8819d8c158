"""A calibration experiment: per-basin parameters by a calibration method, on the same data,
periods, warm-up, model and loss as a dPL experiment, written as a self-contained run
directory and re-evaluable with ``dpljax evaluate``::

    config.yaml  run_info.json  normalizer.json  checkpoints/calibration.npz
    calibration.zarr  metrics_test.csv  predictions_test.zarr  summary.json  figures/

The config is an experiment config (``model, net, loss, optim, data, train``) plus a
``calibrate`` section naming a method of :data:`~dpljax.calibrate.methods.METHODS` and its
options (``net`` and ``optim`` are not used by SCE-UA). Every basin of ``data.basins``
is calibrated on the training period, its first ``train.warmup`` days run but left out of
the loss (as dPL's training windows are warmed up), ``calibrate.seeds`` times with different
keys; the seed with the lowest training loss is the basin's calibration. The test period is
then run with the same warm-up as dPL's evaluation and scored with the same metrics.

Interruptions: the state of every basin's search is checkpointed (atomically) every
``train.checkpoint_minutes`` and at the end; ``train.resume=true`` continues from it, bit for
bit the same as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import copy
import json
import time
import zlib
from dataclasses import asdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr
import yaml

from .. import evaluate as E
from ..checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from ..config import ConfigError, check_options
from ..data.dataset import fit_normalizer, load_with_report, prepare
from ..data.normalize import Normalizer
from ..experiment import SECTIONS, build, write_run_info
from ..progress import Progress
from ..resume import changes
from ..rundir import check_new_start, run_lock, write_json
from .methods import METHODS, BasinData
from .problem import Problem

#: Keys that may change when a calibration is resumed.
MAY_CHANGE = ("train.resume", "train.progress", "train.checkpoint_minutes", "data.source")


def build_method(cc: dict):
    """The method object of a ``calibrate`` section (``{method: name, seeds: k, **options}``)."""
    if not isinstance(cc, dict):
        raise ConfigError(f"calibrate must be a mapping like {{method: sceua, max_evals: 10000}}, got {cc!r}")
    cc = dict(cc)
    name = cc.pop("method", None)
    if name not in METHODS:
        raise ConfigError(f"calibrate.method={name!r} is not a calibration method (choose from {sorted(METHODS)})")
    cls = METHODS[name]
    seeds = cc.pop("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"calibrate.seeds must be an integer >= 1, got {seeds!r}")
    check_options(cls, "calibrate", cc)
    try:
        return cls(**cc), seeds
    except (TypeError, ValueError) as e:  # the method's own checks name the option
        raise ConfigError(f"'calibrate' ({cls.__name__}): {e}") from e


def basin_keys(seed: int, basins, n_seeds: int):
    """One PRNG key per (seed, basin) row, seed-major: a basin's key depends on its id and the
    seed only, so its calibration does not depend on which other basins run beside it."""
    root = jax.random.key(seed)
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(root, s), zlib.crc32(str(b).encode()) & 0x7FFFFFFF)
                      for s in range(n_seeds) for b in basins])


def _rows(arrays, n_seeds: int, devices: int = 1) -> BasinData:
    """The basins' data repeated for every seed (seed-major), padded with copies of the last
    row to a multiple of ``devices`` and split over them (rows are independent, so the
    padding rows change nothing and are dropped from the results)."""
    n = arrays.obs.shape[0] * n_seeds
    pad = -n % devices

    def rows(a):
        a = jnp.concatenate([jnp.asarray(a)] * n_seeds, axis=0)
        return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0) if pad else a

    data = BasinData({k: rows(v) for k, v in arrays.forcing.items()}, rows(arrays.obs), rows(arrays.obs_std))
    return _shard(data, devices)


def _shard(tree, devices: int):
    if devices <= 1:
        return tree
    from jax.sharding import NamedSharding, PartitionSpec

    from ..parallel import AXIS, basin_mesh

    return jax.device_put(tree, NamedSharding(basin_mesh(devices), PartitionSpec(AXIS)))


def _row_parallel(method, problem: Problem, devices: int):
    """``advance(data, state)``. A method whose rows are independent (``independent_rows``)
    runs each device's rows as its own program (``shard_map``): a device's evaluation loop
    then never waits for the other's at each round, as one program partitioned over the
    devices would (a global loop condition, synchronised every round)."""
    if devices <= 1 or not getattr(method, "independent_rows", False):
        return lambda data, state: method.advance(problem, data, state)
    from jax.sharding import PartitionSpec

    from ..parallel import AXIS, basin_mesh

    spec = PartitionSpec(AXIS)
    return jax.jit(jax.shard_map(lambda d, s: method.advance(problem, d, s), mesh=basin_mesh(devices),
                                 in_specs=(spec, spec), out_specs=spec, check_vma=False))


def _keys(seed: int, basins, n_seeds: int, devices: int):
    keys = basin_keys(seed, basins, n_seeds)
    pad = -keys.shape[0] % devices
    return _shard(jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, axis=0)]) if pad else keys, devices)


def _save_state(path: Path, state, meta: dict) -> None:
    save_checkpoint(path, jax.tree.map(lambda v: jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key)
                                       else v, state), meta)


def _load_state(path: Path, like):
    raw_like = jax.tree.map(lambda v: jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v, like)
    raw, meta = load_checkpoint(path, raw_like)
    state = jax.tree.map(lambda r, v: jax.random.wrap_key_data(r) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else r,
                         raw, like)
    return state, meta


def run_calibration(config: dict, run_dir: str | Path, log=print) -> dict:
    """Calibrate every basin, then score the test period; everything lands in ``run_dir``
    (locked while the calibration runs: see :mod:`dpljax.rundir`)."""
    with run_lock(run_dir):
        return _run_calibration(config, run_dir, log)


def _run_calibration(config: dict, run_dir: str | Path, log=print) -> dict:
    run_dir = Path(run_dir)
    config = copy.deepcopy(config)
    method, n_seeds = build_method(config.get("calibrate"))
    exp = build({k: config[k] for k in SECTIONS})
    try:
        problem = Problem(exp.dpl, exp.loss, exp.train.warmup)
        method.check(problem)
    except ValueError as e:
        raise ConfigError(f"'calibrate': {e}") from e
    ckpt = run_dir / "checkpoints" / "calibration.npz"
    old = None
    if ckpt.exists():
        if not exp.train.resume:
            raise ConfigError(f"{run_dir} already holds a calibration ({ckpt}); pass train.resume=true "
                              "to continue it, or choose a new run directory")
        old = read_checkpoint_meta(ckpt)
        diffs = [f"{k}: {a!r} -> {b!r}" for k, a, b in changes(old["config"], config, ignore=MAY_CHANGE)]
        if diffs:
            raise ConfigError(f"cannot resume from {ckpt}: the config changed: " + "; ".join(diffs))
    else:  # a finished run, or the start of another configuration's, is refused
        check_new_start(run_dir, config, ckpt)

    # every check (config, data, periods) before the first file is written
    forcing_names = exp.dpl.model.forcing
    ds, report = load_with_report(exp.data, log=log, forcing=forcing_names)
    basins = [str(b) for b in ds["basin"].values.tolist()]
    norm = fit_normalizer(exp.data, ds)
    arrays, _ = prepare(exp.data, ds, norm, *exp.data.train, forcing=forcing_names)
    if exp.train.warmup >= arrays.obs.shape[1]:
        raise ConfigError(f"train.warmup={exp.train.warmup} days leaves nothing of the training period "
                          f"({arrays.obs.shape[1]} days) to calibrate on")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    info = write_run_info(run_dir, resumed=None if old is None else {"from_chunk": old["chunk"]})
    norm.to_json(run_dir / "normalizer.json")
    devices = exp.train.devices  # rows split over devices (on a CPU: one per core)
    data = _rows(arrays, n_seeds, devices)
    n_rows = len(basins) * n_seeds
    log(f"calibration: {type(method).__name__} on {len(basins)} basins x {n_seeds} seed(s), "
        f"{problem.n} parameters, train {exp.data.train[0]}..{exp.data.train[1]} "
        f"({arrays.obs.shape[1]} days, the first {exp.train.warmup} as warm-up)")

    t0 = time.perf_counter()
    state = method.init(problem, data, _keys(exp.train.seed, basins, n_seeds, devices))
    chunk, wall_before = 0, 0.0
    if old is not None:
        state, meta = _load_state(ckpt, state)
        state = _shard(state, devices)
        chunk, wall_before = meta["chunk"], meta["wall_time_s"]
        log(f"calibration: resumed from chunk {chunk} ({ckpt})")
    meta = lambda: {"config": config, "chunk": chunk, "basins": basins, "n_seeds": n_seeds,
                    "wall_time_s": wall_before + time.perf_counter() - t0}
    every = (exp.train.checkpoint_minutes or 10.0) * 60
    last_save = time.monotonic()
    bar = Progress(exp.train.progress, 1000, desc="calibrating", unit="‰", log=log, show_rate=False)
    advance = _row_parallel(method, problem, devices)
    try:
        while not method.done(state).all():
            state = advance(data, state)
            chunk += 1
            bar.update(int(method.fraction(state) * 1000), method.status(state))
            if time.monotonic() - last_save > every:
                _save_state(ckpt, state, meta())
                last_save = time.monotonic()
    finally:
        bar.close()
    _save_state(ckpt, state, meta())
    wall = wall_before + time.perf_counter() - t0
    x, f, n_evals = (v[:n_rows] for v in method.best(state))
    extra = {k: v[:n_rows] for k, v in method.report(state).items()}
    bad = [basins[i % len(basins)] for i in np.flatnonzero(~np.isfinite(f))]
    if bad:
        raise FloatingPointError(f"calibration found no finite objective value for basin(s) {sorted(set(bad))}: "
                                 "check their training-period forcing and observations")
    table = write_parameters(run_dir / "calibration.zarr", problem, basins, n_seeds, x, f, n_evals, extra)
    log(f"calibration: done in {wall:.1f} s, {int(n_evals.sum())} model evaluations "
        f"({n_evals.sum() / wall:.0f} per second); median training loss {np.median(table['objective']):.4f}")
    metrics = evaluate_calibration(run_dir, exp=exp, problem=problem, norm=norm, ds=ds, log=log, write=True,
                                   out=run_dir)
    summary = E.summarise(metrics, method=type(method).__name__, options=asdict(method), seeds=n_seeds,
                          calibration_wall_time_s=wall, n_evals_total=int(n_evals.sum()),
                          n_evals_per_basin_median=float(np.median(n_evals.reshape(n_seeds, -1).sum(0))),
                          evals_per_second=float(n_evals.sum() / wall),
                          median_train_loss=float(np.median(table["objective"])),
                          n_excluded=len(report.excluded), excluded_basins=report.excluded,
                          git_commit=info["git_commit"])
    write_json(run_dir / "summary.json", summary)
    log(E.median_line(summary))
    return summary


def write_parameters(path: Path, problem: Problem, basins, n_seeds: int, x, f, n_evals, extra: dict) -> pd.DataFrame:
    """``calibration.zarr``: every seed's parameters, objective and counts, and the chosen
    (lowest-loss) seed's as the basin's calibration. Returns the chosen rows as a table."""
    nb = len(basins)
    xs = x.reshape(n_seeds, nb, -1)
    fs = f.reshape(n_seeds, nb)
    pick = np.argmin(np.where(np.isfinite(fs), fs, np.inf), axis=0)
    cols = np.arange(nb)
    coords = {"basin": basins, "parameter": list(problem.names), "seed": np.arange(n_seeds)}
    ds = xr.Dataset(
        {"params": (("basin", "parameter"), xs[pick, cols].astype(np.float64),
                    {"long_name": "calibrated parameters (physical units), the best seed"}),
         "objective": (("basin",), fs[pick, cols].astype(np.float64), {"long_name": "training loss"}),
         "best_seed": (("basin",), pick.astype(np.int32)),
         "n_evals": (("basin",), n_evals.reshape(n_seeds, nb).sum(0).astype(np.int64),
                     {"long_name": "model evaluations, all seeds"}),
         "params_by_seed": (("seed", "basin", "parameter"), xs.astype(np.float64)),
         "objective_by_seed": (("seed", "basin"), fs.astype(np.float64)),
         "lower": (("parameter",), problem.lower), "upper": (("parameter",), problem.upper),
         **{f"{k}_by_seed": (("seed", "basin"), np.asarray(v).reshape(n_seeds, nb)) for k, v in extra.items()}},
        coords=coords)
    E.write_zarr(ds, path)
    return pd.DataFrame({"objective": ds["objective"].values}, index=basins)


def evaluate_calibration(run_dir: str | Path, *, exp=None, problem=None, norm=None, ds=None, log=print,
                         write: bool = True, out: Path | None = None) -> pd.DataFrame:
    """Run the calibrated parameters (``calibration.zarr``) on the test period after its
    warm-up and score them; returns the metrics table (written to ``out``, by default
    ``run_dir/evaluation``, with predictions and figures). With ``write`` the run directory
    is locked meanwhile (:mod:`dpljax.rundir`), as :func:`dpljax.evaluate.evaluate_run` does."""
    run_dir = Path(run_dir)
    with run_lock(run_dir) if write else contextlib.nullcontext():
        return _evaluate_calibration(run_dir, exp, problem, norm, ds, log, write, out)


def _evaluate_calibration(run_dir: Path, exp, problem, norm, ds, log, write: bool, out) -> pd.DataFrame:
    if exp is None:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        exp = build({k: config[k] for k in SECTIONS})
        problem = Problem(exp.dpl, exp.loss, exp.train.warmup)
        norm = Normalizer.from_json(run_dir / "normalizer.json")
        ds = E.load_test_data(exp, log=log)
    cal = xr.open_zarr(run_dir / "calibration.zarr")
    basins = [str(b) for b in ds["basin"].values.tolist()]
    missing = sorted(set(basins) - set(cal["basin"].values.tolist()))
    if missing:
        raise ValueError(f"{run_dir}/calibration.zarr has no parameters for basin(s) {missing[:10]}")
    if list(cal["parameter"].values) != list(problem.names):
        raise ValueError(f"{run_dir}/calibration.zarr holds parameters {list(cal['parameter'].values)}, "
                         f"the configured model needs {list(problem.names)}")
    x = cal["params"].sel(basin=basins).values.astype(np.float32)
    arrays, times, skip = E.period_arrays(exp, ds, norm, exp.data.test)
    q = predict_params(problem, x, arrays.forcing)
    obs = np.asarray(arrays.obs)
    table = E.score(q, obs, basins, skip)
    out = (run_dir / "evaluation") if out is None else Path(out)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "metrics_test.csv", float_format="%.6f")
        E.write_predictions(out / "predictions_test.zarr", q[:, skip:], obs[:, skip:], basins, times[skip:])
        E.figures(out / "figures", q[:, skip:], obs[:, skip:], basins, times[skip:], table)
        if out != run_dir:
            summary = E.summarise(table)
            write_json(out / "summary.json", summary)
            log(E.median_line(summary))
    return table


def predict_params(problem: Problem, x, forcing, chunk: int = 64) -> np.ndarray:
    """Routed streamflow ``(N, T)`` of per-basin physical parameters ``x (N, n)``."""
    run = jax.jit(problem.simulate)
    n = x.shape[0]
    parts = []
    for i in range(0, n, chunk):
        sl = slice(i, min(i + chunk, n))
        parts.append(np.asarray(run(jnp.asarray(x[sl]), {k: v[sl] for k, v in forcing.items()})))
    return np.concatenate(parts, axis=0)
