"""Calibration methods as the runner sees them: every basin (and seed) of a calibration is one
row of a batched state that a jitted ``advance`` moves forward in chunks, so the runner can
show progress, checkpoint between chunks and resume bit for bit.

A method is registered in :data:`METHODS` and has

- ``check(problem)``: raise ``ValueError`` for options that cannot work on this problem;
- ``init(problem, data, keys) -> state``: ``data`` is a :class:`BasinData` with ``R`` rows
  (basins x seeds), ``keys`` ``(R,)`` PRNG keys; every leaf of ``state`` has ``R`` leading;
- ``advance(problem, data, state) -> state``: one chunk (jit-compiled once);
- ``done(state) -> (R,) bool``, ``fraction(state) -> float`` (of the work) and
  ``status(state) -> str`` (for progress);
- ``best(state) -> (x (R, n) physical, objective (R,), n_evals (R,))`` and
  ``report(state) -> {name: (R,) array}`` (what else is worth keeping per row);
- optionally ``independent_rows = True`` (a class attribute): no row's search reads another
  row, so on several devices each device's rows may run as a program of their own.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..registry import Registry
from .gradient import GradientCalibration
from .sce_ua import _check_inputs, best as sce_best, init as sce_init, run as sce_run, stop_reason

METHODS: Registry = Registry("calibration method")


class BasinData(NamedTuple):
    """One row per basin (and seed): raw forcing ``{name: (R, T)}``, observations ``(R, T)``
    (mm/d, NaN where missing) and each row's training-observation standard deviation ``(R,)``."""

    forcing: dict
    obs: Any
    obs_std: Any


def _objective(problem):
    def fun(x, forcing, obs, obs_std):
        return problem.objective(x, forcing, obs, obs_std)

    return fun


