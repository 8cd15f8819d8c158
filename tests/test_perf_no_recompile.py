"""The jitted train step compiles once: the second and later steps reuse the executable."""
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
from dpljax.nets import LSTM
from dpljax.params import ParameterSpace
from dpljax.train import TrainConfig, TrainState, make_train_step


def test_train_step_does_not_recompile():
    rng = np.random.default_rng(0)
    n, t = 6, 40
    f = {"prcp": rng.gamma(0.5, 4.0, (n, t)), "tmean": rng.normal(5, 8, (n, t)), "pet": rng.uniform(0, 4, (n, t))}
    obs = rng.gamma(1.0, 1.0, (n, t))
    obs[0, :5] = np.nan
    arrays = Arrays(*(jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), a) for a in (
        f, rng.normal(size=(n, t, 3)), rng.normal(size=(n, 4)), obs, obs[:, 5:].std(1))))
    space = ParameterSpace(HBV().bounds, nmul=2, dynamic=("beta",), routing_bounds=RB)
    net = LSTM(3, 4, space.n_outputs, hidden=8, dropout=0.5, rngs=nnx.Rngs(0))
    tx = optax.adam(1e-3)
    graphdef, theta = nnx.split(net)
    state = TrainState.create(theta, tx)
    step = make_train_step(DPL(HBV(), space), graphdef, tx, RMSECombined(),
                           TrainConfig(batch_basins=4, window=20, warmup=10, progress=False))
    compiles = []
    # an executable made: compiled, or read from the persistent compilation cache (conftest.py)
    made = ("backend_compile", "compilation_cache/cache_retrieval_time")
    listener = lambda event, duration, **kw: compiles.append(event) if any(m in event for m in made) else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        key = jax.random.key(0)
        state, info = step(state, arrays, key)
        jax.block_until_ready(info.loss)
        first = len(compiles)
        losses = []
        for i in range(1, 5):  # the step counter advances inside the state
            state, info = step(state, arrays, key)
            losses.append(float(info.loss))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert first >= 1
    assert len(compiles) == first, f"{len(compiles) - first} recompilation(s) after the first step"
    assert step._cache_size() == 1
    assert np.all(np.isfinite(losses)) and int(state.step) == 5
    # The (theta, opt_state, step, ...) form benchmarks/throughput.py times is the same program.
    copy = jax.tree.map(jnp.copy, state)
    theta, opt_state, loss, ok, idx = step(copy.theta, copy.opt_state, 5, arrays, key)
    new, info = step(state, arrays, key)
    assert step._cache_size() == 1 and float(loss) == float(info.loss)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves((theta, opt_state, idx)),
                                                   jax.tree.leaves((new.theta, new.opt_state, info.basin_idx))))
