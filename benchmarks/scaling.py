"""The scaling curve of Tsai et al. (2021) on the 531 CAMELS-US basins: dPL trained on nested
random subsets of the basins against per-basin calibration and its regionalisation.

    python -m benchmarks.scaling --sceua runs/camels531_sceua --gradcal runs/camels531_gradcal
    python -m benchmarks.scaling --sample            # the whole pipeline on the 8-basin sample
    python -m benchmarks.scaling --dry-run           # the units, done or not, and their cost
    python -m benchmarks.scaling render              # results JSON -> benchmarks/README.md

What it does, unit by unit (each writes its own files under the work directory and is skipped
once done, so the command can be killed and re-run to continue; dPL runs resume from their
own checkpoints, ``train.checkpoint_minutes``):

1. ``plan.json``: for each seed one permutation of the basins (``numpy.random.default_rng(seed)``
   of the sorted ids); the subset of fraction ``f`` is its first ``round(f N)`` basins, so the
   subsets of one seed are nested.
2. ``dpl/<fraction>_s<seed>/``: dPL (the g_A MLP of ``experiment=camels531_static``, HBV with
   nmul=16) trained on the subset: an ordinary run directory whose ``metrics_test.csv`` scores
   the *trained* basins on the test period (temporal). Training length: the same number of
   optimiser steps for every fraction (the full experiment's, 20 epochs x 218 iterations =
   4360 steps), each on ``batch_basins = min(100, n)`` basins (a multiple of the devices), so
   every run gets the same optimiser budget and a smaller subset sees each basin more often.
   Then ``spatial/``: the saved model on every basin *not* trained on, on the test period
   (normalisation of the training run; the spatial generalisation), and ``params.npz``: the
   learned parameters of every basin (component means), for the coherence table.
3. Calibration baselines on all basins: the run directories given with ``--sceua`` and
   ``--gradcal``; where one holds no finished run, it is run there
   (``experiment=camels531_sceua`` / ``camels531_gradcal``, ``calibrate.seeds=--cal-seeds``),
   resuming from its checkpoint. Their temporal test scores are their ``metrics_test.csv``
   restricted to each subset.
4. ``regional/<fraction>_s<seed>/``: SCE-UA's parameters regionalised to the held-out basins
   of each subset with the subset as donors (:mod:`dpljax.calibrate.regionalise`): the nearest
   donor's parameters in standardised attribute space (k=1), the average of the k=5 nearest
   donors' simulations, and a random forest of each parameter on the attributes; each run on
   the test period and scored with the same metrics.
5. ``coherence.json``: spread of each parameter per basin over seeds (dPL at fraction 1,
   SCE-UA's and gradient calibration's ``params_by_seed``) and out-of-fold R^2 of each
   parameter on the attributes.
6. The results (``benchmarks.scaling_report``): ``benchmarks/results/scaling.json``,
   ``scaling.png``, ``scaling.md``; with ``render``, the section of ``benchmarks/README.md``.

Attributes for regionalisation are the 35 the networks see (``data.attributes``), raw values
(categorical ones as the index of their category, as the networks get them), missing values
imputed with the donors' mean.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
FRACTIONS = ("1/32", "1/16", "1/8", "1/4", "1/2", "1")
SAMPLE_FRACTIONS = ("1/4", "1/2", "1")
SEEDS = (0, 1, 2)
#: Nearest donors whose simulations are averaged (fewer when the subset has fewer basins).
K_DONORS = 5
#: Trees of each random forest (regionalisation and out-of-fold R^2): scikit-learn's forest as
#: :func:`dpljax.calibrate.regression_params` sets it up (leaves of >= 3 basins); fewer on the sample.
FOREST_TREES = 200
SAMPLE_FOREST_TREES = 20
#: Rough costs on this 2-core machine (seconds), for --dry-run's estimate only: one dPL step of
#: B basins ~ a + b B (HBV nmul=16, 730 days, forward + backward, one device; camels531_static:
#: 4360 steps of 100 basins in 433 s; 0.055 s per step of 17 basins measured on a loaded
#: machine), one SCE-UA model evaluation (3288 days, nmul=1; camels531_sceua,
#: results/camels531_sceua.json: 9,413/s on 2 cores), one gradient-calibration step of one basin and restart (~3 s per
#: step of 531 basins x 4 restarts on 2 cores, dpljax/calibrate/gradient.py).
COST_DPL_STEP, COST_DPL_BASIN_STEP = 0.046, 5.3e-4
COST_SCEUA_EVAL = 1.0 / 9413
COST_GRAD_EVAL = 3.0 / (531 * 4)


# ------------------------------------------------------------------ configs
def compose(experiment: str, overrides=()) -> dict:
    """An experiment's resolved config (sections, and ``calibrate`` where it has one)."""
    from hydra import compose as hcompose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = hcompose("config", overrides=[f"experiment={experiment}", *overrides])
    OmegaConf.set_struct(cfg, False)
    del cfg["name"]
    config = OmegaConf.to_container(cfg, resolve=True)
    keep = ("model", "net", "loss", "optim", "data", "train", "calibrate")
    return {k: config[k] for k in keep if config.get(k) is not None}


