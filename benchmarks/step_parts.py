"""The train step of the adjusted dHBV with net=lstm_mlp: dense raw output against RawParts.

    python -m benchmarks.step_parts            # -> benchmarks/results/step_parts.json

``net=lstm_mlp`` emits its static columns once per basin (an MLP) and its time-varying ones
per day (an LSTM). Handing them to the parameter space as the dense ``(B, T, n_outputs)``
array the network's ``__call__`` returns (static columns repeated along time) costs building
that array and its gradient; :class:`dpljax.params.RawParts` skips it (the library's path
since issue 15). Both are the same function: this times the jitted train step of
``camels671_temporal_hour_adj``'s set-up (100 basins x (365 warm-up, forward only, + 365)
days, HBV with capillary rise, nmul=16, dynamic beta/betaet/k0, LSTM in 7-day steps, Adam,
2 host devices) for LSTM-256 and LSTM-128, both paths compiled in one process and timed
interleaved, so that both see the same load; the first losses agree.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
OUT = HERE / "results" / "step_parts.json"


class DenseSource:
    """The network's dense ``(B, T, n_outputs)`` output, as the library read it before RawParts."""

    def __init__(self, graphdef):
        self.graphdef = graphdef

    def __call__(self, theta, batch, key=None, detach: int = 0):
        from flax import nnx

        return nnx.merge(self.graphdef, theta)(batch.x_dynamic, batch.x_static, key=key, detach=detach)


def adjusted_setup(b: int, warm: int, win: int):
    """``(arrays, space, dpl, tx, cfg)`` of the adjusted dHBV's train step (HBV with capillary
    rise, nmul=16, dynamic beta/betaet/k0, routing; Adam; warm-up forward only; 2 host
    devices) on the embedded sample's forcing tiled to ``b`` basins x ``warm + win`` days.
    Call after :func:`dpljax.parallel.use_host_devices`."""
    import jax.numpy as jnp
    import numpy as np
    import optax

    from benchmarks.throughput import _forcing_numpy
    from dpljax.data.dataset import Arrays
    from dpljax.dpl import DPL
    from dpljax.models import HBV
    from dpljax.models.routing import BOUNDS as RB
    from dpljax.params import ParameterSpace
    from dpljax.train import TrainConfig

    f, xd, xs, obs = _forcing_numpy(b, warm + win)
    model = HBV(capillary=True)
    forcing = {n: jnp.asarray(f[..., i]) for i, n in enumerate(model.forcing)}
    arrays = Arrays(forcing, jnp.asarray(xd), jnp.asarray(xs), jnp.asarray(obs), jnp.asarray(np.nanstd(obs, axis=1)))
    space = ParameterSpace(model.bounds, nmul=16, dynamic=("beta", "betaet", "k0"), routing_bounds=RB)
    dpl, tx = DPL(model, space), optax.adam(1e-3)
    cfg = TrainConfig(batch_basins=b, window=win, warmup=warm, progress=False, warmup_grad=False, devices=2)
    return arrays, space, dpl, tx, cfg


def main(repeats: int = 10) -> dict:
    import jax

    from dpljax.parallel import use_host_devices

    use_host_devices(2)
    import jax.numpy as jnp
    from flax import nnx

    from benchmarks.throughput import N_ATTR
    from benchmarks.warmup_grad import _busy
    from dpljax.losses import RMSECombined
    from dpljax.nets import LSTMMLP
    from dpljax.train import TrainState, make_train_step

    b, warm, win = 100, 365, 365
    arrays, space, dpl, tx, cfg = adjusted_setup(b, warm, win)
    out = {"what": "jitted train step, camels671_temporal_hour_adj set-up: raw output as the dense (B, T, n_outputs) "
                   "array vs dpljax.params.RawParts",
           "shape": f"{b} basins x ({warm} forward-only + {win}) days, HBV capillary, nmul=16, dynamic beta/betaet/k0, "
                    "LSTM stride 7 + MLP [256], dropout 0.5, Adam, RMSE-combined, 2 host devices",
           "repeats_each": repeats, "load_before": _busy(), "cases": {}}
    t_all = time.perf_counter()
    for hidden in (256, 128):
        net = LSTMMLP(3, N_ATTR, space.n_outputs, dynamic_columns=space.dynamic_columns, hidden=hidden, dropout=0.5,
                      stride=7, mlp_hidden=(256,), rngs=nnx.Rngs(0))
        graphdef, theta = nnx.split(net)
        runs = {}
        for name, source in (("dense", DenseSource(graphdef)), ("parts", graphdef)):
            step = make_train_step(dpl, source, tx, RMSECombined(), cfg)
            runs[name] = first_step(step, TrainState.create(jax.tree.map(jnp.copy, theta), tx), arrays)
        time_interleaved(runs, arrays, repeats)
        res = {k: step_record(r) for k, r in runs.items()}
        res["speedup_parts_over_dense"] = res["dense"]["median_s"] / res["parts"]["median_s"]
        out["cases"][f"lstm{hidden}"] = res
        print(hidden, json.dumps({k: (v["median_s"] if isinstance(v, dict) else v) for k, v in res.items()}), flush=True)
    return finish(out, OUT, t_all, "probe", "STEP_PARTS_NOTE")


