"""Throughput of dpljax against plain PyTorch (and dmg's HBV when installed), in one run.

    python -m benchmarks.throughput            # everything (what `make bench` runs)
    python -m benchmarks.throughput --quick    # 100 basins x 730 days only, fewer repeats
    python -m benchmarks.throughput --only 'hbv/jax' --shapes 671x730   # a subset
    python -m benchmarks.throughput --device gpu   # on a GPU (the default when JAX has one)

Every case runs in its own subprocess (a fresh peak-memory counter, its own XLA flags, and a
crash or an out-of-memory kill costs one case, not the run). Each case reports compile time
(JAX) or first-step time (PyTorch), the median of at least ``--repeats`` steady-state steps
after two warm-up steps, component-days per second and peak memory. Results go to
``benchmarks/results/throughput.json`` (plus ``optimisations.json``) and the tables of
``benchmarks/README.md`` are rendered from that JSON by :func:`render_readme`.

On a GPU (``--device gpu``; ``auto``, the default, picks it when ``nvidia-smi`` is there and JAX's
default backend is a GPU) the JAX cases run on it and the PyTorch cases on CUDA, with shorter
budgets and the GPU's own skips (:func:`_on_gpu`); results go to
``benchmarks/results/throughput_gpu.json`` and to their own section of the README.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # `python benchmarks/throughput.py` as well as `-m`
    sys.path.insert(0, str(ROOT))
RESULTS = HERE / "results"
NMUL = 16
WARMUP_DAYS = 365
SHAPES = [(100, 730), (671, 730), (100, 5478), (671, 5478)]
N_ATTR = 35
# Defaults of the options that differ between the two kinds of run. A GPU run must fit one
# device call (10 minutes with the machine's start): short budgets, a time limit for the run.
DEFAULTS = {
    "cpu": {"budget": 60.0, "timeout": 900.0, "max_wall": None, "out": RESULTS / "throughput.json"},
    "gpu": {"budget": 10.0, "timeout": 120.0, "max_wall": 450.0, "out": RESULTS / "throughput_gpu.json"},
}
MIN_CASE_S = 15.0  # under --max-wall, a case is not started with less time than this left


# ============================================================================ helpers (worker)
def _proc_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:  # Linux: "5" resets VmHWM (the peak resident set) to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _mem_start(torch_dev=None) -> int:
    """Start a peak-memory measurement: reset the peak resident set (and PyTorch's CUDA peak
    when ``torch_dev`` is a CUDA device); returns the resident set to measure the rise from."""
    _reset_peak()
    if torch_dev is not None and torch_dev.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(torch_dev)
    return _proc_kib("VmRSS")


def _mem_peak(rss0: int, torch_dev=None) -> dict:
    """Peak memory since :func:`_mem_start`: ``peak_rss_gib``, the rise of the process's peak
    resident set, and on a GPU ``peak_gpu_gib``. PyTorch (``torch_dev`` given): its allocator's
    peak since the start. JAX (``torch_dev`` None): the device's ``peak_bytes_in_use``, which
    XLA never resets, so it is the peak since the worker process started."""
    out = {"peak_rss_gib": (_proc_kib("VmHWM") - rss0) / 2**20}
    if torch_dev is not None:
        if torch_dev.type == "cuda":
            import torch

            out["peak_gpu_gib"] = torch.cuda.max_memory_allocated(torch_dev) / 2**30
        return out
    import jax

    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        out["peak_gpu_gib"] = stats["peak_bytes_in_use"] / 2**30
    return out


def _timeit(fn, *, repeats: int, budget_s: float, min_repeats: int, warmups: int = 2) -> list[float]:
    """``warmups`` untimed calls, then ``repeats`` timed calls; fewer (never under
    ``min_repeats``) when ``budget_s`` of timed calls would be exceeded."""
    for _ in range(warmups):
        fn()
    times: list[float] = []
    t_start = time.perf_counter()
    while len(times) < repeats:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        spent = time.perf_counter() - t_start
        if len(times) >= min_repeats and spent + times[-1] > budget_s:
            break
    return times


def _stats(times: list[float]) -> dict:
    import numpy as np

    t = np.asarray(times)
    return {"median_s": float(np.median(t)), "min_s": float(t.min()),
            "iqr_s": float(np.percentile(t, 75) - np.percentile(t, 25)), "n": int(t.size)}


def _forcing_numpy(b: int, t: int, seed: int = 0):
    """Real forcing of the embedded CAMELS sample, tiled to ``b`` basins with random time
    offsets: ``forcing (b, t, 3)``, ``x_dyn (b, t, 3)`` normalised, ``x_static (b, 35)``,
    ``obs (b, t)`` (NaN where missing)."""
    import numpy as np

    from dpljax.data import load_sample

    ds = load_sample()
    prcp = ds["prcp"].values.astype(np.float32)
    tmean = ((ds["tmax"] + ds["tmin"]) / 2).values.astype(np.float32)
    pet = ds["pet"].values.astype(np.float32)
    obs = ds["streamflow"].values.astype(np.float32)
    n, n_t = prcp.shape
    rng = np.random.default_rng(seed)
    reps = -(-t // n_t) + 1
    tile = lambda a: np.concatenate([a] * reps, axis=1)
    prcp, tmean, pet, obs = map(tile, (prcp, tmean, pet, obs))
    src = rng.integers(0, n, b)
    off = rng.integers(0, n_t, b)
    take = lambda a: np.stack([a[i, o:o + t] for i, o in zip(src, off)])
    f = np.stack([take(prcp), take(tmean), take(pet)], -1)
    xd = np.stack([np.log10(np.sqrt(f[..., 0]) + 0.1), f[..., 1], f[..., 2]], -1)
    xd = (xd - xd.mean((0, 1))) / (xd.std((0, 1)) + 1e-6)
    xs = rng.normal(size=(b, N_ATTR)).astype(np.float32)
    return f.astype(np.float32), xd.astype(np.float32), xs, take(obs)


# ============================================================================ JAX cases
def _jax_hbv(case: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dpljax.models import HBV, hbv
    from dpljax.models.hbv import Forcing
    from dpljax.models.hbv_adjoint import _step_vjp
    from dpljax.params import ParameterSpace

    b, t, fw = case["B"], case["T"], case["fw"]
    f, _, _, obs = _forcing_numpy(b, t)
    obs = np.nan_to_num(obs, nan=1.0)
    n_dev = case.get("devices", 1)
    b_pad = -(-b // n_dev) * n_dev  # pad basins to a multiple of the devices (masked out)
    mask = np.zeros((b_pad, 1), np.float32)
    mask[:b] = 1.0
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], b_pad - b, 0)]) if b_pad > b else a
    f, obs = pad(f), pad(obs)
    rng = np.random.default_rng(1)
    space = ParameterSpace(hbv.BOUNDS, nmul=NMUL)
    raw = rng.normal(size=(b_pad, space.n_outputs)).astype(np.float32)
    args = [jnp.asarray(a) for a in (raw, f[..., 0], f[..., 1], f[..., 2], obs, mask)]
    if n_dev > 1:
        from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

        mesh = jax.make_mesh((n_dev,), ("basin",), axis_types=(AxisType.Auto,))
        args = [jax.device_put(a, NamedSharding(mesh, P("basin"))) for a in args]

    if fw in ("jax", "jax_sharded"):
        model = HBV()

        def q_of(p, prcp, tmean, pet):
            return model.simulate(p, Forcing(prcp, tmean, pet))[0]["q"]
    elif fw == "jax_user_vmap":  # what a user writes: vmap the public one-basin `run`
        def q_of(p, prcp, tmean, pet):
            one = lambda pp, a, b_, c: hbv.run(pp, a, b_, c).q
            per_comp = jax.vmap(one, in_axes=(-1, None, None, None))
            return jax.vmap(per_comp)(p, prcp, tmean, pet).mean(axis=1)
    else:  # the straightforward version: vmap(vmap(scan(step))), plain autodiff
        remat = fw == "jax_naive_remat"
        unroll = int(case.get("unroll", 1))

        def one(pp, prcp, tmean, pet):
            def body(s, x):
                return hbv.step(hbv.HBVParams(**pp), s, x)

            body = jax.checkpoint(body) if remat else body
            s0 = hbv.initial_state(jnp.zeros((), prcp.dtype))
            return jax.lax.scan(body, s0, Forcing(prcp, tmean, pet), unroll=unroll)[1].q

        def q_of(p, prcp, tmean, pet):
            per_comp = jax.vmap(one, in_axes=(-1, None, None, None))
            return jax.vmap(per_comp)(p, prcp, tmean, pet).mean(axis=1)

    def loss(raw, prcp, tmean, pet, obs, mask):
        p, _ = space.to_physical(raw)
        q = q_of(p, prcp, tmean, pet)
        return jnp.sqrt(jnp.sum(mask * (q - obs) ** 2) / (mask.sum() * q.shape[1]))

    out = {}
    if case.get("interleave_user_vmap"):
        # HBV.simulate and a user's vmap(vmap(hbv.run)), compiled side by side and timed
        # alternately in one process, so that load changes hit both alike.
        def user_q(p, prcp, tmean, pet):
            one = lambda pp, a, b_, c: hbv.run(pp, a, b_, c).q
            return jax.vmap(jax.vmap(one, in_axes=(-1, None, None, None)))(p, prcp, tmean, pet).mean(axis=1)

        def user_loss(raw, prcp, tmean, pet, obs, mask):
            p, _ = space.to_physical(raw)
            q = user_q(p, prcp, tmean, pet)
            return jnp.sqrt(jnp.sum(mask * (q - obs) ** 2) / (mask.sum() * q.shape[1]))

        fa = jax.jit(jax.value_and_grad(loss)).lower(*args).compile()
        fb = jax.jit(jax.value_and_grad(user_loss)).lower(*args).compile()
        ta, tb = [], []
        for fn_, acc in ((fa, ta), (fb, tb), (fa, None), (fb, None)):
            jax.block_until_ready(fn_(*args))
        for _ in range(case["repeats"]):
            for fn_, acc in ((fa, ta), (fb, tb)):
                t0 = time.perf_counter()
                jax.block_until_ready(fn_(*args))
                acc.append(time.perf_counter() - t0)
        out["interleaved"] = {"simulate": _stats(ta), "user_vmap": _stats(tb)}
    for mode, fn in (("fwd", loss), ("fwd_bwd", jax.value_and_grad(loss))):
        if mode == "fwd" and not case.get("with_fwd", True):
            continue
        jitted = jax.jit(fn)
        rss0 = _mem_start()
        t0 = time.perf_counter()
        compiled = jitted.lower(*args).compile()
        compile_s = time.perf_counter() - t0
        times = _timeit(lambda: jax.block_until_ready(compiled(*args)), repeats=case["repeats"],
                        budget_s=case["budget_s"], min_repeats=case["min_repeats"])
        mem = compiled.memory_analysis()
        out[mode] = {"compile_s": compile_s, **_stats(times), **_mem_peak(rss0),
                     "xla_buffers_gib": (mem.temp_size_in_bytes + mem.argument_size_in_bytes
                                         + mem.output_size_in_bytes) / 2**30}
    return out


def _jax_step(case: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from dpljax.data.dataset import Arrays
    from dpljax.dpl import DPL
    from dpljax.losses import RMSECombined
    from dpljax.models import HBV
    from dpljax.models.routing import BOUNDS as RB
    from dpljax.nets import LSTM, MLP
    from dpljax.parallel import replicate
    from dpljax.params import ParameterSpace
    from dpljax.train import TrainConfig, make_train_step

    b, t, net_name = case["B"], case["T"], case["net"]
    f, xd, xs, obs = _forcing_numpy(b, t)
    model = HBV()
    dynamic = ("beta", "betaet") if net_name.startswith("lstm") else ()
    space = ParameterSpace(model.bounds, nmul=NMUL, dynamic=dynamic, routing_bounds=RB)
    if net_name == "mlp":
        net = MLP(3, N_ATTR, space.n_outputs, hidden=(256,), rngs=nnx.Rngs(0))
    else:
        net = LSTM(3, N_ATTR, space.n_outputs, hidden=case["hidden"], dropout=0.5, rngs=nnx.Rngs(0))
    dpl = DPL(model, space)
    tx = optax.adam(1e-3)
    n_dev = case.get("devices", 1)  # train.devices: the batch's basins split over host devices
    cfg = TrainConfig(batch_basins=b, window=t - WARMUP_DAYS, warmup=WARMUP_DAYS, progress=False,
                      devices=n_dev)
    graphdef, state = nnx.split(net)
    opt_state = tx.init(state)
    forcing = {n: jnp.asarray(f[..., i]) for i, n in enumerate(model.forcing)}
    arrays = Arrays(forcing, jnp.asarray(xd), jnp.asarray(xs), jnp.asarray(obs),
                    jnp.asarray(np.nanstd(obs, axis=1)))
    arrays, state, opt_state = replicate((arrays, state, opt_state), n_dev)  # as fit does
    key = jax.random.key(0)
    step = make_train_step(dpl, graphdef, tx, RMSECombined(), cfg)
    rss0 = _mem_start()
    t0 = time.perf_counter()
    lowered = step.lower(state, opt_state, 0, arrays, key)
    trace_s = time.perf_counter() - t0
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    mem = compiled.memory_analysis()
    holder = {"s": state, "o": opt_state, "i": 0}

    def one():
        holder["s"], holder["o"], loss, ok, _ = step(holder["s"], holder["o"], holder["i"], arrays, key)
        holder["i"] += 1
        jax.block_until_ready(loss)

    t0 = time.perf_counter()
    one()  # the jitted function's own first call (its compile + one step)
    first_call_s = time.perf_counter() - t0
    times = _timeit(one, repeats=case["repeats"], budget_s=case["budget_s"],
                    min_repeats=case["min_repeats"])
    return {"fwd_bwd_update": {
        "trace_s": trace_s, "compile_s": compile_s, "first_call_s": first_call_s, **_stats(times),
        "recompiles_after_first": int(step._cache_size()) - 1, **_mem_peak(rss0),
        "xla_buffers_gib": (mem.temp_size_in_bytes + mem.argument_size_in_bytes
                            + mem.output_size_in_bytes) / 2**30,
        "xla_flops_loop_bodies_once": float(cost.get("flops", 0.0)),
        "xla_bytes_loop_bodies_once": float(cost.get("bytes accessed", 0.0))}}


def _jax_lstm(case: dict) -> dict:
    """The g_z LSTM alone (forward + backward of the sum of its outputs): achieved GFLOP/s."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from dpljax.nets import LSTM, lstm as lstm_mod

    if case["fw"] == "jax_autodiff":  # the reference: plain autodiff of the scan
        def plain(gates_x, w_hh):
            z = jnp.zeros(gates_x.shape[1:2] + (w_hh.shape[0],), gates_x.dtype)
            (h_, c_), (hs, _, _) = jax.lax.scan(lambda cr, g: lstm_mod._cell(w_hh, cr, g), (z, z), gates_x)
            return (h_, c_), hs

        lstm_mod.lstm_recurrence = plain
    b, t, h = case["B"], case["T"], case["hidden"]
    n_out = 13 * NMUL + 2
    net = LSTM(3, N_ATTR, n_out, hidden=h, dropout=0.0, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(net)
    rng = np.random.default_rng(0)
    xd = jnp.asarray(rng.normal(size=(b, t, 3)).astype(np.float32))
    xs = jnp.asarray(rng.normal(size=(b, N_ATTR)).astype(np.float32))

    def loss(st):
        return jnp.mean(nnx.merge(graphdef, st)(xd, xs) ** 2)

    g = jax.jit(jax.grad(loss))
    t0 = time.perf_counter()
    compiled = g.lower(state).compile()
    compile_s = time.perf_counter() - t0
    times = _timeit(lambda: jax.block_until_ready(compiled(state)), repeats=case["repeats"],
                    budget_s=case["budget_s"], min_repeats=case["min_repeats"])
    return {"fwd_bwd": {"compile_s": compile_s, **_stats(times)}}


# ============================================================================ PyTorch cases
def _torch_setup(case: dict | None = None):
    """Threads: the case's ``torch_threads`` (the plan gives each baseline its faster setting:
    1 for the elementwise-bound HBV loops, PyTorch's default for the matmul-bound LSTM; on CUDA
    they only set the host side's threads)."""
    import torch

    torch.manual_seed(0)
    if case and case.get("torch_threads"):
        torch.set_num_threads(int(case["torch_threads"]))
    return torch


def _torch_device(torch, case: dict):
    """The case's device (``torch_device``: "cpu" unless the plan says "cuda") and a function
    that waits for the work queued on it: every timed PyTorch call ends with it, so that CUDA
    timings are of finished work, not of kernel launches."""
    dev = torch.device(case.get("torch_device", "cpu"))
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    return dev, sync


def _time_torch(fn, case: dict, dev) -> dict:
    """A PyTorch case's measurement of ``fn`` (which ends by waiting for its device): the first
    call, then one warm-up and the timed calls, and the peak memory over all of them."""
    rss0 = _mem_start(dev)
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = _timeit(fn, repeats=case["repeats"], budget_s=case["budget_s"],
                    min_repeats=case["min_repeats"], warmups=1)
    return {"first_step_s": first, **_stats(times), **_mem_peak(rss0, dev)}


def _torch_hbv(case: dict) -> dict:
    torch = _torch_setup(case)
    import numpy as np

    from benchmarks import torch_ref

    b, t = case["B"], case["T"]
    dev, sync = _torch_device(torch, case)
    f, _, _, obs = _forcing_numpy(b, t)
    f = torch.from_numpy(np.ascontiguousarray(f.transpose(1, 0, 2))).to(dev)
    obs = torch.from_numpy(np.nan_to_num(obs, nan=1.0).T.copy()).to(dev)
    raw = torch.from_numpy(np.random.default_rng(1).normal(size=(b, 13 * NMUL)).astype(np.float32))
    raw = raw.to(dev).requires_grad_(True)

    def fwd():
        with torch.no_grad():
            torch_ref.hbv_loss(raw, f, obs, NMUL)
        sync()

    def fwd_bwd():
        raw.grad = None
        torch_ref.hbv_loss(raw, f, obs, NMUL).backward()
        sync()

    out = {}
    for mode, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
        if mode == "fwd" and not case.get("with_fwd", True):
            continue
        out[mode] = _time_torch(fn, case, dev)
    return out


def _dmg_hbv(case: dict) -> dict:
    """dmg's HBV (the ``hydrodl2`` package dmg 1.5 runs its HBV from), used as a black box."""
    torch = _torch_setup(case)
    import numpy as np
    from hydrodl2.models.hbv.hbv import Hbv

    b, t = case["B"], case["T"]
    f, _, _, obs = _forcing_numpy(b, t)
    x = torch.from_numpy(np.ascontiguousarray(f.transpose(1, 0, 2)))
    obs = torch.from_numpy(np.nan_to_num(obs, nan=1.0).T.copy())
    model = Hbv({"nmul": NMUL, "warmup": 0, "warmup_states": False, "routing": True,
                 "dynamic_params": {"Hbv": []}}, device=torch.device("cpu"))
    n_par = model.learnable_param_count
    raw = torch.from_numpy(np.random.default_rng(1).normal(size=(1, b, n_par)).astype(np.float32))
    raw.requires_grad_(True)

    def fwd_bwd():
        raw.grad = None
        out = model({"x_phy": x}, raw.expand(t, -1, -1))
        q = out["streamflow"].reshape(t, b)
        torch.sqrt(((q - obs) ** 2).mean()).backward()

    return {"fwd_bwd": _time_torch(fwd_bwd, case, torch.device("cpu"))}


def _torch_step(case: dict) -> dict:
    torch = _torch_setup(case)
    import numpy as np

    from benchmarks import torch_ref

    b, t, net_name = case["B"], case["T"], case["net"]
    dev, sync = _torch_device(torch, case)
    f, xd, xs, obs = _forcing_numpy(b, t)
    n_out = 13 * NMUL + 2
    if net_name == "mlp":
        net, dynamic = torch_ref.MLP(N_ATTR, n_out, 256), ()
    else:
        net, dynamic = torch_ref.LSTMNet(3, N_ATTR, n_out, case["hidden"]), ("beta", "betaet")
    net.to(dev).train()
    step = torch_ref.make_step(net, NMUL, dynamic, WARMUP_DAYS)
    tm = lambda a: torch.from_numpy(np.ascontiguousarray(np.swapaxes(a, 0, 1))).to(dev)
    data = (tm(xd), torch.from_numpy(xs).to(dev), tm(f), tm(obs))

    def run():
        step(*data)
        sync()

    return {"fwd_bwd_update": _time_torch(run, case, dev)}


def _torch_lstm(case: dict) -> dict:
    torch = _torch_setup(case)

    from benchmarks import torch_ref

    b, t, h = case["B"], case["T"], case["hidden"]
    dev, sync = _torch_device(torch, case)
    net = torch_ref.LSTMNet(3, N_ATTR, 13 * NMUL + 2, h, dropout=0.0).to(dev)
    xd = torch.randn(t, b, 3).to(dev)
    xs = torch.randn(b, N_ATTR).to(dev)

    def fn():
        net.zero_grad(set_to_none=True)
        (net(xd, xs) ** 2).mean().backward()
        sync()

    return {"fwd_bwd": _time_torch(fn, case, dev)}


# ============================================================================ machine probes
def _probe(case: dict) -> dict:
    """Matmul GFLOP/s, memory bandwidth and elementwise GFLOP/s of this machine (JAX, f32),
    and the operation counts of one HBV day: in the source and in the compiled program.
    On a GPU the sizes grow to fill it (and the matmul is also timed at bfloat16 and at
    float32 with ``Precision.HIGHEST``: the default lets XLA use TF32)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    gpu = jax.default_backend() != "cpu"
    out = {}
    n = 8192 if gpu else 2048

    def matmul_gflops(x, **kw):
        mm = jax.jit(lambda v: jnp.matmul(v, v, **kw))
        ts = _timeit(lambda: jax.block_until_ready(mm(x)), repeats=10, budget_s=20, min_repeats=5)
        return 2 * n**3 / np.median(ts) / 1e9

    a = jnp.ones((n, n), jnp.float32)
    out["matmul_gflops"] = matmul_gflops(a)
    if gpu:
        out["matmul_n"] = n
        out["matmul_f32_highest_gflops"] = matmul_gflops(a, precision=jax.lax.Precision.HIGHEST)
        out["matmul_bf16_gflops"] = matmul_gflops(a.astype(jnp.bfloat16))
    # Stream a large buffer in place (donated): a fresh output buffer each call would measure
    # the kernel's page faults on new memory instead (that figure is reported too).
    stream_mib = 1024 if gpu else 256
    hold = {"x": jnp.ones((stream_mib // 4 * 2**20,), jnp.float32)}
    cp = jax.jit(lambda v: v * 0.5 + 1.0, donate_argnums=0)

    def stream():
        hold["x"] = cp(hold["x"])
        jax.block_until_ready(hold["x"])

    ts = _timeit(stream, repeats=10, budget_s=20, min_repeats=5)
    out["mem_bandwidth_gbs"] = 2 * hold["x"].size * 4 / np.median(ts) / 1e9  # read + write
    if gpu:
        out["stream_mib"] = stream_mib
    fresh = jax.jit(lambda v: v * 0.5 + 1.0)
    x = hold["x"]
    ts = _timeit(lambda: jax.block_until_ready(fresh(x)), repeats=10, budget_s=20, min_repeats=5)
    out["fresh_buffer_gbs"] = 2 * x.size * 4 / np.median(ts) / 1e9
    # A chain of dependent multiply-adds, fused into one kernel: on the CPU 1 MiB (in cache)
    # and 64 of them, on a GPU 64 MiB and 256 (enough arithmetic per byte to be compute-bound).
    n_el, n_fma = (2**24, 256) if gpu else (2**18, 64)
    y = jnp.ones((n_el,), jnp.float32)

    def chain(v):
        for _ in range(n_fma):
            v = v * 0.999 + 0.001
        return v

    ch = jax.jit(chain)
    ts = _timeit(lambda: jax.block_until_ready(ch(y)), repeats=20, budget_s=20, min_repeats=5)
    out["elementwise_gflops"] = 2 * n_fma * y.size / np.median(ts) / 1e9
    if gpu:
        out["elementwise_size_fmas"] = [n_el, n_fma]
    res = {"machine": out}
    try:  # parses XLA's compiled text, whose form differs between backends and versions
        res["hbv_ops"] = _hbv_op_counts()
    except Exception as e:  # noqa: BLE001 - a probe that cannot parse records why, not crashes
        res["hbv_ops"] = None
        res["hbv_ops_error"] = f"{type(e).__name__}: {e}"
    return res


_ARITH = {"add", "sub", "mul", "div", "max", "min", "pow", "exp", "log", "neg", "gt", "lt", "ge",
          "eq", "select_n", "logistic", "tanh", "integer_pow", "sqrt", "abs", "clamp",
          "subtract", "multiply", "divide", "maximum", "minimum", "power", "exponential",
          "compare", "select", "negate"}


# "%name = TYPE op(...)": TYPE is a tuple "(f32[..], ..)" for a multi-output fusion (GPU).
_HLO_INSTR = re.compile(r"\s*(?:ROOT )?%\S+ = (?:\(.*?\)|\S+) ([\w-]+)\(")
_FUSION = ("fusion", "fusion-start")  # fusion-start: an asynchronous fusion (GPU)


def _loop_body_counts(hlo: str) -> list[tuple[int, int]]:
    """For each while loop of an optimised HLO module: the elementwise operations executed
    by its body (inside its fusions) and the number of fusions (kernels) it launches."""
    comps = {c.split(" ")[0]: c for c in re.split(r"\n(?=%|ENTRY)", hlo)}

    def instrs(name):
        for line in comps.get(name, "").split("\n")[1:]:
            m = _HLO_INSTR.match(line)
            if m:
                yield m.group(1), line

    def ops(name):
        n = 0
        for op, line in instrs(name):
            if op in _FUSION:
                cm = re.search(r"calls=(%[^,\s]+)", line)
                n += ops(cm.group(1)) if cm else 0
            elif op in _ARITH:
                n += 1
        return n

    bodies = []
    for line in hlo.split("\n"):
        m = re.search(r" while\(.*body=(%[^,\s]+)", line)
        if m:
            body = m.group(1)
            bodies.append((ops(body), sum(op in _FUSION for op, _ in instrs(body))))
    return bodies


def _hbv_op_counts() -> dict:
    import jax
    import jax.numpy as jnp

    from dpljax.models import HBV, hbv
    from dpljax.models.hbv import Forcing
    from dpljax.models.hbv_adjoint import _step_vjp

    z = jnp.float32(1.0)
    p = hbv.HBVParams(*([z] * 14))
    s = hbv.HBVState(*([z] * 5))
    x = Forcing(z, z, z)
    n_jaxpr = lambda jx: sum(1 for e in jx.jaxpr.eqns if e.primitive.name in _ARITH)
    step_ops = n_jaxpr(jax.make_jaxpr(lambda p, s, x: hbv.step(p, s, x))(p, s, x))
    fl = hbv.HBVFluxes(z, None, None, None, None, None)
    adj_ops = n_jaxpr(jax.make_jaxpr(lambda p, s, x, g: _step_vjp(
        p, s, x, g, fl, capillary=False, smooth_phase=0.0, need_x=False))(p, s, x, s))
    # The compiled program: elementwise ops inside the fusions of each while-loop body.
    b, t = 100, 730
    model = HBV()
    params = {k: jnp.full((b, NMUL), (lo + hi) / 2) for k, (lo, hi) in hbv.BOUNDS.items()}
    f = jnp.ones((b, t))

    def loss(pp):
        return jnp.mean(model.simulate(pp, Forcing(f, f, f))[0]["q"] ** 2)

    bodies = _loop_body_counts(jax.jit(jax.grad(loss)).lower(params).compile().as_text())
    # The forward body comes first in the program; the adjoint's is the larger one.
    bodies = [bd for bd in bodies if bd[0] > 0]
    fwd_b = min(bodies) if bodies else (None, None)
    bwd_b = max(bodies) if bodies else (None, None)
    return {"step_ops": step_ops, "step_plus_adjoint_ops": adj_ops,
            "compiled_fwd_body_ops": fwd_b[0], "compiled_fwd_body_kernels": fwd_b[1],
            "compiled_bwd_body_ops": bwd_b[0], "compiled_bwd_body_kernels": bwd_b[1],
            # forward writes the 5 storages of the day, the adjoint reads them back; the
            # flux q is written and its cotangent read (float32)
            "bytes_per_component_day": 4 * (5 + 5 + 1 + 1)}


WORKERS = {("hbv", "jax"): _jax_hbv, ("hbv", "jax_sharded"): _jax_hbv,
           ("hbv", "jax_user_vmap"): _jax_hbv, ("hbv", "jax_naive"): _jax_hbv,
           ("hbv", "jax_naive_remat"): _jax_hbv, ("hbv", "torch"): _torch_hbv, ("hbv", "torch_mt"): _torch_hbv,
           ("hbv", "dmg"): _dmg_hbv, ("step", "jax"): _jax_step, ("step", "jax_sharded"): _jax_step, ("step", "torch"): _torch_step,
           ("lstm", "jax"): _jax_lstm, ("lstm", "jax_autodiff"): _jax_lstm, ("lstm", "torch"): _torch_lstm, ("probe", "jax"): _probe}


def worker_main(spec: str) -> None:
    case = json.loads(spec)
    res = WORKERS[(case["kind"], case["fw"])](case)
    print("@@RESULT@@" + json.dumps(res), flush=True)


# ============================================================================ driver
def case_name(c: dict) -> str:
    net = f"/{c['net']}" if c.get("net") else ""
    if c["kind"] == "lstm":
        net = f"/h{c['hidden']}"
    return f"{c['kind']}/{c['fw']}{net}/{c['B']}x{c['T']}" if c["kind"] != "probe" else "probe"


def plan(args) -> list[dict]:
    """The cases of one run. Expensive baselines are limited to what fits a run of this size
    on 2 cores; what is left out is listed with its reason in the results."""
    shapes = [(100, 730)] if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    rep = dict(repeats=args.repeats, budget_s=args.budget, min_repeats=min(args.repeats, 10))
    slow = dict(repeats=args.repeats, budget_s=args.budget, min_repeats=3)
    cases: list[dict] = [{"kind": "probe", "fw": "jax", "B": 0, "T": 0}]
    for b, t in shapes:
        long = t > 730
        big = b * t > 671 * 730
        cases += [
            {"kind": "hbv", "fw": "jax", "B": b, "T": t, **rep, "interleave_user_vmap": t == 730},
            {"kind": "hbv", "fw": "jax_user_vmap", "B": b, "T": t, "with_fwd": False, **rep},
            {"kind": "hbv", "fw": "jax_sharded", "devices": 2, "B": b, "T": t, "with_fwd": False, **rep},
            {"kind": "hbv", "fw": "jax_naive_remat", "B": b, "T": t, "with_fwd": False,
             **(slow if long else rep)},
            {"kind": "hbv", "fw": "jax_naive", "B": b, "T": t, "with_fwd": False, **rep,
             "skip": "plain autodiff of the scan stores every intermediate (7.5 GiB at 671 x 5478)"
             if long else None},
            {"kind": "hbv", "fw": "torch", "B": b, "T": t, **(slow if long else rep), "with_fwd": not long,
             "torch_threads": 1,
             "skip": "autograd graph of 5478 days x 671 basins x 16 components needs > 10 GiB on "
             "a 24 GiB machine shared with other work" if big and long and b > 100 else None},
            {"kind": "hbv", "fw": "torch_mt", "B": b, "T": t, **rep, "with_fwd": False,
             "torch_threads": 0, "skip": "only at 730 days" if long else None},
            {"kind": "hbv", "fw": "dmg", "B": b, "T": t, **slow, "budget_s": min(args.budget, 60.0),
             "torch_threads": 1,
             "skip": "40 s (100 basins) to 3 min (671) per step: beyond one run's budget" if long else None},
        ]
        for net, h in (("mlp", None), ("lstm64", 64), ("lstm256", 256)):
            skip = None
            if net == "lstm256" and (b, t) != (100, 730):
                skip = "LSTM-256 over this shape takes minutes per step in both frameworks"
            if net == "lstm64" and b > 100 and long:
                skip = "LSTM-64 over 671 x 5478 takes minutes per step in PyTorch"
            for fw in ("jax", "jax_sharded", "torch"):
                s = skip
                if fw == "torch" and net == "mlp" and b > 100 and long:
                    s = "autograd graph of 671 x 5478 x 16 component-days needs > 10 GiB"
                if fw == "jax_sharded" and (b, t) != (100, 730):
                    s = "train.devices=2 is timed at the training batch (100 x 730) only"
                cases.append({"kind": "step", "fw": fw, "net": net, "hidden": h, "B": b, "T": t,
                              **(slow if (long or big) else rep), "skip": s,
                              **({"devices": 2} if fw == "jax_sharded" else {}),
                              **({"torch_threads": 1 if net == "mlp" else 0} if fw == "torch" else {})})
        if (b, t) == (100, 730):
            for h in (64, 256):
                for fw in ("jax", "jax_autodiff", "torch"):
                    cases.append({"kind": "lstm", "fw": fw, "hidden": h, "B": b, "T": t, **rep})
    if args.only:
        rx = re.compile(args.only)
        cases = [c for c in cases if c["kind"] == "probe" or rx.search(case_name(c))]
    if args.device == "gpu":
        cases = sorted(map(_on_gpu, cases), key=_gpu_priority)
    return cases


def _on_gpu(case: dict) -> dict:
    """A case of the plan as the GPU run does it: PyTorch on CUDA, and the GPU run's own skips
    in place of the CPU's (those are about 24 GiB of RAM and 2 cores). PyTorch's HBV loop is
    bound by kernel launches there (seconds a step at 730 days, whatever the basins), so its
    cases time the forward + backward only, at least 3 steps, only at 730 days, and its
    training step at the training batch (100 x 730) only."""
    c = dict(case, skip=None)
    long = c["T"] > 730
    if c["fw"] in ("torch", "torch_mt"):
        c.update(torch_device="cuda", min_repeats=min(c["min_repeats"], 3))
        if c["kind"] == "hbv":
            c["with_fwd"] = False
    if c["fw"] == "jax_sharded":
        c["skip"] = ("shards basins over host CPU devices (--xla_force_host_platform_device_count); "
                     "one GPU here")
    elif c["fw"] == "torch_mt":
        c["skip"] = "PyTorch's thread count only matters on the CPU; here PyTorch runs on CUDA"
    elif c["fw"] == "dmg":
        c["skip"] = "dmg's HBV runs on the CPU as written (device='cpu'): CPU section only"
    elif c["fw"] == "jax_user_vmap":
        c["skip"] = ("on the GPU compared with HBV.simulate inside hbv/jax at 730 days "
                     "(interleaved in one process)")
    elif c["fw"] in ("jax_naive", "jax_naive_remat") and long:
        c["skip"] = "the GPU run measures the before/after of the adjoint at 730 days (run time limit)"
    elif c["kind"] == "hbv" and c["fw"] == "torch" and long:
        c["skip"] = ("PyTorch's HBV on CUDA is launch-bound, its time per day does not depend on "
                     "the length: timed at 730 days (a 5478-day step takes a large part of the "
                     "run's time limit)")
    elif c["kind"] == "step" and long:
        c["skip"] = ("the GPU run times training steps at 730 days, the training shape "
                     "(365-day warm-up + 365-day window; run time limit)")
    elif c["kind"] == "step" and c["fw"] == "torch" and c["B"] > 100:
        c["skip"] = ("PyTorch's step on CUDA is bound by kernel launches, not by the basins (see "
                     "HBV alone at 100 and 671 basins): timed at 100 x 730, the training batch "
                     "(run time limit)")
    return c


def _gpu_priority(case: dict) -> int:
    """Run order on a GPU, where ``--max-wall`` may cut the end of the run: the probe, the
    headline comparisons (HBV alone, the training step), then the LSTM alone and the
    before/after variants. ``sorted`` keeps the plan's order within each group."""
    name = case_name(case)
    order = ("probe", "hbv/jax/", "hbv/torch/", "step/", "lstm/")
    return next((i for i, pre in enumerate(order) if name.startswith(pre)), len(order))


def _worker_env(devices: int = 1) -> dict:
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if devices > 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            f" --xla_force_host_platform_device_count={devices}").strip()
    return env


