"""Calibration baselines beside dPL training: per-basin optimisers that reuse the same models,
data, losses and metrics.

- :func:`sce_ua` (Shuffled Complex Evolution, Duan et al. 1992, 1994): pure JAX, jit-able and
  vmap-able over basins; :func:`init` / :func:`run` / :func:`result` are its resumable form.
- :class:`Problem`: the chain of a :class:`~dpljax.dpl.DPL` driven by one flat vector of
  physical parameters per basin, and that basin's training loss (what every method minimises).
"""
from .problem import Problem
from .sce_ua import (STOP_REASONS, SCEResult, SCEState, init, n_max_loops, result, run, sce_ua,
                     select_subcomplex, stop_reason)

__all__ = ["Problem", "STOP_REASONS", "SCEResult", "SCEState", "init", "n_max_loops", "result", "run",
           "sce_ua", "select_subcomplex", "stop_reason"]
