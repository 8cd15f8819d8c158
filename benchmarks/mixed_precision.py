"""The train step of camels671_temporal_1h in float32 and with net.compute_dtype=bfloat16.

    python -m benchmarks.mixed_precision       # -> benchmarks/results/lstm_bf16.json

Mixed precision rounds the operands of the LSTM's matrix products (input layer, gates,
recurrence, head, forward and backward) to bfloat16 and sums in float32; the weights, state
and everything else stay float32. Whether that is faster depends on the hardware: CPUs with
AVX512-BF16 (AMD Zen 4, Intel Cooper Lake and later) or AMX multiply bfloat16 natively,
others convert. This times the jitted train step of camels671_temporal_1h's set-up (see
:func:`benchmarks.lstm_input_size.time_lstm_steps`) for LSTM-384 (the committed width) and
LSTM-512 in both precisions, compiled in one process and timed interleaved; the machine's CPU
flags are recorded beside the times.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
OUT = HERE / "results" / "lstm_bf16.json"
CASES = {f"h{h}_{dt or 'float32'}": {"hidden": h, "compute_dtype": dt}
         for h in (384, 512) for dt in (None, "bfloat16")}


def cpu_flags() -> list[str]:
    """The CPU's bfloat16 and AVX-512 feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if "bf16" in f or f.startswith("amx") or f in ("avx512f", "avx2"))


def main(repeats: int = 10) -> dict:
    from benchmarks.lstm_input_size import time_lstm_steps

    return time_lstm_steps(CASES, "h384_float32", "jitted train step of camels671_temporal_1h's set-up, "
                           "net.compute_dtype null (float32) vs bfloat16 (mixed precision)", OUT, repeats,
                           extra={"cpu_flags": cpu_flags()})


if __name__ == "__main__":
    main()
