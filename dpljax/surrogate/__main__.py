"""The surrogate workflow from the command line, one command per step (or ``build`` for all).

    python -m dpljax.surrogate design --model dpljax.surrogate:VIC --data sample --sets 32 --dir runs/emu
    python -m dpljax.surrogate run    --model dpljax.surrogate:VIC --dir runs/emu --workers 2 --timeout 60
    python -m dpljax.surrogate train  --dir runs/emu --outputs sm1,et --hidden 64 --steps 2000 \
                                      --out-scale sm1=w1max --param-log ksat,dsmax
    python -m dpljax.surrogate report --dir runs/emu
    python -m dpljax.surrogate build  --model mypackage.mymodule:MY_BLACK_BOX --data sample --dir runs/emu

``--model module:name`` names a :class:`~dpljax.surrogate.BlackBox` (any NumPy function with
its parameter bounds, outputs and forcing names, defined at module level). ``--data`` is
``sample`` (the embedded CAMELS sample) or a zarr store with dims ``(basin, time)``; a forcing
``tmean`` is made as ``(tmax + tmin) / 2`` when the store has no ``tmean``. Files in ``--dir``:
``forcing.npz`` and ``design.npz`` (design), ``runs.npz`` and ``failures.json`` (run: every
failed parameter set, with its kind and message), ``emulator/`` (train: ``spec.json``,
``weights.npz``), ``report.json`` (report). The emulator is then a process model:
``Surrogate("runs/emu/emulator")``, or on the ``dpljax`` command line
``model=surrogate model.options.path=runs/emu/emulator``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np


def load_blackbox(ref: str):
    from .blackbox import BlackBox

    mod, _, name = ref.partition(":")
    if not name:
        raise SystemExit(f"--model must be module:name, got {ref!r}")
    obj = getattr(importlib.import_module(mod), name)
    if not isinstance(obj, BlackBox):
        raise SystemExit(f"{ref} is a {type(obj).__name__}, not a dpljax.surrogate.BlackBox")
    return obj


def load_forcing(data: str, names, period, basins: int) -> tuple[np.ndarray, dict]:
    import xarray as xr

    from ..data import load_sample

    ds = load_sample() if data == "sample" else xr.open_zarr(data)
    if basins:
        ds = ds.isel(basin=slice(0, basins))
    sub = ds.sel(time=slice(*period))
    out = {}
    for n in names:
        if n in sub:
            out[n] = sub[n].values.astype(np.float64)
        elif n == "tmean" and "tmax" in sub and "tmin" in sub:
            out[n] = ((sub["tmax"] + sub["tmin"]) / 2).values.astype(np.float64)
        else:
            raise SystemExit(f"forcing {n!r} is not in {data}")
        if not np.all(np.isfinite(out[n])):
            raise SystemExit(f"forcing {n!r} has NaN or inf values in {data} over {period}")
    return ds.basin.values.astype(str), out


def cmd_design(a) -> None:
    from .sampling import make_design

    bb = load_blackbox(a.model)
    basins, forcing = load_forcing(a.data, bb.forcing, (a.start, a.end), a.basins)
    d = make_design(bb.bounds, len(basins), a.sets, test_params=a.test_params, test_basins=a.test_basins, seed=a.seed)
    out = Path(a.dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "forcing.npz", basins=basins, **forcing)
    np.savez(out / "design.npz", x=d.x, basin=d.basin, split=d.split, names=np.array(d.names))
    (out / "bounds.json").write_text(json.dumps(bb.bounds, indent=1))
    print(f"design: {len(d.x)} runs on {len(basins)} basins -> {out}")


def _load_design(out: Path):
    from .sampling import Design

    with np.load(out / "design.npz") as z:
        d = Design(z["x"], z["basin"], z["split"], tuple(z["names"].tolist()))
    with np.load(out / "forcing.npz") as z:
        forcing = {k: z[k] for k in z.files if k != "basins"}
    return d, forcing


def cmd_run(a) -> None:
    from .workflow import run_design

    bb = load_blackbox(a.model)
    out = Path(a.dir)
    d, forcing = _load_design(out)
    if tuple(d.names) != bb.param_names:
        raise SystemExit(f"the design's parameters {list(d.names)} are not {a.model}'s {list(bb.param_names)}")
    runs = run_design(bb, d, forcing, n_workers=a.workers, timeout=a.timeout,
                      cache_dir=a.cache or (out / "cache"))
    np.savez(out / "runs.npz", ok=runs.ok, **runs.outputs)
    (out / "failures.json").write_text(json.dumps({"summary": runs.summary(), "failures": [
        {"index": f.index, "basin": f.basin, "params": f.params, "kind": f.kind, "message": f.message}
        for f in runs.failures]}, indent=1))
    print(runs.report())


def _load_runs(out: Path):
    from .blackbox import Runs

    with np.load(out / "runs.npz") as z:
        return Runs({k: z[k] for k in z.files if k != "ok"}, z["ok"])


def cmd_train(a) -> None:
    from .emulator import train_emulator
    from .workflow import _data

    out_scale = _pairs(a.out_scale, "--out-scale")
    out = Path(a.dir)
    d, forcing = _load_design(out)
    runs = _load_runs(out)
    outputs = tuple(a.outputs.split(",")) if a.outputs else tuple(runs.outputs)
    spec_src = json.loads((out / "failures.json").read_text()) if (out / "failures.json").exists() else {}
    lo_hi = _bounds(out, d)
    fit = train_emulator(_data(d, forcing, runs, d.subset("train")), lo_hi, tuple(forcing), outputs,
                         hidden=a.hidden, steps=a.steps, batch=a.batch, learning_rate=a.learning_rate,
                         window=a.window, warmup=a.warmup, seed=a.seed, model_name=a.model or "",
                         log=print, log_every=max(a.steps // 10, 1), out_scale=out_scale,
                         param_log=tuple(n for n in a.param_log.split(",") if n), warmup_grad=not a.no_warmup_grad)
    fit.emulator.save(out / "emulator")
    (out / "training.json").write_text(json.dumps({"seconds": fit.seconds, "history": fit.history,
                                                   "black_box": spec_src.get("summary")}, indent=1))
    print(f"emulator -> {out / 'emulator'}")


def _pairs(text: str, flag: str) -> dict[str, str]:
    """``"a=b,c=d"`` -> ``{"a": "b", "c": "d"}``."""
    out = {}
    for item in filter(None, text.split(",")):
        k, eq, v = item.partition("=")
        if not eq or not k or not v:
            raise SystemExit(f"{flag} takes output=parameter pairs separated by commas, got {item!r}")
        out[k] = v
    return out


def _bounds(out: Path, d) -> dict:
    """The black box's bounds, kept with the design (design.npz holds the sets only)."""
    p = out / "bounds.json"
    if p.exists():
        return {k: tuple(v) for k, v in json.loads(p.read_text()).items()}
    raise SystemExit(f"{p} is missing: run 'design' with this version")


