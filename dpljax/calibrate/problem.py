"""A per-basin calibration problem: the hydrology chain of a :class:`~dpljax.dpl.DPL` driven by
one flat vector of physical parameters per basin, and the training loss of that basin.

Calibration searches the same space dPL learns into: the model's parameters (``nmul``
components each; 1 in the classic per-basin set-up) and the routing parameters, inside the
same bounds. A flat vector ``x (n,)`` has the layout of :class:`~dpljax.params.ParameterSpace`
(``[static params x nmul | routing params]``) but holds *physical* values, so a box optimiser
(SCE-UA) searches the box ``[lower, upper]`` directly, and a gradient optimiser maps free raw
values into it with the same sigmoid as dPL (:meth:`Problem.from_raw`).

The objective of a basin is its training loss (the experiment's loss, ``loss.per_basin``) on
the days after ``warmup`` of the span it is given: the same data, warm-up and loss as the dPL
experiments, which take their training windows inside that span after 365 warm-up days.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..dpl import DPL


class Problem:
    """Flat physical parameter vectors of one basin <-> the chain, and that basin's loss.

    Args:
      dpl: the chain and parameter space (no time-varying parameters: a calibrated basin has
        one value per parameter and component).
      loss: a loss of :data:`~dpljax.losses.LOSSES` (has ``per_basin``).
      warmup: days at the start of the span run but left out of the loss.
    """

    def __init__(self, dpl: DPL, loss, warmup: int):
        space = dpl.space
        if space.dynamic:
            raise ValueError(f"calibration finds one value per parameter and basin; "
                             f"model.dynamic={list(space.dynamic)} must be empty")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0 days, got {warmup}")
        self.dpl, self.loss, self.warmup = dpl, loss, int(warmup)
        m = space.nmul
        names, lo, hi = [], [], []
        for name, (a, b) in space.bounds.items():
            names += [name] if m == 1 else [f"{name}_{j}" for j in range(m)]
            lo += [a] * m
            hi += [b] * m
        for name, (a, b) in space.routing_bounds.items():
            names.append(name)
            lo.append(a)
            hi.append(b)
        self.names: tuple[str, ...] = tuple(names)
        self.lower = np.asarray(lo, np.float64)
        self.upper = np.asarray(hi, np.float64)

    @property
    def n(self) -> int:
        return len(self.names)

    def split(self, x) -> tuple[dict[str, Any], dict[str, Any]]:
        """``x (..., n)`` physical -> ``(params {name: (..., nmul)}, routing {name: (...)})``."""
        space, m = self.dpl.space, self.dpl.space.nmul
        params = {name: x[..., i * m:(i + 1) * m] for i, name in enumerate(space.bounds)}
        off = len(space.bounds) * m
        routing = {name: x[..., off + j] for j, name in enumerate(space.routing_bounds)}
        return params, routing

    def from_raw(self, raw):
        """Free raw values -> physical ``x``: ``lower + sigmoid(raw) (upper - lower)``, dPL's map."""
        lo, hi = (jnp.asarray(v, raw.dtype) for v in (self.lower, self.upper))
        return lo + jax.nn.sigmoid(raw) * (hi - lo)

    def to_raw(self, x):
        """Inverse of :meth:`from_raw` (``x`` strictly inside the box)."""
        lo, hi = (jnp.asarray(v, jnp.result_type(x)) for v in (self.lower, self.upper))
        u = (x - lo) / (hi - lo)
        return jnp.log(u) - jnp.log1p(-u)

    def simulate(self, x, forcing: Mapping[str, Any]):
        """Routed streamflow ``(B, T)`` (mm/d) of ``B`` basins, ``x (B, n)`` physical,
        ``forcing[name] (B, T)`` (the names of the model's forcing)."""
        params, routing = self.split(x)
        return self.dpl.chain(params, routing, forcing).q

    def losses(self, x, forcing: Mapping[str, Any], obs, obs_std):
        """Each basin's loss ``(B,)`` after the warm-up: ``x (B, n)``, ``obs (B, T)``."""
        q = self.simulate(x, forcing)
        w = self.warmup
        return self.loss.per_basin(q[:, w:], obs[:, w:], obs_std)

    def objective(self, x, forcing: Mapping[str, Any], obs, obs_std):
        """The loss of one basin, a scalar: ``x (n,)``, ``forcing[name] (T,)``, ``obs (T,)``,
        ``obs_std ()``: the function a per-basin optimiser minimises (vmap it over basins)."""
        add = lambda v: jnp.asarray(v)[None]
        return self.losses(x[None], {k: add(v) for k, v in forcing.items()}, add(obs), add(obs_std))[0]
