"""Accuracy against training time (issue 15): one table from the recorded CAMELS results.

    python -m benchmarks.accuracy_time            # print the table
    python -m benchmarks.accuracy_time --readme   # and write it into benchmarks/README.md
    python -m benchmarks.accuracy_time --variant RUN_DIR PART NAME "what changed" ["note"]
        # add a finished run to results/accuracy_hour_variants.json (every variant tried)
    python -m benchmarks.accuracy_time --ensemble NAME "what" RUN_DIR RUN_DIR [...]
        # the mean of finished runs' test flows, scored and added to the same file

Every number comes from a ``benchmarks/results/camels*.json`` file (median test NSE and KGE,
training or calibration wall time, steps, devices, machine); the published anchors are those
the issue names, on the same splits. Wall times were measured on machines of this kind that
differ by about 2x in speed and were often shared: each file's note says what shared the cores.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- accuracy-time:begin", "<!-- accuracy-time:end -->"

#: (split, published anchors) per group of experiments
SPLITS = {
    "camels671_temporal": ("671 basins, train WY1981-1995, test WY1996-2010",
                           "LSTM 0.748; dHBV 0.732 (Feng et al. 2022); dHBV.adj 0.75 NSE / 0.76 KGE (MHPI benchmark)"),
    "camels531_pub": ("531 basins, 10-fold PUB (basins never trained on), train WY2000-2008, test WY1990-1999",
                      "LSTM 0.69 (Kratzert et al. 2019), on other periods (train WY1981-1995, test WY1996-2010), "
                      "the mean flow of 10 restarts over 12 folds with NLDAS forcing"),
    "camels531_pub_dynamic_15y": ("531 basins, 10-fold PUB (basins never trained on), train WY1981-1995, "
                                  "test WY1996-2010: the periods of Kratzert et al. (2019)",
                                  "LSTM 0.69 (Kratzert et al. 2019: the mean flow of 10 restarts over 12 folds "
                                  "with NLDAS forcing; median 0.6931 in the authors' analysis/stats/pub_lstm.csv)"),
    "camels531": ("531 basins, train WY2000-2008, test WY1990-1999",
                  "LSTM ensemble 0.76; calibrated HBV 0.676, SAC-SMA 0.603 (Kratzert et al. 2019)"),
}


def _group(name: str) -> str:
    """The split of a result file: the longest key of :data:`SPLITS` its name starts with."""
    return max((k for k in SPLITS if name.startswith(k)), key=len)


def rows() -> list[dict]:
    out = []
    for f in sorted(RESULTS.glob("camels*.json")):
        d = json.loads(f.read_text())
        if "median_nse" not in d:
            continue
        wall = d.get("train_wall_time_s") or d.get("calibration_wall_time_s")
        devices = d.get("devices") or []
        gpu = any(str(x).startswith(("cuda", "gpu", "tpu")) for x in devices)
        out.append({"file": f.name, "group": _group(f.stem), "nse": d["median_nse"], "kge": d.get("median_kge"),
                    "minutes": None if wall is None else wall / 60, "steps": d.get("steps"),
                    "where": ("1 GPU" if gpu else f"{max(1, len(devices))} CPU device(s), 2 cores"),
                    "probe": _probe_text(d)})
    return out


def _probe_text(d: dict) -> str:
    """The f32 matmul rate of the speed probe (``benchmarks.camels probe``) taken on the quiet
    machine just before the run, and just after it where recorded; empty where none was."""
    rates = [((d.get(k) or {}).get("machine") or {}).get("matmul_gflops") for k in ("probe", "probe_after")]
    if rates[0] is None:
        return ""
    return f"{rates[0]:.0f} GFLOP/s before" + ("" if rates[1] is None else f", {rates[1]:.0f} after")


def table() -> str:
    lines = []
    by = {}
    for r in rows():
        by.setdefault(r["group"], []).append(r)
    for g, (split, anchors) in SPLITS.items():
        if g not in by:
            continue
        lines += [f"**{split}.** Published: {anchors}.", "",
                  "| result file | median NSE | median KGE | training time | steps | where | machine's speed probe (f32 matmul) |",
                  "|---|---|---|---|---|---|---|"]
        for r in sorted(by[g], key=lambda r: -r["nse"]):
            t = "" if r["minutes"] is None else f"{r['minutes']:.1f} min"
            kge = "" if r["kge"] is None else f"{r['kge']:.3f}"
            lines.append(f"| [{r['file']}](results/{r['file']}) | {r['nse']:.4f} | {kge} | {t} | "
                         f"{r['steps'] or ''} | {r['where']} | {r['probe']} |")
        lines.append("")
    lines += ["Training time is the wall time of training (or calibrating) alone, on the machine named in each "
              "file; most of these runs shared the 2 cores with other work (each file's note says so), and "
              "machines of this kind differ by about 2x, so a time here is an upper bound, not a rate. "
              "Calibrations have no steps."]
    lines += variants_table()
    return "\n".join(lines).rstrip() + "\n"


def variants_table() -> list[str]:
    """Every tried variant of ``VARIANTS``, part by part, in the order they were recorded."""
    if not VARIANTS.exists():
        return []
    doc = json.loads(VARIANTS.read_text())
    out = []
    for part, runs in doc["parts"].items():
        out += ["", f"**Variants tried, `{part}`** ([accuracy_hour_variants.json](results/accuracy_hour_variants.json)):",
                "", "| variant | what changed | median NSE | median KGE | steps | s / step | training time | note |",
                "|---|---|---|---|---|---|---|---|"]
        for name, r in runs.items():
            sps = "" if r.get("s_per_step") is None else f"{r['s_per_step']:.2f}"
            t = "" if r.get("train_wall_time_s") is None else f"{r['train_wall_time_s'] / 60:.1f} min"
            out.append(f"| {name} | {r['what_changed']} | {r['median_nse']:.4f} | {r['median_kge']:.3f} | "
                       f"{r.get('steps') or ''} | {sps} | {t} | {r.get('note', '')} |")
    return out


def write_readme(text: str) -> None:
    s = README.read_text()
    block = f"{BEGIN} (generated by python -m benchmarks.accuracy_time --readme) -->\n{text}{END}"
    if BEGIN in s:
        s = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, s, flags=re.S)
    else:
        anchor = "## Accuracy per hour (issue 15)"
        i = s.index(anchor)
        j = s.index("\n\n", s.index("\n", i) + 1) + 2  # after the section's first paragraph
        s = s[:j] + block + "\n\n" + s[j:]
    README.write_text(s)


VARIANTS = RESULTS / "accuracy_hour_variants.json"


def record_variant(run_dir, part: str, name: str, change: str, note: str = "") -> dict:
    """One tried variant (a finished ``dpljax`` run directory) into ``VARIANTS`` under ``part``:
    what changed, the overrides it ran with, median test NSE/KGE, steps, training wall time and
    seconds per step, and the load average when it was recorded (what shared the cores)."""
    import os

    import yaml

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    overrides = run_dir / ".hydra" / "overrides.yaml"
    wall, steps = summary.get("train_wall_time_s"), summary.get("steps")
    rec = {"what_changed": change, "run_dir": str(run_dir),
           "overrides": yaml.safe_load(overrides.read_text()) if overrides.exists() else None,
           "median_nse": summary["median_nse"], "median_kge": summary.get("median_kge"),
           "mean_nse": summary.get("mean_nse"), "n_basins": summary.get("n_basins"), "steps": steps,
           "train_wall_time_s": wall, "s_per_step": (wall / steps) if wall and steps else None,
           "git_commit": info.get("git_commit"), "git_dirty": info.get("git_dirty"),
           "devices": info.get("devices"), "started": info.get("started"),
           "load_average_at_record": os.getloadavg(), **({"note": note} if note else {})}
    doc = json.loads(VARIANTS.read_text()) if VARIANTS.exists() else {
        "what": "issue 15 (accuracy per hour): every variant tried, what helped and what did not",
        "parts": {}}
    doc["parts"].setdefault(part, {})[name] = rec
    VARIANTS.write_text(json.dumps(doc, indent=1))
    return rec


def _flows(run_dir: Path):
    """A finished run's test flows: ``predictions_test.zarr`` (or its ``evaluation/`` copy)."""
    import xarray as xr

    for f in (run_dir / "predictions_test.zarr", run_dir / "evaluation" / "predictions_test.zarr"):
        if f.exists():
            return xr.open_zarr(f).load()
    raise ValueError(f"{run_dir} holds no test flows (predictions_test.zarr): run `dpljax evaluate {run_dir}` first")


