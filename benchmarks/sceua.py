"""SCE-UA: dpljax.calibrate.sce_ua against spotpy's sceua (issue 12).

    python -m benchmarks.sceua functions [--seeds 50] [--rules budget --tag budget]  # Duan's test functions
    python -m benchmarks.sceua hbv [--seeds 5 --budget 10000 --complexes 10]
    python -m benchmarks.sceua speed [--devices 2 --budget 10000]  # the 531-basin calibration vs spotpy
    python -m benchmarks.sceua full [--basins 531 --budget 10000]   # one whole calibration

Each writes ``benchmarks/results/sceua_<what>.json`` with the machine probe
(``benchmarks.throughput._probe``), versions, commit and load averages.

Evaluation counts are *true* model runs on both sides: spotpy's ``repetitions`` also counts
each point it keeps at the end of a CCE step (posted again without a model run), so with
``repetitions = budget`` it makes only about two thirds of ``budget`` model runs. Its model is
therefore wrapped with a counter that stops spotpy after exactly ``budget`` runs (spotpy is
given ``repetitions = 2 * budget``, which it cannot reach first), and spotpy's result is the
best value among those runs (SCE never loses its best point, so this is its best-so-far).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WARM = 365
TRAIN = ("1998-10-01", "2008-09-30")  # 365-day warm-up, then WY2000-2008


# ---------------------------------------------------------------- common

def _meta(probe: bool = True) -> dict:
    from benchmarks import throughput as tp

    meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv,
            "git_commit": tp._git_commit(), "machine": tp._machine(),
            "versions": {**tp._versions(), **{p: tp._version(p) for p in ("spotpy", "numba")}},
            "load_average_start": os.getloadavg()}
    if probe:
        meta["probe"] = tp._probe({})
    return meta


def _write(name: str, doc: dict) -> Path:
    doc["load_average_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"sceua_{name}.json"
    out.write_text(json.dumps(doc, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    print("wrote", out)
    return out


class _BudgetSpent(Exception):
    pass


class _Counted:
    """A model wrapped with a run counter; it records the best value among its first
    ``budget`` runs and stops the optimiser (an exception) when it asks for one more."""

    def __init__(self, fn, budget):
        self.fn, self.budget, self.n, self.best_at_budget, self.best = fn, budget, 0, np.inf, np.inf

    def __call__(self, x):
        if self.n >= self.budget:
            raise _BudgetSpent
        v = float(self.fn(x))
        self.n += 1
        v_ = v if np.isfinite(v) else np.inf
        self.best = min(self.best, v_)
        if self.n <= self.budget:
            self.best_at_budget = min(self.best_at_budget, v_)
        return v


def spotpy_sceua(fn, lower, upper, *, seed, budget, ngs, kstop, pcento, peps):
    """spotpy's sceua on ``fn(x) -> float``; returns (best within budget runs, runs, wall s)."""
    import spotpy

    counted = _Counted(fn, budget)

    class Setup:
        def __init__(self):
            self.params = [spotpy.parameter.Uniform(f"x{i}", float(lo), float(hi))
                           for i, (lo, hi) in enumerate(zip(lower, upper))]

        def parameters(self):
            return spotpy.parameter.generate(self.params)

        def simulation(self, x):
            return [counted(np.asarray(x, dtype=float))]

        def evaluation(self):
            return [0.0]

        def objectivefunction(self, simulation, evaluation, params=None):
            return simulation[0]

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        sampler = spotpy.algorithms.sceua(Setup(), dbformat="ram", save_sim=False,
                                          random_state=int(seed))
        try:
            sampler.sample(2 * int(budget), ngs=int(ngs), kstop=int(kstop), pcento=float(pcento),
                           peps=float(peps))
        except _BudgetSpent:
            pass
    return counted.best_at_budget, counted.n, time.perf_counter() - t0


# ---------------------------------------------------------------- 1. test functions

