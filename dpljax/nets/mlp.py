"""g_A: a multilayer perceptron from static basin attributes to parameters (Tsai et al. 2021)."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from .registry import register_net


@register_net("mlp")
class MLP(nnx.Module):
    """``x_static (B, n_static) -> raw (B, n_out)``; forcings are ignored (static parameters).

    Hidden layers use ReLU and optional dropout; the head is linear (bounds are applied by the
    parameter space, not here). Without attributes (``n_static=0``) its input is the constant
    1: it then learns one parameter set shared by every basin (a regional calibration).
    """

    is_sequence = False

    def __init__(self, n_dynamic: int, n_static: int, n_out: int, *, hidden: Sequence[int] = (256,),
                 dropout: float = 0.0, param_dtype=jnp.float32, rngs: nnx.Rngs):
        del n_dynamic
        sizes = [max(n_static, 1), *hidden]  # no attribute: one constant input
        self.layers = nnx.List([nnx.Linear(a, b, param_dtype=param_dtype, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.dropout = nnx.Dropout(dropout)
        self.head = nnx.Linear(sizes[-1], n_out, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x_dynamic, x_static, *, key: jax.Array | None = None):
        h = x_static if x_static.shape[-1] else jnp.ones((*x_static.shape[:-1], 1), x_static.dtype)
        for i, layer in enumerate(self.layers):
            h = jax.nn.relu(layer(h))
            if key is not None and self.dropout.rate > 0:
                h = self.dropout(h, deterministic=False, rngs=jax.random.fold_in(key, i))
        return self.head(h)
