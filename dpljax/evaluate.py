"""From a trained model to predictions, a per-basin metrics table and figures.

Evaluation runs the whole span ``warm-up start .. period end`` in one go (deterministic,
no dropout) in chunks of basins, and scores only the period itself.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np
import pandas as pd
import xarray as xr
import yaml
from flax import nnx

from . import metrics as M
from .checkpoint import load_checkpoint
from .rundir import RunDirError, check_finished_run, run_lock, write_json
from .data.dataset import Arrays, load, load_with_report, prepare, test_start_with_warmup
from .data.normalize import Normalizer
from .dpl import DPL, TableSource, as_source, simulate

if TYPE_CHECKING:
    from .experiment import Experiment


def predict(dpl: DPL, source, theta, arrays: Arrays, *, chunk: int = 64,
            return_all: bool = False):
    """Routed streamflow ``(N, T)`` for all basins of ``arrays`` (NumPy, mm/d).

    ``source`` makes the raw parameters from ``theta`` (a network's graphdef: ``theta`` is
    the network's state; a :class:`~dpljax.dpl.TableSource`: ``theta`` is ``(N, n)``, one row
    per basin). With ``return_all``, the whole :class:`~dpljax.dpl.Result` (NumPy leaves).
    """
    source = as_source(source)
    per_basin = isinstance(source, TableSource)

    @jax.jit
    def run(dpl, theta, batch):
        return simulate(dpl, source, theta, batch)

    n = arrays.obs.shape[0]
    parts = []
    for i in range(0, n, chunk):
        sl = slice(i, min(i + chunk, n))
        batch = jax.tree.map(lambda a: a[sl], arrays)
        res = run(dpl, theta[sl] if per_basin else theta, batch)
        parts.append(jax.tree.map(np.asarray, res if return_all else res.q))
    out = jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *parts)
    return out


def score(q: np.ndarray, obs: np.ndarray, basins, skip: int) -> pd.DataFrame:
    """Per-basin metrics over days ``skip:`` (after the warm-up)."""
    return M.table(q[:, skip:], obs[:, skip:], basins)


def write_predictions(path: str | Path, q: np.ndarray, obs: np.ndarray, basins, times) -> None:
    """Simulated and observed streamflow as a zarr store (atomic: temp dir, then rename)."""
    ds = xr.Dataset(
        {"q_sim": (("basin", "time"), q.astype(np.float32), {"units": "mm/day",
                                                            "long_name": "simulated streamflow (routed)"}),
         "q_obs": (("basin", "time"), obs.astype(np.float32), {"units": "mm/day",
                                                              "long_name": "observed streamflow"})},
        coords={"basin": [str(b) for b in basins], "time": pd.DatetimeIndex(times)},
    )
    write_zarr(ds, path)


def write_zarr(ds: xr.Dataset, path: str | Path) -> None:
    """Write ``ds`` as a zarr store, atomically: to a temporary directory, then renamed over
    ``path``, so a crash never leaves a half-written store under the final name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    ds.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def figures(out_dir: str | Path, q: np.ndarray, obs: np.ndarray, basins, times, table: pd.DataFrame,
            n_hydrographs: int = 4) -> list[Path]:
    """Hydrographs of the best, median and worst basins, and the CDF of NSE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    order = table["nse"].sort_values(ascending=False, na_position="last").index.tolist()
    pick = sorted({order[int(round(k))] for k in np.linspace(0, len(order) - 1, min(n_hydrographs, len(order)))},
                  key=order.index)
    fig, axes = plt.subplots(len(pick), 1, figsize=(11, 2.4 * len(pick)), squeeze=False)
    bindex = {str(b): i for i, b in enumerate(basins)}
    for ax, b in zip(axes[:, 0], pick):
        i = bindex[b]
        ax.plot(times, obs[i], color="k", lw=0.7, label="observed")
        ax.plot(times, q[i], color="tab:blue", lw=0.7, label="dPL-HBV")
        ax.set_title(f"{b}  NSE={table.loc[b, 'nse']:.3f}  KGE={table.loc[b, 'kge']:.3f}", fontsize=9)
        ax.set_ylabel("Q (mm/d)")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    p = out_dir / "hydrographs.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    paths.append(nse_cdf(out_dir / "nse_cdf.png", table))
    return paths


def nse_cdf(path: str | Path, table: pd.DataFrame, title: str = "test") -> Path:
    """The cumulative distribution of per-basin NSE, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4))
    v = np.sort(table["nse"].dropna().values)
    ax.step(v, np.arange(1, len(v) + 1) / max(len(v), 1), where="post")
    ax.set_xlim(max(-1.0, float(v.min()) - 0.05) if len(v) else -1, 1)
    ax.set_xlabel("NSE")
    ax.set_ylabel("fraction of basins")
    ax.set_title(f"CDF of NSE, {title} (median {np.median(v):.3f})" if len(v) else "no basins", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------ an experiment's periods
def _median_nse(exp: Experiment, graphdef, state, arrays, basins, skip) -> float:
    q = predict(exp.dpl, graphdef, state, arrays)
    return _nanstat(np.median, score(q, np.asarray(arrays.obs), basins, skip)["nse"].values)


def period_arrays(exp: Experiment, ds, norm: Normalizer, period):
    start = test_start_with_warmup(exp.data, ds, period)
    arrays, times = prepare(exp.data, ds, norm, start, period[1], forcing=exp.dpl.model.forcing)
    skip = int(np.searchsorted(times.values, np.datetime64(period[0])))
    return arrays, times, skip


class DivergedError(FloatingPointError):
    """A model's predictions are not finite (on finite, validated forcing): it diverged."""


def check_outputs(q: np.ndarray, basins, times=None) -> None:
    """Raise :class:`DivergedError` unless every prediction in ``q (N, T)`` is finite.

    The forcing was validated finite, so a NaN or inf here means the model itself is broken
    (e.g. weights that overflowed in training); such a model is never scored or saved."""
    bad = ~np.isfinite(q)
    if not bad.any():
        return
    rows = np.flatnonzero(bad.any(axis=1))
    names = ", ".join(str(basins[i]) for i in rows[:5]) + (f" (+{len(rows) - 5} more)" if len(rows) > 5 else "")
    raise DivergedError(f"the model's predictions are NaN or inf for {len(rows)} of {len(basins)} basins "
                        f"({100.0 * bad.mean():.1f} % of basin-days; basins {names})")


def evaluate_period(exp: Experiment, ds, norm: Normalizer, graphdef, state, period, out_dir: Path,
                    name: str = "test", write: bool = True):
    """Predict ``period`` (after its warm-up) and write metrics, predictions and figures.
    Predictions that are not finite raise :class:`DivergedError` before anything is written."""
    arrays, times, skip = period_arrays(exp, ds, norm, period)
    basins = ds["basin"].values.tolist()
    q = predict(exp.dpl, graphdef, state, arrays)
    check_outputs(q, basins)
    obs = np.asarray(arrays.obs)
    table = score(q, obs, basins, skip)
    if write:
        table.to_csv(out_dir / f"metrics_{name}.csv", float_format="%.6f")
        write_predictions(out_dir / f"predictions_{name}.zarr", q[:, skip:], obs[:, skip:], basins, times[skip:])
        figures(out_dir / "figures", q[:, skip:], obs[:, skip:], basins, times[skip:], table)
    return table


def load_test_data(exp: Experiment, ds=None, log=print):
    """The basins scored on the test period: the training basins (``ds``, loaded here when
    not given), or ``data.test_basins`` (PUB: basins never trained on, which need no
    training-period observations)."""
    if exp.data.test_basins is None:
        return load(exp.data, log=log, forcing=exp.dpl.model.forcing) if ds is None else ds
    cfg = replace(exp.data, basins=exp.data.test_basins, test_basins=None)
    test_ds, _ = load_with_report(cfg, log=log, require_train_obs=False, forcing=exp.dpl.model.forcing)
    return test_ds


def _nanstat(fn, v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(fn(v)) if len(v) else float("nan")


def summarise(table, **extra) -> dict:
    """Medians and means of NSE and KGE over the basins where they are defined (a basin with
    fewer than two observations or observations of zero variance has none), with the number
    of basins each is over (``n_basins_nse``, ``n_basins_kge``) beside ``n_basins``.
    Undefined values are NaN here and ``null`` in ``summary.json``."""
    nse = table["nse"].values.astype(np.float64)
    kge = table["kge"].values.astype(np.float64)
    return {"median_nse": _nanstat(np.median, nse), "mean_nse": _nanstat(np.mean, nse),
            "median_kge": _nanstat(np.median, kge), "mean_kge": _nanstat(np.mean, kge),
            "n_basins": int(len(table)), "n_basins_nse": int(np.isfinite(nse).sum()),
            "n_basins_kge": int(np.isfinite(kge).sum()),
            "n_obs_scored": int(table["n_obs"].sum()), **extra}


def median_line(summary: dict, what: str = "test") -> str:
    """``median test NSE: 0.6123`` (with the number of basins it is over when some have none)."""
    m, n, k = summary.get("median_nse"), summary.get("n_basins", 0), summary.get("n_basins_nse")
    k = n if k is None else k
    if m is None or not np.isfinite(m):
        return (f"median {what} NSE: undefined: no basin of {n} has a defined NSE (each needs at least two "
                "observations that are not all equal in the period)")
    if k < n:
        return (f"median {what} NSE: {m:.4f} (over {k} of {n} basins; NSE is undefined for {n - k}: "
                "fewer than two observations, or all equal)")
    return f"median {what} NSE: {m:.4f}"


#: What ``dpljax evaluate --which`` scores: the model the run wrote (``weights.npz``: the best
#: state under validation, the moving average under ``train.ema``, else the last step), or
#: the last iterate (the parameters of the last step, ``checkpoints/last.npz``).
WHICH = ("written", "last")


def load_trained(run_dir: str | Path):
    """A finished dPL run's model: ``(experiment, normalizer, graphdef, network state)``,
    after :func:`~dpljax.rundir.check_finished_run` found its files consistent."""
    exp, norm, graphdef, like = _untrained(run_dir)
    try:
        state, _ = load_checkpoint(Path(run_dir) / "weights.npz", like)
    except ValueError as e:
        raise RunDirError(f"{e}; does config.yaml still describe the network the run trained?") from None
    return exp, norm, graphdef, state


def _untrained(run_dir: str | Path):
    """``(experiment, normalizer, graphdef, initial network state)`` of a finished run."""
    run_dir = Path(run_dir)
    config = check_finished_run(run_dir)
    from .experiment import build

    exp = build(config)
    norm = Normalizer.from_json(run_dir / "normalizer.json")
    graphdef, like = nnx.split(exp.make_net(len(norm.dynamic), len(norm.static)))
    return exp, norm, graphdef, like


def last_training_state(run_dir: str | Path, exp: "Experiment", like):
    """``(TrainState, step)`` of a run's last checkpoint, ``run_dir/checkpoints/last.npz``
    (read on the structure of ``like``, the network's state, and of the experiment's
    optimiser and ``train.ema``); its ``theta`` is the run's last iterate."""
    from .checkpoint import load_training
    from .train import TrainState, optimizer_of

    last = Path(run_dir) / "checkpoints" / "last.npz"
    if not last.exists():
        raise RunDirError(f"{last} is missing: the run's last iterate lives there (weights.npz holds only "
                          "the model the run wrote; evaluate that without --which last)")
    fresh = TrainState.create(like, optimizer_of(exp.tx, exp.train.clip_grad_norm), ema=exp.train.ema is not None)
    try:
        state, _, meta = load_training(last, fresh, like)
    except ValueError as e:
        raise RunDirError(f"{e}; does config.yaml still describe the network and optimiser the run "
                          "trained?") from None
    return state, meta.step


def evaluate_run(run_dir: str | Path, write: bool = True, log=print, which: str = "written") -> dict:
    """Re-run a saved model on its test period and recompute its metrics from scratch.
    ``which="last"``: the run's last iterate instead of the model it wrote (:data:`WHICH`),
    written to ``evaluation_last/``, its summary naming it and its step.

    The run directory is locked while it is written to, and refused (with
    :class:`~dpljax.rundir.RunDirError` naming the problem) when its files disagree: an
    unfinished run, missing or corrupt weights, an edited ``config.yaml``."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {list(WHICH)}, got {which!r}")
    run_dir = Path(run_dir)
    extra = {}
    if which == "last":
        exp, norm, graphdef, like = _untrained(run_dir)
        last, step = last_training_state(run_dir, exp, like)
        state = last.theta
        extra = {"which": "last iterate (checkpoints/last.npz)", "step": step}
    else:
        exp, norm, graphdef, state = load_trained(run_dir)
    ds = load_test_data(exp, log=log)
    with run_lock(run_dir):
        out = run_dir / ("evaluation" if which == "written" else "evaluation_last") if write else run_dir
        out.mkdir(exist_ok=True)
        table = evaluate_period(exp, ds, norm, graphdef, state, exp.data.test, out, write=write)
        summary = summarise(table, **extra)
        if write:
            write_json(out / "summary.json", summary)
    log(median_line(summary, "test" if which == "written" else "test (last iterate)"))
    return summary


def finished_pub_spec(run_dir: str | Path) -> dict:
    """The fold spec (``pub.json``'s ``spec``: ``n_folds``, ``seed``) of a finished PUB
    cross-validation; a RunDirError when it cannot be read or the run never finished."""
    run_dir = Path(run_dir)
    try:
        spec = json.loads((run_dir / "pub.json").read_text())["spec"]
        spec["n_folds"] = int(spec["n_folds"])
    except (ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{run_dir}/pub.json cannot be read ({type(e).__name__}: {e}): restore the "
                          "file the cross-validation wrote") from None
    if not (run_dir / "summary.json").exists():
        raise RunDirError(f"{run_dir} holds a PUB cross-validation that never finished (no summary.json); "
                          "continue it by running the same command with the same hydra.run.dir")
    return spec


def evaluate_pub(run_dir: str | Path, log=print) -> dict:
    """Re-run every fold's saved model on its held-out basins and pool the metrics again."""
    run_dir = Path(run_dir)
    spec = finished_pub_spec(run_dir)
    with run_lock(run_dir):
        out = run_dir / "evaluation"
        out.mkdir(exist_ok=True)
        tables = []
        for k in range(spec["n_folds"]):
            evaluate_run(run_dir / f"fold_{k}", log=lambda *a: None)
            tables.append(pd.read_csv(run_dir / f"fold_{k}" / "evaluation" / "metrics_test.csv",
                                      index_col=0, dtype={"basin": str}))
        from .pub import _pool

        return _pool(out, tables, {"n_folds": spec["n_folds"]}, log)
