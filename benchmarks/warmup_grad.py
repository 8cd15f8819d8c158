"""train.warmup_grad true vs false (issue 15, accuracy per hour): step time and accuracy.

    python -m benchmarks.warmup_grad steps      # train-step time, both settings, back to back
    python -m benchmarks.warmup_grad accuracy   # the sample experiment, several seeds, both settings
    python -m benchmarks.warmup_grad all

``steps``: the jitted train step (sampling, network, HBV nmul=16 with its adjoint, routing,
loss, Adam) at 100 basins x (365 warm-up + 365 window) days, for (i) the MLP g_A with static
parameters and (ii) the LSTM-256 g_z with dynamic beta and betaet (the
camels671_temporal_dynamic set-up), each compiled with warmup_grad true and false in one
process and timed interleaved (true, false, true, ...), so that both see the same load.
``accuracy``: ``experiment=sample`` (8 basins, 1500 steps) through the ``dpljax`` command for
several seeds, each with true and false; median test NSE and training wall time.
Results go to ``benchmarks/results/warmup_grad.json`` (merged: each part keeps the other's).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
OUT = HERE / "results" / "warmup_grad.json"


def _load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {}


def _save(part: str, value: dict) -> None:
    from benchmarks.throughput import _git_commit, _machine

    data = _load()
    data.update({"what": "train.warmup_grad true (backward through warm-up + window) vs false (warm-up "
                         "forward only, backward over the window): train-step time and accuracy",
                 "machine": _machine(), "git_commit": _git_commit()})
    data[part] = value
    OUT.write_text(json.dumps(data, indent=1) + "\n")


def _busy() -> dict:
    from benchmarks.throughput import _note_busy

    seen: dict = {}
    _note_busy(seen)
    return {"loadavg_1_5_15": list(os.getloadavg()), "other_processes_pct_cpu": seen}


def steps(repeats: int = 8) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from benchmarks.throughput import N_ATTR, NMUL, _forcing_numpy, _probe
    from dpljax.data.dataset import Arrays
    from dpljax.dpl import DPL
    from dpljax.losses import RMSECombined
    from dpljax.models import HBV
    from dpljax.models.routing import BOUNDS as RB
    from dpljax.nets import LSTM, MLP
    from dpljax.params import ParameterSpace
    from dpljax.train import TrainConfig, TrainState, make_train_step

    b, warm, win = 100, 365, 365
    f, xd, xs, obs = _forcing_numpy(b, warm + win)
    model = HBV()
    forcing = {n: jnp.asarray(f[..., i]) for i, n in enumerate(model.forcing)}
    arrays = Arrays(forcing, jnp.asarray(xd), jnp.asarray(xs), jnp.asarray(obs),
                    jnp.asarray(np.nanstd(obs, axis=1)))
    out = {"shape": f"{b} basins x ({warm} + {win}) days, nmul={NMUL}, Adam, RMSE-combined loss",
           "repeats_each": repeats, "load_before": _busy(), "cases": {}}
    t_all = time.perf_counter()
    for name, dynamic in (("mlp_static", ()), ("lstm256_dynamic_beta_betaet", ("beta", "betaet"))):
        space = ParameterSpace(model.bounds, nmul=NMUL, dynamic=dynamic, routing_bounds=RB)
        if dynamic:
            net = LSTM(3, N_ATTR, space.n_outputs, hidden=256, dropout=0.5, rngs=nnx.Rngs(0))
        else:
            net = MLP(3, N_ATTR, space.n_outputs, hidden=(256,), rngs=nnx.Rngs(0))
        dpl, tx = DPL(model, space), optax.adam(1e-3)
        graphdef, theta = nnx.split(net)
        runs = {}
        for wg in (True, False):
            cfg = TrainConfig(batch_basins=b, window=win, warmup=warm, progress=False, warmup_grad=wg)
            step = make_train_step(dpl, graphdef, tx, RMSECombined(), cfg)
            t0 = time.perf_counter()
            compiled = step.lower(TrainState.create(theta, tx), arrays, jax.random.key(0)).compile()
            compile_s = time.perf_counter() - t0
            mem = compiled.memory_analysis()
            runs[wg] = {"step": step, "state": TrainState.create(jax.tree.map(jnp.copy, theta), tx),
                        "compile_s": compile_s, "times": [], "losses": [],
                        "xla_temp_gib": mem.temp_size_in_bytes / 2**30}
        key = jax.random.key(0)
        for r in runs.values():  # first call of each (its compile) and one more, untimed
            for _ in range(2):
                r["state"], info = r["step"](r["state"], arrays, key)
                jax.block_until_ready(info.loss)
        for _ in range(repeats):
            for r in runs.values():
                t0 = time.perf_counter()
                r["state"], info = r["step"](r["state"], arrays, key)
                jax.block_until_ready(info.loss)
                r["times"].append(time.perf_counter() - t0)
                r["losses"].append(float(info.loss))
        res = {}
        for wg, r in runs.items():
            t = np.asarray(r["times"])
            res[f"warmup_grad_{str(wg).lower()}"] = {
                "median_s": float(np.median(t)), "min_s": float(t.min()), "max_s": float(t.max()),
                "times_s": [round(float(x), 4) for x in t], "compile_s": r["compile_s"],
                "xla_temp_gib": r["xla_temp_gib"]}
        # same batches, same start: the first losses agree (same forward); later ones drift apart
        res["first_timed_loss_true_false"] = [runs[True]["losses"][0], runs[False]["losses"][0]]
        res["ratio_false_over_true_median"] = (res["warmup_grad_false"]["median_s"]
                                               / res["warmup_grad_true"]["median_s"])
        out["cases"][name] = res
        print(name, json.dumps({k: (v["median_s"] if isinstance(v, dict) else v) for k, v in res.items()}),
              flush=True)
    out["wall_s"] = time.perf_counter() - t_all
    out["load_after"] = _busy()
    out["probe"] = _probe({})
    return out


def accuracy(seeds=(0, 1, 2, 3, 4), experiment: str = "sample", false_epochs: int | None = None) -> dict:
    """Both settings at the experiment's steps; with ``false_epochs``, also warmup_grad=false
    trained for that many epochs (about the wall time of ``true``'s: the equal-time reading)."""
    import numpy as np

    out = {"experiment": experiment, "command": f"dpljax experiment={experiment} train.seed=S "
           "train.warmup_grad=X train.progress=false", "load_before": _busy(), "runs": []}
    variants = [("true", None), ("false", None)] + ([("false", false_epochs)] if false_epochs else [])
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for wg, epochs in variants:  # interleaved, so that all see the same load
                run_dir = Path(tmp) / f"s{seed}_{wg}_{epochs}"
                extra = [f"train.epochs={epochs}"] if epochs else []
                t0 = time.perf_counter()
                p = subprocess.run([str(Path(sys.executable).parent / "dpljax"), f"experiment={experiment}",
                                    f"train.seed={seed}", f"train.warmup_grad={wg}", "train.progress=false",
                                    *extra, f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if p.returncode != 0:
                    raise RuntimeError(p.stderr[-2000:])
                s = json.loads((run_dir / "summary.json").read_text())
                rec = {"seed": seed, "warmup_grad": wg == "true", "epochs": epochs or "experiment's",
                       "median_test_nse": s["median_nse"], "median_test_kge": s.get("median_kge"),
                       "train_wall_time_s": s["train_wall_time_s"], "command_wall_s": wall, "steps": s["steps"]}
                out["runs"].append(rec)
                print(json.dumps(rec), flush=True)
    for wg, epochs in variants:
        rs = [r for r in out["runs"] if r["warmup_grad"] is (wg == "true") and r["epochs"] == (epochs or "experiment's")]
        out[f"warmup_grad_{wg}" + (f"_{epochs}_epochs" if epochs else "")] = {
            "median_of_median_test_nse": float(np.median([r["median_test_nse"] for r in rs])),
            "mean_of_median_test_nse": float(np.mean([r["median_test_nse"] for r in rs])),
            "median_train_wall_time_s": float(np.median([r["train_wall_time_s"] for r in rs]))}
    out["wall_s"] = time.perf_counter() - t_all
    out["load_after"] = _busy()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=("steps", "accuracy", "all"))
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--experiment", default="sample")
    ap.add_argument("--false-epochs", type=int, default=None,
                    help="accuracy: also warmup_grad=false for this many epochs (equal wall time)")
    args = ap.parse_args(argv)
    if args.part in ("steps", "all"):
        _save("steps", steps(args.repeats))
    if args.part in ("accuracy", "all"):
        _save(f"accuracy_{args.experiment}", accuracy(tuple(range(args.seeds)), args.experiment, args.false_epochs))


if __name__ == "__main__":
    main()