def first_step(step, state, arrays) -> dict:
    """Compile and run a train step once: the record :func:`time_interleaved` times
    (``step``, ``state``, ``first_s`` = compile + first step, ``first_loss``, ``times``)."""
    import jax

    t0 = time.perf_counter()
    state, info = step(state, arrays, jax.random.key(0))
    jax.block_until_ready(info.loss)
    return {"step": step, "state": state, "first_s": time.perf_counter() - t0, "first_loss": float(info.loss),
            "times": []}


def time_nets(nets: dict, dpl, tx, cfg, arrays, repeats: int) -> dict:
    """``nets``: name -> (network, spec). Compiles each network's train step (RMSE-combined),
    then times them interleaved (:func:`time_interleaved`); name -> spec + :func:`step_record`."""
    import jax
    import numpy as np
    from flax import nnx

    from dpljax.losses import RMSECombined
    from dpljax.train import TrainState, make_train_step

    runs = {}
    for name, (net, spec) in nets.items():
        graphdef, theta = nnx.split(net)
        step = make_train_step(dpl, graphdef, tx, RMSECombined(), cfg)
        runs[name] = first_step(step, TrainState.create(theta, tx), arrays)
        runs[name]["spec"] = {**spec, "n_params": int(sum(np.size(x) for x in jax.tree.leaves(theta)))}
        print(name, "compiled", round(runs[name]["first_s"], 1), flush=True)
    time_interleaved(runs, arrays, repeats)  # one step of each case in turn
    return {name: {**r["spec"], **step_record(r)} for name, r in runs.items()}


def step_record(run: dict) -> dict:
    """A timed run's record: median and minimum seconds a step, the times, compile + first
    step, and the first loss."""
    import numpy as np

    return {"median_s": float(np.median(run["times"])), "min_s": float(np.min(run["times"])),
            "times_s": [round(t, 4) for t in run["times"]], "compile_and_first_s": run["first_s"],
            "first_loss": run["first_loss"]}


def time_interleaved(runs: dict, arrays, repeats: int) -> None:
    """``repeats`` rounds, each timing one step of every run in turn (so that all see the same
    load); the seconds go to each run's ``times``. A run with ``"arrays"`` of its own (another
    batch shape) steps on those instead of ``arrays``."""
    import jax

    for _ in range(repeats):
        for r in runs.values():
            t0 = time.perf_counter()
            r["state"], info = r["step"](r["state"], r.get("arrays", arrays), jax.random.key(0))
            jax.block_until_ready(info.loss)
            r["times"].append(time.perf_counter() - t0)


def finish(out: dict, path: Path, t_all: float, probe_key: str, note_env: str) -> dict:
    """Close a step benchmark's record: its wall time, the load and the machine's speed probe
    after it, the machine and commit, the note from ``$note_env``; written to ``path``."""
    from benchmarks.throughput import _git_commit, _machine, _probe
    from benchmarks.warmup_grad import _busy

    out["wall_s"] = time.perf_counter() - t_all
    out["load_after"] = _busy()
    out["machine"], out["git_commit"] = _machine(), _git_commit()
    out[probe_key] = _probe({})
    out["note"] = os.environ.get(note_env, "")
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
