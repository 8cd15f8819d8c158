"""Gradient calibration per basin: free raw parameters, dPL's sigmoid bounds, Optax, restarts.

Each basin ``i`` and restart ``k`` has its own free vector ``raw[k, i] (n,)``; its physical
parameters are ``x = problem.from_raw(raw) = lower + sigmoid(raw) (upper - lower)``, the same
map dPL applies to a network's output, so calibration and dPL search the same box and neither
needs a projection. The objective of a row is that basin's training loss after the warm-up
(:meth:`~dpljax.calibrate.Problem.losses`).

Independence. All ``K x N`` rows are evolved at once: one jitted step runs the chain on a
batch of ``K * N`` basins (the forcing tiled ``K`` times) and takes the gradient of the *sum*
of the rows' losses. Row ``r``'s loss depends only on ``raw[r]`` (the chain is vmapped over
basins and the loss is reduced per basin), so the gradient of the sum with respect to
``raw[r]`` is exactly that row's own gradient. The optimiser is ``jax.vmap``-ed over the rows,
so every row has its own optimiser state (Adam's moments *and* its step count), and any
transformation that reduces over parameters (e.g. ``optax.clip_by_global_norm``) reduces over
that row alone. Hence the run is exactly ``K x N`` independent optimisations: a basin's result
does not depend on which other basins share the batch: bit for bit when the other basins
change (same batch shape; tested with a NaN basin among them), and up to float rounding
(~1e-7 relative per step, XLA vectorises another batch size differently) when run alone.

Non-finite values. If a row's loss or any component of its gradient is not finite, that row's
update is skipped (its parameters and optimiser state stay as they were) and
``n_nonfinite[k, i]`` counts it; the other rows are unaffected. A row whose simulation has a
non-finite value has a NaN loss whatever the loss function makes of it. A row stuck on non-finite
values keeps its last finite point; its loss is reported as ``inf`` if it never had one.

Best point. With the full span (``window=None``, the default) every step evaluates the loss of
the current point before updating it, and each row keeps the best point it has seen (Adam need
not decrease the loss monotonically); :func:`GradientCalibration.result` also evaluates the
final point (one forward pass per row), then keeps per basin the restart with the lowest
training loss. With ``window=w`` each step's loss is taken on a random window of ``warmup + w``
days of the span (the same window for all rows in a step), so only the final points are
compared, on the full span.

Measured on the 8-basin sample (HBV nmul=1, 13 + 2 parameters, train WY2000-2008 = 3288 days,
warm-up 365, RMSECombined, K = 4, Adam on the raw values; 2-core CPU shared with other jobs):

  median best training loss    100 steps  200     400
  learning rate 0.05           0.781      0.765   0.761
  learning rate 0.1            0.767      0.762   0.761
  learning rate 0.2            0.762      0.761   0.758
  SCE-UA (4 complexes, <= 10,000 evaluations, same problem): 0.762

  windows of 365 + 365 days, lr 0.1: 0.773 (200), 0.778 (400), 0.772 (800), 0.792 (1600):
  noisy and above the full-span optimum, though a step is only ~3x cheaper; hence the full
  span is the default and windows an option.

Hence the defaults (lr 0.1, 300 steps, 4 restarts). Cost: one step is a forward and a backward
pass (HBV's hand-written adjoint) of ``K x N`` basins over the span, ~0.45 us per basin-day at
256 rows (1.1 us at 32 rows): 531 basins x 4 restarts x 3288 days ~ 3 s per step on 2 cores.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .problem import Problem


class GradCalState(NamedTuple):
    """Everything a run needs to continue, as arrays (a PyTree: checkpoint it between chunks).

    ``K`` restarts, ``N`` basins, ``n`` parameters, ``S`` total steps of the run.
    """
    raw: jax.Array          # (K, N, n) current free values
    opt_state: Any          # optimiser state, every leaf with leading (K, N)
    best_raw: jax.Array     # (K, N, n) best point seen per row (full span only)
    best_loss: jax.Array    # (K, N) its loss (inf until one finite loss was seen)
    n_nonfinite: jax.Array  # (K, N) int32: skipped updates
    history: jax.Array      # (S, K, N) loss of the point each step started from (NaN: not run)
    step: jax.Array         # () int32: steps done
    key: jax.Array          # PRNG key for the windows


class GradCalResult(NamedTuple):
    """Outcome of a gradient calibration of ``N`` basins with ``K`` restarts.

    x: ``(N, n)`` best physical parameters per basin (over restarts and, on the full span,
      over the points visited). loss: ``(N,)`` its training loss (full span).
    restart: ``(N,)`` the restart that gave it. losses: ``(K, N)`` every restart's best loss.
    xs: ``(K, N, n)`` every restart's best physical parameters.
    history: ``(S, K, N)`` loss of each step's starting point (on the window if windowed).
    n_evals: forward + backward passes per basin, all restarts together (``K x steps``).
    n_forward: forward-only passes per basin (the final evaluation: ``K``).
    n_nonfinite: ``(K, N)`` skipped (non-finite) updates.
    days_per_eval: days each forward + backward pass ran (``T``, or ``warmup + window``).
    """
    x: np.ndarray
    loss: np.ndarray
    restart: np.ndarray
    losses: np.ndarray
    xs: np.ndarray
    history: np.ndarray
    n_evals: int
    n_forward: int
    n_nonfinite: np.ndarray
    days_per_eval: int


class GradientCalibration:
    """A gradient calibration of ``N`` basins: static set-up, data, and the jitted step.

    Args:
      problem: the :class:`~dpljax.calibrate.Problem` (chain, loss, warm-up, box).
      forcing: ``{name: (N, T)}`` raw forcing of the model. obs: ``(N, T)`` (NaN masked).
      obs_std: ``(N,)`` (used by losses such as NSEBatch).
      restarts: ``K`` random starting points per basin, evolved at once.
      steps: total optimiser steps ``S`` (fixes the history's length and any schedule).
      learning_rate: a float or an Optax schedule, given to ``optimizer``.
      optimizer: a factory ``learning_rate -> optax.GradientTransformation`` (default
        ``optax.adam``), or a ready ``GradientTransformation`` (``learning_rate`` unused).
      window: ``None`` (default): every step on the full span; an int ``w``: every step on a
        random window of ``problem.warmup + w`` days of the span.
      init_margin: initial points are drawn uniformly in the box shrunk by this fraction of
        each side's width at both ends (the sigmoid map's raw value is infinite at the bounds).
    """

    def __init__(self, problem: Problem, forcing: Mapping[str, Any], obs, obs_std, *,
                 restarts: int = 4, steps: int = 300, learning_rate=0.1,
                 optimizer: Callable | optax.GradientTransformation = optax.adam,
                 window: int | None = None, init_margin: float = 0.01):
        missing = [name for name in problem.dpl.chain.model.forcing if name not in forcing]
        if missing:
            raise ValueError(f"forcing lacks {missing} (the model needs "
                             f"{list(problem.dpl.chain.model.forcing)}; got {list(forcing)})")
        forcing = {k: jnp.asarray(forcing[k]) for k in problem.dpl.chain.model.forcing}
        obs, obs_std = jnp.asarray(obs), jnp.asarray(obs_std)
        if obs.ndim != 2:
            raise ValueError(f"obs must be (N basins, T days), got shape {obs.shape}")
        n_basins, n_days = obs.shape
        for name, v in forcing.items():
            if v.shape != obs.shape:
                raise ValueError(f"forcing[{name!r}] has shape {v.shape}; obs has {obs.shape} "
                                 f"(both must be (N basins, T days))")
        if obs_std.shape != (n_basins,):
            raise ValueError(f"obs_std must be ({n_basins},) (one per basin), got {obs_std.shape}")
        if int(restarts) < 1 or int(steps) < 0:
            raise ValueError(f"restarts must be >= 1 and steps >= 0, got {restarts}, {steps}")
        if n_days <= problem.warmup:
            raise ValueError(f"the span has {n_days} days, not more than the warm-up "
                             f"({problem.warmup}): no day is left for the loss")
        if window is not None and not 1 <= int(window) <= n_days - problem.warmup:
            raise ValueError(f"window must be in 1..{n_days - problem.warmup} days "
                             f"(span {n_days} - warm-up {problem.warmup}), got {window}")
        if not 0.0 < init_margin < 0.5:
            raise ValueError(f"init_margin must be in (0, 0.5), got {init_margin}")
        self.problem, self.forcing, self.obs, self.obs_std = problem, forcing, obs, obs_std
        self.restarts, self.steps = int(restarts), int(steps)
        self.n_basins, self.n_days = n_basins, n_days
        self.window = None if window is None else int(window)
        self.init_margin = float(init_margin)
        self.dtype = obs.dtype
        if isinstance(optimizer, optax.GradientTransformation):
            self.optimizer = optimizer
        else:
            self.optimizer = optimizer(learning_rate)
        # Everything static about the compiled programs, hashable: calibrations that share a
        # problem, an optimizer object, K, the window and the data's shapes share one compile.
        self._spec = _Spec(problem, self.optimizer, self.restarts, self.steps, self.window,
                           self.init_margin)

    def init(self, key, x0=None) -> GradCalState:
        """Start ``K`` restarts per basin. ``x0``: optional physical starting points,
        ``(N, n)`` (every restart from it) or ``(K, N, n)``, strictly inside the box;
        default: uniform in the box (shrunk by ``init_margin``), drawn from ``key``."""
        k, n_b, n = self.restarts, self.n_basins, self.problem.n
        if x0 is not None:
            x0 = np.asarray(x0, np.float64)
            if x0.shape == (n_b, n):
                x0 = np.broadcast_to(x0, (k, n_b, n))
            if x0.shape != (k, n_b, n):
                raise ValueError(f"x0 must be ({n_b}, {n}) or ({k}, {n_b}, {n}) "
                                 f"(basins, parameters), got {x0.shape}")
            inside = (x0 > self.problem.lower) & (x0 < self.problem.upper)
            if not inside.all():
                bad = sorted({self.problem.names[j] for j in np.nonzero(~inside)[-1]})
                raise ValueError(f"x0 must lie strictly inside the box; not so for {bad}")
            x0 = jnp.asarray(x0, self.dtype)
        return _init(self._spec._replace(window=None), key, x0, n_b, self.dtype)

    # ---------------------------------------------------------------- public
    def step_n(self, state: GradCalState, n: int) -> GradCalState:
        """``n`` more steps (at most the steps left of ``steps``), in one compiled loop: call
        it in chunks and checkpoint ``state`` between them; chunks give what one call gives."""
        n = min(int(n), self.steps - int(state.step))
        if n <= 0:
            return state
        return _run(self._spec, state, jnp.int32(n), self.forcing, self.obs, self.obs_std)

    def result(self, state: GradCalState) -> GradCalResult:
        """Evaluate the final points (full span), keep per basin the best restart."""
        raw, losses = _final(self.problem, self.restarts, state, self.forcing, self.obs,
                             self.obs_std)
        xs = np.asarray(self.problem.from_raw(raw))
        losses = np.asarray(losses)
        restart = np.argmin(losses, axis=0)
        cols = np.arange(self.n_basins)
        done = int(state.step)
        return GradCalResult(
            x=xs[restart, cols], loss=losses[restart, cols], restart=restart, losses=losses,
            xs=xs, history=np.asarray(state.history)[:done], n_evals=self.restarts * done,
            n_forward=self.restarts, n_nonfinite=np.asarray(state.n_nonfinite),
            days_per_eval=self.n_days if self.window is None else self.problem.warmup + self.window)


class _Spec(NamedTuple):
    problem: Problem
    optimizer: optax.GradientTransformation
    restarts: int
    steps: int
    window: int | None
    init_margin: float


def _tile(spec: _Spec, v):
    """``(N, ...)`` -> ``(K * N, ...)``: restart-major rows."""
    return jnp.tile(v, (spec.restarts,) + (1,) * (v.ndim - 1))


def _losses(spec: _Spec, raw, forcing, obs, obs_std):
    """``raw (K, N, n)`` -> ``(K, N)`` losses on the given (already tiled) data, NaN for a row
    whose simulation is not finite (:meth:`Problem.losses`, plus that guard: a loss need not
    propagate NaN - RMSECombined's safe square root maps a NaN sum to 0, a perfect score)."""
    k, n, d = raw.shape
    pb = spec.problem
    q = pb.simulate(pb.from_raw(raw.reshape(k * n, d)), forcing)
    w = pb.warmup
    loss = pb.loss.per_basin(q[:, w:], obs[:, w:], obs_std)
    loss = jnp.where(jnp.all(jnp.isfinite(q), axis=-1), loss, jnp.nan)
    return loss.reshape(k, n)


@partial(jax.jit, static_argnums=(0, 3, 4))
def _init(spec: _Spec, key, x0, n_basins: int, dtype) -> GradCalState:
    k, n = spec.restarts, spec.problem.n
    key_init, key_run = jax.random.split(key)
    if x0 is None:
        m = spec.init_margin
        u = jax.random.uniform(key_init, (k, n_basins, n), dtype, minval=m, maxval=1 - m)
        raw = jnp.log(u) - jnp.log1p(-u)         # = problem.to_raw(lower + u (upper - lower))
    else:
        raw = spec.problem.to_raw(x0)
    opt_state = jax.vmap(jax.vmap(spec.optimizer.init))(raw)
    return GradCalState(
        raw=raw, opt_state=opt_state, best_raw=raw,
        best_loss=jnp.full((k, n_basins), jnp.inf, dtype),
        n_nonfinite=jnp.zeros((k, n_basins), jnp.int32),
        history=jnp.full((spec.steps, k, n_basins), jnp.nan, dtype),
        step=jnp.zeros((), jnp.int32), key=key_run)


def _step(spec: _Spec, st: GradCalState, forcing, obs, obs_std) -> GradCalState:
    if spec.window is None:
        f, o, key = forcing, obs, st.key
    else:
        key, sub = jax.random.split(st.key)
        length = spec.problem.warmup + spec.window
        start = jax.random.randint(sub, (), 0, obs.shape[1] - length + 1)
        cut = lambda v: jax.lax.dynamic_slice_in_dim(v, start, length, axis=1)
        f, o = {name: cut(v) for name, v in forcing.items()}, cut(obs)
    loss, vjp = jax.vjp(lambda raw: _losses(spec, raw, f, o, obs_std), st.raw)
    # d(sum of rows)/d raw[r] = row r's own gradient (rows do not interact).
    (grad,) = vjp(jnp.ones_like(loss))
    ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(grad), axis=-1)
    safe_grad = jnp.where(ok[..., None], grad, 0.0)
    upd, new_opt = jax.vmap(jax.vmap(spec.optimizer.update))(safe_grad, st.opt_state, st.raw)
    new_raw = optax.apply_updates(st.raw, upd)

    def keep(new, old):              # a non-finite row keeps its point and optimiser state
        mask = ok.reshape(ok.shape + (1,) * (new.ndim - ok.ndim))
        return jnp.where(mask, new, old)

    raw = keep(new_raw, st.raw)
    opt_state = jax.tree_util.tree_map(keep, new_opt, st.opt_state)
    if spec.window is None:
        better = ok & (loss < st.best_loss)
        best_raw = jnp.where(better[..., None], st.raw, st.best_raw)
        best_loss = jnp.where(better, loss, st.best_loss)
    else:
        best_raw, best_loss = st.best_raw, st.best_loss
    history = jax.lax.dynamic_update_index_in_dim(st.history, loss, st.step, axis=0)
    return GradCalState(raw, opt_state, best_raw, best_loss,
                        st.n_nonfinite + (~ok).astype(jnp.int32), history, st.step + 1, key)