def bench_functions(args) -> dict:
    import jax
    import jax.numpy as jnp

    from benchmarks.sceua_problems import PROBLEMS
    from dpljax.calibrate import sce_ua

    settings = {"goldstein_price": (2, 2000), "rosenbrock": (2, 2000), "six_hump_camel": (2, 2000),
                "hartman6": (4, 5000), "shekel5": (8, 5000), "shekel7": (8, 5000), "shekel10": (8, 5000)}
    if args.rules == "duan":  # Duan's defaults, the same on both sides
        rules = dict(kstop=10, pcento=0.1, peps=1e-3)
    else:  # budget only: both sides make exactly `budget` model runs
        rules = dict(kstop=10, pcento=0.0, peps=0.0)
    doc = {"what": "success rate on Duan et al. (1992)'s test functions, dpljax sce_ua vs spotpy "
                   "sceua, same complexes, budget (true model runs) and stopping rules",
           "seeds": args.seeds, "rules_name": args.rules, "rules": rules,
           "success": "|f - f*| <= 1e-3 max(1, |f*|)", **_meta(probe=False), "problems": {}}
    for name, pr in PROBLEMS.items():
        if args.only and name not in args.only:
            continue
        p, budget = settings[name]
        lo, hi = jnp.array(pr.lower), jnp.array(pr.upper)
        row = {"n": len(pr.lower), "complexes": p, "budget": budget, "fmin": pr.fmin}
        for variant in ("complex", "box"):
            solve = jax.jit(jax.vmap(lambda k: sce_ua(pr.jax(), lo, hi, key=k, max_evals=budget,
                                                      n_complexes=p, random_in=variant, **rules)))
            r = solve(jax.random.split(jax.random.key(2024), args.seeds))
            f = np.asarray(r.fun, dtype=float)
            row[f"dpljax_{variant}"] = {
                "success_rate": float(pr.solved(f).mean()), "median_f": float(np.median(f)),
                "median_evals": float(np.median(r.n_evals)),
                "waste": float(1 - np.sum(r.n_evals) / np.sum(r.n_computed))}
        fs, ns, ws = [], [], []
        for seed in range(args.seeds):
            b, n, w = spotpy_sceua(pr.numpy(), pr.lower, pr.upper, seed=seed + 1, budget=budget,
                                   ngs=p, **rules)
            fs.append(b), ns.append(n), ws.append(w)
        fs = np.array(fs)
        row["spotpy"] = {"success_rate": float(pr.solved(fs).mean()), "median_f": float(np.median(fs)),
                         "median_model_runs": float(np.median(ns)),
                         "median_model_runs_capped_at_budget": float(np.median(np.minimum(ns, budget))),
                         "median_wall_s": float(np.median(ws))}
        print(name, json.dumps(row), flush=True)
        doc["problems"][name] = row
    return doc


# ---------------------------------------------------------------- 2. HBV on the sample

def hbv_data(basins=None, replicate_to=None):
    """(prcp, tmean, pet, obs) ``(B, T)`` float32 for warm-up + WY2000-2008, basin ids."""
    import xarray as xr

    if basins == "531":
        ds = xr.open_zarr("/work/shared/data/camels_us.zarr")
        ids = ds.basin.values[ds["in_531"].values.astype(bool)]
        ds = ds[["prcp", "tmax", "tmin", "pet", "streamflow"]].sel(basin=ids)
    else:
        from dpljax.data import load_sample

        ds = load_sample()
    ds = ds.sel(time=slice(*TRAIN)).load()
    prcp = ds["prcp"].values.astype(np.float32)
    tmean = (0.5 * (ds["tmax"] + ds["tmin"])).values.astype(np.float32)
    pet = ds["pet"].values.astype(np.float32)
    obs = ds["streamflow"].values.astype(np.float32)
    ids = [str(b) for b in ds.basin.values]
    if replicate_to:
        idx = np.arange(replicate_to) % len(ids)
        prcp, tmean, pet, obs = prcp[idx], tmean[idx], pet[idx], obs[idx]
        ids = [ids[i] for i in idx]
    assert prcp.shape[1] == WARM + 3288, prcp.shape
    return (prcp, tmean, pet, obs), ids


