"""Emulator variants on the twin's moderate design (issue 13's accuracy target): one variant per
call, its held-out errors appended to ``benchmarks/results/surrogate_emulator_variants.json``.

    python -m benchmarks.surrogate_emulator_variants --name ratio_h64 --outputs sm1 \\
        --out-scale sm1=w1max --hidden 64 --steps 1000

The design is the one ``python -m benchmarks.surrogate_twin --basins 64 --only emulator``
trains on: the first 64 basins of the twin's fixed permutation, 1998-10-01..2003-09-30
(1826 days), 64 Latin-hypercube sets per basin of the VIC-style black box, 20 % of the basins
and 20 % of the other sets held out. Errors (:func:`dpljax.surrogate.error_report`) are over
whole runs after 365 days; ``nrmse`` = RMSE / standard deviation of the output over the
split's runs and days (the issue's criterion: sm1 at most 0.10 on both held-out splits).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "surrogate_emulator_variants.json"


def design_and_runs(basins: int, sets: int, cache: Path):
    from benchmarks.surrogate_twin import ROOT, load_basins
    from dpljax.surrogate import VIC, make_design, run_design

    args = argparse.Namespace(sample=False, basins=basins, zarr=str(ROOT.parent / "shared" / "data" / "camels_us.zarr"))
    _, _, forcing, _ = load_basins(args)
    design = make_design(VIC.bounds, basins, sets, seed=0)
    runs = run_design(VIC, design, forcing, cache_dir=cache)
    return design, forcing, runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--basins", type=int, default=64)
    ap.add_argument("--sets", type=int, default=64)
    ap.add_argument("--outputs", default="sm1")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=1e-2)
    ap.add_argument("--window", type=int, default=730)
    ap.add_argument("--warmup", type=int, default=365)
    ap.add_argument("--out-scale", default="", help="output=parameter[,...]")
    ap.add_argument("--param-log", default="", help="parameters on a log scale, comma-separated")
    ap.add_argument("--no-warmup-grad", action="store_true", help="warm-up days forward only")
    ap.add_argument("--note", default="")
    ap.add_argument("--work", default=str(HERE.parent / "runs" / "surrogate_emulator_variants"))
    ap.add_argument("--save", action="store_true", help="keep the emulator in WORK/NAME")
    a = ap.parse_args(argv)

    from dpljax.surrogate import VIC, error_report, fit_on_design

    work = Path(a.work)
    t0 = time.perf_counter()
    design, forcing, runs = design_and_runs(a.basins, a.sets, work / "bb_cache")
    t_bb = time.perf_counter() - t0
    kw = dict(hidden=a.hidden, steps=a.steps, batch=a.batch, learning_rate=a.learning_rate, window=a.window,
              warmup=a.warmup, out_scale=dict(kv.split("=") for kv in a.out_scale.split(",") if kv),
              param_log=tuple(n for n in a.param_log.split(",") if n), warmup_grad=not a.no_warmup_grad)
    load0 = os.getloadavg()
    fit = fit_on_design(VIC, design, forcing, runs, tuple(a.outputs.split(",")), seed=0,
                        log=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True),
                        log_every=max(a.steps // 10, 1), **kw)
    load1 = os.getloadavg()
    rep = error_report(fit, design, forcing, runs, warmup=365)
    if a.save:
        fit.emulator.save(work / a.name)
    rec = {"name": a.name, "note": a.note, "date": time.strftime("%Y-%m-%d %H:%M"),
           "settings": {**kw, "outputs": a.outputs.split(","), "basins": a.basins, "sets": a.sets},
           "nrmse": {s: {k: round(rep[s][k]["nrmse"], 4) for k in fit.emulator.spec.outputs}
                     for s in ("train", "test_params", "test_basins")},
           "train_seconds": round(fit.seconds, 1), "black_box_seconds": round(t_bb, 1),
           "final_loss": fit.history[-1]["loss"] if fit.history else None,
           "load_average_start_end": [round(load0[0], 2), round(load1[0], 2)],
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared; "
                      f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, affinity {sorted(os.sched_getaffinity(0))}"}
    print(json.dumps(rec, indent=1), flush=True)
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {
        "experiment": __doc__.split("\n\n")[0].replace("\n", " "),
        "design": "64 CAMELS-US basins x 64 LHS sets of the VIC-style black box, 1826 days; held out: 20 % of the "
                  "basins, 20 % of the other sets; nRMSE = RMSE / sd over the split's runs and days after 365 days",
        "target": "sm1 nRMSE <= 0.10 on test_params and test_basins", "variants": []}
    doc["variants"] = [v for v in doc["variants"] if v["name"] != a.name] + [rec]
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
