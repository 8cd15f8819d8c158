import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# One compilation cache for the whole test session (both pytest workers and the `dpljax`
# subprocesses the CLI tests start inherit it): the many fits of the same small programs in
# different tests compile once, not once per test (test_budget.py alone: 386 s -> 177 s).
# A fresh directory each session, removed at its end, so a run here costs what it costs in CI.
_OWN_JAX_CACHE = None  # the directory this process made (the controller's), removed at the end
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and "PYTEST_XDIST_WORKER" not in os.environ:
    import tempfile

    _OWN_JAX_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="dpljax-test-jax-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

# The suite is compile-bound: hundreds of small programs, each compiled and run for a moment.
# XLA's CPU backend at LLVM -O0 compiles them faster (the same HLO, the same IEEE arithmetic, no
# fast-math either way; fewer LLVM passes over the machine code): test_sce_ua.py + test_train.py
# 183 s -> 114 s, test_warmup_grad.py + test_members.py 259 s -> 190 s, measured side by side.
# Timings and accuracies that are reported come from `dpljax` and the benchmarks, which keep
# XLA's default level. Set XLA_FLAGS with an optimisation level of its own to test at that one.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

# Two host devices, so that basin sharding (train.devices) is tested; arrays not sharded
# explicitly live on the first, as with one.
from dpljax.parallel import use_host_devices  # noqa: E402

use_host_devices(2)

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "dpljax"  # the console script of this environment


def small_config(**sections) -> dict:
    """A small experiment on the embedded sample (HBV with 2 components, an MLP of 16, Adam);
    each keyword's mapping updates that section, e.g. ``small_config(train={"epochs": 2})``."""
    config = {
        "model": {"name": "hbv", "nmul": 2, "dynamic": [], "routing": True, "options": {}},
        "net": {"name": "mlp", "hidden": [16], "dropout": 0.0},
        "loss": {"name": "rmse_combined", "alpha": 0.25},
        "optim": {"name": "adam", "learning_rate": 3e-3},
        "data": {"source": "sample", "train": ["1989-10-01", "1999-09-30"], "test": ["1999-10-01", "2008-09-30"]},
        "train": {"progress": False},
    }
    for name, update in sections.items():
        config[name] = {**config[name], **update}
    return config


def assert_directional_derivatives(f, x, g, n: int = 3, h: float = 1e-5, rtol: float = 1e-4, seed: int = 1):
    """``g`` (the gradient of ``f`` at the flat vector ``x``) against central differences of
    ``f`` along ``n`` random unit directions."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        d = rng.normal(size=x.shape)
        d /= np.linalg.norm(d)
        fd = (float(f(x + h * d)) - float(f(x - h * d))) / (2 * h)
        assert np.isclose(g @ d, fd, rtol=rtol, atol=1e-9), (g @ d, fd)


def short_fit_learns(sample, config: dict) -> None:
    """30 steps (4 basins x 120 + 120 days, warm-up forward only) of the experiment ``config``
    on the embedded sample lower the loss over every basin and the whole training period by 10%."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from dpljax import build
    from dpljax.data import fit_normalizer, load, prepare
    from dpljax.dpl import as_source, simulate
    from dpljax.train import TrainConfig, fit

    exp = build(config)
    ds = load(exp.data, sample)
    arrays, _ = prepare(exp.data, ds, fit_normalizer(exp.data, ds), *exp.data.train, forcing=exp.dpl.model.forcing)
    cfg = TrainConfig(epochs=1, iters_per_epoch=30, batch_basins=4, window=120, warmup=120, progress=False,
                      warmup_grad=False)
    net = exp.make_net(arrays.x_dynamic.shape[-1], arrays.x_static.shape[-1], seed=0)
    graphdef, theta0 = nnx.split(net)
    theta0 = jax.tree.map(jnp.copy, theta0)  # fit donates the state it starts from
    res = fit(exp.dpl, net, exp.tx, exp.loss, arrays, cfg, log=lambda *a: None)

    def whole(theta):  # the loss on every basin over the whole training period (after a year)
        q = simulate(exp.dpl, as_source(graphdef), theta, arrays).q
        return float(exp.loss(q[:, 365:], arrays.obs[:, 365:], arrays.obs_std))

    assert res.skipped_steps == 0 and whole(res.state.theta) < 0.9 * whole(theta0)


def pytest_unconfigure(config):
    """The session's compilation cache is removed by the process that made it."""
    if _OWN_JAX_CACHE:
        import shutil

        shutil.rmtree(_OWN_JAX_CACHE, ignore_errors=True)


def shared_data() -> Path | None:
    """``../shared/data`` beside the checkout (or $DPLJAX_SHARED_DATA); None when absent."""
    env = os.environ.get("DPLJAX_SHARED_DATA")
    for p in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (p / "camels_us.zarr").exists():
            return p
    return None


@pytest.fixture(scope="session")
def sample():
    from dpljax.data import load_sample

    return load_sample()


@pytest.fixture(scope="session")
def camels_zarr():
    p = shared_data()
    if p is None:
        pytest.skip("../shared/data/camels_us.zarr is not available")
    return p / "camels_us.zarr"


@pytest.fixture(scope="session")
def forcing10y(sample):
    """Ten years of real daily forcing of every sample basin (float64 NumPy, (N, T))."""
    sub = sample.sel(time=slice("1989-10-01", "1999-09-30"))
    prcp = sub["prcp"].values.astype(np.float64)
    tmean = ((sub["tmax"] + sub["tmin"]) / 2).values.astype(np.float64)
    pet = sub["pet"].values.astype(np.float64)
    return prcp, tmean, pet
