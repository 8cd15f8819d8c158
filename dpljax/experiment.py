"""An experiment from a plain config dict: build, train, evaluate, and write one run directory.

The config has the sections ``model, net, loss, optim, data, train`` (the Hydra groups of
the same names; see ``conf/``). Names are looked up in registries (``MODELS``, ``NETS``,
``LOSSES``, Optax's optimisers), never branched on. A run directory holds everything needed
to reproduce and re-evaluate a run::

    config.yaml  run_info.json  normalizer.json  weights.npz  checkpoints/  train_log.json
    metrics_test.csv  summary.json  predictions_test.zarr  figures/
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from flax import nnx

from . import evaluate as E
from .data.dataset import DataConfig, LoadReport, fit_normalizer, load_with_report, prepare
from .data.normalize import Normalizer
from .dpl import DPL
from .losses import LOSSES
from .models.base import MODELS
from .nets.members import Members, Stacked
from .nets.registry import NETS
from .schedules import make_schedule
from .checkpoint import read_training_meta, save_checkpoint
from .config import (ConfigError, ModelSection, NamedSection, OptimSection, check_options,
                     dataclass_section, lookup, section)
from .resume import ResumeError, differences, experiment_view, flat
from .rundir import check_new_start, checkpoint_meta, run_lock, write_json
from .train import TrainConfig, fit

SECTIONS = ("model", "net", "loss", "optim", "data", "train")


@dataclass
class Experiment:
    """Everything an experiment is made of, built from its config."""

    config: dict
    dpl: DPL
    data: DataConfig
    train: TrainConfig
    loss: Any
    #: An Optax transformation, or (with ``optim.schedule``) a function of the run's total
    #: number of steps that returns one.
    tx: optax.GradientTransformation | Callable[[int], optax.GradientTransformation]
    net_name: str
    net_options: dict
    #: ``net.members``: > 1 trains that many networks of the configuration as an ensemble in
    #: one program (:class:`~dpljax.nets.Members`): the model's flow is their mean.
    net_members: int = 1

    def make_net(self, n_dynamic: int, n_static: int, seed: int | None = None) -> nnx.Module:
        cls = NETS[self.net_name]

        def make(rngs: nnx.Rngs) -> nnx.Module:
            return cls(n_dynamic, n_static, self.dpl.space.n_outputs, **self.net_options, **_layout(cls, self.dpl),
                       rngs=rngs)

        rngs = nnx.Rngs(self.train.seed if seed is None else seed)
        return make(rngs) if self.net_members == 1 else Members(make, self.net_members, rngs=rngs)


def _layout(net_cls, dpl: DPL) -> dict:
    """What a network that declares ``takes_layout`` is told of the parameter space: which
    output columns vary in time (``net=lstm_mlp`` computes only those with its LSTM)."""
    return {"dynamic_columns": dpl.space.dynamic_columns} if getattr(net_cls, "takes_layout", False) else {}


def _scheduled_optimizer(make, options: dict, schedule: dict, total: int) -> optax.GradientTransformation:
    """The optimiser with its learning rate following ``schedule`` over ``total`` steps."""
    return make(**{**options, "learning_rate": make_schedule(schedule, options["learning_rate"], total)})


def _build_model(mc: ModelSection) -> DPL:
    model_cls = lookup(MODELS, "model", mc.name)
    check_options(model_cls, "model.options", mc.options)
    try:
        model = model_cls(**mc.options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"'model.options': {e}") from e
    bounds = dict(model.bounds)
    for k, v in mc.bounds.items():
        if k not in bounds:
            raise ConfigError(f"model.bounds: {k!r} is not a parameter of {model_cls.name} "
                              f"(parameters: {list(bounds)})")
        bounds[k] = v
    try:
        return DPL.of(model, mc.nmul, mc.dynamic, mc.routing, bounds)
    except ValueError as e:
        raise ConfigError(f"'model': {e}") from e


def _check_net(nc: NamedSection, dpl: DPL):
    net_cls = lookup(NETS, "net", nc.name)
    fixed = ("n_dynamic", "n_static", "n_out") + tuple(_layout(net_cls, dpl))
    check_options(net_cls, "net", nc.options, fixed=fixed)
    if dpl.space.dynamic and not net_cls.is_sequence:
        raise ConfigError(f"model.dynamic={list(dpl.space.dynamic)} needs a sequence network (net=lstm); "
                          f"net={nc.name!r} gives static parameters only")
    if getattr(net_cls, "takes_layout", False) and not dpl.space.dynamic:
        raise ConfigError(f"net={nc.name!r} computes the time-varying parameters with its LSTM and needs "
                          "some: set model.dynamic (e.g. [beta, betaet]), or use net=mlp for static ones")


def _build_loss(lc: NamedSection):
    loss_cls = lookup(LOSSES, "loss", lc.name)
    check_options(loss_cls, "loss", lc.options)
    try:
        return loss_cls(**lc.options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"'loss': {e}") from e


def _build_optimizer(oc: OptimSection):
    """An Optax transformation or, with a schedule, a function of the run's total steps."""
    make = getattr(optax, oc.name, None) if isinstance(oc.name, str) else None
    if not callable(make):
        raise ConfigError(f"optim.name={oc.name!r} is not an Optax optimiser")
    check_options(make, "optim", oc.options)
    try:
        tx = make(**oc.options)
        like = {"w": jnp.zeros(3)}
        jax.eval_shape(lambda p: tx.update(p, tx.init(p), p), like)  # wrong option types fail here
    except Exception as e:  # noqa: BLE001 - any failure is the config's
        raise ConfigError(f"'optim' ({oc.name}): {type(e).__name__}: {e}") from e
    if oc.schedule is None:
        return tx
    make_schedule(oc.schedule, oc.options["learning_rate"], 100)  # its errors, before any compute
    return partial(_scheduled_optimizer, make, oc.options, dict(oc.schedule))