@partial(jax.jit, static_argnums=0)
def _run(spec: _Spec, st: GradCalState, n, forcing, obs, obs_std) -> GradCalState:
    forcing = {name: _tile(spec, v) for name, v in forcing.items()}
    obs, obs_std = _tile(spec, obs), _tile(spec, obs_std)
    return jax.lax.fori_loop(0, n, lambda _, s: _step(spec, s, forcing, obs, obs_std), st)


@partial(jax.jit, static_argnums=(0, 1))
def _final(problem: Problem, restarts: int, st: GradCalState, forcing, obs, obs_std):
    """The final points' full-span losses, merged with the best points seen (windowed runs
    never record one: their best loss stays inf, so the final point is taken when finite)."""
    spec = _Spec(problem, None, restarts, 0, None, 0.0)
    forcing = {name: _tile(spec, v) for name, v in forcing.items()}
    loss = _losses(spec, st.raw, forcing, _tile(spec, obs), _tile(spec, obs_std))
    better = jnp.isfinite(loss) & (loss < st.best_loss)
    return jnp.where(better[..., None], st.raw, st.best_raw), jnp.where(better, loss, st.best_loss)


def gradient_calibrate(problem: Problem, forcing: Mapping[str, Any], obs, obs_std, *, key,
                       restarts: int = 4, steps: int = 300, learning_rate=0.1,
                       optimizer: Callable | optax.GradientTransformation = optax.adam,
                       window: int | None = None, init_margin: float = 0.01, x0=None,
                       chunk: int | None = None) -> GradCalResult:
    """Calibrate every basin by gradient descent on its own training loss (see the module doc).

    ``forcing {name: (N, T)}``, ``obs (N, T)``, ``obs_std (N,)``; ``key``: a PRNG key (the
    same key gives the same result); ``chunk``: steps per compiled call (default: all).
    Returns a :class:`GradCalResult` (``x (N, n)`` physical parameters, ``loss (N,)``, ...).
    """
    cal = GradientCalibration(problem, forcing, obs, obs_std, restarts=restarts, steps=steps,
                              learning_rate=learning_rate, optimizer=optimizer, window=window,
                              init_margin=init_margin)
    chunk = max(steps, 1) if chunk is None else int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 step, got {chunk}")
    state = cal.init(key, x0)
    while int(state.step) < steps:
        state = cal.step_n(state, chunk)
    return cal.result(state)
