"""The dPL composition: network -> parameters -> process model -> routing -> streamflow.

``DPL`` holds the static pieces (process model, parameter space, routing on/off) and is
called with a Flax NNX network; :func:`simulate_split` is the same as a pure function of the
network's parameters, which is what gets differentiated and jit-compiled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from .models.base import Forcing, ProcessModel
from .models.routing import route, unit_hydrograph
from .params import ParameterSpace


@dataclass(frozen=True)
class DPL:
    """A differentiable parameter-learning model ``g`` (network) + ``h`` (process model)."""

    model: ProcessModel
    space: ParameterSpace

    @property
    def routing(self) -> bool:
        return bool(self.space.routing_bounds)

    def __call__(self, net: nnx.Module, x_dynamic, x_static, forcing, *, key: jax.Array | None = None,
                 return_all: bool = False):
        """Routed streamflow ``(B, T)`` in mm/d.

        ``forcing``: ``(B, T, 3)`` raw prcp, tmean, pet. With ``return_all`` also returns a dict
        with the physical parameters, routing parameters and the component-averaged fluxes.
        """
        raw = net(x_dynamic, x_static, key=key)
        params, rparams = self.space.to_physical(raw)
        f = Forcing(forcing[..., 0], forcing[..., 1], forcing[..., 2])
        fluxes, _ = self.model.simulate(params, f)
        q = fluxes["q"]
        if self.routing:
            w = unit_hydrograph(rparams["route_a"], rparams["route_b"])
            q = route(q, w)
        if return_all:
            return q, {"params": params, "routing": rparams, "fluxes": fluxes}
        return q


def simulate_split(graphdef, net_state, dpl: DPL, x_dynamic, x_static, forcing, key=None) -> Any:
    """:meth:`DPL.__call__` as a pure function of the network's state (for jit and grad)."""
    net = nnx.merge(graphdef, net_state)
    return dpl(net, x_dynamic, x_static, forcing, key=key)


def warm_slice(q: jnp.ndarray, warmup: int) -> jnp.ndarray:
    """Drop the warm-up days (their outputs never enter a loss or a metric)."""
    return q[:, warmup:]