def run_case(case: dict, timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--worker", json.dumps(case)],
                           cwd=ROOT, env=_worker_env(case.get("devices", 1)), capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    for line in p.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return {"result": json.loads(line[len("@@RESULT@@"):]), "wall_s": wall}
    err = (p.stderr or p.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {p.returncode}: " + " | ".join(err), "wall_s": wall}


def _note_busy(seen: dict) -> None:
    """Record other processes using > 20% CPU (they share the 2 cores with the benchmark)."""
    mine = {os.getpid()}
    try:
        out = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,args", "--sort=-pcpu"],
                             capture_output=True, text=True, timeout=10).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return
    for line in out:
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        pid, ppid, cpu, cmd = int(parts[0]), int(parts[1]), float(parts[2]), parts[3]
        if pid in mine or ppid in mine or "benchmarks.throughput" in cmd or cpu < 20:
            continue
        key = cmd[:90]
        seen[key] = max(seen.get(key, 0.0), cpu)


def _version(pkg: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _versions() -> dict:
    return {pkg: _version(pkg) for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "dmg",
                                           "hydrodl2")}


def _gpu_versions() -> dict:
    """The CUDA side of a GPU run: JAX's CUDA plugin, PyTorch's CUDA and cuDNN."""
    out = {pkg: v for pkg in ("jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin",
                              "jax-cuda12-pjrt") if (v := _version(pkg))}
    try:
        import torch

        out["torch_cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
    except ImportError:
        pass
    return out


def _jax_backend() -> dict:
    """JAX's default backend and first device, asked in a subprocess: the driver itself never
    starts a device, so that each case has it to itself."""
    code = ("import jax, json; d = jax.devices()[0]; print(json.dumps({'backend': "
            "jax.default_backend(), 'device_kind': d.device_kind, 'device_count': jax.device_count()}))")
    try:
        p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_worker_env(), capture_output=True,
                           text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        return {"backend": None, "error": str(e)}
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"backend": None, "error": " | ".join(p.stderr.strip().splitlines()[-2:])}


def resolve_device(choice: str) -> tuple[str, dict | None]:
    """``--device``: "cpu", "gpu", or "auto": a GPU when ``nvidia-smi`` is on the PATH and JAX's
    default backend is "gpu". Returns the device and, unless it is a plain CPU run, what JAX
    reported. A forced "gpu" where JAX has none runs the GPU plan with JAX on its backend (to
    try the GPU code path); the document records that backend."""
    if choice == "cpu" or (choice == "auto" and shutil.which("nvidia-smi") is None):
        return "cpu", None
    info = _jax_backend()
    if choice == "auto":
        return ("gpu" if info.get("backend") == "gpu" else "cpu"), info
    return "gpu", info


def _accelerator(jax_info: dict) -> tuple[str, list[str]]:
    """The GPU in words (nvidia-smi's name, memory and driver, else JAX's device kind) and
    nvidia-smi's lines."""
    lines: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            lines = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                    "--format=csv,noheader"], capture_output=True, text=True,
                                   timeout=30).stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError):
            pass
    parts = [x.strip() for x in lines[0].split(",")] if lines else []
    if len(parts) == 3:
        return f"{parts[0]} ({parts[1]}, driver {parts[2]})", lines
    return f"{jax_info.get('device_kind')} (JAX device kind; backend {jax_info.get('backend')})", lines


