"""The mean streamflow of several trained models: a post-hoc ensemble.

    dpljax ensemble OUT_DIR RUN_DIR RUN_DIR [...]

The members are finished run directories on the same test split: dPL runs or calibrations
scored on the same basins and days, or PUB cross-validations with the same folds (their
held-out basins pooled, fold by fold). The ensemble's streamflow is the mean of the members'
daily routed streamflow, scored like one model's. ``OUT_DIR`` receives

- ``ensemble.json``: the members (paths relative to ``OUT_DIR``, so the tree moves as one);
- ``predictions_test.zarr``: the mean (``q_sim``) and the observations (``q_obs``);
- ``metrics_test.csv`` and ``summary.json``: per-basin metrics of the mean and their medians,
  with each member's median NSE and KGE on the same basins beside them;
- ``figures/nse_cdf.png``.

The members' test flows are their stored ``predictions_test.zarr`` (written when the run
finished, or by ``dpljax evaluate``); a member without them is evaluated first.
``dpljax evaluate OUT_DIR`` re-runs every member's saved model and writes the ensemble's
scores again to ``OUT_DIR/evaluation``.

Averaging flows is what the reference studies do with their ensembles (Kratzert et al. 2019
averaged the flows of LSTMs trained from different seeds); members of different structure
(a precipitation correction on or off, static or time-varying parameters) err more
independently than seeds of one configuration, and their mean gains more.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

from .evaluate import finished_pub_spec
from .rundir import RunDirError, run_lock, write_json

ENSEMBLE_JSON = "ensemble.json"
PREDICTIONS = "predictions_test.zarr"


def is_ensemble(path: str | Path) -> bool:
    return (Path(path) / ENSEMBLE_JSON).exists()


def _quiet(*a) -> None:
    pass


def evaluate_member(run_dir: str | Path, which: str = "written", log=_quiet) -> None:
    """``dpljax evaluate RUN_DIR``: re-run a finished run's saved model on its test period:
    every fold of a PUB cross-validation, a calibration's parameters or a dPL run's network
    (``which``: see :data:`dpljax.evaluate.WHICH`; other than "written" only for a dPL run).
    The flows go to the run's ``evaluation/``."""
    run_dir = Path(run_dir)
    if (run_dir / "pub.json").exists():
        from .evaluate import evaluate_pub

        _only_written(which, run_dir, "a PUB cross-validation")
        evaluate_pub(run_dir, log=log)
        return
    from .rundir import check_finished_run

    config = check_finished_run(run_dir)  # refuses an unfinished or inconsistent run directory
    if config.get("calibrate"):
        from .calibrate.runner import evaluate_calibration

        _only_written(which, run_dir, "a calibration")
        evaluate_calibration(run_dir, log=log)
        return
    from .evaluate import evaluate_run

    evaluate_run(run_dir, log=log, which=which)


def _only_written(which: str, run_dir: Path, what: str) -> None:
    if which != "written":
        raise ValueError(f"{run_dir} holds {what}: which={which!r} applies to a single dPL training run")


def _stored(run_dir: Path, fresh: bool) -> xr.Dataset | None:
    """A single run's test flows: ``evaluation/`` only when ``fresh`` (just re-run), else the
    run's own predictions, else its evaluation's; None when it has neither."""
    places = [run_dir / "evaluation" / PREDICTIONS] if fresh else \
        [run_dir / PREDICTIONS, run_dir / "evaluation" / PREDICTIONS]
    for f in places:
        if f.exists():
            return xr.open_zarr(f).load()
    return None


