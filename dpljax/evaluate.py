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
    return float(np.nanmedian(score(q, np.asarray(arrays.obs), basins, skip)["nse"]))


def period_arrays(exp: Experiment, ds, norm: Normalizer, period):
    start = test_start_with_warmup(exp.data, ds, period)
    arrays, times = prepare(exp.data, ds, norm, start, period[1], forcing=exp.dpl.model.forcing)
    skip = int(np.searchsorted(times.values, np.datetime64(period[0])))
    return arrays, times, skip


def evaluate_period(exp: Experiment, ds, norm: Normalizer, graphdef, state, period, out_dir: Path,
                    name: str = "test", write: bool = True):
    """Predict ``period`` (after its warm-up) and write metrics, predictions and figures."""
    arrays, times, skip = period_arrays(exp, ds, norm, period)
    basins = ds["basin"].values.tolist()
    q = predict(exp.dpl, graphdef, state, arrays)
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


def summarise(table, **extra) -> dict:
    nse, kge = table["nse"].values, table["kge"].values
    return {"median_nse": float(np.nanmedian(nse)), "mean_nse": float(np.nanmean(nse)),
            "median_kge": float(np.nanmedian(kge)), "mean_kge": float(np.nanmean(kge)),
            "n_basins": int(len(table)), "n_obs_scored": int(table["n_obs"].sum()), **extra}


def evaluate_run(run_dir: str | Path, write: bool = True, log=print) -> dict:
    """Re-run a saved model on its test period and recompute its metrics from scratch."""
    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    from .experiment import build

    exp = build(config)
    ds = load_test_data(exp, log=log)
    norm = Normalizer.from_json(run_dir / "normalizer.json")
    n_dyn, n_static = len(norm.dynamic), len(norm.static)
    net = exp.make_net(n_dyn, n_static)
    graphdef, like = nnx.split(net)
    state, _ = load_checkpoint(run_dir / "weights.npz", like)
    out = run_dir / "evaluation" if write else run_dir
    out.mkdir(exist_ok=True)
    table = evaluate_period(exp, ds, norm, graphdef, state, exp.data.test, out, write=write)
    summary = summarise(table)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(f"median test NSE: {summary['median_nse']:.4f}")
    return summary


def evaluate_pub(run_dir: str | Path, log=print) -> dict:
    """Re-run every fold's saved model on its held-out basins and pool the metrics again."""
    run_dir = Path(run_dir)
    spec = json.loads((run_dir / "pub.json").read_text())["spec"]
    out = run_dir / "evaluation"
    out.mkdir(exist_ok=True)
    tables = []
    for k in range(spec["n_folds"]):
        evaluate_run(run_dir / f"fold_{k}", log=lambda *a: None)
        tables.append(pd.read_csv(run_dir / f"fold_{k}" / "evaluation" / "metrics_test.csv",
                                  index_col=0, dtype={"basin": str}))
    from .pub import _pool

    return _pool(out, tables, {"n_folds": spec["n_folds"]}, log)
