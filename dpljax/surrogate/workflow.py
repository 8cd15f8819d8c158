"""The surrogate workflow, one function per step, and :func:`build_surrogate` for all of them.

1. :func:`make_design` (Latin hypercube parameter sets x basins, with held-out sets and
   held-out basins);
2. :func:`run_design`: the black box on every run of the design (:func:`run_blackbox`:
   parallel, cached, failures reported);
3. :func:`fit_on_design`: an LSTM emulator of the chosen outputs trained on the design's
   training runs (failed runs left out, and counted);
4. :func:`error_report`: the emulator's error on held-out parameter sets and held-out basins
   (RMSE and RMSE / standard deviation of each output);
5. :meth:`Emulator.save` — the folder then builds a process model,
   ``Surrogate(path)`` (or ``model.name=surrogate model.options.path=...`` on the command line).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .blackbox import BlackBox, Runs, run_blackbox
from .emulator import EmulatorFit, TrainData, emulator_errors, train_emulator
from .sampling import Design, make_design

SPLITS = ("train", "test_params", "test_basins")


def run_design(bb: BlackBox, design: Design, forcing: Mapping[str, Any], **kw) -> Runs:
    """Step 2: the black box on ``design`` over ``forcing[name] (B, T)``; ``kw`` as
    :func:`run_blackbox` (``n_workers``, ``cache_dir``, ``timeout``, ...)."""
    return run_blackbox(bb, design.x, forcing, design.basin, **kw)


def _data(design: Design, forcing, runs: Runs, idx=None) -> TrainData:
    idx = np.arange(len(design.x)) if idx is None else np.asarray(idx)
    return TrainData(design.x[idx], design.basin[idx], {k: np.asarray(v) for k, v in forcing.items()},
                     {k: v[idx] for k, v in runs.outputs.items()})


def fit_on_design(bb: BlackBox, design: Design, forcing, runs: Runs, outputs=None, **kw) -> EmulatorFit:
    """Step 3: train on the design's ``train`` runs; ``outputs`` default all of the black
    box's; ``kw`` as :func:`train_emulator` (hidden, steps, batch, learning_rate, window, ...)."""
    outputs = tuple(outputs or bb.outputs)
    return train_emulator(_data(design, forcing, runs, design.subset("train")), bb.bounds, bb.forcing, outputs,
                          model_name=bb.name, **kw)


def error_report(fit: EmulatorFit, design: Design, forcing, runs: Runs, *, warmup: int = 0) -> dict:
    """Step 4: errors per split (``train``, ``test_params``, ``test_basins``) after ``warmup``
    days, and the black box's failures."""
    data = _data(design, forcing, runs)
    rep = {s: emulator_errors(fit.emulator, data, design.subset(s), warmup=warmup) for s in SPLITS
           if len(design.subset(s))}
    rep["black_box"] = runs.summary()
    rep["failures"] = [str(f) for f in runs.failures[:50]]
    rep["training"] = {"seconds": round(fit.seconds, 2), "steps": fit.steps, "history": fit.history}
    return rep


def build_surrogate(bb: BlackBox, forcing: Mapping[str, Any], out_dir: str | Path, *, outputs=None,
                    sets_per_basin: int = 32, test_params: float = 0.2, test_basins: float = 0.2, seed: int = 0,
                    run_kw: Mapping | None = None, train_kw: Mapping | None = None, eval_warmup: int = 0,
                    log: Callable = print) -> dict:
    """Every step: design on the ``B`` basins of ``forcing[name] (B, T)``, black-box runs,
    emulator, error report; writes ``out_dir/{spec.json, weights.npz, report.json, design.npz}``
    and returns the report. ``Surrogate(out_dir)`` is then the process model."""
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    n_b = next(iter(forcing.values())).shape[0]
    design = make_design(bb.bounds, n_b, sets_per_basin, test_params=test_params, test_basins=test_basins,
                         seed=seed)
    log(f"design: {len(design.x)} runs ({', '.join(f'{s} {len(design.subset(s))}' for s in SPLITS)}) on {n_b} basins")
    runs = run_design(bb, design, forcing, **dict(run_kw or {}))
    log(runs.report(limit=5))
    fit = fit_on_design(bb, design, forcing, runs, outputs, seed=seed, log=log, **dict(train_kw or {}))
    rep = error_report(fit, design, forcing, runs, warmup=eval_warmup)
    rep["seconds"] = round(time.perf_counter() - t0, 2)
    fit.emulator.save(out_dir)
    np.savez(out_dir / "design.npz", x=design.x, basin=design.basin, split=design.split, ok=runs.ok)
    (out_dir / "report.json").write_text(json.dumps(rep, indent=1))
    for s in SPLITS:
        if s in rep and rep[s].get("n_runs"):
            log(f"{s}: " + ", ".join(f"{k} nRMSE {rep[s][k]['nrmse']:.3f}" for k in fit.emulator.spec.outputs))
    return rep