def dpljax_objective():
    """``(obj(data, x), simulate(data, x), lower, upper, names)``: the library's own chain, ``DPL.of(HBV(),
    nmul=1)`` (the generic simulator + gamma routing) on physical parameters ``x (15,)`` (13
    HBV + 2 routing, bounds of the parameter space), scored by the default training loss
    (``rmse_combined``) after the warm-up."""
    import jax.numpy as jnp

    from dpljax import DPL, HBV
    from dpljax.losses import RMSECombined

    # Forward only: the plain scan (adjoint="autodiff") is what a calibration runs; the
    # model's hand-written adjoint only pays off under differentiation (measured: its forward
    # pass alone was 1.1-1.8x slower here).
    dpl = DPL.of(HBV(adjoint="autodiff"), nmul=1)
    names, rnames = list(dpl.space.bounds), list(dpl.space.routing_bounds)
    bounds = {**dpl.space.bounds, **dpl.space.routing_bounds}
    lower = np.array([bounds[n][0] for n in names + rnames], np.float32)
    upper = np.array([bounds[n][1] for n in names + rnames], np.float32)
    loss = RMSECombined()

    def simulate(data, x):
        prcp, tmean, pet = data[:3]
        params = {n: x[i].reshape(1, 1) for i, n in enumerate(names)}
        rp = {n: x[len(names) + j].reshape(1) for j, n in enumerate(rnames)}
        res = dpl.chain(params, rp, {"prcp": prcp[None], "tmean": tmean[None], "pet": pet[None]})
        return res.q[0]

    def obj(data, x):
        return loss(simulate(data, x)[WARM:], data[3][WARM:])

    return obj, simulate, jnp.asarray(lower), jnp.asarray(upper), names + rnames


def check_equations(data, n_sets: int = 20) -> dict:
    """dpljax's chain vs the numba and NumPy HBVs, random parameter sets on every basin."""
    import jax
    import jax.numpy as jnp

    from benchmarks import sceua_hbv as ref

    obj, simulate, lo, hi = dpljax_objective()[:4]
    lo, hi = np.asarray(lo), np.asarray(hi)
    rng = np.random.default_rng(0)
    xs = lo + rng.random((n_sets, lo.shape[0])).astype(np.float32) * (hi - lo)
    sim = jax.jit(jax.vmap(simulate, in_axes=(None, 0)))
    objv = jax.jit(jax.vmap(obj, in_axes=(None, 0)))
    worst = {"q_max_abs": 0.0, "q_max_rel": 0.0, "loss_max_abs": 0.0, "numpy_vs_numba_q_max_abs": 0.0}
    for b in range(data[0].shape[0]):
        d = tuple(jnp.asarray(a[b]) for a in data)
        q_j = np.asarray(sim(d, jnp.asarray(xs)), np.float64)
        l_j = np.asarray(objv(d, jnp.asarray(xs)), np.float64)
        d64 = tuple(np.asarray(a[b], np.float64) for a in data)
        for i, x in enumerate(xs):
            q_n = ref.simulate_numba(x.astype(np.float64), *d64[:3])
            l_n = ref.objective_numba(x.astype(np.float64), *d64, WARM)
            worst["q_max_abs"] = max(worst["q_max_abs"], float(np.max(np.abs(q_n - q_j[i]))))
            worst["q_max_rel"] = max(worst["q_max_rel"], float(np.max(np.abs(q_n - q_j[i]) / (np.abs(q_n) + 1e-3))))
            worst["loss_max_abs"] = max(worst["loss_max_abs"], abs(l_n - l_j[i]))
            if b == 0 and i < 2:
                q_p = ref.simulate_python(x.astype(np.float64), *d64[:3])
                worst["numpy_vs_numba_q_max_abs"] = max(worst["numpy_vs_numba_q_max_abs"],
                                                        float(np.max(np.abs(q_p - q_n))))
    worst["n_sets_per_basin"] = n_sets
    # dpljax runs in float32, the references in float64: relative agreement ~1e-5 expected
    ok = (worst["q_max_rel"] < 1e-4 and worst["loss_max_abs"] < 1e-5
          and worst["numpy_vs_numba_q_max_abs"] < 1e-4)
    worst["passed"] = bool(ok)
    print("equations check", worst, flush=True)
    if not ok:
        raise SystemExit("the benchmark's HBVs disagree with dpljax's: not timing them")
    return worst


