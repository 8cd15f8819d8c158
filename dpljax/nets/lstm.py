"""g_z: an LSTM from forcings + attributes to (time-varying) parameters (Feng et al. 2022)."""
from __future__ import annotations

from functools import partial

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

    ``cell``: ``"lstm"`` (the reference) or ``"gru"``: a gated recurrent unit (Cho et al.
    2014, in the form of cuDNN and PyTorch: reset gate on ``h @ W_hn + b_hn``). Three gates
    instead of four, and no cell state: its input projection and recurrence are 3/4 of the
    LSTM's products at the same ``hidden``, with the same hand-written backward pass.

    ``compute_dtype``: the dtype of the matrix products' operands (null: the parameters' own).
    ``"bfloat16"`` is mixed precision: the weights stay float32 (the optimiser's copy), the
    products (input layer, gates, recurrence, head, and their backward) read bfloat16 operands
    and accumulate in float32, and the gates, the cell state and everything after stay
    float32. On hardware with bfloat16 products (recent x86 CPUs with AVX512-BF16 or AMX,
    GPUs, TPUs) a step is cheaper; elsewhere it can be dearer (benchmarks/results/lstm_bf16.json).
    """

    is_sequence = True

    def __init__(self, n_dynamic: int, n_static: int, n_out: int, *, hidden: int = 256,
                 dropout: float = 0.5, stride: int = 1, input_size: int | None = None,
                 compute_dtype: str | None = None, cell: str = "lstm", param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.stride = _whole("stride", stride)
        self.cell = _cell_name(cell)
        self.compute_dtype = _compute_dtype(compute_dtype)
        self.n_out = int(n_out)
        n_in = self.stride * n_dynamic + n_static
        self.hidden = int(hidden)
        h = self.hidden
        self.input_size = h if input_size is None else _whole("input_size", input_size, " or null (= hidden)")
        self.inp = nnx.Linear(n_in, self.input_size, param_dtype=param_dtype, rngs=rngs)
        init = nnx.initializers.lecun_normal()
        n_gates = GATES[self.cell]
        self.w_ih = nnx.Param(init(rngs.params(), (self.input_size, n_gates * h), param_dtype))
        self.w_hh = nnx.Param(nnx.initializers.orthogonal()(rngs.params(), (h, n_gates * h), param_dtype))
        if self.cell == "lstm":
            # forget-gate bias 1 (gate order i, f, g, o): remembers by default
            self.b = nnx.Param(jnp.zeros((4 * h,), param_dtype).at[h:2 * h].set(1.0))
        else:
            # gate order r, z, n; update-gate bias 1: keeps the state by default (as the LSTM's
            # forget gate); b_hn is the recurrence's own bias on the candidate, inside the reset gate
            self.b = nnx.Param(jnp.zeros((3 * h,), param_dtype).at[h:2 * h].set(1.0))
            self.b_hn = nnx.Param(jnp.zeros((h,), param_dtype))
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
        cd = self.compute_dtype
        mm = lambda a, w: matmul(a, w, cd)  # noqa: E731
        # the recurrence's own weights: (W_hh,) for the LSTM, (W_hh, b_hn) for the GRU
        rec = (self.w_hh[...],) if self.cell == "lstm" else (self.w_hh[...], self.b_hn[...])
        weights = (self.inp.kernel[...], self.inp.bias[...], self.w_ih[...], self.b[...],
                   self.head.kernel[...], self.head.bias[...], rec)
        if d == 0:
            k_in, b_in, w_ih, bias, k_out, b_out, rec = weights
            x = jax.nn.relu(mm(x, k_in) + b_in)
            gates_x = jnp.swapaxes(mm(x, w_ih) + bias, 0, 1)  # (T, B, n_gates * H) time-major
            _, hs = self._recurrence(gates_x, rec, None)
            hs = jnp.swapaxes(hs, 0, 1)  # (B, T, H)
            return mm(self._dropout(hs, key), k_out) + b_out
        # Warm-up steps: the same operations on stop-gradiented weights (no tangent, so no
        # residuals and no backward); the window starts from the constant final state.
        sg = jax.lax.stop_gradient
        k_in, b_in, w_ih, bias, k_out, b_out, rec = weights
        s_in, sb_in, s_ih, s_bias, s_out, sb_out, s_rec = jax.tree.map(sg, weights)
        xw = jax.nn.relu(mm(x[:, :d], s_in) + sb_in)
        state, hs_w = self._recurrence(jnp.swapaxes(mm(xw, s_ih) + s_bias, 0, 1), s_rec, None)
        xv = jax.nn.relu(mm(x[:, d:], k_in) + b_in)
        gates_v = jnp.swapaxes(mm(xv, w_ih) + bias, 0, 1)
        _, hs_v = self._recurrence(gates_v, rec, jax.tree.map(sg, state))
        hs = jnp.swapaxes(jnp.concatenate([sg(hs_w), hs_v], 0), 0, 1)  # (B, T, H)
        hs = self._dropout(hs, key)  # one mask over all T steps, as without detach
        raw_w = mm(hs[:, :d], s_out) + sb_out
        return jnp.concatenate([sg(raw_w), mm(hs[:, d:], k_out) + b_out], 1)

    def _recurrence(self, gates_x, rec, state):
        """The cell's loop over ``gates_x (T, B, n_gates * H)`` from ``state`` (None: zeros):
        ``(final state, hs (T, B, H))``; the state is ``(h, c)`` for the LSTM, ``h`` for the GRU."""
        cd = self.compute_dtype
        if self.cell == "lstm":
            (w_hh,) = rec
            if state is None:
                return lstm_recurrence(gates_x, w_hh, cd)
            return lstm_recurrence_from(gates_x, w_hh, *state, cd)
        w_hh, b_hn = rec
        h0 = jnp.zeros(gates_x.shape[1:2] + w_hh.shape[:1], gates_x.dtype) if state is None else state
        return gru_recurrence(gates_x, w_hh, b_hn, h0, cd)

    def _dropout(self, hs, key):
        if key is not None and self.dropout.rate > 0:
            return self.dropout(hs, deterministic=False, rngs=key)
        return hs


def _whole(name: str, value, alternative: str = "") -> int:
    """``value`` as an int, refused by ``name`` unless it is a whole number >= 1 (not a bool)."""
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1{alternative}, got {value!r}")
    return int(value)


#: The recurrent cells and their gate count (the width of the input projection, in hidden units).
GATES = {"lstm": 4, "gru": 3}


def _cell_name(value) -> str:
    """``value`` if it names a cell of :data:`GATES`, refused by name otherwise."""
    if value in GATES:
        return value
    raise ValueError(f"cell must be one of {list(GATES)}, got {value!r}")


#: compute_dtype names: null (the operands' own dtype), or the dtype the products read.
COMPUTE_DTYPES = ("float32", "bfloat16")


def _compute_dtype(value) -> str | None:
    """``value`` (null or a name of :data:`COMPUTE_DTYPES`), refused by name otherwise."""
    if value is None or value in COMPUTE_DTYPES:
        return value
    raise ValueError(f"compute_dtype must be null or one of {list(COMPUTE_DTYPES)}, got {value!r}")


def matmul(a, w, dtype: str | None = None):
    """``a @ w`` (``a (..., K)``, ``w (K, N)``). With ``dtype``: mixed precision, the
    operands rounded to ``dtype`` and the product accumulated in, and returned as, ``a``'s
    dtype; the backward pass's two products read ``dtype`` operands too (:func:`_mixed_matmul`)."""
    if dtype is None:
        return a @ w
    rt = jnp.result_type(a, w)
    return _mixed_matmul(a.astype(rt), w.astype(rt), dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _mixed_matmul(a, w, dtype):
    return jnp.matmul(a.astype(dtype), w.astype(dtype), preferred_element_type=a.dtype)


def _mixed_fwd(a, w, dtype):
    a_c, w_c = a.astype(dtype), w.astype(dtype)  # the residuals, in dtype: half the memory
    return jnp.matmul(a_c, w_c, preferred_element_type=a.dtype), (a_c, w_c)


def _mixed_bwd(dtype, res, g):
    a_c, w_c = res  # a and w share g's dtype (matmul promotes them)
    g_c = g.astype(dtype)
    k, n = w_c.shape
    g_a = jnp.matmul(g_c, w_c.T, preferred_element_type=g.dtype)
    g_w = jnp.matmul(a_c.reshape(-1, k).T, g_c.reshape(-1, n), preferred_element_type=g.dtype)
    return g_a, g_w


_mixed_matmul.defvjp(_mixed_fwd, _mixed_bwd)


def _loop_matmul(a, w_cast, dtype: str | None, acc_dtype):
    """``a @ w_cast`` inside a recurrence's loop (``w_cast`` already cast by the caller, once,
    outside it); with ``dtype``, ``a`` is rounded to it and the product accumulated in
    ``acc_dtype``."""
    if dtype is None:
        return a @ w_cast
    return jnp.matmul(a.astype(dtype), w_cast, preferred_element_type=acc_dtype)


def _weight_grad(h_prev_all, dgates, dtype: str | None, out_dtype):
    """``dW_hh = sum_t h_{t-1}^T dgates_t`` as one product over all steps and basins."""
    if dtype is None:
        return jnp.einsum("tbh,tbg->hg", h_prev_all, dgates)
    return jnp.einsum("tbh,tbg->hg", h_prev_all.astype(dtype), dgates.astype(dtype),
                      preferred_element_type=out_dtype)


# The recurrence with a hand-written backward pass. Autodiff of the scan accumulates
# dW_hh += h_{t-1}^T dgates_t inside the reverse loop: T small (H x B) @ (B x 4H) products and
# a (H, 4H) read-modify-write per step. Here the reverse loop only carries (dh, dc) and emits
# dgates_t; dW_hh is then one (H, T*B) @ (T*B, 4H) product, which runs near the matmul peak.
def _cell(w_hh, carry, gx, dtype: str | None = None):
    """One LSTM step; ``dtype``: ``h @ W_hh`` on operands of that dtype (``w_hh`` already
    cast by the caller), accumulated in ``gx``'s."""
    hprev, cprev = carry
    h = hprev.shape[-1]
    g = gx + _loop_matmul(hprev, w_hh, dtype, gx.dtype)
    i = jax.nn.sigmoid(g[:, :h])
    f = jax.nn.sigmoid(g[:, h:2 * h])
    gg = jnp.tanh(g[:, 2 * h:3 * h])
    o = jax.nn.sigmoid(g[:, 3 * h:])
    c_new = f * cprev + i * gg
    h_new = o * jnp.tanh(c_new)
    return (h_new, c_new), (h_new, c_new, jnp.concatenate([i, f, gg, o], -1))


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def lstm_recurrence(gates_x, w_hh, dtype: str | None = None):
    """``gates_x (T, B, 4H)`` (input projection + bias, gate order i, f, g, o) and
    ``w_hh (H, 4H)`` -> ``(final (h, c), hs (T, B, H))``, starting from zero state.
    ``dtype``: the products ``h @ W_hh`` (and the backward pass's) on operands of that dtype
    (mixed precision, see :func:`matmul`); the state stays in ``gates_x``'s dtype."""
    (h, c), (hs, _, _) = _recurrence_fwd_scan(gates_x, w_hh, *_zero_state(gates_x), dtype)
    return (h, c), hs


def _zero_state(gates_x):
    zeros = jnp.zeros((gates_x.shape[1], gates_x.shape[2] // 4), gates_x.dtype)
    return zeros, zeros


def _recurrence_fwd_scan(gates_x, w_hh, h0, c0, dtype=None):
    w = w_hh if dtype is None else w_hh.astype(dtype)  # cast once, outside the loop
    return jax.lax.scan(lambda carry, gx: _cell(w, carry, gx, dtype), (h0, c0), gates_x)


def _recurrence_fwd(gates_x, w_hh, dtype):
    (h, c), (hs, cs, acts) = _recurrence_fwd_scan(gates_x, w_hh, *_zero_state(gates_x), dtype)
    return ((h, c), hs), (w_hh, hs, cs, acts)


def _recurrence_bwd_core(w_hh, h0, c0, hs, cs, acts, cts, dtype=None):
    """Cotangents ``(dgates, dW_hh, dh0, dc0)`` of a recurrence started from ``(h0, c0)``;
    ``dtype``: its products on operands of that dtype, accumulated in the state's."""
    (g_h_final, g_c_final), g_hs = cts
    hid = hs.shape[-1]
    c_prev_all = jnp.concatenate([c0[None], cs[:-1]], 0)
    w_t = w_hh.T if dtype is None else w_hh.T.astype(dtype)

    def body(carry, xs):
        dh, dc = carry
        g_h, c, c_prev, a = xs
        i, f, gg, o = a[:, :hid], a[:, hid:2 * hid], a[:, 2 * hid:3 * hid], a[:, 3 * hid:]
        dh = dh + g_h
        tc = jnp.tanh(c)
        dc = dc + dh * o * (1.0 - tc * tc)
        dgates = jnp.concatenate([dc * gg * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                                  dc * i * (1.0 - gg * gg), dh * tc * o * (1.0 - o)], -1)
        return (_loop_matmul(dgates, w_t, dtype, dh.dtype), dc * f), dgates

    (dh0, dc0), dgates = jax.lax.scan(body, (g_h_final, g_c_final), (g_hs, cs, c_prev_all, acts),
                                      reverse=True)
    h_prev_all = jnp.concatenate([h0[None], hs[:-1]], 0)
    return dgates, _weight_grad(h_prev_all, dgates, dtype, w_hh.dtype), dh0, dc0


def _recurrence_bwd(dtype, res, cts):
    w_hh, hs, cs, acts = res
    zeros = jnp.zeros_like(hs[0])
    dgates, g_w, _, _ = _recurrence_bwd_core(w_hh, zeros, zeros, hs, cs, acts, cts, dtype)
    return dgates, g_w


lstm_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def lstm_recurrence_from(gates_x, w_hh, h0, c0, dtype: str | None = None):
    """:func:`lstm_recurrence` started from the state ``(h0, c0)`` (``(B, H)`` each), with the
    same hand-written backward pass (which also returns the cotangents of ``h0`` and ``c0``)."""
    (h, c), (hs, _, _) = _recurrence_fwd_scan(gates_x, w_hh, h0, c0, dtype)
    return (h, c), hs


def _from_fwd(gates_x, w_hh, h0, c0, dtype):
    (h, c), (hs, cs, acts) = _recurrence_fwd_scan(gates_x, w_hh, h0, c0, dtype)
    return ((h, c), hs), (w_hh, h0, c0, hs, cs, acts)


def _from_bwd(dtype, res, cts):
    return _recurrence_bwd_core(*res, cts, dtype)


lstm_recurrence_from.defvjp(_from_fwd, _from_bwd)


# The GRU (gate order r, z, n), with the LSTM's scheme of backward pass: the reverse loop
# carries dh and emits the cotangents of the gates; dW_hh and db_hn are one product and one
# sum after it.
#   r = sigmoid(gx_r + (h W_hh)_r),  z = sigmoid(gx_z + (h W_hh)_z)
#   n = tanh(gx_n + r * ((h W_hh)_n + b_hn)),  h' = (1 - z) * n + z * h
def _gru_cell(w_hh, b_hn, hprev, gx, dtype: str | None = None):
    """One GRU step (``w_hh`` already cast by the caller): ``h'`` and the activations the
    backward pass reads, ``[r, z, n, (h W_hh)_n + b_hn]``."""
    h = hprev.shape[-1]
    gh = _loop_matmul(hprev, w_hh, dtype, gx.dtype)
    r = jax.nn.sigmoid(gx[:, :h] + gh[:, :h])
    z = jax.nn.sigmoid(gx[:, h:2 * h] + gh[:, h:2 * h])
    ghn = gh[:, 2 * h:] + b_hn
    n = jnp.tanh(gx[:, 2 * h:] + r * ghn)
    h_new = (1.0 - z) * n + z * hprev
    return h_new, (h_new, jnp.concatenate([r, z, n, ghn], -1))


def _gru_fwd_scan(gates_x, w_hh, b_hn, h0, dtype=None):
    w = w_hh if dtype is None else w_hh.astype(dtype)  # cast once, outside the loop
    return jax.lax.scan(lambda h, gx: _gru_cell(w, b_hn, h, gx, dtype), h0, gates_x)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def gru_recurrence(gates_x, w_hh, b_hn, h0, dtype: str | None = None):
    """``gates_x (T, B, 3H)`` (input projection + bias, gate order r, z, n), ``w_hh (H, 3H)``,
    ``b_hn (H,)`` and the start state ``h0 (B, H)`` -> ``(final h, hs (T, B, H))``.
    ``dtype``: the products ``h @ W_hh`` (and the backward pass's) on operands of that dtype."""
    h, (hs, _) = _gru_fwd_scan(gates_x, w_hh, b_hn, h0, dtype)
    return h, hs


def _gru_fwd(gates_x, w_hh, b_hn, h0, dtype):
    h, (hs, acts) = _gru_fwd_scan(gates_x, w_hh, b_hn, h0, dtype)
    return (h, hs), (w_hh, h0, hs, acts)


def _gru_bwd(dtype, res, cts):
    w_hh, h0, hs, acts = res
    g_h_final, g_hs = cts
    hid = hs.shape[-1]
    h_prev_all = jnp.concatenate([h0[None], hs[:-1]], 0)
    w_t = w_hh.T if dtype is None else w_hh.T.astype(dtype)

    def body(dh, xs):
        g_h, h_prev, a = xs
        r, z, n, ghn = a[:, :hid], a[:, hid:2 * hid], a[:, 2 * hid:3 * hid], a[:, 3 * hid:]
        dh = dh + g_h
        dan = dh * (1.0 - z) * (1.0 - n * n)           # d(pre-activation of n)
        dar = dan * ghn * r * (1.0 - r)
        daz = dh * (h_prev - n) * z * (1.0 - z)
        dgh = jnp.concatenate([dar, daz, dan * r], -1)  # d(h W_hh), the candidate's part through r
        return dh * z + _loop_matmul(dgh, w_t, dtype, dh.dtype), (jnp.concatenate([dar, daz, dan], -1), dgh)

    dh0, (dgates, dgh) = jax.lax.scan(body, g_h_final, (g_hs, h_prev_all, acts), reverse=True)
    g_w = _weight_grad(h_prev_all, dgh, dtype, w_hh.dtype)
    g_bhn = jnp.sum(dgh[..., 2 * hid:], axis=(0, 1)).astype(w_hh.dtype)
    return dgates, g_w, g_bhn, dh0


gru_recurrence.defvjp(_gru_fwd, _gru_bwd)
