"""Record CAMELS-US experiment runs: results JSON, committed weights, NSE-CDF figure.

    python -m benchmarks.camels probe PROBE.json      # the machine's speed probe, before a run
    python -m benchmarks.camels record RUN_DIR NAME [NOTE] [--probe PROBE.json]
                                                      # -> results/NAME.json + weights/NAME/
    python -m benchmarks.camels record-ensemble ENS_DIR NAME [NOTE]
                                                      # a `dpljax ensemble` of recorded runs (built
                                                      # from weights/) -> results/NAME.json + weights/NAME/
    python -m benchmarks.camels figure                # -> results/camels_nse_cdf.png
    python -m benchmarks.camels check NAME            # dpljax evaluate on the committed weights
    python -m benchmarks.camels table                 # the table in benchmarks/README.md
    python -m benchmarks.camels keep RUN_DIR NAME     # a PUB run's finished folds -> weights/NAME/
    python -m benchmarks.camels restore NAME RUN_DIR  # ... and back, to finish the other folds
    python -m benchmarks.camels half NAME             # weights/NAME's weights.npz stored as float16
                                                      # (then `check NAME` again)

``weights/NAME/`` holds what ``dpljax evaluate`` needs (config.yaml, normalizer.json,
weights.npz; for PUB runs every fold's), so each recorded number can be reproduced without
retraining.

A 10-fold PUB run outlasts a working session on two cores. ``keep`` commits the folds that
are finished (each fold's evaluable files and held-out scores, with its own run_info: commit,
start, wall time) while the others still train; ``restore`` puts them back into a run
directory on another machine or in a later session, where ``dpljax`` skips them and trains
only the folds still missing. ``record`` then lists every fold's commit and wall time.
"""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WEIGHTS = HERE / "weights"
KEEP = ("config.yaml", "normalizer.json", "weights.npz", "summary.json", "run_info.json", "pub.json",
        "summary_partial.json")
FOLD_KEEP = KEEP + ("metrics_test.csv",)  # a PUB fold's held-out scores: what the pooling reads
KEEP_DIRS = ("calibration.zarr",)  # a calibration's parameters: what `dpljax evaluate` re-runs


def _copy_run(src: Path, dst: Path, keep=KEEP) -> None:
    """Copy what ``dpljax evaluate`` needs; of a PUB run only the finished folds (those with a
    summary.json; an unfinished fold's checkpoint stays in its run directory)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in keep:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    if (src / "summary.json").exists():
        (dst / "summary_partial.json").unlink(missing_ok=True)
    for name in KEEP_DIRS:
        if (src / name).is_dir():
            shutil.rmtree(dst / name, ignore_errors=True)
            shutil.copytree(src / name, dst / name)
    for fold in sorted(src.glob("fold_*")):
        if (fold / "summary.json").exists():
            _copy_run(fold, dst / fold.name, FOLD_KEEP)


def _pub_folds(run_dir: Path) -> list[int]:
    """The finished folds of a PUB run directory (raises if it is not one)."""
    if not (run_dir / "pub.json").exists():
        raise ValueError(f"{run_dir} is not a PUB run directory: it has no pub.json")
    return sorted(int(f.name.split("_")[1]) for f in run_dir.glob("fold_*") if (f / "summary.json").exists())


def keep(run_dir: str | Path, name: str, weights: Path = WEIGHTS) -> list[int]:
    """Copy a PUB run's finished folds into ``weights/NAME/`` (to be committed) while the
    others still train; returns the folds kept. The run's pooled result is recorded later by
    :func:`record`, once every fold is done."""
    run_dir = Path(run_dir)
    done = _pub_folds(run_dir)
    if not done:
        raise ValueError(f"{run_dir}: no fold is finished yet (a finished fold has a summary.json)")
    dst = weights / name
    if (dst / "pub.json").exists() and (dst / "pub.json").read_text() != (run_dir / "pub.json").read_text():
        raise ValueError(f"{dst} holds another PUB run's folds (its pub.json differs from {run_dir}'s)")
    _copy_run(run_dir, dst, KEEP)
    return done


def restore(name: str, run_dir: str | Path, weights: Path = WEIGHTS) -> list[int]:
    """Put the folds kept in ``weights/NAME/`` back into ``run_dir`` so that the same
    ``dpljax`` command (``hydra.run.dir=RUN_DIR``) skips them and trains the rest. A fold the
    run directory already has is left as it is; returns the folds restored."""
    src, run_dir = weights / name, Path(run_dir)
    kept = _pub_folds(src)
    if (run_dir / "pub.json").exists() and (run_dir / "pub.json").read_text() != (src / "pub.json").read_text():
        raise ValueError(f"{run_dir} holds another PUB run (its pub.json differs from {src}'s)")
    run_dir.mkdir(parents=True, exist_ok=True)
    for f in ("config.yaml", "pub.json"):
        if not (run_dir / f).exists():
            shutil.copy2(src / f, run_dir / f)
    restored = []
    for k in kept:
        fold = run_dir / f"fold_{k}"
        if (fold / "summary.json").exists():
            continue
        if fold.exists():  # an unfinished copy of a fold that is finished elsewhere
            shutil.rmtree(fold)
        shutil.copytree(src / f"fold_{k}", fold)
        restored.append(k)
    return restored


def _fold_records(run_dir: Path) -> list[dict]:
    """Per fold of a PUB run: where and when it was trained (folds may span sessions)."""
    out = []
    for k in _pub_folds(run_dir):
        fold = run_dir / f"fold_{k}"
        info = json.loads((fold / "run_info.json").read_text())
        s = json.loads((fold / "summary.json").read_text())
        out.append({"fold": k, "median_nse": s["median_nse"], "n_basins": s["n_basins"],
                    "train_wall_time_s": s.get("train_wall_time_s"), "steps": s.get("steps"),
                    "git_commit": info.get("git_commit"), "started": info.get("started")})
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def probe(path: str | Path) -> dict:
    """The machine's speed probe (matmul, memory and elementwise rates; benchmarks.throughput)
    with the load average and time it was taken: measured on the quiet machine just before a
    timed run, and stored beside that run's wall time by ``record --probe``."""
    import datetime
    import os

    from benchmarks import throughput as tp

    load = os.getloadavg()
    out = {"taken": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "load_average_before": load, **tp._probe({})}
    out["load_average_after"] = os.getloadavg()
    Path(path).write_text(json.dumps(out, indent=1))
    return out