def member_flows(run_dir: str | Path, fresh: bool = False, log=_quiet) -> xr.Dataset:
    """A finished member's test flows, ``q_sim`` and ``q_obs`` on ``(basin, time)``. A PUB
    cross-validation's are its folds' held-out basins, fold after fold. With ``fresh`` the
    member's saved model is re-run first (:func:`evaluate_member`); without, its stored
    predictions are used and it is re-run only when it has none (e.g. a committed model
    directory that keeps only its weights)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"ensemble member {run_dir} is not a directory")
    if (run_dir / "pub.json").exists():
        n = finished_pub_spec(run_dir)["n_folds"]
        folds = [run_dir / f"fold_{k}" for k in range(n)]
        if fresh or any(_stored(f, False) is None for f in folds):
            evaluate_member(run_dir, log=log)
            fresh = True
        return xr.concat([_stored(f, fresh) for f in folds], "basin")
    flows = None if fresh else _stored(run_dir, False)
    if flows is None:
        evaluate_member(run_dir, log=log)
        flows = _stored(run_dir, True)
        if flows is None:
            raise RunDirError(f"{run_dir}: evaluating it wrote no {PREDICTIONS}")
    return flows


def _first_difference(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    bad = np.argwhere(~((a == b) | (np.isnan(a) & np.isnan(b))))
    return int(bad[0][0]), int(bad[0][1])


def check_members(flows: list[xr.Dataset], names: list[str]) -> None:
    """The members must cover the same basins and days, with the same observations, and
    their streamflow must be finite: a ValueError names the member, and the basin and date
    where it differs."""
    ref = flows[0]
    for name, d in zip(names, flows):
        for coord in ("basin", "time"):
            mine, theirs = d[coord].values, ref[coord].values
            if len(mine) != len(theirs) or not np.array_equal(mine, theirs):
                i = next((i for i, (x, y) in enumerate(zip(mine, theirs)) if x != y), min(len(mine), len(theirs)))
                raise ValueError(f"ensemble member {name}: its test {coord}s differ from {names[0]}'s "
                                 f"({len(mine)} against {len(theirs)}; the first difference at position {i}: "
                                 f"{mine[i] if i < len(mine) else 'none'} against "
                                 f"{theirs[i] if i < len(theirs) else 'none'})")
        obs, q = d.q_obs.values, d.q_sim.values
        if not np.array_equal(obs, ref.q_obs.values, equal_nan=True):
            i, t = _first_difference(obs, ref.q_obs.values)
            raise ValueError(f"ensemble member {name}: observed streamflow (q_obs) differs from {names[0]}'s at "
                             f"basin {d.basin.values[i]}, {str(d.time.values[t])[:10]} ({obs[i, t]} against "
                             f"{ref.q_obs.values[i, t]}): not the same data")
        if not np.isfinite(q).all():
            i, t = np.argwhere(~np.isfinite(q))[0]
            raise ValueError(f"ensemble member {name}: simulated streamflow (q_sim) is {q[i, t]} at basin "
                             f"{d.basin.values[i]}, {str(d.time.values[t])[:10]}")


def score_mean(flows: list[xr.Dataset], names: list[str]):
    """``(mean q_sim, per-basin metrics of the mean, summary)`` of checked members
    (:func:`check_members`); the summary holds each member's median NSE and KGE and the gain
    of the mean over the best member's median NSE."""
    from . import metrics as M
    from .evaluate import summarise

    check_members(flows, names)
    obs, basins = flows[0].q_obs.values, [str(b) for b in flows[0].basin.values]
    mean = np.mean([d.q_sim.values.astype(np.float64) for d in flows], axis=0).astype(np.float32)
    tables = [M.table(d.q_sim.values, obs, basins) for d in flows]
    table = M.table(mean, obs, basins)
    members = [{"run": n, "median_nse": float(np.nanmedian(t["nse"].values)),
                "median_kge": float(np.nanmedian(t["kge"].values))} for n, t in zip(names, tables)]
    summary = summarise(table, n_members=len(flows), members=members)
    summary["gain_over_best_member"] = summary["median_nse"] - max(m["median_nse"] for m in members)
    return mean, table, summary