@METHODS.register("sceua")
@dataclass(frozen=True)
class SCEUA:
    """Per-basin SCE-UA (:func:`dpljax.calibrate.sce_ua`), every row's population evolving at
    once. A chunk (between progress reports and checkpoints) is ``chunk_loops * (2n + 1)``
    evaluation rounds, the rounds of ``chunk_loops`` shuffling loops if every CCE step took
    one round: rows shuffle on their own, so no row waits for another at a loop's end, and a
    chunk may end inside a loop (the checkpoint holds it). Options as
    :func:`~dpljax.calibrate.init`."""

    independent_rows: ClassVar[bool] = True  # a row's search never reads another's
    max_evals: int = 10000
    n_complexes: int = 2
    kstop: int = 10
    pcento: float = 0.1
    peps: float = 1e-3
    random_in: str = "complex"
    chunk_loops: int = 5

    def __post_init__(self):
        for name, lo in (("max_evals", 1), ("n_complexes", 1), ("kstop", 1), ("chunk_loops", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name in ("pcento", "peps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not 0 <= v < np.inf:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if self.random_in not in ("complex", "box"):
            raise ValueError(f"random_in must be 'complex' or 'box', got {self.random_in!r}")

    def check(self, problem) -> None:
        """Eager checks of the box, the budget and the options, before anything is compiled."""
        lo, hi = (np.asarray(v, np.float32) for v in (problem.lower, problem.upper))
        _check_inputs(lo, hi, self.max_evals, self.n_complexes, 2 * problem.n + 1, 2 * problem.n + 1)

    def init(self, problem, data: BasinData, keys):
        self.check(problem)
        lo, hi = (jnp.asarray(v, jnp.float32) for v in (problem.lower, problem.upper))
        fun = _objective(problem)

        @jax.jit
        def one(key, forcing, obs, obs_std):
            return sce_init(lambda x: fun(x, forcing, obs, obs_std), lo, hi, key=key,
                          max_evals=self.max_evals, n_complexes=self.n_complexes, kstop=self.kstop,
                          pcento=self.pcento, peps=self.peps, random_in=self.random_in)

        return jax.jit(jax.vmap(one))(keys, data.forcing, data.obs, data.obs_std)

    @partial(jax.jit, static_argnums=(0, 1))
    def advance(self, problem, data: BasinData, state):
        fun = _objective(problem)

        def one(st, forcing, obs, obs_std):
            return sce_run(st, lambda x: fun(x, forcing, obs, obs_std),
                           n_rounds=self.chunk_loops * (2 * problem.n + 1))

        return jax.vmap(one)(state, data.forcing, data.obs, data.obs_std)

    def done(self, state) -> np.ndarray:
        return np.asarray(state.stop) != 0

    def fraction(self, state) -> float:
        ev = np.asarray(state.n_evals, np.float64)
        return float(np.mean(np.where(self.done(state), 1.0, np.minimum(ev / self.max_evals, 1.0))))

    def status(self, state) -> str:
        return f"median loss {np.median(np.min(np.asarray(state.f), axis=1)):.4f}, " \
               f"{int(np.mean(np.asarray(state.n_evals)))} evals/basin"

    def best(self, state):
        x, f = jax.vmap(sce_best)(state)
        return np.asarray(x), np.asarray(f), np.asarray(state.n_evals)

    def report(self, state) -> dict:
        return {"n_loops": np.asarray(state.loop), "n_nonfinite": np.asarray(state.n_nonfinite),
                "n_computed": np.asarray(state.n_computed), "gnrng": np.asarray(state.gnrng),
                "stop": np.asarray([stop_reason(int(c)) for c in np.asarray(state.stop)])}


@METHODS.register("gradient")
@dataclass(eq=False)
class Gradient:
    """Gradient calibration per basin (:mod:`dpljax.calibrate.gradient`): ``restarts`` random
    starts per basin and seed, ``steps`` Adam steps at ``learning_rate`` on free raw values
    through dPL's sigmoid bounds, each on the whole training span; ``chunk_steps`` steps per
    chunk. A row's starting points are drawn from its own key (its basin id and seed), so its
    result does not depend on the other basins. ``n_evals`` counts forward + backward passes."""

    restarts: int = 4
    steps: int = 300
    learning_rate: float = 0.1
    chunk_steps: int = 25

    def __post_init__(self):
        for name in ("restarts", "steps", "chunk_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        v = self.learning_rate
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not 0 < v < np.inf:
            raise ValueError(f"learning_rate must be a number > 0, got {v!r}")
        self._cal = None

    def check(self, problem) -> None:
        pass  # every option is checked in __post_init__; the box by Problem

    def init(self, problem, data: BasinData, keys):
        self._cal = GradientCalibration(problem, data.forcing, data.obs, data.obs_std,
                                        restarts=self.restarts, steps=self.steps,
                                        learning_rate=float(self.learning_rate))
        lo, hi = problem.lower, problem.upper
        margin = 0.01 * (hi - lo)
        u = np.stack([np.asarray(jax.random.uniform(k, (self.restarts, problem.n), jnp.float32)) for k in keys], 1)
        x0 = (lo + margin) + u * ((hi - margin) - (lo + margin))  # (K, R, n), strictly inside
        return self._cal.init(jax.random.key(0), x0=np.clip(x0, np.nextafter(lo, hi), np.nextafter(hi, lo)))

    def advance(self, problem, data: BasinData, state):
        return self._cal.step_n(state, self.chunk_steps)

    def done(self, state) -> np.ndarray:
        return np.full(self._cal.n_basins, int(state.step) >= self.steps)

    def fraction(self, state) -> float:
        return int(state.step) / self.steps

    def status(self, state) -> str:
        best = np.min(np.asarray(state.best_loss), axis=0)
        return f"step {int(state.step)}/{self.steps}, median loss {np.median(best):.4f}"

    def best(self, state):
        r = self._cal.result(state)
        return r.x, r.loss, np.full(self._cal.n_basins, r.n_evals + r.n_forward)

    def report(self, state) -> dict:
        r = self._cal.result(state)
        return {"restart": r.restart, "n_nonfinite": r.n_nonfinite.sum(0),
                **{f"loss_restart_{k}": r.losses[k] for k in range(self.restarts)}}
