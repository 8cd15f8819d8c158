"""An ensemble of parameter networks trained in one compiled program (``net.members``).

``Members`` holds ``n`` networks of one configuration, each with its own initial weights, as
one module whose weights carry a leading member axis (what ``nnx.vmap`` builds); its forward
pass is ``jax.vmap`` over that axis, so the members' matrix products are batched products in
one step and one optimiser updates them all. Each member gives the process model its own
parameters (:class:`Stacked`); :func:`dpljax.dpl.simulate` runs the model for every member and
returns the members' mean routed streamflow, the way the reference studies average the flows of
LSTMs trained from different seeds. Training minimises the mean of the members' own losses, so
each member is trained as if alone, on the same batches (see :func:`dpljax.train.make_train_step`):
an ensemble, not one larger model fitted through its mean.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx


class Stacked(NamedTuple):
    """Raw parameters of the members of a :class:`Members` network: ``raw`` is what one member
    gives (an array ``(B, ...)`` or :class:`~dpljax.params.RawParts`) with a leading member axis,
    ``(M, B, ...)``."""

    raw: Any


def raw_of(net: nnx.Module, x_dynamic, x_static, *, key: jax.Array | None = None, detach: int = 0):
    """The raw parameters a network gives training and evaluation: :class:`~dpljax.params.RawParts`
    from a network with a ``parts`` method (``net=lstm_mlp``), else its dense output; a
    :class:`Stacked` from :class:`Members`. ``detach``: steps run forward only (a sequence
    network; a static network has none)."""
    if isinstance(net, Members):
        return net.raw(x_dynamic, x_static, key=key, detach=detach)
    if callable(getattr(net, "parts", None)):  # split output (net=lstm_mlp): no dense array
        return net.parts(x_dynamic, x_static, key=key, detach=detach)
    return dense_of(net, x_dynamic, x_static, key=key, detach=detach)


def dense_of(net: nnx.Module, x_dynamic, x_static, *, key: jax.Array | None = None, detach: int = 0):
    """A network's dense output; ``detach`` reaches a sequence network only (a static one has
    no steps to run forward only)."""
    if detach and getattr(net, "is_sequence", False):
        return net(x_dynamic, x_static, key=key, detach=detach)
    return net(x_dynamic, x_static, key=key)


def _whole_members(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"members must be a whole number >= 2 (1 is the network alone), got {n!r}")
    return n


class Members(nnx.Module):
    """``n`` networks made by ``make(rngs)``, their weights stacked on a leading member axis.

    Member ``i`` is initialised from ``nnx.Rngs(k_i)``, ``k_i`` the ``i``-th of ``n`` keys split
    from ``rngs.params()``. Dropout keys are split per member as well, so members differ in
    their initial weights and their dropout masks, and see the same batches.
    """

    def __init__(self, make: Callable[[nnx.Rngs], nnx.Module], n: int, *, rngs: nnx.Rngs):
        self.n = _whole_members(n)
        keys = jax.random.split(rngs.params(), self.n)
        nets = [make(nnx.Rngs(k)) for k in keys]
        graphdef = nnx.graphdef(nets[0])
        states = [nnx.state(m) for m in nets]
        self.nets = nnx.merge(graphdef, jax.tree.map(lambda *xs: jnp.stack(xs), *states))
        self.is_sequence = bool(getattr(nets[0], "is_sequence", False))

    def _each(self, fn: Callable, key):
        graphdef, state = nnx.split(self.nets)
        if key is None:
            return jax.vmap(lambda st: fn(nnx.merge(graphdef, st), None))(state)
        return jax.vmap(lambda st, k: fn(nnx.merge(graphdef, st), k))(state, jax.random.split(key, self.n))

    def raw(self, x_dynamic, x_static, *, key: jax.Array | None = None, detach: int = 0) -> Stacked:
        """Each member's :func:`raw_of`, stacked: a :class:`Stacked` of ``(M, B, ...)``."""
        return Stacked(self._each(lambda net, k: raw_of(net, x_dynamic, x_static, key=k, detach=detach), key))

    def __call__(self, x_dynamic, x_static, *, key: jax.Array | None = None, detach: int = 0) -> Stacked:
        """Each member's dense output, stacked: a :class:`Stacked` of ``(M, B, [T,] n_out)``."""
        return Stacked(self._each(lambda net, k: dense_of(net, x_dynamic, x_static, key=k, detach=detach), key))
