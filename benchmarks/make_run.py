"""Record `make run` (the default experiment on the embedded sample) over several seeds.

    python -m benchmarks.make_run [--seeds 0 1 2]     # -> results/sample_make_run.json

One seed's median NSE on 8 basins moves by about 0.01 when float rounding changes anywhere in
the pipeline (1,500 steps amplify it into another trajectory), so the record keeps each seed's
score and their spread: a later change counts as a regression only if it leaves that spread.
Each seed runs the CLI exactly as `make run` does (``dpljax train.progress=false
train.seed=S``), timed from the command's start to its end (compilation included), with the
machine's speed probe taken just before.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks.camels import RESULTS, _cpu, probe

ROOT = Path(__file__).resolve().parent.parent


def run_seed(seed: int, run_root: Path) -> dict:
    run_dir = run_root / f"seed{seed}"
    cmd = [str(Path(sys.executable).parent / "dpljax"), "train.progress=false", f"train.seed={seed}",
           f"hydra.run.dir={run_dir}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return seed_record(seed, run_dir, time.perf_counter() - t0)


def seed_record(seed: int, run_dir: Path, wall: float) -> dict:
    """One seed's scores, read from its run directory."""
    summary = json.loads((run_dir / "summary.json").read_text())
    table = pd.read_csv(run_dir / "metrics_test.csv", index_col=0, dtype={"basin": str})
    return {"seed": seed, "wall_time_s": round(wall, 2),
            "train_wall_time_s": round(summary["train_wall_time_s"], 2),
            "median_test_nse": summary["median_nse"], "median_test_kge": summary["median_kge"],
            "mean_test_nse": summary["mean_nse"], "steps": summary["steps"],
            "per_basin_nse": {b: round(float(v), 4) for b, v in table["nse"].items()}}


def _carried_over(old: dict | None) -> dict:
    """What a new record keeps of the one it replaces: the first, single-seed record (as
    ``previous``) and the side-by-side comparison of two commits (``before_after``)."""
    if not old:
        return {}
    if "seeds" not in old:  # the first record's format: one seed
        return {"previous": {k: old[k] for k in ("median_test_nse", "make_run_wall_time_s", "git_commit", "note")
                             if k in old}}
    return {k: old[k] for k in ("previous", "before_after") if k in old}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", default="runs/make_run", help="where the seeds' run directories go")
    ap.add_argument("--note", default="", help="what else shared the machine")
    args = ap.parse_args(argv)
    previous = RESULTS / "sample_make_run.json"
    old = json.loads(previous.read_text()) if previous.exists() else None
    run_root = ROOT / args.runs
    run_root.mkdir(parents=True, exist_ok=True)
    machine_probe = probe(run_root / "probe.json")
    seeds = [run_seed(s, run_root) for s in args.seeds]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    nse = [s["median_test_nse"] for s in seeds]
    out = {
        "what": "make run's experiment (default: dPL-HBV, static MLP g_A, nmul=16, embedded 8-basin "
                "sample; train WY1990-1999, test WY2000-2008), one run per seed",
        "command": "dpljax train.progress=false train.seed=S  (what make run runs, once per seed)",
        "seeds": seeds,
        "median_test_nse_seed0": nse[0] if args.seeds[0] == 0 else None,
        "median_test_nse_mean": statistics.fmean(nse),
        "median_test_nse_range": [min(nse), max(nse)],
        "wall_time_s_mean": statistics.fmean(s["wall_time_s"] for s in seeds),
        "machine": f"{_cpu()}, vm 2 cpus",
        "probe": machine_probe,
        "git_commit": commit,
        **({"note": args.note} if args.note else {}),
        **_carried_over(old),
    }
    previous.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("median_test_nse_mean", "median_test_nse_range",
                                          "wall_time_s_mean")}, indent=1))
    return out


if __name__ == "__main__":
    main()