def settings(args) -> dict:
    """Everything that defines the experiment (stored in plan.json; a re-run must agree)."""
    if args.sample:
        dpl = compose("sample", ["model.nmul=2", "net.hidden=[16]", "train.epochs=2",
                                 f"train.iters_per_epoch={max(1, args.sample_steps // 2)}"])
        sceua = compose("sample_sceua", [f"calibrate.max_evals={args.sample_evals}", "calibrate.chunk_loops=5",
                                         f"calibrate.seeds={args.cal_seeds}"])
        grad = compose("sample_gradcal", ["calibrate.steps=10", "calibrate.restarts=2",
                                          "calibrate.chunk_steps=10", f"calibrate.seeds={args.cal_seeds}"])
        steps = dpl["train"]["epochs"] * dpl["train"]["iters_per_epoch"]
    else:
        dpl = compose("camels531_static")
        sceua = compose("camels531_sceua", [f"calibrate.seeds={args.cal_seeds}"])
        grad = compose("camels531_gradcal", [f"calibrate.seeds={args.cal_seeds}"])
        steps = args.steps or full_steps(dpl)
    if args.nmul:  # e.g. 1, dPL with the calibrations' single component (the issue asks for both)
        dpl["model"]["nmul"] = args.nmul
    dpl["train"].update(progress=False, checkpoint_minutes=args.checkpoint_minutes, resume=False)
    if args.devices:
        dpl["train"]["devices"] = args.devices
    for c in (sceua, grad):
        c["train"].update(progress=False, checkpoint_minutes=args.checkpoint_minutes, resume=False)
        if args.devices:
            c["train"]["devices"] = args.devices
    return {"sample": bool(args.sample), "dpl_config": dpl, "steps": int(steps),
            "max_batch_basins": int(dpl["train"]["batch_basins"]),
            "sceua_config": sceua, "gradcal_config": grad, "k_donors": K_DONORS,
            "forest_trees": SAMPLE_FOREST_TREES if args.sample else FOREST_TREES}


def full_steps(dpl: dict) -> int:
    """The optimiser steps of the experiment on all its basins (epochs x iterations/epoch)."""
    from dpljax.data.sampler import iterations_per_epoch

    t = dpl["train"]
    if t.get("iters_per_epoch"):
        return t["epochs"] * t["iters_per_epoch"]
    d0, d1 = (np.datetime64(v) for v in dpl["data"]["train"])
    n_days = int((d1 - d0).astype(int)) + 1
    return t["epochs"] * iterations_per_epoch(len(all_basins(dpl)), n_days, t["batch_basins"], t["window"])


_BASINS: dict = {}


def all_basins(dpl: dict) -> list[str]:
    """The experiment's basins (``data.basins`` of its config), sorted ids."""
    from dpljax.data.dataset import open_source, select_basins

    key = (dpl["data"]["source"], json.dumps(dpl["data"].get("basins")))
    if key not in _BASINS:
        ds = select_basins(open_source(dpl["data"]["source"]), dpl["data"].get("basins"))
        _BASINS[key] = sorted(str(b) for b in ds["basin"].values.tolist())
    return list(_BASINS[key])


# ------------------------------------------------------------------ subsets
def label(fraction: str) -> str:
    """'1/32' -> 'f1-32', '1' -> 'f1' (directory names)."""
    return "f" + str(Fraction(fraction)).replace("/", "-")


def subset_size(fraction: str, n: int) -> int:
    return max(1, min(n, int(math.floor(float(Fraction(fraction)) * n + 0.5))))


def permutation(basins, seed: int) -> list[str]:
    basins = sorted(str(b) for b in basins)
    return [basins[i] for i in np.random.default_rng(seed).permutation(len(basins))]


def subset(perm: list[str], fraction: str) -> list[str]:
    """The basins of a fraction: the first ``round(f N)`` of the seed's permutation (sorted)."""
    return sorted(perm[:subset_size(fraction, len(perm))])


def heldout(perm: list[str], fraction: str) -> list[str]:
    return sorted(perm[subset_size(fraction, len(perm)):])