def _write(out: Path, mean, table, summary: dict, ref: xr.Dataset, log) -> dict:
    from . import evaluate as E

    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "metrics_test.csv", float_format="%.6f")
    E.write_predictions(out / PREDICTIONS, mean, ref.q_obs.values, ref.basin.values, ref.time.values)
    E.nse_cdf(out / "figures" / "nse_cdf.png", table, f"ensemble of {summary['n_members']}")
    write_json(out / "summary.json", summary)
    log(E.median_line(summary) + f" (the mean of {summary['n_members']} members; best member "
        f"{max(m['median_nse'] for m in summary['members']):.4f})")
    return summary


def _resolve(out: Path, members: list[str]) -> list[Path]:
    return [(out / m).resolve() for m in members]


def build_ensemble(out_dir: str | Path, run_dirs, log=print) -> dict:
    """Score the mean streamflow of the finished runs ``run_dirs`` (at least two) into
    ``out_dir`` (see the module's doc); returns the summary. ``out_dir`` must be new, or an
    ensemble of the same members (scored again); a directory holding anything else is refused."""
    out = Path(out_dir)
    runs = [Path(r) for r in run_dirs]
    if len(runs) < 2:
        raise ValueError(f"an ensemble needs at least two run directories, got {[str(r) for r in runs]}")
    resolved = [r.resolve() for r in runs]
    if len(set(resolved)) < len(resolved):
        raise ValueError(f"an ensemble member is named twice: {[str(r) for r in runs]}")
    if out.resolve() in resolved or any(r in out.resolve().parents for r in resolved):
        raise ValueError(f"{out}: the ensemble's directory cannot be a member or lie inside one")
    members = [os.path.relpath(r, out.resolve()) for r in resolved]
    if out.exists() and any(out.iterdir()):
        if not is_ensemble(out):
            raise RunDirError(f"{out} exists and holds something else than an ensemble: choose a new directory")
        known = _resolve(out, json.loads((out / ENSEMBLE_JSON).read_text())["members"])
        if known != resolved:
            raise RunDirError(f"{out} holds an ensemble of other members ({[str(k) for k in known]}): choose a "
                              "new directory, or delete it first")
    kinds = {(r / "pub.json").exists() for r in runs}
    if len(kinds) > 1:
        raise ValueError(f"ensemble members {[str(r) for r in runs]}: PUB cross-validations cannot be mixed with "
                         "single runs (their test basins differ)")
    pub = kinds == {True}
    if pub:
        specs = [finished_pub_spec(r) for r in runs]
        for r, s in zip(runs[1:], specs[1:]):
            if s != specs[0]:
                raise ValueError(f"ensemble member {r}: its PUB folds (pub.json {s}) differ from {runs[0]}'s "
                                 f"({specs[0]})")
    flows = [member_flows(r, log=log) for r in runs]
    mean, table, summary = score_mean(flows, members)
    if pub:
        summary["n_folds"] = specs[0]["n_folds"]
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        write_json(out / ENSEMBLE_JSON, {"members": members, "pub": pub})
        return _write(out, mean, table, summary, flows[0], log)


def evaluate_ensemble(out_dir: str | Path, log=print) -> dict:
    """``dpljax evaluate OUT_DIR`` of an ensemble: re-run every member's saved model and score
    their mean again, into ``OUT_DIR/evaluation``."""
    out = Path(out_dir)
    try:
        spec = json.loads((out / ENSEMBLE_JSON).read_text())
        members = list(spec["members"])
    except (ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{out}/{ENSEMBLE_JSON} cannot be read ({type(e).__name__}: {e}): build the ensemble "
                          "again with dpljax ensemble") from None
    flows = [member_flows(r, fresh=True, log=_quiet) for r in _resolve(out, members)]
    mean, table, summary = score_mean(flows, members)
    if spec.get("pub"):
        summary["n_folds"] = finished_pub_spec(_resolve(out, members)[0])["n_folds"]
    with run_lock(out):
        return _write(out / "evaluation", mean, table, summary, flows[0], log)