#: overrides that say where and how a run was watched or continued, not what was trained
_NOT_WHAT = ("hydra.", "train.progress", "train.resume", "pub.folds", "+pub.folds")


def command(run_dir: str | Path, name: str) -> str:
    """The ``dpljax`` command that trained ``run_dir`` (from Hydra's ``.hydra/overrides.yaml``),
    without the overrides that only place, watch or continue it (hydra.run.dir, train.progress,
    train.resume, pub.folds); ``dpljax experiment=NAME`` where Hydra left no record."""
    import shlex

    import yaml

    f = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not f.exists():
        return f"dpljax experiment={name}"
    kept = [o for o in (yaml.safe_load(f.read_text()) or []) if not str(o).startswith(_NOT_WHAT)]
    return " ".join(["dpljax", *(shlex.quote(str(o)) for o in kept)])


def record(run_dir: str | Path, name: str, note: str | None = None, probe_file: str | None = None) -> dict:
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    table = pd.read_csv(run_dir / "metrics_test.csv", index_col=0, dtype={"basin": str})
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    out = {
        "experiment": name,
        "what": f"{command(run_dir, name)}: train {config['data']['train']}, test {config['data']['test']}",
        "config": config,
        "median_nse": summary["median_nse"], "mean_nse": summary["mean_nse"],
        "median_kge": summary["median_kge"], "mean_kge": summary["mean_kge"],
        "n_basins": summary["n_basins"],
        "train_wall_time_s": summary.get("train_wall_time_s", summary.get("calibration_wall_time_s")),
        "steps": summary.get("steps"),
        "per_basin_nse": {b: (None if np.isnan(v) else round(float(v), 6)) for b, v in table["nse"].items()},
        "machine": f"{_cpu()}, {info.get('machine', '')}",
        "devices": info.get("devices"),
        "git_commit": info.get("git_commit"),
        "run_started": info.get("started"),
        "resumed": summary.get("resumed_from_step"),
        **({"note": note} if note else {}),
        **({"probe": json.loads(Path(probe_file).read_text())} if probe_file else {}),
    }
    if config.get("calibrate"):
        out["calibration"] = _calibration_record(run_dir, summary)
    if (run_dir / "pub.json").exists():
        out["folds"] = _fold_records(run_dir)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1))
    _copy_run(run_dir, WEIGHTS / name)
    return out


