"""The process-model protocol, the generic simulator and the model registry.

A process model in dpljax is *data plus one pure step*. It declares

- ``bounds``: ordered ``name -> (lo, hi)`` of its parameters, in physical units;
- ``forcing``: the names of the forcing variables it reads (``("prcp", "tmean", "pet")``),
  which is all the data layer needs to know to build its inputs;
- ``Params``, ``State``, ``Fluxes``, ``Forcing``: typed NamedTuples (``Fluxes`` holds at
  least ``q``, runoff in mm/d; ``Forcing`` has a field per name of ``forcing``);
- ``initial_state(params) -> State`` and ``step(params, state, forcing_t) -> (state, fluxes)``
  for one basin, one component and one day, on scalars;
- ``storage(state)`` (mm of water held) and ``net_inflow(forcing_t, fluxes)`` (mm/d gained by
  the stores), so that one water-balance test serves every model;
- ``default_routing``: what routes its component-averaged runoff (``None``: the model routes
  itself, as GR4J's unit hydrographs do);
- ``output``: the flux the chain returns as its prediction, what losses, evaluation and
  calibration compare with the data's target (``"q"``, runoff, unless a model says otherwise:
  a soil-moisture surrogate may predict surface soil moisture);
- ``water_balance``: whether ``storage`` and ``net_inflow`` close a water balance (True; an
  emulator of another model's outputs has no stores of its own and says False);
- optionally its own adjoint, ``scan_adjoint(static, dynamic, forcing, state0)``.

A model is a PyTree (:func:`register_model` registers it): options such as ``capillary``
are static metadata, learnable weights (a surrogate's) are leaves, so they are arguments of a
compiled program rather than constants baked into it.

Everything else is generic and lives here: :func:`run` scans ``step`` over time for one
basin and one component, with an adjoint strategy chosen by name (:data:`ADJOINTS`);
:func:`simulate` vmaps it over components and basins and averages the components. Nothing in
``dpljax.models`` imports Flax, Optax or Hydra.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..registry import Registry

Bounds = Mapping[str, tuple[float, float]]

#: Adjoint strategies: how the backward pass through the time loop is computed.
#: ``autodiff``: reverse-mode autodiff of the scan (every intermediate of every day stored);
#: ``checkpoint``: the same with the day rematerialised (``jax.checkpoint`` of the scan body:
#: less memory, more compute); ``model``: the model's own hand-written adjoint.
ADJOINTS = ("autodiff", "checkpoint", "model")

MODELS: Registry = Registry("model")


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


def record(typename: str, fields, doc: str = "", defaults=None) -> type:
    """A NamedTuple type with :class:`KeyedTuple` access (``x.q`` and ``x["q"]``)."""
    base = namedtuple(f"_{typename}", tuple(fields), defaults=defaults)
    return type(typename, (KeyedTuple, base), {"__slots__": (), "__doc__": doc})


class Output(KeyedTuple, namedtuple("_Output", ("fluxes", "state"))):
    """What :func:`run` and :func:`simulate` return: ``(fluxes, final_state)``.

    Unpacks as a pair, and also answers ``out.q`` / ``out["q"]`` for the fluxes directly.
    """

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return getattr(tuple.__getitem__(self, 0), name)
        except AttributeError:
            raise AttributeError(name) from None

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str) and key not in ("fluxes", "state"):
            return tuple.__getitem__(self, 0)[key]
        return super().__getitem__(key)


class ProcessModel:
    """Base class of process models: the generic :meth:`run` and :meth:`simulate`.

    A subclass supplies the declarations listed in the module docstring. ``adjoint`` (an
    instance attribute, one of :data:`ADJOINTS`) picks the backward pass.
    """

    name: ClassVar[str]
    Params: ClassVar[type]
    State: ClassVar[type]
    Fluxes: ClassVar[type]
    Forcing: ClassVar[type]
    forcing: tuple[str, ...]
    default_routing: Any = None
    adjoint: str = "autodiff"
    output: str = "q"
    water_balance: bool = True

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def initial_state(self, params) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, params, state, x) -> tuple[Any, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def storage(self, state):  # pragma: no cover - abstract
        raise NotImplementedError

    def net_inflow(self, x, fluxes):  # pragma: no cover - abstract
        raise NotImplementedError

    def with_bounds(self, bounds: Bounds) -> "ProcessModel":
        """This model as it must be built to run with parameters in ``bounds`` (a model whose
        structure depends on its bounds, as GR4J's queue lengths do on ``x4``, returns a new
        instance); by default the model itself."""
        return self

    @property
    def valid_bounds(self) -> dict[str, tuple[float, float]]:
        """The ranges a direct call of :func:`run` accepts (checked on concrete inputs); by
        default :attr:`bounds`. A model whose structure follows its bounds widens them."""
        return self.bounds

    @property
    def has_adjoint(self) -> bool:
        return type(self).scan_adjoint is not ProcessModel.scan_adjoint

    def scan_adjoint(self, static, dynamic, forcing, s0):  # pragma: no cover - optional
        raise NotImplementedError(f"{self.name} has no hand-written adjoint")

    def run(self, params, forcing, state=None) -> Output:
        """:func:`run` with this model."""
        return run(self, params, forcing, state)

    def simulate(self, params, forcing, state=None) -> Output:
        """:func:`simulate` with this model."""
        return simulate(self, params, forcing, state)

    def __repr__(self) -> str:
        meta = ", ".join(f"{k}={getattr(self, k)!r}" for k in getattr(self, "_static_fields", ()))
        return f"{type(self).__name__}({meta})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and _meta(self) == _meta(other) and \
            all(a is b for a, b in zip(_children(self), _children(other)))

    def __hash__(self) -> int:
        return hash((type(self), _meta(self)))


def _meta(m) -> tuple:
    return tuple(getattr(m, k) for k in m._static_fields)


def _children(m) -> tuple:
    return tuple(getattr(m, k) for k in m._child_fields)


def register_model(name: str, *, static: tuple[str, ...] = (), children: tuple[str, ...] = ()):
    """Class decorator: register a :class:`ProcessModel` in :data:`MODELS` and as a PyTree.

    ``static``: attribute names that are options (hashable, part of the compiled program's
    identity); ``children``: attribute names holding arrays (weights), which become leaves.
    """

    def deco(cls):
        cls._static_fields = tuple(static)
        cls._child_fields = tuple(children)

        def flatten(m):
            return _children(m), _meta(m)

        def unflatten(meta, kids):
            m = object.__new__(cls)
            for k, v in zip(cls._static_fields, meta):
                object.__setattr__(m, k, v)
            for k, v in zip(cls._child_fields, kids):
                object.__setattr__(m, k, v)
            return m

        jax.tree_util.register_pytree_node(cls, flatten, unflatten)
        return MODELS.register(name)(cls)

    return deco


def check_adjoint(model: ProcessModel, adjoint: str) -> str:
    if adjoint not in ADJOINTS:
        raise ValueError(f"adjoint must be one of {list(ADJOINTS)}, got {adjoint!r}")
    if adjoint == "model" and not model.has_adjoint:
        raise ValueError(f"adjoint='model': {model.name} has no hand-written adjoint "
                         "(use 'autodiff' or 'checkpoint')")
    return adjoint


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


def _as_mapping(params) -> dict[str, Any]:
    if hasattr(params, "_asdict"):
        return dict(params._asdict())
    return dict(params)


def forcing_of(model: ProcessModel, forcing):
    """``model.Forcing`` from a mapping (or a NamedTuple) holding at least ``model.forcing``."""
    forcing = _as_mapping(forcing)
    missing = [n for n in model.forcing if n not in forcing or forcing[n] is None]
    if missing:
        raise KeyError(f"{model.name} needs forcing {list(model.forcing)}; missing {missing}")
    return model.Forcing(**{n: forcing[n] for n in model.forcing})


def run(model: ProcessModel, params, forcing, state=None, *, adjoint: str | None = None) -> Output:
    """Run ``model`` for one basin and one component over ``T`` days.

    Args:
      params: maps every name of ``model.bounds`` to a scalar (static) or a ``(T,)`` array
        (time-varying), physical units (a ``model.Params`` works too).
      forcing: maps (at least) every name of ``model.forcing`` to a ``(T,)`` array, in the
        model's physical units (not normalised); a ``model.Forcing`` works too.
      state: initial ``model.State`` (scalars); ``model.initial_state(params)`` when ``None``.
      adjoint: one of :data:`ADJOINTS`; ``None``: ``model.adjoint``. The values are the same
        either way; only the backward pass's speed and memory differ.

    Returns:
      :class:`Output` ``(fluxes, final_state)`` with ``(T,)`` fluxes.

    Raises:
      ValueError: on a parameter or forcing of the wrong shape; and, when the inputs are
      concrete (a direct call, not traced under ``jit``/``vmap``/``grad``), on a forcing value
      that is NaN or inf, or a parameter that is not finite or lies outside ``model.bounds``.
      Traced inputs are not checked (nothing is added to compiled programs): there,
      out-of-bounds parameters are used as given and NaN forcing gives NaN fluxes.
    """
    adjoint = check_adjoint(model, model.adjoint if adjoint is None else adjoint)
    names = tuple(model.bounds)
    if isinstance(params, model.Params):  # a typed record may carry defaults of variants
        p = {k: v for k, v in params._asdict().items() if k in names}
    else:
        p = _as_mapping(params)
    check_params(p, names, model.name)
    x = forcing_of(model, forcing)
    dtype = float_dtype(getattr(x, model.forcing[0]))
    # jnp.array(copy=True), not asarray: under vmap a NumPy input stays a NumPy value inside
    # its batch tracer, which a custom_vjp cannot take as a constant (free under jit).
    arr = lambda v: jnp.array(v, dtype=dtype, copy=True)
    x = jax.tree.map(arr, x)  # fields a variant does not read (None) stay None
    n_t = jnp.shape(getattr(x, model.forcing[0]))[0]
    for n in model.forcing:
        if jnp.shape(getattr(x, n)) != (n_t,):
            raise ValueError(f"{model.name}: forcing {n!r} has shape {jnp.shape(getattr(x, n))}; "
                             f"every forcing must be ({n_t},) (one basin, one component)")
    # Static parameters are closed over; time-varying ones are scanned with the forcing.
    static, dynamic = {}, {}
    for k in names:
        v = arr(p[k])
        if v.ndim == 0:
            static[k] = v
        elif v.shape == (n_t,):
            dynamic[k] = v
        else:
            raise ValueError(f"{model.name} parameter {k!r} has shape {v.shape}; "
                             f"expected () or ({n_t},)")
    _check_concrete(model, x, {**static, **dynamic}, n_t)
    if state is None:
        s0 = model.initial_state(model.Params(**static, **{k: v[0] for k, v in dynamic.items()}))
    else:
        s0 = model.State(*map(arr, state))
    if adjoint == "model":
        final, fluxes = model.scan_adjoint(static, dynamic, x, s0)
    else:
        def body(s, xs):
            xt, dyn = xs
            return model.step(model.Params(**static, **dyn), s, xt)

        if adjoint == "checkpoint":
            body = jax.checkpoint(body)
        final, fluxes = jax.lax.scan(body, s0, (x, dynamic))
    return Output(fluxes, final)


def _check_concrete(model: ProcessModel, x, params: dict, n_t: int) -> None:
    """On concrete inputs (a direct call, not under ``jit``, ``vmap`` or ``grad``): every
    forcing value finite, every parameter finite and inside ``model.valid_bounds``. Traced inputs
    are not checked (their values are unknown when the program is built), so nothing is
    added to compiled programs."""
    tracer = jax.core.Tracer
    for n in model.forcing:
        v = getattr(x, n)
        if v is None or isinstance(v, tracer):
            continue
        a = np.asarray(v)
        bad = np.flatnonzero(~np.isfinite(a))
        if len(bad):
            days = ", ".join(str(int(i)) for i in bad[:5]) + (f" ... ({len(bad)} days)" if len(bad) > 5 else "")
            raise ValueError(f"{model.name}: forcing {n!r} is NaN or inf on day(s) {days} of {n_t}; every "
                             "forcing value must be finite (fill or drop missing days first)")
    bounds = model.valid_bounds
    for k, v in params.items():
        if isinstance(v, tracer) or k not in bounds:
            continue
        a = np.asarray(v, dtype=np.float64)
        lo, hi = bounds[k]
        tol = 1e-6 * (hi - lo)
        bad = ~np.isfinite(a) | (a < lo - tol) | (a > hi + tol)
        if bad.any():
            val = a[bad].ravel()[0]
            where = f" (day {int(np.flatnonzero(bad.ravel())[0])})" if a.ndim else ""
            raise ValueError(f"{model.name}: parameter {k!r} = {val:g}{where} lies outside its bounds "
                             f"[{lo:g}, {hi:g}] (physical units); pass values inside the bounds, or run a "
                             "model built with other bounds (model.with_bounds)")


def simulate(model: ProcessModel, params, forcing, state=None, *, adjoint: str | None = None) -> Output:
    """Run a batch of basins, each with ``nmul`` parallel components, and average them.

    Args:
      params: maps every name of ``model.bounds`` to ``(B, nmul)`` (static) or
        ``(B, T, nmul)`` (time-varying) arrays.
      forcing: maps every name of ``model.forcing`` to a ``(B, T)`` array.
      state: initial state with ``(B, nmul, ...)`` leaves, or ``None``.

    Returns:
      :class:`Output`: fluxes averaged over the components, ``(B, T)`` each, and the final
      state of every component, ``(B, nmul, ...)``. This is ``jax.vmap`` of :func:`run` over
      components and then basins, nothing more.
    """
    p = _as_mapping(params)
    x = forcing_of(model, forcing)

    def one(pp, xx, ss):
        return run(model, pp, xx, ss, adjoint=adjoint)

    if state is None:
        per_comp = jax.vmap(lambda pp, xx: one(pp, xx, None), in_axes=(-1, None))
        fluxes, final = jax.vmap(per_comp, in_axes=(0, 0))(p, x)
    else:
        per_comp = jax.vmap(one, in_axes=(-1, None, 0))
        fluxes, final = jax.vmap(per_comp, in_axes=(0, 0, 0))(p, x, state)
    return Output(jax.tree.map(lambda v: v.mean(axis=1), fluxes), final)
