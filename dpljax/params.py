"""Parameter spaces: from a network's raw outputs to bounded physical parameters.

A :class:`ParameterSpace` knows, for one process model, the names and bounds of its
parameters, which of them vary in time (``dynamic``), how many parallel components each
basin has (``nmul``) and which routing parameters are learned (one set per basin). It fixes
the layout of the network's last axis: ``nmul`` columns per parameter, in the order of
``bounds`` (static and dynamic alike), then the routing parameters::

    [ bounds[0] x nmul | bounds[1] x nmul | ... | routing params ]

and maps raw values to physical ones with ``lo + sigmoid(raw) * (hi - lo)``. Static and
routing parameters are read from the network's *last* time step, dynamic ones from every
step (the reference practice of Tsai et al. 2021 and Feng et al. 2022).

A network whose static and time-varying outputs come from separate parts (``net=lstm_mlp``)
may hand over :class:`RawParts` instead: the same values without the static columns
repeated along time, which spares building that ``(B, T, n_outputs)`` array and its gradient.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp


class RawParts(NamedTuple):
    """Raw network output split by how the parameter space reads it: ``static (B, n_static)``,
    the columns read once per basin (static parameters, then routing; every column that is not
    one of :attr:`ParameterSpace.dynamic_columns`, in column order), and ``dynamic (B, T,
    n_dynamic)``, the :attr:`~ParameterSpace.dynamic_columns` in order, one row per day. The
    dense ``(B, T, n_outputs)`` form holds the same values with the static columns repeated
    along time."""

    static: Any
    dynamic: Any


@dataclass(frozen=True)
class ParameterSpace:
    """Layout and scaling of learned parameters.

    Args:
      bounds: ordered ``name -> (lo, hi)`` of the process model's parameters.
      nmul: parallel components per basin (16 in the reference studies).
      dynamic: names whose values vary in time (need a sequence network such as an LSTM).
      routing_bounds: ordered ``name -> (lo, hi)`` of per-basin routing parameters
        (empty: no routing).
    """

    bounds: Mapping[str, tuple[float, float]]
    nmul: int = 16
    dynamic: tuple[str, ...] = ()
    routing_bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "bounds", dict(self.bounds))
        object.__setattr__(self, "routing_bounds", dict(self.routing_bounds))
        object.__setattr__(self, "dynamic", tuple(self.dynamic))
        if int(self.nmul) < 1:
            raise ValueError(f"nmul must be >= 1, got {self.nmul}")
        unknown = [n for n in self.dynamic if n not in self.bounds]
        if unknown:
            raise ValueError(f"dynamic parameters {unknown} are not parameters of the model "
                             f"(known: {list(self.bounds)})")
        for name, (lo, hi) in {**self.bounds, **self.routing_bounds}.items():
            if not float(lo) < float(hi):
                raise ValueError(f"parameter {name!r}: lower bound {lo} must be < upper bound {hi}")

    def __hash__(self):  # usable as a static argument of jit
        return hash((tuple(self.bounds.items()), self.nmul, self.dynamic,
                     tuple(self.routing_bounds.items())))

    @property
    def static(self) -> tuple[str, ...]:
        return tuple(n for n in self.bounds if n not in self.dynamic)

    def columns(self, name: str) -> slice:
        """The ``nmul`` columns of the network's last axis that hold parameter ``name``."""
        i = list(self.bounds).index(name)
        return slice(i * self.nmul, (i + 1) * self.nmul)

    @property
    def dynamic_columns(self) -> tuple[int, ...]:
        """The columns of the network's last axis read at every step (the dynamic parameters');
        all others are read from the last step only."""
        return tuple(c for n in self.bounds if n in self.dynamic
                     for c in range(self.columns(n).start, self.columns(n).stop))

    @property
    def n_outputs(self) -> int:
        """Size of the network's last axis."""
        return len(self.bounds) * self.nmul + len(self.routing_bounds)

    def to_physical(self, raw) -> tuple[dict[str, Any], dict[str, Any]]:
        """Raw network output -> ``(model_params, routing_params)`` in physical units.

        ``raw`` is ``(B, n_outputs)`` (a static network), ``(B, T, n_outputs)`` or
        :class:`RawParts`. Returns model parameters of shape ``(B, nmul)`` (static) or ``(B, T,
        nmul)`` (dynamic) and routing parameters of shape ``(B,)``.
        """
        if isinstance(raw, RawParts):
            return self._from_parts(raw)
        if raw.shape[-1] != self.n_outputs:
            raise ValueError(f"network emits {raw.shape[-1]} values, the parameter space needs "
                             f"{self.n_outputs} ({len(self.bounds)} x nmul={self.nmul} + "
                             f"{len(self.routing_bounds)} routing)")
        if raw.ndim == 2:
            if self.dynamic:
                raise ValueError(f"dynamic parameters {list(self.dynamic)} need a sequence "
                                 "network (e.g. the LSTM g_z); this network is static")
            last, seq = raw, None
        elif raw.ndim == 3:
            last, seq = raw[:, -1], raw
        else:
            raise ValueError(f"raw network output must be 2-D or 3-D, got shape {raw.shape}")
        scaled = {}
        for name, (lo, hi) in self.bounds.items():
            src = seq if name in self.dynamic else last
            scaled[name] = lo + jax.nn.sigmoid(src[..., self.columns(name)]) * (hi - lo)
        off = len(self.bounds) * self.nmul
        routing = {
            name: lo + jax.nn.sigmoid(last[:, off + j]) * (hi - lo)
            for j, (name, (lo, hi)) in enumerate(self.routing_bounds.items())
        }
        return scaled, routing

    def _from_parts(self, raw: RawParts):
        n_dyn = len(self.dynamic) * self.nmul
        want = (self.n_outputs - n_dyn, n_dyn)
        if raw.static.ndim != 2 or raw.dynamic.ndim != 3 or (raw.static.shape[-1], raw.dynamic.shape[-1]) != want:
            raise ValueError(f"RawParts must be static (B, {want[0]}) and dynamic (B, T, {want[1]}) for this "
                             f"parameter space, got {tuple(raw.static.shape)} and {tuple(raw.dynamic.shape)}")
        scaled, i_s, i_d = {}, 0, 0
        for name, (lo, hi) in self.bounds.items():  # each name's nmul columns, in the order of bounds
            if name in self.dynamic:
                src, i_d = raw.dynamic[..., i_d:i_d + self.nmul], i_d + self.nmul
            else:
                src, i_s = raw.static[:, i_s:i_s + self.nmul], i_s + self.nmul
            scaled[name] = lo + jax.nn.sigmoid(src) * (hi - lo)
        routing = {name: lo + jax.nn.sigmoid(raw.static[:, i_s + j]) * (hi - lo)
                   for j, (name, (lo, hi)) in enumerate(self.routing_bounds.items())}
        return scaled, routing

    def to_raw(self, values: Mapping[str, Any]):
        """Inverse of the scaling for one set of physical values (for initialising or tests)."""
        out = {}
        for name, (lo, hi) in {**self.bounds, **self.routing_bounds}.items():
            if name in values:
                u = (jnp.asarray(values[name]) - lo) / (hi - lo)
                out[name] = jnp.log(u) - jnp.log1p(-u)
        return out