def record_ensemble(ens_dir: str | Path, name: str, note: str | None = None) -> dict:
    """Record an ensemble (``dpljax ensemble``) of recorded runs: ``results/NAME.json`` (the
    mean's medians, each member's, the members' summed training time) and ``weights/NAME/``
    (``ensemble.json`` pointing at the members' committed weights, its summary and per-basin
    metrics), so that ``dpljax evaluate weights/NAME`` re-runs every member."""
    ens_dir = Path(ens_dir)
    spec = json.loads((ens_dir / "ensemble.json").read_text())
    members = [(ens_dir / m).resolve() for m in spec["members"]]
    names = [m.name for m in members]
    bad = [str(m) for m in members if m.parent != WEIGHTS.resolve() or not (RESULTS / f"{m.name}.json").exists()]
    if bad:
        raise ValueError(f"ensemble members {bad} are not recorded runs (weights/NAME with results/NAME.json): "
                         "record each member first, then build the ensemble from weights/")
    recs = [json.loads((RESULTS / f"{n}.json").read_text()) for n in names]
    summary = json.loads((ens_dir / "summary.json").read_text())
    table = pd.read_csv(ens_dir / "metrics_test.csv", index_col=0, dtype={"basin": str})
    machines = sorted({r.get("machine", "") for r in recs})
    out = {
        "experiment": name,
        "what": f"dpljax ensemble: the mean streamflow of {len(names)} recorded runs ({', '.join(names)})",
        "members": names,
        "member_median_nse": [m["median_nse"] for m in summary["members"]],
        "member_median_kge": [m["median_kge"] for m in summary["members"]],
        "median_nse": summary["median_nse"], "mean_nse": summary["mean_nse"],
        "median_kge": summary["median_kge"], "mean_kge": summary["mean_kge"],
        "n_basins": summary["n_basins"], "gain_over_best_member": summary["gain_over_best_member"],
        "train_wall_time_s": sum(r.get("train_wall_time_s") or 0 for r in recs),
        "steps": None,
        "per_basin_nse": {b: (None if np.isnan(v) else round(float(v), 6)) for b, v in table["nse"].items()},
        "machine": machines[0] if len(machines) == 1 else "; ".join(machines),
        "devices": recs[0].get("devices"),
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                     cwd=HERE).stdout.strip() or None,
        **({"note": note} if note else {}),
    }
    dst = WEIGHTS / name
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "ensemble.json").write_text(json.dumps({**spec, "members": [f"../{n}" for n in names]}, indent=1))
    for f in ("summary.json", "metrics_test.csv"):
        shutil.copy2(ens_dir / f, dst / f)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1))
    return out


def _calibration_record(run_dir: Path, summary: dict) -> dict:
    """What a calibration run spent and why its basins stopped (from calibration.zarr)."""
    import xarray as xr

    keep = ("method", "options", "seeds", "calibration_wall_time_s", "n_evals_total",
            "n_evals_per_basin_median", "evals_per_second", "median_train_loss")
    rec = {k: summary[k] for k in keep if k in summary}
    ds = xr.open_zarr(run_dir / "calibration.zarr")
    ev = ds["n_evals"].values
    rec["evals_per_basin"] = {"median": float(np.median(ev)), "min": int(ev.min()), "max": int(ev.max())}
    if "stop_by_seed" in ds:
        names, counts = np.unique(ds["stop_by_seed"].values.astype(str), return_counts=True)
        rec["stop_reasons"] = {str(k): int(v) for k, v in zip(names, counts)}
    return rec


def half(name: str, weights: Path = WEIGHTS) -> list[str]:
    """Store the committed weights of ``weights/NAME`` (every fold's, for a PUB run) as float16:
    half the bytes in the repository. The recorded median must then be reproduced from the
    rounded weights: ``check NAME`` writes the difference into results/NAME.json."""
    from dpljax.checkpoint import store_half

    files = sorted((weights / name).rglob("weights.npz"))
    if not files:
        raise ValueError(f"{weights / name} holds no weights.npz")
    for f in files:
        store_half(f)
    rec_path = RESULTS / f"{name}.json"
    if weights == WEIGHTS and rec_path.exists():  # say so beside the number they must reproduce
        rec = json.loads(rec_path.read_text())
        rec["weights_stored_as"] = "float16 (benchmarks.camels half; reproduced_abs_diff is from them)"
        rec.pop("reproduced_abs_diff", None)
        rec_path.write_text(json.dumps(rec, indent=1))
    return [str(f.relative_to(weights)) for f in files]


def check(name: str) -> float:
    """Re-evaluate the committed weights; returns |median NSE - recorded|."""
    rec = json.loads((RESULTS / f"{name}.json").read_text())
    out = subprocess.run([str(Path(sys.executable).parent / "dpljax"), "evaluate", str(WEIGHTS / name)],
                         capture_output=True, text=True, check=True)
    got = float([l for l in out.stdout.splitlines() if l.startswith("median test NSE:")][-1].split(":")[1].split()[0])
    return abs(got - rec["median_nse"])