def _machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(l for l in f if l.startswith("flags"))
    except (OSError, StopIteration):
        pass
    mem = None
    try:
        mem = _proc_meminfo_gib()
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "platform": platform.platform(),
            "python": platform.python_version(),
            "simd": [f for f in ("avx2", "avx512f", "fma") if f" {f} " in flags + " "]}


def _proc_meminfo_gib() -> float:
    with open("/proc/meminfo") as f:
        kib = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
    return round(kib / 2**20, 1)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    if out.returncode != 0:  # not a git checkout (a copy of the tree): see --commit
        return None
    return out.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")


def _dmg_status() -> tuple[bool, str]:
    from importlib.util import find_spec

    if find_spec("hydrodl2") is None:
        return False, ("dmg is not installed (its HBV lives in the hydrodl2 package; both are "
                       "under a non-commercial licence, so `make bench` does not install them: "
                       "`pip install dmg==1.5.0 hydrodl2` adds the column)")
    return True, "installed"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                    help="where the cases run; auto (default): a GPU when nvidia-smi is there and "
                    "JAX's default backend is a GPU, else the CPU")
    ap.add_argument("--quick", action="store_true", help="100 x 730 only, 10 repeats")
    ap.add_argument("--shapes", help="comma-separated BxT, e.g. 100x730,671x730")
    ap.add_argument("--only", help="regex on case names, e.g. 'hbv/(jax|torch)/'")
    ap.add_argument("--repeats", type=int, default=10, help="timed steps per case (median)")
    ap.add_argument("--budget", type=float, help="seconds of timed steps per case before stopping "
                    "early (never under 10 steps for JAX and 100 x 730 cases); default 60, on a GPU 10")
    ap.add_argument("--timeout", type=float, help="seconds per case; default 900, on a GPU 120")
    ap.add_argument("--max-wall", type=float, help="start no case once the run has taken this many "
                    "seconds (the rest are recorded as skipped); default none, on a GPU 450")
    ap.add_argument("--out", help="default results/throughput.json, on a GPU results/throughput_gpu.json")
    ap.add_argument("--commit", help="the commit to record, for a copy of the tree that is not a "
                    "git checkout (default: git rev-parse HEAD)")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return {}
    args.device, jax_info = resolve_device(args.device)
    gpu = args.device == "gpu"
    for k, v in DEFAULTS[args.device].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    try:
        import torch
        torch_ok, torch_why = True, "installed"
        if gpu and not torch.cuda.is_available():
            torch_ok, torch_why = False, f"torch {torch.__version__} has no CUDA device here"
    except ImportError:
        torch_ok, torch_why = False, "torch is not installed (pip install -e '.[bench]')"
    dmg_ok, dmg_why = _dmg_status()
    cases = plan(args)
    if gpu:
        accelerator, smi = _accelerator(jax_info)
        print(f"GPU run: {accelerator}; JAX backend {jax_info.get('backend')}; {len(cases)} cases, "
              f"at most {args.max_wall:.0f} s", flush=True)
    busy: dict = {}
    _note_busy(busy)
    t_run = time.perf_counter()
    load_start = os.getloadavg()
    results = []
    for i, c in enumerate(cases):
        name = case_name(c)
        skip = c.get("skip")
        if c["fw"] in ("torch", "torch_mt") and not torch_ok:
            skip = torch_why
        if c["fw"] == "dmg" and not dmg_ok:
            skip = dmg_why
        timeout = args.timeout
        if args.max_wall is not None and not skip:
            timeout = min(timeout, args.max_wall - (time.perf_counter() - t_run))
            if timeout < MIN_CASE_S:
                skip = f"the run reached its time limit (--max-wall {args.max_wall:.0f} s)"
        entry = {"name": name, **{k: v for k, v in c.items() if k != "skip"}}
        if skip:
            entry["skipped"] = skip
            print(f"[{i + 1}/{len(cases)}] {name}: skipped ({skip})", flush=True)
        else:
            entry["load_before"] = os.getloadavg()
            r = run_case(c, timeout)
            entry.update(r)
            entry["load_after"] = os.getloadavg()
            summary = r.get("error") or ", ".join(
                f"{m} {v['median_s']:.4g} s" for m, v in r["result"].items()
                if isinstance(v, dict) and "median_s" in v) or json.dumps(r["result"])
            print(f"[{i + 1}/{len(cases)}] {name}: {summary}  ({r['wall_s']:.0f} s)", flush=True)
        results.append(entry)
        _note_busy(busy)
    doc = {
        "what": "dpljax throughput vs plain PyTorch (and dmg's HBV): HBV alone and the full dPL "
                "training step; float32; nmul=16; medians of steady-state steps after 2 warm-ups",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "git_commit": args.commit or _git_commit(),
        "machine": _machine(),
        "accelerator": "none: this task has no GPU, every number is from the CPU",
        "versions": _versions(),
        "torch_threads": {"default": _torch_threads(), "policy": "1 thread for HBV alone, dmg "
                          "and the MLP step (elementwise-bound: on this shared 2-core machine a "
                          "second thread only adds synchronisation; dmg took 53 s instead of 5.5 s "
                          "a step with 2); PyTorch's default for the LSTM cases (matmul-bound)"},
        "dmg": dmg_why,
        "nmul": NMUL,
        "warmup_days_in_step": WARMUP_DAYS,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "wall_time_s": time.perf_counter() - t_run,
        "other_processes": [f"{cmd} (up to {cpu:.0f}% CPU)" for cmd, cpu in busy.items()],
        "cases": results,
    }
    if gpu:
        doc.update({
            "what": "dpljax throughput vs plain PyTorch on one GPU (JAX on it, PyTorch on CUDA): "
                    "HBV alone and the full dPL training step; float32; nmul=16; medians of "
                    "steady-state steps after 2 warm-ups, each ended by block_until_ready / "
                    "torch.cuda.synchronize",
            "device": "gpu",
            "accelerator": accelerator,
            "nvidia_smi": smi,
            "jax_backend": jax_info,
            "versions": {**_versions(), **_gpu_versions()},
            "torch_threads": {"default": _torch_threads(), "policy": "as on the CPU, but PyTorch "
                              "runs on CUDA: the thread count only sets its host-side work"},
            "limits": {"budget_s": args.budget, "timeout_s": args.timeout, "max_wall_s": args.max_wall},
        })
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and (args.only or args.shapes or args.quick):
        # A subset re-measures its cases inside the last full run's document, and says so.
        old = json.loads(out.read_text())
        names = {r["name"] for r in results}
        update = {k: doc[k] for k in ("created", "argv", "git_commit", "load_average_start",
                                      "load_average_end", "wall_time_s")}
        update["cases"] = sorted(names)
        doc = dict(old, cases=[r for r in old.get("cases", []) if r["name"] not in names] + results,
                   partial_updates=old.get("partial_updates", []) + [update])
    out.write_text(json.dumps(doc, indent=1))
    if gpu:  # its own README section; optimisations.json stays the CPU run's
        if not args.no_readme:
            write_gpu_readme(HERE / "README.md", render_gpu(doc))
    else:
        opt = optimisations(doc)
        (out.parent / "optimisations.json").write_text(json.dumps(opt, indent=1))
        if not args.no_readme:
            write_readme(HERE / "README.md", render_readme(doc, opt))
    print(f"wrote {out} ({doc['wall_time_s']:.0f} s)")
    return doc


def _torch_threads():
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


# ============================================================================ reporting
from benchmarks.report import (optimisations, render_gpu, render_readme, write_gpu_readme,  # noqa: E402
                               write_readme)

if __name__ == "__main__":
    main()
