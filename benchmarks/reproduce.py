"""Re-evaluate every committed result in ``benchmarks/weights/`` with today's code.

    python -m benchmarks.reproduce [NAME ...] [--tolerance 1e-3]

Each directory there is a finished run (dPL weights, a per-basin calibration or a PUB
cross-validation). It is copied to a scratch directory (the committed files are never
written), re-run on its test period by the library call behind ``dpljax evaluate``, and its
median test NSE compared with the one its ``summary.json`` recorded. Writes
``benchmarks/results/reproduction.json`` (what ran, each difference, wall times, the
machine, the commit) and exits 1 when a difference exceeds the tolerance. Needs the data the
runs were trained on (``../shared/data/camels_us.zarr``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "benchmarks" / "weights"
RESULTS = ROOT / "benchmarks" / "results"


def evaluate(run_dir: Path) -> float:
    """The re-evaluated median test NSE of a finished run directory (any kind)."""
    from dpljax.evaluate import summarise
    from dpljax.rundir import check_finished_run

    quiet = lambda *a, **k: None  # noqa: E731
    if (run_dir / "pub.json").exists():
        from dpljax.evaluate import evaluate_pub

        return float(evaluate_pub(run_dir, log=quiet)["median_nse"])
    config = check_finished_run(run_dir)
    if config.get("calibrate"):
        from dpljax.calibrate.runner import evaluate_calibration

        return float(summarise(evaluate_calibration(run_dir, log=quiet))["median_nse"])
    from dpljax.evaluate import evaluate_run

    return float(evaluate_run(run_dir, log=quiet)["median_nse"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="directories of benchmarks/weights (default: all)")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--out", default=str(RESULTS / "reproduction.json"))
    args = ap.parse_args(argv)
    from benchmarks import throughput as tp

    names = args.names or sorted(p.name for p in WEIGHTS.iterdir() if (p / "summary.json").exists())
    doc = {"what": "dpljax evaluate on every committed result in benchmarks/weights/ (a scratch copy of "
                   "each): recorded median test NSE vs re-evaluated with this commit's code",
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv, "git_commit": tp._git_commit(),
           "machine": tp._machine(), "load_average_start": os.getloadavg(), "tolerance": args.tolerance,
           "rows": []}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dpljax-reproduce-") as tmp:
        for name in names:
            src = WEIGHTS / name
            recorded = json.loads((src / "summary.json").read_text())["median_nse"]
            copy = Path(tmp) / name
            shutil.copytree(src, copy)
            t0 = time.perf_counter()
            row = {"experiment": name, "recorded_median_nse": recorded}
            try:
                got = evaluate(copy)
                row.update(evaluated_median_nse=got, abs_diff=abs(got - recorded))
            except Exception as e:  # noqa: BLE001 - recorded, and the command fails below
                row["error"] = f"{type(e).__name__}: {e}"
            row["evaluate_wall_s"] = round(time.perf_counter() - t0, 1)
            shutil.rmtree(copy, ignore_errors=True)
            doc["rows"].append(row)
            print(json.dumps(row), flush=True)
    diffs = [r.get("abs_diff", float("inf")) for r in doc["rows"]]
    doc.update(max_abs_diff=max(diffs) if diffs else None, wall_time_s=round(time.perf_counter() - t_all, 1),
               load_average_end=os.getloadavg(),
               all_within_tolerance=all(d <= args.tolerance for d in diffs))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, allow_nan=False, default=str))
    print(f"wrote {out}: max |difference| {doc['max_abs_diff']}; "
          f"{'all' if doc['all_within_tolerance'] else 'NOT all'} within {args.tolerance}")
    return 0 if doc["all_within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
