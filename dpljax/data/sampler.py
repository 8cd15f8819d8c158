"""Minibatches of basins x windows, drawn on the device inside the jitted train step.

A batch is ``n_basins`` distinct basins, each with a window of ``warmup + window`` days at a
random start inside the training arrays; the first ``warmup`` days spin the stores up and
are left out of the loss. Sampling is a pure function of a key, so the position of a
sampler is just the step number: ``key = fold_in(seed_key, step)`` makes a run reproducible
and resumable without any sampler state.
"""
from __future__ import annotations

import math

import jax

from .dataset import Arrays


def sample_batch(key: jax.Array, arrays: Arrays, n_basins: int, length: int):
    """Draw ``(basin_index (B,), Arrays of (B, length, ...))`` uniformly."""
    n, n_t = arrays.obs.shape
    kb, kt = jax.random.split(key)
    idx = jax.random.choice(kb, n, (n_basins,), replace=False)
    start = jax.random.randint(kt, (n_basins,), 0, n_t - length + 1)

    def window(a):
        def one(i, s):
            return jax.lax.dynamic_slice_in_dim(a[i], s, length, axis=0)

        return jax.vmap(one)(idx, start)

    batch = Arrays(
        forcing=jax.tree.map(window, arrays.forcing),
        x_dynamic=window(arrays.x_dynamic),
        x_static=arrays.x_static[idx],
        obs=window(arrays.obs),
        obs_std=arrays.obs_std[idx],
    )
    return idx, batch


def iterations_per_epoch(n_basins: int, n_days: int, batch_basins: int, window: int,
                         coverage: float = 0.99) -> int:
    """Iterations after which each basin-day has been in a loss window with probability
    ``coverage``: ``log(1 - coverage) / log(1 - batch*window / (basins*days))``."""
    frac = min(batch_basins * window / (n_basins * n_days), 0.999999)
    return max(1, math.ceil(math.log(1.0 - coverage) / math.log(1.0 - frac)))
