"""Basin-days per second of camels671_temporal_1h's train step against its batch shape.

    python -m benchmarks.batch_shape            # -> benchmarks/results/batch_shape.json

The one-hour experiment trains LSTM-384 (7-day steps) + MLP [512, 512] on 100 basins x
(365 warm-up, forward only, + 365) days a step, split over 2 host devices. On a CPU its
step is the LSTM's matrix products at 50 rows a device, and HBV's loop of small kernels over
800 components a device: both may run more efficiently on more basins at once. This times the
jitted step for several ``batch_basins`` (each compiled in one process, timed interleaved so
all see the same load) and reports basin-days trained per second. Whether more basins per step
also buys accuracy per basin-day is a training question this does not answer.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
OUT = HERE / "results" / "batch_shape.json"


def main(batches=(50, 100, 200), repeats: int = 6, hidden: int = 384) -> dict:
    import jax

    from dpljax.parallel import use_host_devices

    use_host_devices(2)
    from flax import nnx

    from benchmarks.step_parts import adjusted_setup, finish, first_step, step_record, time_interleaved
    from benchmarks.throughput import N_ATTR
    from benchmarks.warmup_grad import _busy
    from dpljax.losses import RMSECombined
    from dpljax.nets import LSTMMLP
    from dpljax.train import TrainState, make_train_step

    warm, win = 365, 365
    out = {"what": "jitted train step of camels671_temporal_1h's set-up against batch_basins: seconds a step and "
                   "basin-days (of the 365-day window) trained per second",
           "shape": f"B basins x ({warm} forward-only + {win}) days, HBV capillary, nmul=16, dynamic beta/betaet/k0, "
                    f"LSTM-{hidden} stride 7 + MLP [512, 512], dropout 0.5, Adam, RMSE-combined, 2 host devices",
           "repeats_each": repeats, "load_before": _busy(), "cases": {}}
    t_all = time.perf_counter()
    runs = {}
    for b in batches:
        arrays, space, dpl, tx, cfg = adjusted_setup(b, warm, win)
        net = LSTMMLP(3, N_ATTR, space.n_outputs, dynamic_columns=space.dynamic_columns, hidden=hidden, dropout=0.5,
                      stride=7, mlp_hidden=(512, 512), rngs=nnx.Rngs(0))
        graphdef, theta = nnx.split(net)
        step = make_train_step(dpl, graphdef, tx, RMSECombined(), cfg)
        runs[b] = {**first_step(step, TrainState.create(theta, tx), arrays), "arrays": arrays}
        print(b, "compiled", round(runs[b]["first_s"], 1), flush=True)
    time_interleaved(runs, None, repeats)  # one step of each batch size in turn, each on its own arrays
    for b, r in runs.items():
        rec = step_record(r)
        out["cases"][str(b)] = {**rec, "basin_days_per_s": b * win / rec["median_s"]}
    ref = out["cases"]["100"]["basin_days_per_s"] if "100" in out["cases"] else None
    for c in out["cases"].values():
        c["throughput_over_b100"] = c["basin_days_per_s"] / ref if ref else None
    print(json.dumps({b: (round(c["median_s"], 3), round(c["throughput_over_b100"] or 0, 2))
                      for b, c in out["cases"].items()}), flush=True)
    return finish(out, OUT, t_all, "probe", "BATCH_SHAPE_NOTE")


if __name__ == "__main__":
    main()
