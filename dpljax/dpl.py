"""The dPL composition: a parameter source -> the hydrology chain -> streamflow.

- :class:`Hydrology` is the chain on *physical* parameters: a process model (any model of
  :data:`~dpljax.models.MODELS`) run by the generic simulator, then its routing. It knows
  nothing of networks, so calibration, evaluation and surrogates drive it the same way.
- A *source* makes the raw (unbounded) parameter values of a batch from its own variables
  ``theta``: :class:`NetworkSource` (a Flax NNX network on forcings and attributes; ``theta``
  is the network's state) or :class:`TableSource` (a per-basin table of raw values, what
  calibration optimises; ``theta`` is ``(B, n_outputs)``).
- :class:`DPL` holds the chain and the :class:`~dpljax.params.ParameterSpace` that maps raw
  values into the model's bounds; :func:`simulate` is the whole composition as a pure
  function ``(dpl, source, theta, batch, key) -> Result``, which training and evaluation
  jit-compile and differentiate.

``DPL`` and ``Hydrology`` are PyTrees whose leaves are the model's weights (none for HBV or
GR4J; a surrogate's network), so a compiled step takes them as arguments.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from .models.base import ProcessModel, simulate as simulate_model
from .nets.members import Stacked, raw_of
from .params import ParameterSpace


class Result(NamedTuple):
    """What the chain returns: routed streamflow ``q (B, T)`` (mm/d; the model's ``output``
    flux when that is not runoff, e.g. a surrogate's soil moisture), the component-averaged
    fluxes (``(B, T)`` each), the final states ``(B, nmul, ...)``, and the physical
    parameters (``(B, nmul)`` or ``(B, T, nmul)``) and routing parameters ``(B,)``."""

    q: Any
    fluxes: Any
    state: Any
    params: dict
    routing: dict


class Hydrology:
    """A process model and (optionally) the routing of its runoff, on physical parameters."""

    def __init__(self, model: ProcessModel, routing=None):
        self.model = model
        self.routing = routing

    @property
    def routing_bounds(self) -> dict[str, tuple[float, float]]:
        return self.routing.bounds if self.routing is not None else {}

    def __call__(self, params: Mapping[str, Any], routing_params: Mapping[str, Any],
                 forcing: Mapping[str, Any], state=None, detach: int = 0) -> Result:
        """``params[name]``: ``(B, nmul)`` or ``(B, T, nmul)``; ``forcing[name]``: ``(B, T)``
        raw forcing (the names of ``model.forcing``); ``routing_params[name]``: ``(B,)``.

        ``detach > 0`` (``train.warmup_grad=false``): the first ``detach`` days are a warm-up
        run forward only. The model runs them on stop-gradiented parameters and forcing, and
        the later days start from the warm-up's final state as a constant: two scans, so the
        backward pass (the model's adjoint) covers the later days only. Routing convolves the
        whole series, so the routed flow of the first later days still holds the warm-up's
        runoff (as a constant). Values are those of ``detach=0``; the outputs of the first
        ``detach`` days carry no gradient."""
        if detach:
            return self._detached(params, routing_params, forcing, state, int(detach))
        fluxes, final = simulate_model(self.model, params, forcing, state)
        q = getattr(fluxes, self.model.output)  # runoff q, unless the model predicts another flux
        if self.routing is not None:
            q = self.routing(q, routing_params)
        return Result(q, fluxes, final, dict(params), dict(routing_params))

    def _detached(self, params, routing_params, forcing, state, d: int) -> Result:
        sg = jax.lax.stop_gradient
        forcing = {n: forcing[n] for n in self.model.forcing}
        n_t = forcing[self.model.forcing[0]].shape[1]
        if not 0 < d < n_t:
            raise ValueError(f"detach={d} must lie in [0, {n_t}) (the series has {n_t} days)")
        # dynamic parameters (B, T, nmul) are split in time; static ones (B, nmul) serve both
        split = lambda v, sl: v[:, sl] if jnp.ndim(v) == 3 else v  # noqa: E731
        p_w = {k: sg(split(v, slice(None, d))) for k, v in params.items()}
        p_v = {k: split(v, slice(d, None)) for k, v in params.items()}
        fl_w, s_w = simulate_model(self.model, p_w, {n: sg(v[:, :d]) for n, v in forcing.items()},
                                   None if state is None else sg(state))
        fl_v, final = simulate_model(self.model, p_v, {n: v[:, d:] for n, v in forcing.items()}, sg(s_w))
        fluxes = jax.tree.map(lambda a, b: jnp.concatenate([sg(a), b], 1), fl_w, fl_v)
        q = getattr(fluxes, self.model.output)
        if self.routing is not None:
            q = self.routing(q, routing_params)
            q = jnp.concatenate([sg(q[:, :d]), q[:, d:]], 1)
        return Result(q, fluxes, final, dict(params), dict(routing_params))


jax.tree_util.register_pytree_node(
    Hydrology, lambda h: ((h.model, h.routing), None), lambda _, c: Hydrology(*c))


class NetworkSource:
    """Raw parameters from a Flax NNX network: ``theta`` is its state (``nnx.split``)."""

    def __init__(self, graphdef):
        self.graphdef = graphdef

    def __call__(self, theta, batch, key=None, detach: int = 0):
        """``detach > 0``: a sequence network runs its first ``detach`` steps forward only
        (see :meth:`dpljax.nets.LSTM.__call__`); a static network has no steps to detach. A
        network with a ``parts`` method hands over :class:`~dpljax.params.RawParts`; an ensemble
        (:class:`~dpljax.nets.Members`) a :class:`~dpljax.nets.Stacked` (see :func:`raw_of`)."""
        return raw_of(nnx.merge(self.graphdef, theta), batch.x_dynamic, batch.x_static, key=key, detach=detach)


class TableSource:
    """Raw parameters from a table, one row per basin of the batch: ``theta (B, n_outputs)``
    (static parameters and routing; the layout of :class:`~dpljax.params.ParameterSpace`)."""

    def __call__(self, theta, batch=None, key=None, detach: int = 0):
        return theta


def as_source(source):
    """A parameter source; a network's ``nnx.GraphDef`` stands for :class:`NetworkSource` of it."""
    return NetworkSource(source) if isinstance(source, nnx.GraphDef) else source


class DPL:
    """A parameter space (raw values -> bounded physical parameters) and a hydrology chain."""

    def __init__(self, chain: Hydrology | ProcessModel, space: ParameterSpace):
        """``chain``: a :class:`Hydrology`, or a process model, which is then routed by its
        default routing when ``space`` has routing parameters."""
        if isinstance(chain, ProcessModel):
            chain = Hydrology(chain, chain.default_routing if space.routing_bounds else None)
        if not isinstance(chain, Hydrology):
            raise TypeError(f"DPL takes a Hydrology chain or a process model, got {type(chain).__name__}")
        model = chain.model.with_bounds(space.bounds)  # a structure sized by the bounds (GR4J)
        if model is not chain.model:
            chain = Hydrology(model, chain.routing)
        if set(chain.routing_bounds) != set(space.routing_bounds):
            raise ValueError(f"the parameter space's routing parameters {list(space.routing_bounds)} "
                             f"are not the chain's {list(chain.routing_bounds)}")
        self.chain = chain
        self.space = space

    @classmethod
    def of(cls, model: ProcessModel, nmul: int = 16, dynamic=(), routing=True, bounds=None) -> "DPL":
        """The usual set-up: ``model`` with its default routing (``routing=True``) or none."""
        r = model.default_routing if routing else None
        space = ParameterSpace(dict(bounds or model.bounds), nmul, tuple(dynamic),
                               r.bounds if r is not None else {})
        return cls(Hydrology(model, r), space)

    @property
    def model(self) -> ProcessModel:
        return self.chain.model

    def from_raw(self, raw, forcing: Mapping[str, Any], state=None, detach: int = 0) -> Result:
        """Raw values ``(B, n_outputs)`` or ``(B, T, n_outputs)`` -> the chain's :class:`Result`
        (``detach``: see :meth:`Hydrology.__call__`)."""
        params, rparams = self.space.to_physical(raw)
        if detach:
            return self.chain(params, rparams, forcing, state, detach=detach)
        return self.chain(params, rparams, forcing, state)

    def __call__(self, net: nnx.Module, x_dynamic, x_static, forcing, *, key: jax.Array | None = None,
                 return_all: bool = False):
        """Routed streamflow ``(B, T)`` (mm/d) from a network (the :class:`Result` with
        ``return_all``; an ensemble's: see :func:`simulate`). ``forcing`` maps the model's
        forcing names to ``(B, T)`` arrays."""
        res = _chain(self, raw_of(net, x_dynamic, x_static, key=key), forcing)
        return res if return_all else res.q


jax.tree_util.register_pytree_node(
    DPL, lambda d: ((d.chain,), d.space), lambda space, c: DPL(c[0], space))


def simulate(dpl: DPL, source, theta, batch, key=None, detach: int = 0, each_member: bool = False) -> Result:
    """The composition as a pure function of ``theta`` (and of ``dpl``'s weights, if any):
    what is jit-compiled and differentiated. ``batch`` has ``forcing`` (a mapping of
    ``(B, T)`` arrays), and what the source reads (``x_dynamic``, ``x_static``).

    ``detach > 0`` (``train.warmup_grad=false``): the first ``detach`` days are a warm-up run
    forward only. The values are unchanged; the gradient is that of the later days' outputs
    with the warm-up's end treated as a constant: the process model's state (and the warm-up
    runoff that routing carries into the later days), and a sequence network's hidden state.
    Parameters shared by both parts (static ones, routing) get their gradient through the
    later days. The backward pass then skips the warm-up altogether.

    An ensemble source (``net.members``: :class:`~dpljax.nets.Members`) gives each basin ``M``
    parameter sets; the chain runs every member (the members folded into the batch) and
    returns their mean routed streamflow ``q (B, T)``, or with ``each_member`` the members'
    own ``q (B, M, T)``. The members' parameter sets are returned as ``M x nmul`` components
    (``(B, M * nmul)``, ``(B, T, M * nmul)``, member-major), as are the final states; the
    fluxes are the mean over all of them; routing parameters are ``(B, M)``."""
    return _chain(dpl, source(theta, batch, key, detach=detach) if detach else source(theta, batch, key),
                  batch.forcing, detach, each_member)


def _chain(dpl: DPL, raw, forcing, detach: int = 0, each_member: bool = False) -> Result:
    if not isinstance(raw, Stacked):
        return dpl.from_raw(raw, forcing, detach=detach)
    raw = raw.raw
    m, b = jax.tree.leaves(raw)[0].shape[:2]
    # basin-major fold (B*M): a basin's members stay with it where the batch is split by basin
    fold = lambda a: jnp.swapaxes(a, 0, 1).reshape(b * m, *a.shape[2:])  # noqa: E731
    res = dpl.from_raw(jax.tree.map(fold, raw), {n: jnp.repeat(v, m, axis=0) for n, v in forcing.items()},
                       detach=detach)
    unfold = lambda a: a.reshape(b, m, *a.shape[1:])  # noqa: E731

    def components(a):  # (B*M, nmul, ...) -> (B, M * nmul, ...); (B*M,) -> (B, M)
        a = unfold(a)
        return a if a.ndim == 2 else a.reshape(b, m * a.shape[2], *a.shape[3:])

    def param(a):  # static (B*M, nmul) or time-varying (B*M, T, nmul): members join the components
        if a.ndim == 3:
            return jnp.moveaxis(unfold(a), 1, 2).reshape(b, a.shape[1], m * a.shape[2])
        return components(a)

    q = unfold(res.q)
    return Result(q if each_member else q.mean(1), jax.tree.map(lambda a: unfold(a).mean(1), res.fluxes),
                  jax.tree.map(components, res.state), {k: param(v) for k, v in res.params.items()},
                  {k: unfold(v) for k, v in res.routing.items()})
