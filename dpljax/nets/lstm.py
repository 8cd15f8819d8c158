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

    ``stride > 1``: the LSTM steps through blocks of ``stride`` days. A block's input is its
    days' forcings side by side (nothing is averaged away) plus the attributes; the head emits
    the block's ``stride`` days of parameters, so they stay daily. The time loop, most of the
    network's cost on a CPU, is ``stride`` times shorter. A parameter can then depend on the
    forcings of later days of its block (at most ``stride - 1``): fine for simulation with
    observed forcings, not for forecasting.

    ``input_size``: width of the linear+ReLU input layer (default ``hidden``, the reference
    design). Its output is projected to the four gates at every step, a product as large as
    the recurrence's own ``h @ W_hh`` when the width is ``hidden``: a narrower input layer
    (the inputs are some tens of numbers) makes a step of a wide LSTM cheaper.
    """

    is_sequence = True

    def __init__(self, n_dynamic: int, n_static: int, n_out: int, *, hidden: int = 256,
                 dropout: float = 0.5, stride: int = 1, input_size: int | None = None,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.stride = _whole("stride", stride)
        self.n_out = int(n_out)
        n_in = self.stride * n_dynamic + n_static
        self.hidden = int(hidden)
        h = self.hidden
        self.input_size = h if input_size is None else _whole("input_size", input_size, " or null (= hidden)")
        self.inp = nnx.Linear(n_in, self.input_size, param_dtype=param_dtype, rngs=rngs)
        init = nnx.initializers.lecun_normal()
        self.w_ih = nnx.Param(init(rngs.params(), (self.input_size, 4 * h), param_dtype))
        self.w_hh = nnx.Param(nnx.initializers.orthogonal()(rngs.params(), (h, 4 * h), param_dtype))
        # forget-gate bias 1 (gate order i, f, g, o): remembers by default
        self.b = nnx.Param(jnp.zeros((4 * h,), param_dtype).at[h:2 * h].set(1.0))
        self.dropout = nnx.Dropout(dropout)
        self.head = nnx.Linear(h, self.stride * self.n_out, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x_dynamic, x_static, *, key: jax.Array | None = None, detach: int = 0):
        """Raw parameters ``(B, T, n_out)``. ``detach > 0`` (``train.warmup_grad=false``):
        the first ``detach`` steps are computed forward only: same values, but no gradient
        flows through them, nor through the hidden state ``(h, c)`` entering step ``detach``,
        so the backward pass (recurrence, input projection, head) covers the later steps only."""
        d = int(detach)
        b, t, n_dyn = x_dynamic.shape
        if d and not 0 < d < t:
            raise ValueError(f"detach={d} must lie in [0, {t}) (the sequence has {t} steps)")
        s = self.stride
        if s == 1:
            return self._steps(x_dynamic, x_static, key, d)
        # Blocks of s days: zeros (the inputs' mean) before the first day make the last block
        # end on the last day; a block's step sees its s days and emits their s parameter rows.
        pad = (-t) % s
        xb = jnp.pad(x_dynamic, ((0, 0), (pad, 0), (0, 0))).reshape(b, (t + pad) // s, s * n_dyn)
        raw = self._steps(xb, x_static, key, (pad + d) // s if d else 0)  # warm-up's whole blocks
        return raw.reshape(b, t + pad, self.n_out)[:, pad:]

    def _steps(self, x_dynamic, x_static, key, d: int):
        """The LSTM over the steps of ``x_dynamic`` (days, or blocks of ``stride`` days)."""
        b, t, _ = x_dynamic.shape
        x = jnp.concatenate([x_dynamic, jnp.broadcast_to(x_static[:, None, :], (b, t, x_static.shape[-1]))], -1)
        if d == 0:
            x = jax.nn.relu(self.inp(x))
            gates_x = jnp.swapaxes(x @ self.w_ih[...] + self.b[...], 0, 1)  # (T, B, 4H) time-major
            _, hs = lstm_recurrence(gates_x, self.w_hh[...])
            hs = jnp.swapaxes(hs, 0, 1)  # (B, T, H)
            return self.head(self._dropout(hs, key))
        sg = jax.lax.stop_gradient
        # Warm-up steps: the same operations on stop-gradiented weights (no tangent, so no
        # residuals and no backward); the window starts from the constant state (h, c).
        k_in, b_in, w_ih, bias, w_hh = (sg(v) for v in (self.inp.kernel[...], self.inp.bias[...],
                                                          self.w_ih[...], self.b[...], self.w_hh[...]))
        xw = jax.nn.relu(x[:, :d] @ k_in + b_in)
        (h, c), hs_w = lstm_recurrence(jnp.swapaxes(xw @ w_ih + bias, 0, 1), w_hh)
        xv = jax.nn.relu(self.inp(x[:, d:]))
        gates_v = jnp.swapaxes(xv @ self.w_ih[...] + self.b[...], 0, 1)
        _, hs_v = lstm_recurrence_from(gates_v, self.w_hh[...], sg(h), sg(c))
        hs = jnp.swapaxes(jnp.concatenate([sg(hs_w), hs_v], 0), 0, 1)  # (B, T, H)
        hs = self._dropout(hs, key)  # one mask over all T steps, as without detach
        raw_w = hs[:, :d] @ sg(self.head.kernel[...]) + sg(self.head.bias[...])
        return jnp.concatenate([sg(raw_w), self.head(hs[:, d:])], 1)

    def _dropout(self, hs, key):
        if key is not None and self.dropout.rate > 0:
            return self.dropout(hs, deterministic=False, rngs=key)
        return hs


def _whole(name: str, value, alternative: str = "") -> int:
    """``value`` as an int, refused by ``name`` unless it is a whole number >= 1 (not a bool)."""
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1{alternative}, got {value!r}")
    return int(value)


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
    (h, c), (hs, _, _) = _recurrence_fwd_scan(gates_x, w_hh, *_zero_state(gates_x))
    return (h, c), hs


def _zero_state(gates_x):
    zeros = jnp.zeros((gates_x.shape[1], gates_x.shape[2] // 4), gates_x.dtype)
    return zeros, zeros


def _recurrence_fwd_scan(gates_x, w_hh, h0, c0):
    return jax.lax.scan(lambda carry, gx: _cell(w_hh, carry, gx), (h0, c0), gates_x)


def _recurrence_fwd(gates_x, w_hh):
    (h, c), (hs, cs, acts) = _recurrence_fwd_scan(gates_x, w_hh, *_zero_state(gates_x))
    return ((h, c), hs), (w_hh, hs, cs, acts)


def _recurrence_bwd_core(w_hh, h0, c0, hs, cs, acts, cts):
    """Cotangents ``(dgates, dW_hh, dh0, dc0)`` of a recurrence started from ``(h0, c0)``."""
    (g_h_final, g_c_final), g_hs = cts
    hid = hs.shape[-1]
    c_prev_all = jnp.concatenate([c0[None], cs[:-1]], 0)
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

    (dh0, dc0), dgates = jax.lax.scan(body, (g_h_final, g_c_final), (g_hs, cs, c_prev_all, acts),
                                      reverse=True)
    h_prev_all = jnp.concatenate([h0[None], hs[:-1]], 0)
    g_w = jnp.einsum("tbh,tbg->hg", h_prev_all, dgates)
    return dgates, g_w, dh0, dc0


def _recurrence_bwd(res, cts):
    w_hh, hs, cs, acts = res
    zeros = jnp.zeros_like(hs[0])
    dgates, g_w, _, _ = _recurrence_bwd_core(w_hh, zeros, zeros, hs, cs, acts, cts)
    return dgates, g_w


lstm_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


@jax.custom_vjp
def lstm_recurrence_from(gates_x, w_hh, h0, c0):
    """:func:`lstm_recurrence` started from the state ``(h0, c0)`` (``(B, H)`` each), with the
    same hand-written backward pass (which also returns the cotangents of ``h0`` and ``c0``)."""
    (h, c), (hs, _, _) = _recurrence_fwd_scan(gates_x, w_hh, h0, c0)
    return (h, c), hs


def _from_fwd(gates_x, w_hh, h0, c0):
    (h, c), (hs, cs, acts) = _recurrence_fwd_scan(gates_x, w_hh, h0, c0)
    return ((h, c), hs), (w_hh, h0, c0, hs, cs, acts)


def _from_bwd(res, cts):
    return _recurrence_bwd_core(*res, cts)


lstm_recurrence_from.defvjp(_from_fwd, _from_bwd)