def build(config: dict) -> Experiment:
    """Construct (and check) every piece of an experiment from a plain dict.

    Every config error surfaces here as a :class:`ConfigError` naming the key, before any data
    are read or anything is compiled: unknown keys, wrong types, unparseable or reversed
    periods, parameter bounds with lo >= hi, options a network, loss or optimiser rejects.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of sections, got {type(config).__name__}")
    missing = [s for s in SECTIONS if s not in config]
    if missing:
        raise ConfigError(f"config lacks section(s) {missing}")
    unknown = sorted(set(config) - set(SECTIONS) - {"name"})
    if unknown:
        raise ConfigError(f"unknown top-level config key(s) {unknown} (known: {list(SECTIONS)})")
    dpl = _build_model(dataclass_section(ModelSection, "model", section(config, "model")))
    nc = dataclass_section(NamedSection, "net", section(config, "net"))
    members = nc.options.pop("members", 1)  # any network's option: an ensemble of it
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ConfigError(f"net.members must be a whole number >= 1 (networks trained together as an "
                          f"ensemble; 1: one network), got {members!r}")
    _check_net(nc, dpl)
    loss = _build_loss(dataclass_section(NamedSection, "loss", section(config, "loss")))
    tx = _build_optimizer(dataclass_section(OptimSection, "optim", section(config, "optim")))
    data = dataclass_section(DataConfig, "data", section(config, "data"))
    train = dataclass_section(TrainConfig, "train", section(config, "train"))
    n_days = (np.datetime64(data.train[1]) - np.datetime64(data.train[0])).astype(int) + 1
    if train.warmup + train.window > n_days:
        raise ConfigError(f"train.warmup + train.window = {train.warmup} + {train.window} days is longer "
                          f"than the training period data.train={list(data.train)} ({n_days} days)")
    exp = Experiment(config, dpl, data, train, loss, tx, nc.name, nc.options, members)
    try:  # shapes only: wrong option types of the network fail here, not inside the jitted step
        def trial():
            net = exp.make_net(len(data.net_forcing), len(data.attributes))
            out = net(jnp.zeros((2, 4, len(data.net_forcing))), jnp.zeros((2, len(data.attributes))),
                      key=jax.random.key(0))
            return out.raw if isinstance(out, Stacked) else out

        out = jax.eval_shape(trial)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"'net' ({nc.name}): {type(e).__name__}: {e}") from e
    if out.shape[-1] != dpl.space.n_outputs:
        raise ConfigError(f"net {nc.name!r} emits {out.shape[-1]} values, the model needs {dpl.space.n_outputs}")
    return exp


def check_against_data(exp: Experiment, ds, report: LoadReport | None = None) -> None:
    """Config checks that need the selected data (still before any compute)."""
    n = int(ds.sizes["basin"])
    tc = exp.train
    if tc.batch_basins > n:
        why = ""
        if report is not None and report.excluded:
            why = f" ({len(report.excluded)} of {report.n_selected} were excluded for bad data)"
        raise ConfigError(f"train.batch_basins={tc.batch_basins} is larger than the {n} basins the "
                          f"experiment trains on{why}; set train.batch_basins <= {n}")


def no_attributes_note(exp: Experiment) -> str:
    """What a network without attributes (``data.attributes=[]``) can learn, said once."""
    if NETS[exp.net_name].is_sequence:
        return (f"data: no static attributes (data.attributes=[]): net={exp.net_name} learns each basin's "
                f"parameters from its forcings {list(exp.data.net_forcing)} alone")
    return (f"data: no static attributes (data.attributes=[]): net={exp.net_name} sees nothing that tells "
            "basins apart and learns one parameter set shared by every basin (a regional calibration); "
            "list attributes in data.attributes, or use net=lstm to learn parameters from each basin's forcings")


def _fingerprint(arrays) -> str:
    h = hashlib.sha256()
    for a in jax.tree.leaves(arrays):
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


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


def write_run_info(run_dir: Path, resumed: dict | None = None) -> dict:
    """Write ``run_info.json`` (commit, machine, devices, start time). A resumed run keeps the
    first start's record and appends this one, with ``resumed`` saying where it went on from.
    Returns this start's record."""
    info = run_info()
    path = Path(run_dir) / "run_info.json"
    record = info
    if resumed is not None and path.exists():
        record = json.loads(path.read_text())
        record.setdefault("resumed", []).append({**info, **resumed})
    path.write_text(json.dumps(record, indent=1))
    return info