def _members(runs: list[Path]) -> tuple[list, list[int] | None]:
    """Each run's test flows; a PUB cross-validation's are its folds' held-out basins side by
    side, over the folds every member has finished (returned; None for plain runs)."""
    import xarray as xr

    from .camels import _pub_folds

    pub = [(r / "pub.json").exists() for r in runs]
    if not any(pub):
        return [_flows(r) for r in runs], None
    if not all(pub):
        raise ValueError(f"{[str(r) for r, p in zip(runs, pub) if not p]}: not PUB cross-validations like "
                         f"{[str(r) for r, p in zip(runs, pub) if p]}")
    specs = [json.loads((r / "pub.json").read_text()) for r in runs]
    for r, s in zip(runs[1:], specs[1:]):
        if s != specs[0]:
            raise ValueError(f"{r}: its PUB folds (pub.json) differ from {runs[0]}'s")
    folds = sorted(set.intersection(*(set(_pub_folds(r)) for r in runs)))
    if not folds:
        raise ValueError(f"no fold is finished in every one of {[str(r) for r in runs]}")
    return [xr.concat([_flows(r / f"fold_{k}") for k in folds], "basin") for r in runs], folds


def record_ensemble(name: str, change: str, run_dirs, part: str | None = None) -> dict:
    """Score the mean of the test flows (``predictions_test.zarr``) of finished runs on the same
    split, beside each member's own median, and add it to ``VARIANTS`` under ``part`` (default
    ``ensemble_posthoc``, ``ensemble_posthoc_pub`` for PUB cross-validations). The runs
    must hold the same basins, days and observations (else a ValueError names the first that
    differs; :func:`dpljax.ensemble.score_mean` checks and scores, as ``dpljax ensemble`` does). PUB
    cross-validations are pooled over the folds that every member has finished (``folds`` in
    the record), each fold's flows from its ``predictions_test.zarr`` (``dpljax evaluate``)."""
    from dpljax.ensemble import score_mean

    runs = [Path(r) for r in run_dirs]
    if len(runs) < 2:
        raise ValueError(f"an ensemble needs at least two run directories, got {[str(r) for r in runs]}")
    sets, folds = _members(runs)
    _, table, summary = score_mean(sets, [str(r) for r in runs])  # the library's checks and scores
    rec = {"what_changed": change, "members": [str(r) for r in runs],
           **({"folds": folds} if folds is not None else {}),
           "member_median_nse": [m["median_nse"] for m in summary["members"]],
           "member_median_kge": [m["median_kge"] for m in summary["members"]],
           "median_nse": summary["median_nse"], "median_kge": summary["median_kge"],
           "mean_nse": summary["mean_nse"], "n_basins": summary["n_basins"],
           "gain_over_best_member": summary["gain_over_best_member"]}
    rec["note"] = (f"members' median NSE {', '.join(f'{v:.4f}' for v in rec['member_median_nse'])}; "
                   f"the mean flow gains {rec['gain_over_best_member']:+.3f} over the best member"
                   + (f" (pooled over PUB folds {folds})" if folds is not None else ""))
    part = part or ("ensemble_posthoc" if folds is None else "ensemble_posthoc_pub")
    doc = json.loads(VARIANTS.read_text())
    doc["parts"].setdefault(part, {})[name] = rec
    VARIANTS.write_text(json.dumps(doc, indent=1))
    return rec


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readme", action="store_true")
    ap.add_argument("--variant", nargs="+", metavar="ARG",
                    help="RUN_DIR PART NAME 'what changed' ['note']: record a tried variant")
    ap.add_argument("--ensemble", nargs="+", metavar="ARG",
                    help="NAME 'what' RUN_DIR RUN_DIR [...]: score the mean of finished runs' test flows")
    args = ap.parse_args(argv)
    if args.ensemble:
        if len(args.ensemble) < 4:
            ap.error("--ensemble needs NAME, 'what' and at least two run directories")
        print(json.dumps(record_ensemble(args.ensemble[0], args.ensemble[1], args.ensemble[2:]), indent=1))
        return
    if args.variant:
        print(json.dumps(record_variant(*args.variant), indent=1))
        return
    text = table()
    print(text)
    if args.readme:
        write_readme(text)
        print(f"wrote {README}")


if __name__ == "__main__":
    main()
