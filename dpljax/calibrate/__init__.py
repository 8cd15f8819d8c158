"""Calibration baselines beside dPL training: per-basin optimisers that reuse the same models,
data, losses and metrics.

- :func:`sce_ua` (Shuffled Complex Evolution, Duan et al. 1992, 1994): pure JAX, jit-able and
  vmap-able over basins; :func:`init` / :func:`run` / :func:`result` are its resumable form.
- :func:`gradient_calibrate`: per-basin gradient descent (Optax) on free raw parameters mapped
  through dPL's sigmoid bounds, ``K`` random restarts x ``N`` basins at once;
  :class:`GradientCalibration` (``init`` / ``step_n`` / ``result``) is its resumable form.
- Regionalisation for basins without calibration: :func:`nearest_donors`, :func:`donor_params`,
  :func:`donor_simulations` (donors nearest in standardised attribute space) and
  :func:`regression_params` (parameters regressed on attributes); :func:`out_of_fold_r2` says
  how much of each parameter's variation the attributes explain.
- :class:`Problem`: the chain of a :class:`~dpljax.dpl.DPL` driven by one flat vector of
  physical parameters per basin, and that basin's training loss (what every method minimises).
"""
from .gradient import GradCalResult, GradCalState, GradientCalibration, gradient_calibrate
from .problem import Problem
from .regionalise import (donor_params, donor_simulations, nearest_donors, out_of_fold_r2,
                          regression_params, standardise)
from .sce_ua import (STOP_REASONS, SCEResult, SCEState, init, n_max_loops, result, run, sce_ua,
                     select_subcomplex, stop_reason)

__all__ = ["Problem", "STOP_REASONS", "SCEResult", "SCEState", "init", "n_max_loops", "result", "run",
           "sce_ua", "select_subcomplex", "stop_reason",
           "GradCalResult", "GradCalState", "GradientCalibration", "gradient_calibrate",
           "donor_params", "donor_simulations", "nearest_donors", "out_of_fold_r2",
           "regression_params", "standardise"]