def batch_basins(n: int, max_batch: int, devices: int) -> int:
    b = min(max_batch, n)
    return max(devices, b - b % devices)


# ------------------------------------------------------------------ bookkeeping
def _atomic_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    os.replace(tmp, path)


def _atomic_csv(path: Path, table) -> None:
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, float_format="%.6f")
    os.replace(tmp, path)


def sharing() -> dict:
    """What shared the cores just now: load averages and the busiest other processes."""
    out = {"loadavg": list(os.getloadavg()), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        ps = subprocess.run(["ps", "-eo", "pid=,pcpu=,etime=,args=", "--sort=-pcpu"],
                            capture_output=True, text=True, timeout=10).stdout.splitlines()
        rows = []
        for line in ps:
            pid, pcpu, etime, args = (line.split(None, 3) + ["", "", "", ""])[:4]
            if int(pid) == os.getpid() or float(pcpu) < 5:
                continue
            rows.append({"pcpu": float(pcpu), "etime": etime, "command": args[:100]})
            if len(rows) == 5:
                break
        out["busy_processes"] = rows
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return out


class Unit:
    """One resumable piece of work: ``done()`` from its files; ``run()`` makes them."""

    heavy = True

    def __init__(self, name: str):
        self.name = name

    def done(self) -> bool:
        raise NotImplementedError

    def cost_s(self) -> float:
        return 0.0

    def run(self, ctx: "Context") -> dict:
        raise NotImplementedError


class Context:
    """Settings, the work directory and data shared between units of one process."""

    def __init__(self, work: Path, conf: dict, plan: dict, log=print):
        self.work, self.conf, self.plan, self.log = work, conf, plan, log
        self._data: dict = {}

    def perm(self, seed: int) -> list[str]:
        return self.plan["permutations"][str(seed)]

    def dpl_dir(self, fraction: str, seed: int) -> Path:
        return self.work / "dpl" / f"{label(fraction)}_s{seed}"

    def all_data(self, config: dict):
        """The experiment's data on all its basins (loaded and validated once per process)."""
        from dpljax.data.dataset import DataConfig, load_with_report
        from dpljax.experiment import build

        exp = build({k: config[k] for k in ("model", "net", "loss", "optim", "data", "train")})
        data = dict(config["data"], basins=self.conf["dpl_config"]["data"].get("basins"), test_basins=None)
        key = json.dumps(data, sort_keys=True) + str(exp.dpl.model.forcing)
        if key not in self._data:
            from dpljax.config import dataclass_section

            cfg = dataclass_section(DataConfig, "data", data)
            ds, _ = load_with_report(cfg, log=self.log, forcing=exp.dpl.model.forcing)
            self._data[key] = ds.load()
        return self._data[key]


# ------------------------------------------------------------------ dPL units
def dpl_config(conf: dict, basins: list[str], seed: int) -> dict:
    c = copy.deepcopy(conf["dpl_config"])
    t = c["train"]
    devices = int(t.get("devices") or 1)
    t["batch_basins"] = batch_basins(len(basins), conf["max_batch_basins"], devices)
    t["epochs"] = min(int(t["epochs"]), conf["steps"])  # epochs x iterations = steps (when it divides)
    t["iters_per_epoch"] = int(math.ceil(conf["steps"] / t["epochs"]))
    t["seed"] = int(seed)
    c["data"]["basins"] = list(basins)
    c["data"]["test_basins"] = None
    return c


class DPLTrain(Unit):
    def __init__(self, ctx: Context, fraction: str, seed: int):
        super().__init__(f"dpl train {fraction} seed {seed}")
        self.fraction, self.seed = fraction, seed
        self.dir = ctx.dpl_dir(fraction, seed)
        self.basins = subset(ctx.perm(seed), fraction)
        self.config = dpl_config(ctx.conf, self.basins, seed)

    def done(self):
        return (self.dir / "summary.json").exists()

    def cost_s(self):
        t = self.config["train"]
        return t["epochs"] * t["iters_per_epoch"] * (COST_DPL_STEP + t["batch_basins"] * COST_DPL_BASIN_STEP)

    def run(self, ctx):
        from dpljax.experiment import run_experiment

        c = copy.deepcopy(self.config)
        c["train"]["resume"] = (self.dir / "checkpoints" / "last.npz").exists()
        summary = run_experiment(c, self.dir, log=ctx.log)
        return {"median_nse": summary["median_nse"], "train_wall_time_s": summary.get("train_wall_time_s")}


def _load_net(run_dir: Path):
    import yaml
    from flax import nnx

    from dpljax.checkpoint import load_checkpoint
    from dpljax.data.normalize import Normalizer
    from dpljax.experiment import build

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    exp = build(config)
    norm = Normalizer.from_json(run_dir / "normalizer.json")
    net = exp.make_net(len(norm.dynamic), len(norm.static))
    graphdef, like = nnx.split(net)
    state, _ = load_checkpoint(run_dir / "weights.npz", like)
    return config, exp, norm, graphdef, state


def dpl_parameters(exp, norm, graphdef, state, ds) -> tuple[np.ndarray, list[str]]:
    """Physical parameters ``(N, n)`` of every basin of ``ds`` from a static network: each
    model parameter averaged over the nmul components, then the routing parameters (the
    layout of a one-component :class:`~dpljax.calibrate.Problem`)."""
    import jax.numpy as jnp
    from flax import nnx

    x_static = jnp.asarray(norm.static_inputs(ds))
    x_dyn = jnp.zeros((x_static.shape[0], 1, len(norm.dynamic)), jnp.float32)
    raw = nnx.merge(graphdef, state)(x_dyn, x_static)
    if raw.ndim == 3:
        raw = raw[:, -1]
    params, routing = exp.dpl.space.to_physical(raw)
    names = list(params) + list(routing)
    cols = [np.asarray(params[k]).mean(axis=-1) for k in params] + [np.asarray(routing[k]) for k in routing]
    return np.stack(cols, axis=1).astype(np.float64), names


class DPLSpatial(Unit):
    """The trained model on the basins it never saw (test period), and every basin's parameters."""

    heavy = False

    def __init__(self, ctx: Context, fraction: str, seed: int):
        super().__init__(f"dpl spatial {fraction} seed {seed}")
        self.fraction, self.seed = fraction, seed
        self.run_dir = ctx.dpl_dir(fraction, seed)
        self.dir = self.run_dir / "spatial"
        self.targets = heldout(ctx.perm(seed), fraction)

    def done(self):
        return (self.dir / "done.json").exists()

    def run(self, ctx):
        import dpljax.evaluate as E

        config, exp, norm, graphdef, state = _load_net(self.run_dir)
        ds_all = ctx.all_data(config)
        self.dir.mkdir(parents=True, exist_ok=True)
        p, names = dpl_parameters(exp, norm, graphdef, state, ds_all)
        basins = [str(b) for b in ds_all["basin"].values.tolist()]
        np.savez(self.dir / "params.npz", params=p, names=np.asarray(names), basins=np.asarray(basins))
        out = {"n_heldout": len(self.targets)}
        if self.targets:
            ds = ds_all.sel(basin=self.targets)
            table = E.evaluate_period(exp, ds, norm, graphdef, state, exp.data.test, self.dir, write=False)
            _atomic_csv(self.dir / "metrics_test.csv", table)
            out["median_nse"] = float(np.nanmedian(table["nse"]))
        _atomic_json(self.dir / "done.json", out)
        return out


# ------------------------------------------------------------------ calibration units
class Calibration(Unit):
    def __init__(self, ctx: Context, which: str, run_dir: Path):
        super().__init__(f"calibration {which} ({run_dir})")
        self.which, self.dir = which, Path(run_dir)
        self.config = copy.deepcopy(ctx.conf[f"{which}_config"])
        self.n = len(ctx.plan["basins"])

    def done(self):
        return (self.dir / "summary.json").exists()

    def cost_s(self):
        cc = self.config["calibrate"]
        if cc["method"] == "sceua":
            return self.n * cc["seeds"] * cc["max_evals"] * COST_SCEUA_EVAL
        return self.n * cc["seeds"] * cc["restarts"] * cc["steps"] * COST_GRAD_EVAL

    def run(self, ctx):
        from dpljax.calibrate.runner import run_calibration

        c = copy.deepcopy(self.config)
        c["train"]["resume"] = (self.dir / "checkpoints" / "calibration.npz").exists()
        s = run_calibration(c, self.dir, log=ctx.log)
        return {"median_nse": s["median_nse"], "calibration_wall_time_s": s["calibration_wall_time_s"]}


class CalibrationBundle:
    """A finished calibration run's parameters, problem, attributes and test-period arrays of
    all basins (built once per process)."""

    def __init__(self, ctx: Context, run_dir: Path):
        import xarray as xr
        import yaml

        import dpljax.evaluate as E
        from dpljax.calibrate import Problem
        from dpljax.data.normalize import Normalizer, encode_attribute
        from dpljax.experiment import SECTIONS, build

        self.dir = Path(run_dir)
        config = yaml.safe_load((self.dir / "config.yaml").read_text())
        self.exp = build({k: config[k] for k in SECTIONS})
        self.problem = Problem(self.exp.dpl, self.exp.loss, self.exp.train.warmup)
        cal = xr.open_zarr(self.dir / "calibration.zarr")
        self.cal_basins = [str(b) for b in cal["basin"].values.tolist()]
        self.params = cal["params"].values.astype(np.float64)
        self.params_by_seed = cal["params_by_seed"].values.astype(np.float64)
        norm = Normalizer.from_json(self.dir / "normalizer.json")
        ds = ctx.all_data(config)
        self.basins = [str(b) for b in ds["basin"].values.tolist()]
        self.attr_names = list(self.exp.data.attributes)
        self.attrs = np.stack([encode_attribute(ds[n].values, norm.categories.get(n)) for n in self.attr_names],
                              axis=1).astype(np.float64)
        arrays, _, self.skip = E.period_arrays(self.exp, ds, norm, self.exp.data.test)
        self.forcing = {k: np.asarray(v) for k, v in arrays.forcing.items()}
        self.obs = np.asarray(arrays.obs)
        self.row = {b: i for i, b in enumerate(self.basins)}
        self.cal_row = {b: i for i, b in enumerate(self.cal_basins)}

    def rows(self, basins):
        return np.asarray([self.row[b] for b in basins])

    def params_of(self, basins):
        return self.params[[self.cal_row[b] for b in basins]]


class Regionalise(Unit):
    """SCE-UA parameters regionalised from a subset (donors) to its held-out basins."""

    heavy = False
    METHODS = ("nearest1", "donors5", "forest")

    def __init__(self, ctx: Context, fraction: str, seed: int, cal_dir: Path):
        super().__init__(f"regionalise sceua {fraction} seed {seed}")
        self.fraction, self.seed, self.cal_dir = fraction, seed, Path(cal_dir)
        self.dir = ctx.work / "regional" / f"{label(fraction)}_s{seed}"
        self.donors = subset(ctx.perm(seed), fraction)
        self.targets = heldout(ctx.perm(seed), fraction)

    def done(self):
        return (self.dir / "done.json").exists()

    def run(self, ctx):
        import dpljax.evaluate as E
        from dpljax.calibrate import donor_simulations, nearest_donors, regression_params
        from dpljax.calibrate.runner import predict_params

        self.dir.mkdir(parents=True, exist_ok=True)
        out = {"n_donors": len(self.donors), "n_heldout": len(self.targets), "k_donors": None, "methods": {}}
        if not self.targets:  # every basin is a donor: nothing to regionalise
            _atomic_json(self.dir / "done.json", out)
            return out
        b = ctx.bundle(self.cal_dir)
        d_rows, t_rows = b.rows(self.donors), b.rows(self.targets)
        a_d, a_t = b.attrs[d_rows], b.attrs[t_rows]
        p_d = b.params_of(self.donors)
        forcing = {k: v[t_rows] for k, v in b.forcing.items()}
        obs = b.obs[t_rows]
        k = min(ctx.conf["k_donors"], len(self.donors))
        out["k_donors"] = k
        sims, params = {}, {}
        t0 = time.perf_counter()
        idx1, _ = nearest_donors(a_t, a_d, k=1, nan="impute", names=b.attr_names)
        params["nearest1"] = p_d[idx1[:, 0]]
        sims["nearest1"] = predict_params(b.problem, params["nearest1"].astype(np.float32), forcing)
        times = {"nearest1": time.perf_counter() - t0}
        t0 = time.perf_counter()
        idxk, _ = nearest_donors(a_t, a_d, k=k, nan="impute", names=b.attr_names)
        parts = []
        for i in range(0, len(t_rows), 64):
            sl = slice(i, i + 64)
            parts.append(donor_simulations(b.problem, p_d, idxk[sl], {n: v[sl] for n, v in forcing.items()}))
        sims["donors5"] = np.concatenate(parts, axis=0)
        times["donors5"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        params["forest"] = regression_params(a_d, p_d, a_t, box=b.problem, method="random_forest", nan="impute",
                                             random_state=self.seed, names=b.attr_names,
                                             n_estimators=ctx.conf["forest_trees"])
        sims["forest"] = predict_params(b.problem, params["forest"].astype(np.float32), forcing)
        times["forest"] = time.perf_counter() - t0
        for m in self.METHODS:
            table = E.score(sims[m], obs, self.targets, b.skip)
            _atomic_csv(self.dir / f"metrics_{m}.csv", table)
            out["methods"][m] = {"median_nse": float(np.nanmedian(table["nse"])), "wall_time_s": times[m]}
        np.savez(self.dir / "params.npz", nearest1=params["nearest1"], forest=params["forest"],
                 donors_k=np.asarray(self.donors)[idxk], targets=np.asarray(self.targets),
                 names=np.asarray(b.problem.names))
        _atomic_json(self.dir / "done.json", out)
        return out


class Coherence(Unit):
    """Spread of parameters over seeds, and out-of-fold R^2 of parameters on attributes."""

    heavy = False

    def __init__(self, ctx: Context, seeds, sceua_dir: Path, gradcal_dir: Path):
        super().__init__("coherence")
        self.seeds, self.sceua_dir, self.gradcal_dir = list(seeds), Path(sceua_dir), Path(gradcal_dir)
        self.path = ctx.work / f"coherence_s{'-'.join(str(s) for s in self.seeds)}.json"

    def done(self):
        return self.path.exists()

    def run(self, ctx):
        from dpljax.calibrate import out_of_fold_r2

        b = ctx.bundle(self.sceua_dir)
        names = list(b.problem.names)
        span = b.problem.upper - b.problem.lower
        n_folds = min(5, len(b.basins))
        sets: dict[str, dict] = {}
        dpl_runs = [ctx.dpl_dir("1", s) / "spatial" / "params.npz" for s in self.seeds]
        dpl_runs = [p for p in dpl_runs if p.exists()]
        if dpl_runs:
            stack = []
            for p in dpl_runs:
                z = np.load(p)
                assert list(z["names"]) == names, (list(z["names"]), names)
                order = {str(v): i for i, v in enumerate(z["basins"])}
                stack.append(z["params"][[order[bb] for bb in b.basins]])
            sets["dpl"] = {"by_seed": np.stack(stack), "source": [str(p.parent.parent) for p in dpl_runs]}
        for which, d in (("sceua", self.sceua_dir), ("gradcal", self.gradcal_dir)):
            if (d / "calibration.zarr").exists():
                cb = ctx.bundle(d)
                rows = [cb.cal_row[bb] for bb in b.basins]
                sets[which] = {"by_seed": cb.params_by_seed[:, rows], "best": cb.params[rows], "source": str(d)}
        out = {"parameters": names, "n_basins": len(b.basins), "n_folds": n_folds,
               "spread": "std over seeds of each parameter per basin, / (upper - lower) of its box; "
                         "median over basins", "methods": {}}
        for which, s in sets.items():
            by_seed = s["by_seed"]
            entry = {"source": s["source"], "n_seeds": int(by_seed.shape[0])}
            if by_seed.shape[0] >= 2:
                spread = by_seed.std(axis=0) / span                 # (basins, n)
                entry["spread_median"] = dict(zip(names, np.median(spread, axis=0).tolist()))
                entry["spread_median_all"] = float(np.median(spread))
            p = s.get("best", by_seed[0])
            r2 = out_of_fold_r2(b.attrs, p, n_folds=n_folds, box=b.problem, nan="impute",
                                names=b.attr_names, n_estimators=ctx.conf["forest_trees"])
            entry["oof_r2"] = dict(zip(names, [None if not np.isfinite(v) else float(v) for v in r2]))
            entry["oof_r2_median"] = float(np.nanmedian(r2)) if np.isfinite(r2).any() else None
            out["methods"][which] = entry
        _atomic_json(self.path, out)
        return out


# ------------------------------------------------------------------ the pipeline
def _ctx_bundle(self, run_dir):
    key = ("bundle", str(Path(run_dir).resolve()))
    if key not in self._data:
        self._data[key] = CalibrationBundle(self, run_dir)
    return self._data[key]


Context.bundle = _ctx_bundle


def load_plan(work: Path, conf: dict, write: bool = True) -> dict:
    """``plan.json``: the settings and each seed's permutation; a re-run must agree with it."""
    path = work / "plan.json"
    basins = all_basins(conf["dpl_config"])
    if path.exists():
        plan = json.loads(path.read_text())
        old = json.loads(json.dumps(plan["settings"]))
        new = json.loads(json.dumps(conf))
        for c in (old, new):  # may change between sessions
            for k in ("dpl_config", "sceua_config", "gradcal_config"):
                c[k]["train"].pop("checkpoint_minutes", None)
        if old != new or plan["basins"] != basins:
            raise SystemExit(f"{path} was made with other settings; use another --work directory "
                             f"(or the same options as before)")
        return plan
    plan = {"settings": conf, "basins": basins, "permutations": {}}
    if write:
        _atomic_json(path, plan)
    return plan


def ensure_permutations(ctx: Context, seeds, write: bool = True) -> None:
    changed = False
    for s in seeds:
        if str(s) not in ctx.plan["permutations"]:
            ctx.plan["permutations"][str(s)] = permutation(ctx.plan["basins"], s)
            changed = True
    if changed and write:
        _atomic_json(ctx.work / "plan.json", ctx.plan)


def units(ctx: Context, fractions, seeds, sceua_dir: Path, gradcal_dir: Path) -> list[Unit]:
    """Every unit, in the order to run them: heavy units by estimated cost (cheap first),
    each followed by the light units that need it."""
    fractions = sorted(fractions, key=lambda f: Fraction(f))
    heavy: list[tuple[float, Unit, list[Unit]]] = []
    for f in fractions:
        for s in seeds:
            u = DPLTrain(ctx, f, s)
            heavy.append((u.cost_s(), u, [DPLSpatial(ctx, f, s)]))
    grad = Calibration(ctx, "gradcal", gradcal_dir)
    heavy.append((grad.cost_s(), grad, []))
    sce = Calibration(ctx, "sceua", sceua_dir)
    heavy.append((sce.cost_s(), sce, [Regionalise(ctx, f, s, sceua_dir) for f in fractions for s in seeds]))
    heavy.sort(key=lambda t: t[0])
    out = []
    for _, u, after in heavy:
        out += [u, *after]
    out.append(Coherence(ctx, seeds, sceua_dir, gradcal_dir))
    return out


def ready(u: Unit, todo: list[Unit]) -> bool:
    """Light units wait for what they read."""
    if isinstance(u, DPLSpatial):
        return (u.run_dir / "summary.json").exists()
    if isinstance(u, Regionalise):
        return (u.cal_dir / "summary.json").exists()
    if isinstance(u, Coherence):
        return (u.sceua_dir / "summary.json").exists() and not any(
            not v.done() for v in todo if isinstance(v, (DPLTrain, DPLSpatial, Calibration)))
    return True


def session_record(ctx: Context, probe: bool) -> dict:
    from benchmarks import throughput as tp

    rec = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(), "argv": sys.argv,
           "git_commit": tp._git_commit(),
           "machine": tp._machine(), "versions": tp._versions(), "sharing_start": sharing()}
    if probe:
        ctx.log("machine probe (matmul, memory bandwidth, elementwise) ...")
        rec["probe"] = tp._probe({})
    return rec


def _append_session(work: Path, rec: dict) -> None:
    path = work / "sessions.json"
    sessions = json.loads(path.read_text()) if path.exists() else []
    # This process's own record is replaced wherever it is: two commands may share a work
    # directory at once (e.g. --only dpl beside --only calibration), appending in turn.
    key = lambda s: (s.get("started"), s.get("pid"), s.get("argv"))
    same = [i for i, s in enumerate(sessions) if key(s) == key(rec)]
    if same:
        sessions[same[-1]] = rec
    else:
        sessions.append(rec)
    _atomic_json(path, sessions)


def run(args) -> int:
    from dpljax.parallel import use_host_devices

    conf = settings(args)
    devices = max(int(conf["dpl_config"]["train"].get("devices") or 1),
                  *(int(conf[k]["train"].get("devices") or 1) for k in ("sceua_config", "gradcal_config")))
    use_host_devices(devices)  # before any JAX computation
    work = Path(args.work or (ROOT / "runs" / ("scaling_sample" if args.sample else "scaling")))
    sceua_dir = Path(args.sceua or work / "sceua")
    gradcal_dir = Path(args.gradcal or work / "gradcal")
    if not args.dry_run:
        work.mkdir(parents=True, exist_ok=True)
    plan = load_plan(work, conf, write=not args.dry_run)
    ctx = Context(work, conf, plan, log=(lambda *a: None) if args.quiet else print)
    fractions = args.fractions or (SAMPLE_FRACTIONS if args.sample else FRACTIONS)
    fractions = [str(Fraction(f)) for f in fractions]
    seeds = args.seeds if args.seeds is not None else list(SEEDS)
    ensure_permutations(ctx, seeds, write=not args.dry_run)
    todo = units(ctx, fractions, seeds, sceua_dir, gradcal_dir)
    if args.only:
        kinds = {"dpl": (DPLTrain, DPLSpatial), "calibration": (Calibration,), "regional": (Regionalise,),
                 "coherence": (Coherence,)}
        todo = [u for u in todo if isinstance(u, tuple(c for k in args.only for c in kinds[k]))]
    if args.dry_run:
        total = 0.0
        for u in todo:
            state = "done" if u.done() else f"to do, ~{u.cost_s() / 60:.1f} min" if u.heavy else "to do"
            total += 0 if u.done() else u.cost_s()
            print(f"  {u.name:55s} {state}")
        print(f"heavy units left: ~{total / 3600:.1f} h on this machine (rough constants in benchmarks/scaling.py)")
        return 0
    rec = session_record(ctx, probe=args.probe)
    rec["units"] = []
    _append_session(work, rec)
    out = Path(args.out) if args.out else RESULTS
    stem = args.name or ("scaling_sample" if args.sample else "scaling")
    for u in todo:
        if u.done():
            continue
        if not ready(u, todo):
            ctx.log(f"[scaling] {u.name}: waiting for its inputs (skipped this time)")
            continue
        ctx.log(f"[scaling] {u.name} ...")
        before = sharing()
        t0 = time.perf_counter()
        res = u.run(ctx)
        wall = time.perf_counter() - t0
        rec["units"].append({"unit": u.name, "wall_s": wall, "result": res, "sharing_before": before,
                             "sharing_after": sharing()})
        _append_session(work, rec)
        ctx.log(f"[scaling] {u.name}: done in {wall:.1f} s {res}")
        if u.heavy:  # partial results as they come
            report(work, fractions, seeds, sceua_dir, gradcal_dir, out, stem, quiet=True)
    rec["sharing_end"] = sharing()
    _append_session(work, rec)
    doc = report(work, fractions, seeds, sceua_dir, gradcal_dir, out, stem)
    if args.readme:
        from benchmarks.scaling_report import render_readme

        render_readme(out / f"{stem}.json")
    left = [u.name for u in todo if not u.done()]
    if left:
        print(f"[scaling] {len(left)} unit(s) not done: re-run the same command to continue")
        return 1
    print(f"[scaling] all {'selected ' if args.only else ''}units done: {out / (stem + '.json')}")
    return 0 if doc else 1


def report(work, fractions, seeds, sceua_dir, gradcal_dir, out, stem, quiet=False):
    from benchmarks.scaling_report import build_results, write_results

    doc = build_results(Path(work), fractions, seeds, Path(sceua_dir), Path(gradcal_dir))
    write_results(doc, Path(out), stem, quiet=quiet)
    return doc


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["render"]:
        p = argparse.ArgumentParser(prog="python -m benchmarks.scaling render",
                                    description="Write the scaling section of benchmarks/README.md from the JSON.")
        p.add_argument("--results", default=str(RESULTS / "scaling.json"))
        p.add_argument("--readme", default=str(HERE / "README.md"))
        a = p.parse_args(argv[1:])
        from benchmarks.scaling_report import render_readme

        render_readme(Path(a.results), Path(a.readme))
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", action="store_true", help="the embedded 8-basin sample, tiny settings (minutes)")
    p.add_argument("--work", help="work directory (default runs/scaling, runs/scaling_sample)")
    p.add_argument("--sceua", help="SCE-UA run directory on all basins (run there if not finished; "
                                   "default <work>/sceua)")
    p.add_argument("--gradcal", help="gradient-calibration run directory (likewise; default <work>/gradcal)")
    p.add_argument("--fractions", nargs="+", help=f"default {' '.join(FRACTIONS)} (sample: {' '.join(SAMPLE_FRACTIONS)})")
    p.add_argument("--seeds", nargs="+", type=int, help="default 0 1 2")
    p.add_argument("--cal-seeds", type=int, default=3,
                   help="calibrate.seeds of calibrations this command runs (3: coherence over seeds)")
    p.add_argument("--steps", type=int, help="optimiser steps of every dPL run (default: the full experiment's)")
    p.add_argument("--sample-steps", type=int, default=10, help="--sample: optimiser steps of every dPL run")
    p.add_argument("--sample-evals", type=int, default=300, help="--sample: SCE-UA evaluations per basin and seed")
    p.add_argument("--nmul", type=int, help="HBV components of the dPL runs (default: the experiment's, 16; "
                                             "use another --work for another value)")
    p.add_argument("--devices", type=int, help="train.devices of every run (default: each experiment's)")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--only", nargs="+", choices=("dpl", "calibration", "regional", "coherence"),
                   help="run only these kinds of unit (default: all)")
    p.add_argument("--dry-run", action="store_true", help="list the units and what is left; compute nothing")
    p.add_argument("--probe", action=argparse.BooleanOptionalAction, default=None,
                   help="measure the machine (~1 min; default: yes, except with --sample)")
    p.add_argument("--out", help="results directory (default benchmarks/results)")
    p.add_argument("--name", help="results file stem (default scaling, scaling_sample)")
    p.add_argument("--readme", action="store_true", help="also render the section of benchmarks/README.md")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.probe is None:
        args.probe = not args.sample  # the sample is a test of the pipeline, not a measurement
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
