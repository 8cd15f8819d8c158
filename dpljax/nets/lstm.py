"""g_z: an LSTM from forcings + attributes to (time-varying) parameters (Feng et al. 2022)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .registry import register_net


@register_net("lstm")
class LSTM(nnx.Module):
    """``(x_dynamic (B, T, n_dyn), x_static (B, n_static)) -> raw (B, T, n_out)``.

    Attributes are repeated along time and concatenated to the forcings; a linear+ReLU input
    layer feeds one LSTM layer; dropout (reference: 0.5) acts on the LSTM's output; a linear
    head gives the raw parameters at every step. The input projection of all steps is one
    matrix product before the time loop, so the scan carries only ``h @ W_hh``.
    """

    is_sequence = True

    def __init__(self, n_dynamic: int, n_static: int, n_out: int, *, hidden: int = 256,
                 dropout: float = 0.5, param_dtype=jnp.float32, rngs: nnx.Rngs):
        n_in = n_dynamic + n_static
        self.hidden = int(hidden)
        h = self.hidden
        self.inp = nnx.Linear(n_in, h, param_dtype=param_dtype, rngs=rngs)
        init = nnx.initializers.lecun_normal()
        self.w_ih = nnx.Param(init(rngs.params(), (h, 4 * h), param_dtype))
        self.w_hh = nnx.Param(nnx.initializers.orthogonal()(rngs.params(), (h, 4 * h), param_dtype))
        # forget-gate bias 1 (gate order i, f, g, o): remembers by default
        self.b = nnx.Param(jnp.zeros((4 * h,), param_dtype).at[h:2 * h].set(1.0))
        self.dropout = nnx.Dropout(dropout)
        self.head = nnx.Linear(h, n_out, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x_dynamic, x_static, *, key: jax.Array | None = None):
        b, t, _ = x_dynamic.shape
        x = jnp.concatenate([x_dynamic, jnp.broadcast_to(x_static[:, None, :], (b, t, x_static.shape[-1]))], -1)
        x = jax.nn.relu(self.inp(x))
        gates_x = jnp.swapaxes(x @ self.w_ih[...] + self.b[...], 0, 1)  # (T, B, 4H) time-major
        w_hh = self.w_hh[...]
        h = self.hidden

        def cell(carry, gx):
            hprev, cprev = carry
            g = gx + hprev @ w_hh
            i = jax.nn.sigmoid(g[:, :h])
            f = jax.nn.sigmoid(g[:, h:2 * h])
            c_new = f * cprev + i * jnp.tanh(g[:, 2 * h:3 * h])
            h_new = jax.nn.sigmoid(g[:, 3 * h:]) * jnp.tanh(c_new)
            return (h_new, c_new), h_new

        zeros = jnp.zeros((b, h), gates_x.dtype)
        _, hs = jax.lax.scan(cell, (zeros, zeros), gates_x)
        hs = jnp.swapaxes(hs, 0, 1)  # (B, T, H)
        if key is not None and self.dropout.rate > 0:
            hs = self.dropout(hs, deterministic=False, rngs=key)
        return self.head(hs)
