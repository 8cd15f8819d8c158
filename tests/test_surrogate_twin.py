"""The twin experiment's fixed pieces: true parameters and the observation pattern."""
import numpy as np

from benchmarks.surrogate_twin import ATTRS, TRUTH, observation_mask, true_parameters
from dpljax.surrogate import vic


def test_true_parameters_are_a_non_trivial_function_inside_the_bounds():
    rng = np.random.default_rng(0)
    attrs = rng.normal(size=(50, len(ATTRS)))
    attrs[3, 2] = np.nan  # a missing attribute counts as the mean
    p = true_parameters(attrs)
    assert p.shape == (50, len(vic.BOUNDS)) and np.all(np.isfinite(p))
    lo, hi = np.array(list(vic.BOUNDS.values())).T
    assert np.all(p > lo + 0.1 * (hi - lo) - 1e-9) and np.all(p < hi - 0.1 * (hi - lo) + 1e-9)
    assert np.all(np.std(p, 0) > 0.05 * (hi - lo))  # every parameter varies between basins
    assert set(TRUTH) == set(vic.BOUNDS)
    used = {a for w in TRUTH.values() for k in w for a in (k if isinstance(k, tuple) else (k,))}
    assert used <= set(ATTRS)


def test_observations_every_two_or_three_days():
    m = observation_mask(5, 400, seed=0)
    for row in m:
        gaps = np.diff(np.flatnonzero(row))
        assert set(gaps.tolist()) <= {2, 3} and len(set(gaps.tolist())) == 2
        assert np.flatnonzero(row)[0] <= 2
