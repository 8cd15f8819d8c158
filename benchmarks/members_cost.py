"""The train step of an ensemble in one program (``net.members``) against one larger network.

    python -m benchmarks.members_cost          # -> benchmarks/results/members_cost.json

An ensemble is worth its cost only against what the same compute buys otherwise: a wider
network. This times the jitted step (100 basins x (365 warm-up, forward only, + 365) days, HBV
with capillary rise, nmul=16, dynamic beta/betaet/k0, LSTM at stride 7 + MLP, dropout 0.5,
2 host devices) of the two set-ups the issue's targets use, each against ensembles of smaller
LSTMs: camels671_temporal_1h (LSTM-384, MLP [512, 512]) and camels531_pub_dynamic_15y
(LSTM-256, MLP [256]). All cases are compiled in one process and timed interleaved, so that all
see the same load. Every member runs its own HBV (M x 100 basins), so the model's share of the
step grows with M. What the ensembles buy in accuracy is a training question: see
benchmarks/README.md.
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
OUT = HERE / "results" / "members_cost.json"

#: (name, members, hidden, mlp_hidden): the first of each set-up is its reference
CASES = (("t1h_lstm384", 1, 384, (512, 512)), ("t1h_2x_lstm256", 2, 256, (512, 512)),
         ("t1h_4x_lstm128", 4, 128, (512, 512)),
         ("pub_lstm256", 1, 256, (256,)), ("pub_2x_lstm128", 2, 128, (256,)), ("pub_4x_lstm64", 4, 64, (256,)))


def main(repeats: int = 7, cases=CASES) -> dict:
    from dpljax.parallel import use_host_devices

    use_host_devices(2)
    from flax import nnx

    from benchmarks.step_parts import adjusted_setup, finish, time_nets
    from benchmarks.throughput import N_ATTR
    from benchmarks.warmup_grad import _busy
    from dpljax.nets import LSTMMLP, Members

    b, warm, win = 100, 365, 365
    arrays, space, dpl, tx, cfg = adjusted_setup(b, warm, win)
    out = {"what": "jitted train step: net.members ensembles of LSTMs against one wider LSTM, in the set-ups of "
                   "camels671_temporal_1h (t1h_*) and camels531_pub_dynamic_15y (pub_*)",
           "shape": f"{b} basins x ({warm} forward-only + {win}) days, HBV capillary, nmul=16 per member, dynamic "
                    "beta/betaet/k0, LSTM stride 7 + MLP, dropout 0.5, Adam, RMSE-combined, 2 host devices",
           "repeats_each": repeats, "load_before": _busy(), "cases": {}}
    t_all = time.perf_counter()
    nets = {}
    for name, members, hidden, mlp in cases:
        def make(rngs, hidden=hidden, mlp=mlp):
            return LSTMMLP(3, N_ATTR, space.n_outputs, dynamic_columns=space.dynamic_columns, hidden=hidden,
                           dropout=0.5, stride=7, mlp_hidden=mlp, rngs=rngs)

        nets[name] = (make(nnx.Rngs(0)) if members == 1 else Members(make, members, rngs=nnx.Rngs(0)),
                      {"members": members, "hidden": hidden, "mlp_hidden": list(mlp)})
    recs = time_nets(nets, dpl, tx, cfg, arrays, repeats)
    for name, rec in recs.items():  # against the first case of its set-up (t1h_ or pub_)
        ref = next(n for n, *_ in cases if n.split("_")[0] == name.split("_")[0])
        out["cases"][name] = {**rec, "time_over_reference": rec["median_s"] / recs[ref]["median_s"]}
    print(json.dumps({k: (round(c["median_s"], 3), round(c["time_over_reference"], 2))
                      for k, c in out["cases"].items()}), flush=True)
    return finish(out, OUT, t_all, "probe", "MEMBERS_COST_NOTE")


if __name__ == "__main__":
    main()