def bench_hbv(args) -> dict:
    import jax
    import jax.numpy as jnp

    from benchmarks import sceua_hbv as ref
    from dpljax.calibrate import sce_ua

    data, ids = hbv_data()
    doc = {"what": "HBV (nmul=1, 13 + 2 routing parameters) calibrated on the 8 sample basins, "
                   "WY2000-2008 after a 365-day warm-up, objective = rmse_combined (the default "
                   "training loss); dpljax sce_ua (all basins x seeds vmapped in one program) vs "
                   "spotpy sceua + numba HBV, same complexes, budget in true model runs, other "
                   "stopping rules off on both sides",
           "budget": args.budget, "complexes": args.complexes, "seeds": args.seeds, "basins": ids,
           **_meta(probe=False)}
    doc["equations_check"] = check_equations(data)
    obj, _, lo, hi, names = dpljax_objective()
    doc["parameters"] = names
    B, S = len(ids), args.seeds
    rules = dict(pcento=0.0, peps=0.0)
    solve = jax.jit(jax.vmap(lambda d, k: sce_ua(partial(obj, d), lo, hi, key=k, max_evals=args.budget,
                                                 n_complexes=args.complexes, **rules)))
    dd = tuple(jnp.asarray(np.repeat(a, S, axis=0)) for a in data)
    keys = jax.random.split(jax.random.key(12), B * S)
    t0 = time.perf_counter()
    r = jax.block_until_ready(solve(dd, keys))
    wall = time.perf_counter() - t0
    f = np.asarray(r.fun, float).reshape(B, S)
    ev = np.asarray(r.n_evals).reshape(B, S)
    rounds = np.asarray(r.state.loop_rounds)  # (B*S, L)
    # Every problem shuffles on its own, so the batched program runs as many rounds as the
    # problem with the most rounds in all (not the sum over loops of each loop's slowest).
    batched = (int(rounds.sum(axis=1).max()) * args.complexes + r.state.x.shape[1]) * B * S
    doc["dpljax"] = {"final_objective": f.tolist(), "median": np.median(f, axis=1).tolist(),
                     "n_evals": ev.tolist(), "wall_s_incl_compile": wall,
                     "waste_unbatched": float(1 - np.sum(r.n_evals) / np.sum(r.n_computed)),
                     "waste_batched": float(1 - np.sum(r.n_evals) / batched),
                     "x_best": np.asarray(r.x).reshape(B, S, -1).tolist()}
    print("dpljax done", wall, np.median(f, axis=1), flush=True)
    fs, ns, ws = np.zeros((B, S)), np.zeros((B, S)), np.zeros((B, S))
    for b in range(B):
        d64 = tuple(np.asarray(a[b], np.float64) for a in data)
        fn = lambda x, d64=d64: ref.objective_numba(x, *d64, WARM)
        for s in range(S):
            fs[b, s], ns[b, s], ws[b, s] = spotpy_sceua(
                fn, np.asarray(lo), np.asarray(hi), seed=s + 1, budget=args.budget,
                ngs=args.complexes, kstop=10**9, pcento=0.0, peps=0.0)
        print("spotpy", ids[b], np.median(fs[b]), np.median(ns[b]), flush=True)
    doc["spotpy_numba"] = {"final_objective_within_budget": fs.tolist(),
                           "median": np.median(fs, axis=1).tolist(), "model_runs": ns.tolist(),
                           "wall_s": ws.tolist()}
    med_d, med_s = np.median(f, axis=1), np.median(fs, axis=1)
    doc["summary"] = {"basins_dpljax_at_least_as_good": int(np.sum(med_d <= med_s + 1e-6)),
                      "median_over_basins_dpljax": float(np.median(med_d)),
                      "median_over_basins_spotpy": float(np.median(med_s))}
    print(doc["summary"], flush=True)
    return doc


# ---------------------------------------------------------------- 3. speed

def _spotpy_worker(job):
    """One basin calibrated by spotpy + numba HBV in a worker process: (runs, wall s)."""
    from benchmarks import sceua_hbv as ref

    d64, lo, hi, seed, budget, ngs = job
    fn = lambda x: ref.objective_numba(x, *d64, WARM)
    fn(lo)  # numba compiles once per process, before the clock starts
    _, n, w = spotpy_sceua(fn, lo, hi, seed=seed, budget=budget, ngs=ngs, kstop=10**9,
                           pcento=0.0, peps=0.0)
    return n, w


