"""Designs of black-box runs: Latin hypercube parameter sets within bounds, paired with basins.

The Latin hypercube is :class:`scipy.stats.qmc.LatinHypercube` (McKay et al. 1979): each of
the ``P`` dimensions is cut into ``n`` equal strata and every stratum holds exactly one point.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np


def latin_hypercube(bounds: Mapping[str, tuple[float, float]], n: int, *, seed: int = 0,
                    optimization: str | None = None) -> np.ndarray:
    """``n`` parameter sets ``(n, P)`` in the box ``bounds`` (physical units, order of
    ``bounds``), one per stratum in every dimension. ``optimization``: scipy's
    ``"random-cd"`` or ``"lloyd"`` improve the space filling (slower), ``None`` is plain LHS."""
    from scipy.stats import qmc

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    lo = np.array([b[0] for b in bounds.values()], np.float64)
    hi = np.array([b[1] for b in bounds.values()], np.float64)
    if not np.all(hi > lo):
        raise ValueError("every bound must have lo < hi")
    u = qmc.LatinHypercube(d=len(lo), seed=np.random.default_rng(seed), optimization=optimization).random(n)
    return qmc.scale(u, lo, hi)


@dataclass
class Design:
    """Runs to make: parameter sets ``x (N, P)`` (physical) and the basin of each, ``basin (N,)``
    (index into the basins the forcing has), with the split each run belongs to:
    ``split (N,)`` in ``{"train", "test_params", "test_basins"}``."""

    x: np.ndarray
    basin: np.ndarray
    split: np.ndarray
    names: tuple[str, ...]

    def subset(self, which: str) -> np.ndarray:
        return np.flatnonzero(self.split == which)


def make_design(bounds: Mapping[str, tuple[float, float]], n_basins: int, sets_per_basin: int, *,
                test_params: float = 0.2, test_basins: float = 0.2, seed: int = 0) -> Design:
    """Parameter sets x basins for training and testing an emulator.

    A fraction ``test_basins`` of the basins is held out entirely; on the others, every basin
    gets ``sets_per_basin`` parameter sets from one Latin hypercube of all their runs (so the
    sets are stratified over the whole design, not per basin), of which a fraction
    ``test_params`` is held out. Held-out basins get their own hypercube.
    """
    rng = np.random.default_rng(seed)
    n_test_b = int(round(test_basins * n_basins)) if n_basins > 1 else 0
    perm = rng.permutation(n_basins)
    test_b, train_b = np.sort(perm[:n_test_b]), np.sort(perm[n_test_b:])
    names = tuple(bounds)
    xs, bs, ss = [], [], []
    if len(train_b):
        n = len(train_b) * sets_per_basin
        x = latin_hypercube(bounds, n, seed=seed)
        b = np.repeat(train_b, sets_per_basin)
        split = np.where(rng.random(n) < test_params, "test_params", "train")
        xs.append(x), bs.append(b), ss.append(split)
    if len(test_b):
        n = len(test_b) * sets_per_basin
        xs.append(latin_hypercube(bounds, n, seed=seed + 1))
        bs.append(np.repeat(test_b, sets_per_basin))
        ss.append(np.full(n, "test_basins"))
    return Design(np.concatenate(xs), np.concatenate(bs), np.concatenate(ss).astype(str), names)
