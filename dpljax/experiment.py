"""An experiment from a plain config dict: build, train, evaluate, and write one run directory.

The config has the sections ``model, net, loss, optim, data, train`` (the Hydra groups of
the same names; see ``conf/``). Names are looked up in registries (``MODELS``, ``NETS``,
``LOSSES``, Optax's optimisers), never branched on. A run directory holds everything needed
to reproduce and re-evaluate a run::

    config.yaml  run_info.json  normalizer.json  weights.npz  checkpoints/  train_log.json
    metrics_test.csv  summary.json  predictions_test.zarr  figures/
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
import yaml
from flax import nnx

from . import evaluate as E
from .data.dataset import DataConfig, fit_normalizer, load, prepare, test_start_with_warmup
from .data.normalize import Normalizer
from .dpl import DPL
from .losses import LOSSES
from .models.base import MODELS
from .models.routing import BOUNDS as ROUTING_BOUNDS
from .nets.registry import NETS
from .params import ParameterSpace
from .train import TrainConfig, fit, load_checkpoint, save_checkpoint

SECTIONS = ("model", "net", "loss", "optim", "data", "train")


class ConfigError(ValueError):
    """The experiment config is inconsistent; raised before any compute."""


def _dataclass(cls, section: str, values: dict):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in '{section}' (known: {sorted(known)})")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"'{section}': {e}") from e


def _lookup(registry: dict, section: str, name: str):
    if name not in registry:
        raise ConfigError(f"{section}.name={name!r} is not registered (choose from {sorted(registry)})")
    return registry[name]


@dataclass
class Experiment:
    """Everything an experiment is made of, built from its config."""

    config: dict
    dpl: DPL
    data: DataConfig
    train: TrainConfig
    loss: Any
    tx: optax.GradientTransformation
    net_name: str
    net_options: dict

    def make_net(self, n_dynamic: int, n_static: int, seed: int | None = None) -> nnx.Module:
        cls = NETS[self.net_name]
        return cls(n_dynamic, n_static, self.dpl.space.n_outputs, **self.net_options,
                   rngs=nnx.Rngs(self.train.seed if seed is None else seed))


def build(config: dict) -> Experiment:
    """Construct (and check) every piece of an experiment from a plain dict."""
    missing = [s for s in SECTIONS if s not in config]
    if missing:
        raise ConfigError(f"config lacks section(s) {missing}")
    mc = dict(config["model"])
    model_cls = _lookup(MODELS, "model", mc.pop("name", "hbv"))
    nmul, dynamic = int(mc.pop("nmul", 16)), tuple(mc.pop("dynamic", ()) or ())
    routing, options = bool(mc.pop("routing", True)), dict(mc.pop("options", {}) or {})
    bounds_override = dict(mc.pop("bounds", {}) or {})
    if mc:
        raise ConfigError(f"unknown key(s) {sorted(mc)} in 'model'")
    try:
        model = model_cls(**options)
        bounds = dict(model.bounds)
        for k, v in bounds_override.items():
            if k not in bounds:
                raise ConfigError(f"model.bounds: {k!r} is not a parameter of {model_cls.name}")
            bounds[k] = tuple(float(x) for x in v)
        space = ParameterSpace(bounds, nmul, dynamic, ROUTING_BOUNDS if routing else {})
    except TypeError as e:
        raise ConfigError(f"'model.options': {e}") from e
    except ValueError as e:
        raise ConfigError(f"'model': {e}") from e
    nc = dict(config["net"])
    net_name = nc.pop("name")
    net_cls = _lookup(NETS, "net", net_name)
    if dynamic and not net_cls.is_sequence:
        raise ConfigError(f"model.dynamic={list(dynamic)} needs a sequence network (net=lstm); "
                          f"net={net_name!r} gives static parameters only")
    lc = dict(config["loss"])
    loss = _lookup(LOSSES, "loss", lc.pop("name"))(**lc)
    oc = dict(config["optim"])
    oname = oc.pop("name")
    if not hasattr(optax, oname):
        raise ConfigError(f"optim.name={oname!r} is not an Optax optimiser")
    tx = getattr(optax, oname)(**oc)
    data = _dataclass(DataConfig, "data", dict(config["data"]))
    train = _dataclass(TrainConfig, "train", dict(config["train"]))
    return Experiment(config, DPL(model, space), data, train, loss, tx, net_name, nc)


def run_info() -> dict:
    root = Path(__file__).resolve().parents[1]

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"git_commit": git("rev-parse", "--verify", "-q", "HEAD") or None, "git_dirty": bool(git("status", "--porcelain")),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
            "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _median_nse(exp: Experiment, graphdef, state, arrays, basins, skip) -> float:
    q = E.predict(exp.dpl, graphdef, state, arrays)
    return float(np.nanmedian(E.score(q, np.asarray(arrays.obs), basins, skip)["nse"]))


def period_arrays(exp: Experiment, ds, norm: Normalizer, period):
    start = test_start_with_warmup(exp.data, ds, period)
    arrays, times = prepare(exp.data, ds, norm, start, period[1])
    skip = int(np.searchsorted(times.values, np.datetime64(period[0])))
    return arrays, times, skip


def evaluate_period(exp: Experiment, ds, norm: Normalizer, graphdef, state, period, out_dir: Path,
                    name: str = "test", write: bool = True):
    """Predict ``period`` (after its warm-up) and write metrics, predictions and figures."""
    arrays, times, skip = period_arrays(exp, ds, norm, period)
    basins = ds["basin"].values.tolist()
    q = E.predict(exp.dpl, graphdef, state, arrays)
    obs = np.asarray(arrays.obs)
    table = E.score(q, obs, basins, skip)
    if write:
        table.to_csv(out_dir / f"metrics_{name}.csv", float_format="%.6f")
        E.write_predictions(out_dir / f"predictions_{name}.zarr", q[:, skip:], obs[:, skip:], basins, times[skip:])
        E.figures(out_dir / "figures", q[:, skip:], obs[:, skip:], basins, times[skip:], table)
    return table


def summarise(table, **extra) -> dict:
    nse, kge = table["nse"].values, table["kge"].values
    return {"median_nse": float(np.nanmedian(nse)), "mean_nse": float(np.nanmean(nse)),
            "median_kge": float(np.nanmedian(kge)), "mean_kge": float(np.nanmean(kge)),
            "n_basins": int(len(table)), "n_obs_scored": int(table["n_obs"].sum()), **extra}


def run_experiment(config: dict, run_dir: str | Path, log=print) -> dict:
    """Train and test one experiment; everything lands in ``run_dir``. Returns the summary."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    exp = build(config)  # every config error surfaces here, before data or compute
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    info = run_info()
    (run_dir / "run_info.json").write_text(json.dumps(info, indent=1))
    ds = load(exp.data)
    basins = ds["basin"].values.tolist()
    norm = fit_normalizer(exp.data, ds)
    norm.to_json(run_dir / "normalizer.json")
    train_arrays, _ = prepare(exp.data, ds, norm, *exp.data.train)
    n_masked = int(np.isnan(np.asarray(train_arrays.obs)).sum())
    log(f"data: {len(basins)} basins; train {exp.data.train[0]}..{exp.data.train[1]} "
        f"({train_arrays.obs.shape[1]} days, {n_masked} missing observations masked); "
        f"test {exp.data.test[0]}..{exp.data.test[1]}")
    net = exp.make_net(train_arrays.x_dynamic.shape[-1], train_arrays.x_static.shape[-1])
    graphdef = nnx.graphdef(net)
    validate = None
    if exp.data.valid is not None:
        v_arrays, _, v_skip = period_arrays(exp, ds, norm, exp.data.valid)
        validate = lambda state: _median_nse(exp, graphdef, state, v_arrays, basins, v_skip)
    result = fit(exp.dpl, net, exp.tx, exp.loss, train_arrays, exp.train, run_dir=run_dir,
                 validate=validate, basins=basins, log=log)
    (run_dir / "train_log.json").write_text(json.dumps(result.history, indent=1))
    state = result.best_state if result.best_state is not None else result.net_state
    save_checkpoint(run_dir / "weights.npz", state, {"step": result.step,
                                                     "which": "best" if result.best_state is not None else "last"})
    table = evaluate_period(exp, ds, norm, graphdef, state, exp.data.test, run_dir)
    summary = summarise(table, train_wall_time_s=result.wall_time, steps=result.step,
                        skipped_steps=result.skipped_steps, train_obs_masked=n_masked,
                        git_commit=info["git_commit"])
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    log(f"median test NSE: {summary['median_nse']:.4f}")
    return summary


def evaluate_run(run_dir: str | Path, write: bool = True, log=print) -> dict:
    """Re-run a saved model on its test period and recompute its metrics from scratch."""
    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    exp = build(config)
    ds = load(exp.data)
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