def bench_speed(args) -> dict:
    """The 531-basin calibration as ``dpljax experiment=camels531_sceua`` runs it (all basins at
    once, ``train.devices`` host devices), against spotpy basin by basin, in one process on one
    machine: spotpy + numba HBV in one process (one core: what a spotpy user runs), the same in
    as many worker processes as there are devices (basins side by side: the whole machine),
    and spotpy + plain-NumPy HBV in one process."""
    import multiprocessing as mp

    from benchmarks import sceua_hbv as ref
    from benchmarks.scaling import compose
    from dpljax.calibrate.runner import run_calibration

    config = compose("camels531_sceua", [f"calibrate.max_evals={args.budget}", "calibrate.pcento=0",
                                         "calibrate.peps=0", f"calibrate.n_complexes={args.complexes}",
                                         f"train.devices={args.devices}", "train.progress=false",
                                         "train.checkpoint_minutes=1000"])
    doc = {"what": "model evaluations per second of SCE-UA on HBV (nmul=1, 13 + 2 routing parameters, "
                   "3288 days = 365 warm-up + WY2000-2008): dpljax's calibration of all 531 basins at "
                   "once (run_calibration, as `dpljax experiment=camels531_sceua` runs it, budget-only "
                   "stopping rule) vs spotpy's sceua basin by basin (numba HBV; plain NumPy HBV), same "
                   "complexes, one process on one machine",
           "budget_per_basin": args.budget, "complexes": args.complexes, "devices": args.devices,
           "config": config, **_meta(probe=True)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = run_calibration(config, Path(tmp) / "run", log=lambda m: print(m, flush=True))
        total = time.perf_counter() - t0
    dp = {"calibration_wall_s": s["calibration_wall_time_s"], "evals": s["n_evals_total"],
          "evals_per_s": s["evals_per_second"], "median_evals_per_basin": s["n_evals_per_basin_median"],
          "median_test_nse": s["median_nse"], "command_wall_s_incl_data_and_test": total,
          "note": "calibration_wall_s: from the first evaluation to the last, compilation included"}
    doc["dpljax"] = dp
    print("dpljax", dp, flush=True)
    data, ids = hbv_data("531")
    lo, hi = (np.asarray(v, np.float64) for v in dpljax_objective()[2:4])
    d64 = [tuple(np.asarray(a[b], np.float64) for a in data) for b in range(args.spotpy_basins)]
    # spotpy + numba, one process (one core), basin after basin
    fn0 = lambda x: ref.objective_numba(x, *d64[0], WARM)
    fn0(lo)
    xs = lo + np.random.default_rng(0).random((200, lo.size)) * (hi - lo)
    t0 = time.perf_counter()
    for x in xs:
        fn0(x)
    bare = len(xs) / (time.perf_counter() - t0)
    runs = wall = 0.0
    for b, d in enumerate(d64):
        n, w = _spotpy_worker((d, lo, hi, b + 1, args.spotpy_budget, args.complexes))
        runs, wall = runs + n, wall + w
    doc["spotpy_numba"] = {"basins": ids[:len(d64)], "model_runs": runs, "wall_s": wall,
                           "evals_per_s": runs / wall, "bare_model_evals_per_s": bare}
    # the same on every core: one worker process per device, basins side by side
    jobs = [(d, lo, hi, b + 1, args.spotpy_budget, args.complexes) for b, d in enumerate(d64)]
    with mp.get_context("spawn").Pool(args.devices) as pool:
        pool.map(_spotpy_worker, jobs[:args.devices])  # start the workers and compile numba
        t0 = time.perf_counter()
        out = pool.map(_spotpy_worker, jobs)
        wall_p = time.perf_counter() - t0
    runs_p = sum(n for n, _ in out)
    doc["spotpy_numba_processes"] = {"processes": args.devices, "model_runs": runs_p, "wall_s": wall_p,
                                     "evals_per_s": runs_p / wall_p}
    fnp = lambda x: ref.objective_python(x, *d64[0], WARM)
    _, n2, w2 = spotpy_sceua(fnp, lo, hi, seed=1, budget=args.numpy_budget, ngs=args.complexes,
                             kstop=10**9, pcento=0.0, peps=0.0)
    doc["spotpy_numpy"] = {"model_runs": n2, "wall_s": w2, "evals_per_s": n2 / w2}
    rate = dp["evals_per_s"]
    doc["ratios"] = {"vs_numba_one_process": rate / doc["spotpy_numba"]["evals_per_s"],
                     f"vs_numba_{args.devices}_processes": rate / doc["spotpy_numba_processes"]["evals_per_s"],
                     "vs_numpy": rate / doc["spotpy_numpy"]["evals_per_s"],
                     "vs_bare_numba_model_one_core": rate / bare}
    print(doc["ratios"], flush=True)
    return doc


def bench_full(args) -> dict:
    """One whole calibration of every basin at once, in chunks of loops (as a runner would
    checkpoint), wall time end to end."""
    import jax
    import jax.numpy as jnp

    from dpljax.calibrate import init, run

    data, ids = hbv_data("531" if args.basins == 531 else None,
                         replicate_to=None if args.basins == 531 else args.basins)
    B, p = len(ids), args.complexes
    obj, _, lo, hi, _ = dpljax_objective()
    doc = {"what": f"SCE-UA calibration of {B} basins at once, budget {args.budget}, HBV nmul=1, "
                   "rmse_combined on WY2000-2008 after a 365-day warm-up", "basins": B,
           "budget": args.budget, "complexes": p, **_meta(probe=False)}
    t0 = time.perf_counter()
    dd = tuple(jnp.asarray(a) for a in data)
    st = jax.jit(jax.vmap(lambda d, k: init(partial(obj, d), lo, hi, key=k, max_evals=args.budget,
                                            n_complexes=p, pcento=0.0, peps=0.0)))(
        dd, jax.random.split(jax.random.key(0), B))
    step = jax.jit(jax.vmap(lambda d, s, n: run(s, partial(obj, d), n), in_axes=(0, 0, None)))
    chunks = []
    while not bool(np.all(np.asarray(st.stop) != 0)):
        st = jax.block_until_ready(step(dd, st, args.loops))
        chunks.append((time.perf_counter() - t0, int(np.sum(st.n_evals))))
        print(chunks[-1], flush=True)
    wall = time.perf_counter() - t0
    doc.update(wall_s=wall, evals=int(np.sum(st.n_evals)), evals_per_s=int(np.sum(st.n_evals)) / wall,
               median_objective=float(np.median(st.f[:, 0])), chunks=chunks,
               waste_unbatched=float(1 - np.sum(st.n_evals) / np.sum(st.n_computed)))
    return doc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["functions", "hbv", "speed", "full"])
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--budget", type=int, default=10_000)
    ap.add_argument("--complexes", type=int, default=None,
                    help="p (default: 2 for speed, the experiment's; 10 otherwise)")
    ap.add_argument("--basins", type=int, default=531)
    ap.add_argument("--replicate", action="store_true", help="replicate the sample instead of reading the store")
    ap.add_argument("--loops", type=int, default=3)
    ap.add_argument("--devices", type=int, default=2, help="speed: train.devices of the dpljax calibration")
    ap.add_argument("--spotpy-basins", type=int, default=4, help="speed: basins spotpy calibrates")
    ap.add_argument("--spotpy-budget", type=int, default=3000)
    ap.add_argument("--numpy-budget", type=int, default=100)
    ap.add_argument("--rules", choices=["duan", "budget"], default="duan",
                    help="functions: Duan's stopping rules (kstop 10, pcento 0.1 %%, peps 1e-3) or the "
                         "budget alone (pcento = peps = 0: every run makes exactly --budget runs)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    if args.seeds is None:
        args.seeds = 50 if args.what == "functions" else 5
    if args.complexes is None:
        args.complexes = 2 if args.what == "speed" else 10
    if args.what == "speed":  # host devices exist only if asked for before JAX starts
        from dpljax.parallel import use_host_devices

        use_host_devices(args.devices)
    fn = {"functions": bench_functions, "hbv": bench_hbv, "speed": bench_speed, "full": bench_full}
    t0 = time.perf_counter()
    doc = fn[args.what](args)
    doc["wall_time_s"] = time.perf_counter() - t0
    _write(args.what + (f"_{args.tag}" if args.tag else ""), doc)


if __name__ == "__main__":
    main()
