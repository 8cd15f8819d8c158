"""The train step of camels671_temporal_1h for LSTM widths and input-layer widths (net.input_size).

    python -m benchmarks.lstm_input_size       # -> benchmarks/results/lstm_input_size.json

The LSTM's input layer (linear + ReLU) feeds the gates through ``W_ih`` at every step; at the
reference width (``input_size = hidden``) that product is as large as the recurrence's own
``h @ W_hh``. This times the jitted train step of camels671_temporal_1h's set-up (100 basins x
(365 warm-up, forward only, + 365) days, the adjusted dHBV, net=lstm_mlp at stride 7 with
MLP [512, 512], dropout 0.5, Adam, 2 host devices) for each (hidden, input_size), all compiled
in one process and timed interleaved, so that every case sees the same load.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
OUT = HERE / "results" / "lstm_input_size.json"
CASES = ((384, None), (384, 128), (384, 64), (512, None), (512, 128), (512, 64))


def main(repeats: int = 10) -> dict:
    cases = {f"h{h}_in{w or h}": {"hidden": h, "input_size": w} for h, w in CASES}
    return time_lstm_steps(cases, "h384_in384", "jitted train step of camels671_temporal_1h's set-up for "
                           "(LSTM hidden, net.input_size)", OUT, repeats)


def time_lstm_steps(cases: dict, ref: str, what: str, out: Path, repeats: int = 10, extra: dict | None = None) -> dict:
    """Time the jitted train step of camels671_temporal_1h's set-up for each case (a name and
    the keywords of :class:`~dpljax.nets.LSTMMLP` it sets), all compiled in one process and
    timed interleaved; each median also relative to the case ``ref``. Written to ``out``,
    with the fields of ``extra``."""
    import jax

    from dpljax.parallel import use_host_devices

    use_host_devices(2)
    import numpy as np
    from flax import nnx

    from benchmarks.step_parts import adjusted_setup, finish, first_step, step_record, time_interleaved
    from benchmarks.throughput import N_ATTR, _probe
    from benchmarks.warmup_grad import _busy
    from dpljax.losses import RMSECombined
    from dpljax.nets import LSTMMLP
    from dpljax.train import TrainState, make_train_step

    b, warm, win = 100, 365, 365
    arrays, space, dpl, tx, cfg = adjusted_setup(b, warm, win)
    record = {"what": what,
              "shape": f"{b} basins x ({warm} forward-only + {win}) days, HBV capillary, nmul=16, dynamic "
                       "beta/betaet/k0, net=lstm_mlp stride 7 + MLP [512, 512], dropout 0.5, Adam, RMSE-combined, "
                       "2 host devices",
              "repeats_each": repeats, "load_before": _busy(), "probe_before": _probe({}), **(extra or {}),
              "cases": {}}
    t_all = time.perf_counter()
    runs = {}
    for name, kw in cases.items():
        net = LSTMMLP(3, N_ATTR, space.n_outputs, dynamic_columns=space.dynamic_columns, dropout=0.5,
                      stride=7, mlp_hidden=(512, 512), rngs=nnx.Rngs(0), **kw)
        graphdef, theta = nnx.split(net)
        n_params = sum(int(np.size(x)) for x in jax.tree.leaves(theta))
        step = make_train_step(dpl, graphdef, tx, RMSECombined(), cfg)
        run = first_step(step, TrainState.create(theta, tx), arrays)
        runs[name] = {**run, "n_params": n_params, "net": kw}
    time_interleaved(runs, arrays, repeats)
    ref_s = float(np.median(runs[ref]["times"]))
    for k, r in runs.items():
        rec = step_record(r)
        med = rec["median_s"]
        record["cases"][k] = {"net": r["net"], **rec, f"relative_to_{ref}": med / ref_s, "n_params": r["n_params"]}
        print(k, round(med, 3), round(med / ref_s, 3), flush=True)
    return finish(record, out, t_all, "probe_after", "BENCH_NOTE")


if __name__ == "__main__":
    main()