def figure(path: str | Path = RESULTS / "camels_nse_cdf.png") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(f.read_text()) for f in sorted(RESULTS.glob("camels*.json"))]
    panels = [("671 basins, temporal split", [r for r in recs if r["experiment"].startswith("camels671")]),
              ("531 basins, test WY1990-1999 (pub_*: basins never trained on)", [r for r in recs if not r["experiment"].startswith("camels671")])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    for ax, (title, group) in zip(axes, panels):
        colours = plt.get_cmap("tab10" if len(group) <= 10 else "tab20")
        for i, rec in enumerate(sorted(group, key=lambda r: -r["median_nse"])):
            v = np.sort([x for x in rec["per_basin_nse"].values() if x is not None])
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", color=colours(i), lw=1.2,
                    label=f"{rec['experiment'].split('_', 1)[1]} ({rec['median_nse']:.3f})")
        ax.axhline(0.5, color="k", lw=0.5, alpha=0.4)
        ax.set_xlim(0, 1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("test NSE")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", title="experiment (median)", title_fontsize=7)
    axes[0].set_ylabel("fraction of basins")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


ANCHORS = {  # published medians on the same splits (test NSE); first matching prefix wins
    "camels531_pub_dynamic_15y": ("LSTM 0.69 (Kratzert et al. 2019) on these periods: the mean flow of 10 "
                                  "restarts over their own 12 folds, NLDAS forcing"),
    "camels531_pub": ("none on these folds and periods (folds are our own seeded split; the PUB LSTM's 0.69 "
                      "is on WY1981-1995 / WY1996-2010)"),
    "camels671_temporal": "dPL-HBV dynamic 0.732; LSTM 0.748 (Feng et al. 2022)",
    "camels531_sceua": "calibrated HBV 0.676, SAC-SMA 0.603 (Kratzert et al. 2019)",
    "camels531_gradcal": "calibrated HBV 0.676, SAC-SMA 0.603 (Kratzert et al. 2019; by SCE-UA)",
    "camels531": "dPL-HBV 0.73 (NSE), 0.73 (KGE)",
}
BEGIN, END = "<!-- camels:begin -->", "<!-- camels:end -->"


def _trained_on(rec: dict) -> str:
    devices = rec.get("devices") or []
    if any(str(d).startswith(("cuda", "gpu")) for d in devices):
        return "1 GPU (H100)" if "H100" in rec.get("machine", "") else "1 GPU"
    cores = rec.get("machine", "").split(" cpus")[0].split()[-1] if " cpus" in rec.get("machine", "") else "?"
    return f"{cores}-core CPU"


def table() -> str:
    """Markdown table of every recorded CAMELS run, rendered from results/camels*.json."""
    rows = ["| experiment | basins | median NSE | mean NSE | median KGE | steps | train wall time | trained on | "
            "reproduced by `dpljax evaluate` | published anchor |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for f in sorted(RESULTS.glob("camels*.json")):
        r = json.loads(f.read_text())
        anchor = next((v for k, v in ANCHORS.items() if r["experiment"].startswith(k)), "")
        rep = r.get("reproduced_abs_diff")
        rows.append(f"| {r['experiment']} | {r['n_basins']} | {r['median_nse']:.3f} | {r['mean_nse']:.3f} | "
                    f"{r['median_kge']:.3f} | {r.get('steps') or ''} | "
                    f"{(r.get('train_wall_time_s') or 0) / 60:.1f} min | {_trained_on(r)} | "
                    f"{'' if rep is None else f'abs. diff {rep:.1e}'} | {anchor} |")
    return "\n".join(rows)


def write_table(readme: Path = HERE / "README.md") -> None:
    text = readme.read_text() if readme.exists() else ""
    block = f"{BEGIN}\n{table()}\n{END}"
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## CAMELS-US experiments\n\n" + block + "\n"
    readme.write_text(text)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "probe":
        print(json.dumps(probe(*args), indent=1))
    elif cmd == "record":
        probe_file = None
        if "--probe" in args:
            i = args.index("--probe")
            probe_file, args = args[i + 1], args[:i] + args[i + 2:]
        rec = record(*args, probe_file=probe_file)
        print(json.dumps({k: v for k, v in rec.items() if k not in ("per_basin_nse", "config")}, indent=1))
    elif cmd == "record-ensemble":
        rec = record_ensemble(*args)
        print(json.dumps({k: v for k, v in rec.items() if k != "per_basin_nse"}, indent=1))
    elif cmd == "figure":
        print(figure())
    elif cmd == "check":
        diff = check(*args)
        rec_path = RESULTS / f"{args[0]}.json"
        rec = json.loads(rec_path.read_text())
        rec["reproduced_abs_diff"] = diff
        rec_path.write_text(json.dumps(rec, indent=1))
        print(f"|median NSE - recorded| = {diff:.2e}")
    elif cmd == "keep":
        print(f"folds kept in {WEIGHTS / args[1]}: {keep(*args)}")
    elif cmd == "restore":
        print(f"folds restored into {args[1]}: {restore(*args)}")
    elif cmd == "half":
        print("stored as float16:", *half(*args))
    elif cmd == "table":
        write_table()
        print(table())
    else:
        raise SystemExit(__doc__)