def cmd_report(a) -> None:
    from .emulator import emulator_errors, load_emulator
    from .workflow import SPLITS, _data

    out = Path(a.dir)
    d, forcing = _load_design(out)
    runs = _load_runs(out)
    emu = load_emulator(out / "emulator")
    data = _data(d, forcing, runs)
    rep = {s: emulator_errors(emu, data, d.subset(s), warmup=a.warmup) for s in SPLITS if len(d.subset(s))}
    (out / "report.json").write_text(json.dumps(rep, indent=1))
    for s, r in rep.items():
        if r.get("n_runs"):
            print(f"{s} ({r['n_runs']} runs): " + ", ".join(f"{k} RMSE {r[k]['rmse']:.4g} (nRMSE {r[k]['nrmse']:.3f})"
                                                          for k in emu.spec.outputs))


def cmd_build(a) -> None:
    cmd_design(a)
    cmd_run(a)
    cmd_train(a)
    cmd_report(a)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dpljax.surrogate", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    cmds = {}
    for name, fn in (("design", cmd_design), ("run", cmd_run), ("train", cmd_train), ("report", cmd_report),
                     ("build", cmd_build)):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True, help="the workflow's folder")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--warmup", type=int, default=0, help="days left out of training loss and errors")
        if name in ("design", "run", "build", "train"):
            p.add_argument("--model", default=None if name == "train" else argparse.SUPPRESS,
                           required=name != "train", help="module:name of a dpljax.surrogate.BlackBox")
        if name in ("design", "build"):
            p.add_argument("--data", default="sample", help="'sample' or a zarr store")
            p.add_argument("--start", default="1999-10-01")
            p.add_argument("--end", default="2001-09-30")
            p.add_argument("--basins", type=int, default=0, help="the first N basins (0: all)")
            p.add_argument("--sets", type=int, default=32, help="parameter sets per basin")
            p.add_argument("--test-params", type=float, default=0.2)
            p.add_argument("--test-basins", type=float, default=0.2)
        if name in ("run", "build"):
            p.add_argument("--workers", type=int, default=0)
            p.add_argument("--timeout", type=float, default=None, help="seconds per run")
            p.add_argument("--cache", default=None, help="cache folder (default DIR/cache)")
        if name in ("train", "build"):
            p.add_argument("--outputs", default="", help="comma-separated outputs (default: all)")
            p.add_argument("--hidden", type=int, default=64)
            p.add_argument("--steps", type=int, default=2000)
            p.add_argument("--batch", type=int, default=32)
            p.add_argument("--learning-rate", type=float, default=1e-2)
            p.add_argument("--window", type=int, default=None)
            p.add_argument("--out-scale", default="", metavar="OUTPUT=PARAM,...",
                           help="learn an output relative to a parameter, e.g. sm1=w1max (a layer's water "
                                "relative to its capacity)")
            p.add_argument("--param-log", default="", metavar="PARAM,...",
                           help="parameters that enter the network on a log scale (positive bounds)")
            p.add_argument("--no-warmup-grad", action="store_true",
                           help="run the warm-up days forward only (gradient truncated at their end; faster)")
        cmds[name] = fn
    a = ap.parse_args(argv)
    cmds[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
