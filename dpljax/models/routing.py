"""Gamma unit-hydrograph routing of a basin's runoff (per basin, after averaging components).

``alpha = relu(route_a) + 0.1``, ``theta = relu(route_b) + 0.5``; the weights are the gamma
density evaluated at ``t = 0.5, 1.5, ..., n - 0.5`` days, ``w_k ∝ t_k^(alpha-1) exp(-t_k/theta)``,
normalised to sum to one (computed as a softmax of the log-density, so it cannot overflow),
and the routed flow is the causal convolution ``Q[t] = sum_k w[k] q[t-k]``. Mass is conserved:
every unit of ``q`` leaves within ``n`` days.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .base import float_dtype

#: Bounds of the two routing parameters a network learns (one pair per basin).
BOUNDS: dict[str, tuple[float, float]] = {"route_a": (0.0, 2.9), "route_b": (0.0, 6.5)}
N_TAPS = 15  # days of the unit hydrograph


def unit_hydrograph(route_a, route_b, n: int = N_TAPS):
    """Weights ``(..., n)`` summing to 1, for parameters of any (shared) batch shape."""
    alpha = jax.nn.relu(route_a) + 0.1
    theta = jax.nn.relu(route_b) + 0.5
    dtype = float_dtype(alpha)
    t = jnp.arange(n, dtype=dtype) + 0.5
    logw = (alpha[..., None] - 1.0) * jnp.log(t) - t / theta[..., None]
    return jax.nn.softmax(logw, axis=-1)


def route(q, w):
    """Causal convolution of runoff ``q (..., T)`` with weights ``w (..., n)`` -> ``(..., T)``."""
    n, n_t = w.shape[-1], q.shape[-1]
    pad = [(0, 0)] * (q.ndim - 1) + [(n - 1, 0)]
    qp = jnp.pad(q, pad)
    out = jnp.zeros_like(q)
    for k in range(n):  # n = 15 shifted adds; cheaper than an FFT or a grouped conv here
        out = out + w[..., k : k + 1] * qp[..., n - 1 - k : n - 1 - k + n_t]
    return out


class GammaRouting:
    """The gamma unit hydrograph as a routing of a model's component-averaged runoff.

    One ``(route_a, route_b)`` pair per basin (:data:`BOUNDS`); ``__call__(q (B, T), params)``
    returns the routed flow. A PyTree with no leaves (``n_taps`` is static).
    """

    def __init__(self, n_taps: int = N_TAPS):
        self.n_taps = int(n_taps)

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return dict(BOUNDS)

    def __call__(self, q, params):
        return route(q, unit_hydrograph(params["route_a"], params["route_b"], self.n_taps))

    def __eq__(self, other):
        return type(other) is type(self) and other.n_taps == self.n_taps

    def __hash__(self):
        return hash((type(self), self.n_taps))

    def __repr__(self):
        return f"GammaRouting(n_taps={self.n_taps})"


jax.tree_util.register_pytree_node(GammaRouting, lambda r: ((), r.n_taps), lambda n, _: GammaRouting(n))
