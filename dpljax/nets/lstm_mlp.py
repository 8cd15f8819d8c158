"""g_z only where parameters vary in time: an LSTM for the dynamic parameters, an MLP for the rest.

The plain :class:`~dpljax.nets.LSTM` emits every parameter at every step and the static ones
are read from its last step, so one LSTM carries all ``(13 + 2) x nmul + 2`` outputs and a
basin's static parameters depend on the window it was shown. Here the LSTM (forcings +
attributes) emits only the time-varying parameters' columns, and an MLP on the attributes the
static and routing ones, once per basin (the split of the "adjusted" dHBV models). The LSTM
can then be smaller for the same accuracy, and its cost is most of a training step.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..params import RawParts
from .lstm import LSTM
from .mlp import MLP
from .registry import register_net


@register_net("lstm_mlp")
class LSTMMLP(nnx.Module):
    """``(x_dynamic (B, T, n_dyn), x_static (B, n_static)) -> raw (B, T, n_out)``.

    ``dynamic_columns``: which of the ``n_out`` output columns vary in time (the parameter
    space's :attr:`~dpljax.params.ParameterSpace.dynamic_columns`; the experiment passes it).
    Those come from an :class:`~dpljax.nets.LSTM` of ``hidden`` units fed forcings and
    attributes (dropout ``dropout`` on its output; ``stride``: blocks of days per step,
    ``input_size``: width of its input layer, see :class:`~dpljax.nets.LSTM`); the others from
    an :class:`~dpljax.nets.MLP` of ``mlp_hidden`` on the attributes alone (dropout
    ``mlp_dropout``), repeated along time. ``cell``: the recurrent cell, ``"lstm"`` or ``"gru"``
    (see :class:`~dpljax.nets.LSTM`). ``compute_dtype``: the LSTM's matrix products in
    mixed precision (see :class:`~dpljax.nets.LSTM`); the MLP, run once per basin, stays in
    the parameters' dtype.
    """

    is_sequence = True
    takes_layout = True  # built with the parameter space's dynamic_columns

    def __init__(self, n_dynamic: int, n_static: int, n_out: int, *, dynamic_columns: Sequence[int],
                 hidden: int = 64, dropout: float = 0.5, stride: int = 1, input_size: int | None = None,
                 mlp_hidden: Sequence[int] = (256,),
                 mlp_dropout: float = 0.0, compute_dtype: str | None = None, cell: str = "lstm",
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        dyn = sorted(int(c) for c in dynamic_columns)
        if not dyn:
            raise ValueError("net=lstm_mlp needs time-varying parameters (model.dynamic): without them "
                             "its LSTM has nothing to emit; use net=mlp")
        if len(set(dyn)) != len(dyn) or dyn[0] < 0 or dyn[-1] >= n_out:
            raise ValueError(f"dynamic_columns must be distinct columns in [0, {n_out}), got {list(dynamic_columns)}")
        static = sorted(set(range(n_out)) - set(dyn))
        self.seq = LSTM(n_dynamic, n_static, len(dyn), hidden=hidden, dropout=dropout, stride=stride,
                        input_size=input_size, compute_dtype=compute_dtype, cell=cell, param_dtype=param_dtype,
                        rngs=rngs)
        self.mlp = MLP(n_dynamic, n_static, len(static), hidden=tuple(mlp_hidden), dropout=mlp_dropout,
                       param_dtype=param_dtype, rngs=rngs)
        # column c of the output is column order[c] of concat([mlp, lstm]): where c sits in static + dyn
        self.order = tuple(int(j) for j in np.argsort(static + dyn))  # a constant of the layout, not state

    def parts(self, x_dynamic, x_static, *, key: jax.Array | None = None, detach: int = 0) -> RawParts:
        """The raw parameters as :class:`~dpljax.params.RawParts`: the MLP's static and routing
        columns ``(B, n_static_cols)`` and the LSTM's time-varying ones ``(B, T, n_dyn)``, what
        training reads (``detach``: see :meth:`dpljax.nets.LSTM.__call__`; the MLP has no steps:
        its columns get their gradient from every step they feed). Without the dense array of
        :meth:`__call__` and its gradient, a training step of the adjusted dHBV on 2 CPU cores
        takes 0.7x the time with an LSTM-256, 0.5x with an LSTM-128 (benchmarks/results/step_parts.json)."""
        k_seq, k_mlp = (None, None) if key is None else jax.random.split(key)
        d = self.seq(x_dynamic, x_static, key=k_seq, detach=detach)   # (B, T, n_dyn)
        s = self.mlp(x_dynamic, x_static, key=k_mlp)                  # (B, n_static_cols)
        return RawParts(s, d)

    def __call__(self, x_dynamic, x_static, *, key: jax.Array | None = None, detach: int = 0):
        """Raw parameters ``(B, T, n_out)``: :meth:`parts` with the static columns repeated along time."""
        s, d = self.parts(x_dynamic, x_static, key=key, detach=detach)
        s = jnp.broadcast_to(s[:, None, :], (*d.shape[:2], s.shape[-1]))
        return jnp.take(jnp.concatenate([s, d], -1), np.asarray(self.order), axis=-1)
