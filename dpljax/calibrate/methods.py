"""Calibration methods as the runner sees them: every basin (and seed) of a calibration is one
row of a batched state that a jitted ``advance`` moves forward in chunks, so the runner can
show progress, checkpoint between chunks and resume bit for bit.

A method is registered in :data:`METHODS` and has

- ``check(problem)``: raise ``ValueError`` for options that cannot work on this problem;
- ``init(problem, data, keys) -> state``: ``data`` is a :class:`BasinData` with ``R`` rows
  (basins x seeds), ``keys`` ``(R,)`` PRNG keys; every leaf of ``state`` has ``R`` leading;
- ``advance(problem, data, state) -> state``: one chunk (jit-compiled once);
- ``done(state) -> (R,) bool``, ``fraction(state) -> float`` (of the work, for progress);
- ``best(state) -> (x (R, n) physical, objective (R,), n_evals (R,))`` and
  ``report(state) -> {name: (R,) array}`` (what else is worth keeping per row).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..registry import Registry
from .sce_ua import _check_inputs, init as sce_init, run as sce_run, stop_reason

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
    once; ``chunk_loops`` shuffling loops per chunk. Options as :func:`~dpljax.calibrate.init`."""

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
            return sce_run(st, lambda x: fun(x, forcing, obs, obs_std), self.chunk_loops)

        return jax.vmap(one)(state, data.forcing, data.obs, data.obs_std)

    def done(self, state) -> np.ndarray:
        return np.asarray(state.stop) != 0

    def fraction(self, state) -> float:
        ev = np.asarray(state.n_evals, np.float64)
        return float(np.mean(np.where(self.done(state), 1.0, np.minimum(ev / self.max_evals, 1.0))))

    def best(self, state):
        return np.asarray(state.x[:, 0]), np.asarray(state.f[:, 0]), np.asarray(state.n_evals)

    def report(self, state) -> dict:
        return {"n_loops": np.asarray(state.loop), "n_nonfinite": np.asarray(state.n_nonfinite),
                "n_computed": np.asarray(state.n_computed), "gnrng": np.asarray(state.gnrng),
                "stop": np.asarray([stop_reason(int(c)) for c in np.asarray(state.stop)])}
