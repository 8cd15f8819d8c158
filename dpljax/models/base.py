"""The process-model protocol and the model registry.

A process model in dpljax is *data plus one pure step*: a parameter spec (names, physical
bounds), a state type, and ``step(params, state, forcing_t) -> (state, fluxes_t)`` written
for one basin, one component and one day on scalars. Everything else (time, components,
basins) is a transformation: ``jax.lax.scan`` over time, ``jax.vmap`` over components and
basins. Nothing in ``dpljax.models`` imports Flax, Optax or Hydra.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, NamedTuple, Protocol, runtime_checkable

import jax.numpy as jnp

Bounds = Mapping[str, tuple[float, float]]


class KeyedTuple(tuple):
    """Mixin for NamedTuples that also answer ``obj["name"]`` (handy for dict-minded users)."""

    __slots__ = ()

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            try:
                return getattr(self, key)
            except AttributeError:
                raise KeyError(key) from None
        return tuple.__getitem__(self, key)

    def keys(self):
        return self._fields  # type: ignore[attr-defined]


class Forcing(NamedTuple):
    """Daily forcing of a lumped conceptual model (any shape, broadcast together).

    prcp: precipitation (mm/d); tmean: mean air temperature (degC); pet: potential ET (mm/d).
    """

    prcp: Any
    tmean: Any
    pet: Any


@runtime_checkable
class ProcessModel(Protocol):
    """What :mod:`dpljax.dpl` needs from a process model.

    ``bounds`` is an ordered mapping name -> (lo, hi) of the parameters a network learns,
    in physical units. ``simulate(params, forcing, state=None)`` runs a batch: ``params`` maps
    every name of ``bounds`` to an array of shape ``(B, nmul)`` (static) or ``(B, T, nmul)``
    (dynamic), ``forcing`` is a :class:`Forcing` of ``(B, T)`` arrays; it returns a dict of
    component-averaged fluxes of shape ``(B, T)`` (at least ``"q"``, mm/d).
    """

    name: ClassVar[str]
    bounds: ClassVar[Bounds]

    def simulate(self, params: Mapping[str, Any], forcing: Forcing, state: Any = None) -> dict: ...


MODELS: dict[str, Callable[..., ProcessModel]] = {}


def register_model(name: str):
    """Class decorator: ``@register_model("hbv")`` adds a model to :data:`MODELS`."""

    def deco(cls):
        if name in MODELS:
            raise ValueError(f"process model {name!r} is registered twice")
        MODELS[name] = cls
        cls.name = name
        return cls

    return deco


def check_params(params: Mapping[str, Any], names: tuple[str, ...], model: str) -> None:
    """Raise a clear error when ``params`` misses or adds parameter names."""
    have = set(params)
    missing = [n for n in names if n not in have]
    extra = sorted(have - set(names))
    if missing or extra:
        msg = f"{model}: parameters do not match the model's spec"
        if missing:
            msg += f"; missing {missing}"
        if extra:
            msg += f"; unknown {extra}"
        raise KeyError(msg + f" (expected {list(names)})")


def float_dtype(x):
    """The floating dtype of ``x`` (weak types included), float32 for integers."""
    dt = jnp.asarray(x).dtype
    return dt if jnp.issubdtype(dt, jnp.floating) else jnp.dtype(jnp.float32)


def floor_pos(x, eps: float = 1e-6):
    """``max(x, eps)``: the base of a power of a storage, kept away from 0 for safe gradients."""
    return jnp.maximum(x, eps)
