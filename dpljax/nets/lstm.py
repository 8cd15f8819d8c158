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
        _, hs = lstm_recurrence(gates_x, self.w_hh[...])
        hs = jnp.swapaxes(hs, 0, 1)  # (B, T, H)
        if key is not None and self.dropout.rate > 0:
            hs = self.dropout(hs, deterministic=False, rngs=key)
        return self.head(hs)


# The recurrence with a hand-written backward pass. Autodiff of the scan accumulates
# dW_hh += h_{t-1}^T dgates_t inside the reverse loop: T small (H x B) @ (B x 4H) products and
# a (H, 4H) read-modify-write per step. Here the reverse loop only carries (dh, dc) and emits
# dgates_t; dW_hh is then one (H, T*B) @ (T*B, 4H) product, which runs near the matmul peak.
def _cell(w_hh, carry, gx):
    hprev, cprev = carry
    h = hprev.shape[-1]
    g = gx + hprev @ w_hh
    i = jax.nn.sigmoid(g[:, :h])
    f = jax.nn.sigmoid(g[:, h:2 * h])
    gg = jnp.tanh(g[:, 2 * h:3 * h])
    o = jax.nn.sigmoid(g[:, 3 * h:])
    c_new = f * cprev + i * gg
    h_new = o * jnp.tanh(c_new)
    return (h_new, c_new), (h_new, c_new, jnp.concatenate([i, f, gg, o], -1))


@jax.custom_vjp
def lstm_recurrence(gates_x, w_hh):
    """``gates_x (T, B, 4H)`` (input projection + bias, gate order i, f, g, o) and
    ``w_hh (H, 4H)`` -> ``(final (h, c), hs (T, B, H))``, starting from zero state."""
    (h, c), (hs, _, _) = _recurrence_fwd_scan(gates_x, w_hh)
    return (h, c), hs


def _recurrence_fwd_scan(gates_x, w_hh):
    t, b, h4 = gates_x.shape
    zeros = jnp.zeros((b, h4 // 4), gates_x.dtype)
    return jax.lax.scan(lambda carry, gx: _cell(w_hh, carry, gx), (zeros, zeros), gates_x)


def _recurrence_fwd(gates_x, w_hh):
    (h, c), (hs, cs, acts) = _recurrence_fwd_scan(gates_x, w_hh)
    return ((h, c), hs), (w_hh, hs, cs, acts)


def _recurrence_bwd(res, cts):
    w_hh, hs, cs, acts = res
    (g_h_final, g_c_final), g_hs = cts
    hid = hs.shape[-1]
    zeros = jnp.zeros_like(hs[:1])
    c_prev_all = jnp.concatenate([zeros, cs[:-1]], 0)
    w_t = w_hh.T

    def body(carry, xs):
        dh, dc = carry
        g_h, c, c_prev, a = xs
        i, f, gg, o = a[:, :hid], a[:, hid:2 * hid], a[:, 2 * hid:3 * hid], a[:, 3 * hid:]
        dh = dh + g_h
        tc = jnp.tanh(c)
        dc = dc + dh * o * (1.0 - tc * tc)
        dgates = jnp.concatenate([dc * gg * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                                  dc * i * (1.0 - gg * gg), dh * tc * o * (1.0 - o)], -1)
        return (dgates @ w_t, dc * f), dgates

    _, dgates = jax.lax.scan(body, (g_h_final, g_c_final), (g_hs, cs, c_prev_all, acts),
                             reverse=True)
    h_prev_all = jnp.concatenate([zeros, hs[:-1]], 0)
    g_w = jnp.einsum("tbh,tbg->hg", h_prev_all, dgates)
    return dgates, g_w


lstm_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)
