"""From a trained model to predictions, a per-basin metrics table and figures.

Evaluation runs the whole span ``warm-up start .. period end`` in one go (deterministic,
no dropout) in chunks of basins, and scores only the period itself.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from . import metrics as M
from .data.dataset import Arrays
from .dpl import DPL, TableSource, simulate


def predict(dpl: DPL, source, theta, arrays: Arrays, *, chunk: int = 64,
            return_all: bool = False):
    """Routed streamflow ``(N, T)`` for all basins of ``arrays`` (NumPy, mm/d).

    ``source`` makes the raw parameters from ``theta`` (a network's graphdef: ``theta`` is
    the network's state; a :class:`~dpljax.dpl.TableSource`: ``theta`` is ``(N, n)``, one row
    per basin). With ``return_all``, the whole :class:`~dpljax.dpl.Result` (NumPy leaves).
    """
    from .train import as_source

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
