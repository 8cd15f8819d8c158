"""Prediction in ungauged basins (PUB): k-fold cross-validation over basins.

The selected basins are shuffled once with ``seed`` and split into ``n_folds`` folds. Fold
``k`` trains on the other folds' basins (training period) and is scored on its own basins
(test period): basins and years the network never saw. The held-out scores of all folds are
pooled. Each fold is an ordinary run directory ``fold_<k>/``; a fold with a
``summary.json`` is done and skipped, and one with a checkpoint is resumed, so a
cross-validation survives interruptions and can span several sessions.

``folds`` (``pub.folds`` in a config) trains only the listed folds now: a long
cross-validation can be split over sessions or machines (each writes its folds into the same
run directory layout). Until every fold is done, the scores of the finished ones are written
to ``summary_partial.json``; ``summary.json`` (the pooled result) only exists once all are.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import evaluate as E
from .config import ConfigError
from .data.dataset import open_source, select_basins
from .evaluate import summarise
from .experiment import run_experiment, write_run_info
from .resume import check_pub_config
from .rundir import run_lock, write_json


def folds(basins, n_folds: int = 10, seed: int = 0) -> list[list[str]]:
    """Split ``basins`` into ``n_folds`` random folds of (nearly) equal size."""
    basins = [str(b) for b in basins]
    if not 2 <= n_folds <= len(basins):
        raise ValueError(f"pub.n_folds must be between 2 and the number of basins ({len(basins)}), "
                         f"got {n_folds}")
    perm = np.random.default_rng(seed).permutation(len(basins))
    return [sorted(basins[i] for i in part) for part in np.array_split(perm, n_folds)]


def fold_configs(config: dict, n_folds: int = 10, seed: int = 0) -> list[dict]:
    """One experiment config per fold: train on the other folds, test on this one."""
    data = config["data"]
    ds = select_basins(open_source(data.get("source", "sample")), data.get("basins"))
    parts = folds(ds["basin"].values.tolist(), n_folds, seed)
    out = []
    for k, held in enumerate(parts):
        c = copy.deepcopy(config)
        c["data"]["basins"] = sorted(b for j, p in enumerate(parts) if j != k for b in p)
        c["data"]["test_basins"] = held
        out.append(c)
    return out


def _pool(run_dir: Path, tables: list[pd.DataFrame], extra: dict, log) -> dict:
    table = pd.concat(tables).sort_index()
    table.to_csv(run_dir / "metrics_test.csv", float_format="%.6f")
    summary = summarise(table, **extra)
    write_json(run_dir / "summary.json", summary)
    E.nse_cdf(run_dir / "figures" / "nse_cdf.png", table, "PUB, pooled held-out basins")
    log(E.median_line(summary))
    return summary


def run_pub(config: dict, run_dir: str | Path, n_folds: int = 10, seed: int = 0, folds=None,
            log=print) -> dict:
    """Run (or continue) a ``n_folds``-fold PUB cross-validation in ``run_dir`` (locked while
    it runs: see :mod:`dpljax.rundir`).

    ``folds``: the fold numbers (0-based) to train in this call; None trains every fold not yet
    done. Returns the pooled summary once all folds are done, else the finished folds' summary
    (with ``partial: True``, also written to ``summary_partial.json``).
    """
    run_dir = Path(run_dir)
    if folds is not None:
        bad = [k for k in folds if not (isinstance(k, int) and 0 <= k < n_folds)]
        if bad or not len(folds):
            raise ConfigError(f"pub.folds must list fold numbers 0..{n_folds - 1} (pub.n_folds={n_folds}), "
                              f"got {list(folds)}")
    with run_lock(run_dir):
        return _run_pub(config, run_dir, n_folds, seed, log, None if folds is None else set(folds))


def _run_pub(config: dict, run_dir: Path, n_folds: int, seed: int, log, only: set | None) -> dict:
    spec = {"n_folds": n_folds, "seed": seed}
    spec_path = run_dir / "pub.json"
    continued = spec_path.exists()
    if continued:
        if json.loads(spec_path.read_text())["spec"] != spec:
            raise ValueError(f"{run_dir} holds a PUB run with {spec_path.read_text()}; asked for {spec}")
        check_pub_config(run_dir, config)
    configs = fold_configs(config, n_folds, seed)
    spec_path.write_text(json.dumps({"spec": spec, "folds": [c["data"]["test_basins"] for c in configs]}, indent=1))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "pub": spec}, sort_keys=False))
    done = [k for k in range(n_folds) if (run_dir / f"fold_{k}" / "summary.json").exists()]
    info = write_run_info(run_dir, resumed={"folds_done": done} if continued else None)
    tables, wall, finished = [], 0.0, []
    for k, c in enumerate(configs):
        fold_dir = run_dir / f"fold_{k}"
        if not (fold_dir / "summary.json").exists():
            if only is not None and k not in only:
                continue
            c["train"] = dict(c["train"], resume=(fold_dir / "checkpoints" / "last.npz").exists())
            log(f"PUB fold {k + 1}/{n_folds}: train on {len(c['data']['basins'])} basins, "
                f"test on {len(c['data']['test_basins'])}")
            run_experiment(c, fold_dir, log=log)
        tables.append(pd.read_csv(fold_dir / "metrics_test.csv", index_col=0, dtype={"basin": str}))
        wall += json.loads((fold_dir / "summary.json").read_text()).get("train_wall_time_s", 0.0)
        finished.append(k)
    extra = {"n_folds": n_folds, "train_wall_time_s": wall, "git_commit": info["git_commit"]}
    if len(finished) < n_folds:
        summary = summarise(pd.concat(tables).sort_index(), **extra, partial=True, folds_done=finished)
        write_json(run_dir / "summary_partial.json", summary)
        log(f"PUB: folds {finished} of {n_folds} done; the pooled result waits for folds "
            f"{[k for k in range(n_folds) if k not in finished]} (run the same command with "
            f"pub.folds=null or a list of them, in the same run directory)")
        log("partial " + E.median_line(summary))
        return summary
    (run_dir / "summary_partial.json").unlink(missing_ok=True)
    return _pool(run_dir, tables, extra, log)