def run_experiment(config: dict, run_dir: str | Path, log=print) -> dict:
    """Train and test one experiment; everything lands in ``run_dir``. Returns the summary.

    With ``train.resume=true`` a run directory holding ``checkpoints/last.npz`` is continued
    from it (same config and data, checked); without it such a directory is refused rather
    than overwritten. The run directory is locked (:mod:`dpljax.rundir`) while the run
    writes into it, and every check (config, data, test basins, resume) comes before the
    first file is written: a refused run leaves the directory as it was.
    """
    run_dir = Path(run_dir)
    exp = build(config)  # every config error surfaces here, before data or compute
    with run_lock(run_dir):
        return _run_locked(exp, config, run_dir, log)


def _run_locked(exp: Experiment, config: dict, run_dir: Path, log) -> dict:
    last = run_dir / "checkpoints" / "last.npz"
    old = None
    if last.exists():
        if not exp.train.resume:
            raise ConfigError(f"{run_dir} already holds a training run ({last}); pass "
                              "train.resume=true to continue it, or choose a new run directory")
        checkpoint_meta(last, "checkpoint")  # a truncated or corrupt checkpoint is named as such
        old = read_training_meta(last)
        diffs = differences(old, exp.train, {"experiment": experiment_view(exp)})
        if diffs:
            raise ResumeError(f"cannot resume from {last}: " + "; ".join(diffs))
    else:
        check_new_start(run_dir, config, last)
        if exp.train.resume:
            log(f"train.resume=true, but {last} does not exist: starting a new run")
    ds, report = load_with_report(exp.data, log=log, forcing=exp.dpl.model.forcing)
    basins = ds["basin"].values.tolist()
    check_against_data(exp, ds, report)
    if not exp.data.attributes:
        log(no_attributes_note(exp))
    test_ds = E.load_test_data(exp, ds, log)  # test basins checked now, not after training
    norm = fit_normalizer(exp.data, ds)
    norm_d = json.loads(json.dumps(asdict(norm)))
    old_norm = old.extra.get("normalizer") if old is not None else None
    if old_norm is not None:
        if flat(old_norm) != flat(norm_d):
            raise ResumeError(f"cannot resume from {last}: the normalisation statistics of the data "
                              "differ from those stored in the checkpoint (did the data change?)")
        norm = Normalizer(dynamic={k: tuple(v) for k, v in old_norm["dynamic"].items()},
                          static={k: tuple(v) for k, v in old_norm["static"].items()},
                          categories=old_norm.get("categories", {}))
    train_arrays, _ = prepare(exp.data, ds, norm, *exp.data.train, forcing=exp.dpl.model.forcing)
    fingerprint = _fingerprint(train_arrays)
    old_fp = old.extra.get("data_fingerprint") if old is not None else None
    if old_fp is not None and old_fp != fingerprint:
        raise ResumeError(f"cannot resume from {last}: the training data differ from those the run was "
                          f"trained on (data fingerprint {old_fp[:12]}... in the checkpoint, {fingerprint[:12]}... "
                          f"now, from data.source={exp.data.source!r}: forcing, attributes or streamflow of the "
                          "training basins and period changed); resume with the original data, or start a new "
                          "run directory")
    # Every check has passed: from here on the run writes into its directory.
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    info = write_run_info(run_dir, resumed=None if old is None else {"from_step": old.step})
    norm.to_json(run_dir / "normalizer.json")
    train_missing = np.isnan(np.asarray(train_arrays.obs)).sum(axis=1)
    n_masked = int(train_missing.sum())
    log(f"data: {len(basins)} basins; train {exp.data.train[0]}..{exp.data.train[1]} "
        f"({train_arrays.obs.shape[1]} days, {n_masked} missing observations masked); "
        f"test {exp.data.test[0]}..{exp.data.test[1]}")

    def data_report(test_missing=None):
        per_basin = {str(b): {"train_obs_masked": int(train_missing[i])} for i, b in enumerate(basins)}
        if test_missing is not None:
            for b, n in test_missing.items():  # test basins may differ (PUB)
                per_basin.setdefault(str(b), {})["test_obs_masked"] = int(n)
        masked = {"train": n_masked, **({"test": int(test_missing.sum())} if test_missing is not None else {})}
        write_json(run_dir / "data_report.json",
                   {**report.to_dict(), "observations_masked": masked, "per_basin": per_basin})

    data_report()  # written now, so that a run that dies in training has it too
    net = exp.make_net(train_arrays.x_dynamic.shape[-1], train_arrays.x_static.shape[-1])
    graphdef = nnx.graphdef(net)
    validate = None
    if exp.data.valid is not None:
        v_arrays, _, v_skip = E.period_arrays(exp, ds, norm, exp.data.valid)
        validate = lambda state: E._median_nse(exp, graphdef, state, v_arrays, basins, v_skip)
    meta = {"experiment": experiment_view(exp), "normalizer": norm_d, "data_fingerprint": fingerprint}
    result = fit(exp.dpl, net, exp.tx, exp.loss, train_arrays, exp.train, run_dir=run_dir,
                 validate=validate, basins=basins, log=log, meta=meta)
    write_json(run_dir / "train_log.json", result.history)
    state = result.best_theta if result.best_theta is not None else result.state.model()
    try:  # the model's outputs are checked before anything of it is written
        table = E.evaluate_period(exp, test_ds, norm, graphdef, state, exp.data.test, run_dir)
    except E.DivergedError as e:
        n_ok = result.step - result.skipped_steps
        raise E.DivergedError(
            f"training diverged: {e}. Of {result.step} training steps {result.skipped_steps} were skipped "
            f"for a non-finite loss, gradient or update ({n_ok} applied). Nothing was written as a result: "
            f"no weights.npz, metrics or summary.json (the last state is in {last}). Lower "
            f"optim.learning_rate (now {exp.config['optim'].get('learning_rate')!r}) or set "
            "train.clip_grad_norm, and train again in a new run directory") from None
    save_checkpoint(run_dir / "weights.npz", state, {"step": result.step, "config": config,
                                                     "which": ("best" if result.best_theta is not None else "last")
                                                     + (" (moving average)" if exp.train.ema is not None else "")})
    test_missing = table["n_missing"].astype(int)
    log(f"test: {int(test_missing.sum())} missing observations masked")
    if result.skipped_steps:
        log(f"training: {result.skipped_steps} step(s) skipped for a non-finite loss, gradient or "
            "update (see summary.json: skipped_batches)")
    data_report(test_missing)
    summary = E.summarise(table, train_wall_time_s=result.wall_time, steps=result.step,
                        skipped_steps=result.skipped_steps, skipped_batches=result.skipped_batches[:20],
                        resumed_from_step=result.resumed_from, epochs=result.epochs,
                        **({"budget": {k: v for k, v in result.budget.items() if k != "line"}}
                           if result.budget is not None else {}),
                        **({"replans": result.replans} if result.replans else {}),
                        train_obs_masked=n_masked, test_obs_masked=int(test_missing.sum()),
                        n_excluded=len(report.excluded), excluded_basins=report.excluded,
                        data_warnings={k: {"basins": len(w["basins"]), "cells": w["cells"]}
                                       for k, w in report.warnings.items()},
                        git_commit=info["git_commit"])
    write_json(run_dir / "summary.json", summary)
    log(E.median_line(summary))
    return summary
