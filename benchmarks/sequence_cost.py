"""The train step of camels671_temporal_1h against the sequence network's cell, stride and width.

    python -m benchmarks.sequence_cost          # -> benchmarks/results/sequence_cost.json

Most of the one-hour experiment's step is its LSTM (384 units, 7-day steps): the rest of the
step (HBV, the MLP, Adam) is what a 32-unit LSTM leaves. This times the jitted step (100 basins
x (365 warm-up, forward only, + 365) days, HBV with capillary rise, nmul=16, dynamic
beta/betaet/k0, MLP [512, 512], 2 host devices) for the LSTM and the GRU (``net.cell``) at
strides 7 and 14 and several widths, all compiled in one process and timed interleaved so that
all see the same load. What each costs in accuracy is a training question: see the variants
table in benchmarks/README.md.
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
OUT = HERE / "results" / "sequence_cost.json"

#: (name, cell, hidden, stride)
CASES = (("lstm384_s7", "lstm", 384, 7), ("lstm384_s14", "lstm", 384, 14), ("gru384_s7", "gru", 384, 7),
         ("gru384_s14", "gru", 384, 14), ("lstm256_s7", "lstm", 256, 7), ("lstm288_s7", "lstm", 288, 7),
         ("gru448_s14", "gru", 448, 14), ("lstm32_s7", "lstm", 32, 7))


def main(repeats: int = 7, cases=CASES) -> dict:
    from dpljax.parallel import use_host_devices

    use_host_devices(2)
    from flax import nnx

    from benchmarks.step_parts import adjusted_setup, finish, time_nets
    from benchmarks.throughput import N_ATTR
    from benchmarks.warmup_grad import _busy
    from dpljax.nets import LSTMMLP

    b, warm, win = 100, 365, 365
    arrays, space, dpl, tx, cfg = adjusted_setup(b, warm, win)
    out = {"what": "jitted train step of camels671_temporal_1h's set-up against net.cell, net.stride and net.hidden",
           "shape": f"{b} basins x ({warm} forward-only + {win}) days, HBV capillary, nmul=16, dynamic beta/betaet/k0, "
                    "sequence network + MLP [512, 512], dropout 0.5, Adam, RMSE-combined, 2 host devices",
           "repeats_each": repeats, "load_before": _busy(), "cases": {}}
    t_all = time.perf_counter()
    nets = {name: (LSTMMLP(3, N_ATTR, space.n_outputs, dynamic_columns=space.dynamic_columns, hidden=hidden,
                           dropout=0.5, stride=stride, mlp_hidden=(512, 512), cell=cell, rngs=nnx.Rngs(0)),
                   {"cell": cell, "hidden": hidden, "stride": stride})
            for name, cell, hidden, stride in cases}
    recs = time_nets(nets, dpl, tx, cfg, arrays, repeats)
    ref = recs[cases[0][0]]["median_s"]
    out["cases"] = {name: {**rec, "speed_over_first": ref / rec["median_s"]} for name, rec in recs.items()}
    print(json.dumps({k: (round(c["median_s"], 3), round(c["speed_over_first"], 2)) for k, c in out["cases"].items()}),
          flush=True)
    return finish(out, OUT, t_all, "probe", "SEQUENCE_COST_NOTE")


if __name__ == "__main__":
    main()
