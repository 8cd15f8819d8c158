"""Regionalisation (dpljax.calibrate.regionalise): nearest donors on hand-checkable examples,
standardisation by the donors' statistics, the NaN policies, donor parameters and donor
simulations, regression on attributes, out-of-fold R^2, bad input."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpljax.calibrate import (Problem, donor_params, donor_simulations, nearest_donors,
                              out_of_fold_r2, regression_params, standardise)
from dpljax.dpl import DPL
from dpljax.losses import RMSECombined
from dpljax.models.hbv import HBV

# Donors on a 2-attribute grid. Attribute 0 has mean 1 and std sqrt(2/3) over them;
# attribute 1 has mean 10 and std 100 * sqrt(2/3): raw distances would be all attribute 1.
DONORS = np.array([[0.0, -90.0], [1.0, 10.0], [2.0, 110.0]])
S0, S1 = np.sqrt(2 / 3), 100 * np.sqrt(2 / 3)


def test_nearest_donors_by_hand():
    targets = np.array([[1.0, 10.0], [3.0, 110.0], [0.0, -30.0]])
    idx, dist = nearest_donors(targets, DONORS, k=2)
    assert idx.shape == dist.shape == (3, 2)
    # target 0 sits on donor 1; donors 0 and 2 tie behind it: the lower index first
    np.testing.assert_array_equal(idx[0], [1, 0])
    np.testing.assert_allclose(dist[0], [0.0, np.hypot(1 / S0, 100 / S1)])
    # target 1 is one unit of attribute 0 from donor 2
    np.testing.assert_array_equal(idx[1], [2, 1])
    np.testing.assert_allclose(dist[1], [1 / S0, np.hypot(2 / S0, 100 / S1)])
    # target 2: in raw units donor 1 is nearer (40.01 < 60), standardised donor 0 is
    # (60 / S1 = 0.73 < hypot(1 / S0, 40 / S1) = 1.32)
    np.testing.assert_array_equal(idx[2], [0, 1])
    np.testing.assert_allclose(dist[2], [60 / S1, np.hypot(1 / S0, 40 / S1)])


def test_standardised_by_the_donors_statistics_not_the_targets():
    """Adding far-away targets changes nothing for the others (the space is the donors')."""
    t = np.array([[0.1, 40.0]])
    far = np.array([[0.1, 40.0], [1e3, -1e5], [5e2, 3e4]])
    i1, d1 = nearest_donors(t, DONORS, k=3)
    i2, d2 = nearest_donors(far, DONORS, k=3)
    np.testing.assert_array_equal(i1[0], i2[0])
    np.testing.assert_allclose(d1[0], d2[0])
    zd, zt, (mean, std, keep) = standardise(DONORS, t)
    np.testing.assert_allclose(mean, [1.0, 10.0])
    np.testing.assert_allclose(std, [S0, S1])
    np.testing.assert_allclose(zd.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(zd.std(0), 1.0)
    np.testing.assert_allclose(zt, [[(0.1 - 1) / S0, 30 / S1]])
    # a column constant over the donors is left out (it cannot tell donors apart)
    with_const = np.c_[DONORS, np.full(3, 7.0)]
    zd, zt, (_, _, keep) = standardise(with_const, np.array([[0.1, 40.0, 99.0]]))
    np.testing.assert_array_equal(keep, [True, True, False])
    assert zd.shape == (3, 2) and zt.shape == (1, 2)


def test_nan_policies():
    targets = np.array([[np.nan, 100.0], [1.5, np.nan]])
    with pytest.raises(ValueError, match=r"attrs_target has missing \(NaN\) attributes: basins "
                                         r"\(rows\) \[0, 1\], attributes \['aridity', 'elev'\]"):
        nearest_donors(targets, DONORS, names=["aridity", "elev"])
    donors = DONORS.copy()
    donors[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"attrs_donor has missing.*rows\) \[0\], attributes \[1\]"):
        nearest_donors(targets[:0], donors)
    # impute: a missing value is the donor mean (z = 0)
    idx, dist = nearest_donors(targets, DONORS, k=3, nan="impute")
    np.testing.assert_array_equal(idx, [[1, 2, 0], [1, 2, 0]])
    np.testing.assert_allclose(dist[0], [90 / S1, np.hypot(1 / S0, 10 / S1), np.hypot(1 / S0, 190 / S1)])
    np.testing.assert_allclose(dist[1], [0.5 / S0, np.hypot(0.5 / S0, 100 / S1),
                                         np.hypot(1.5 / S0, 100 / S1)])
    # pairwise: only the attribute present, rescaled by sqrt(2 / 1)
    idx, dist = nearest_donors(targets, DONORS, k=3, nan="pairwise")
    np.testing.assert_array_equal(idx, [[2, 1, 0], [1, 2, 0]])      # an exact tie: lower first
    np.testing.assert_allclose(dist[0], np.sqrt(2) * np.array([10, 90, 190]) / S1)
    np.testing.assert_allclose(dist[1], np.sqrt(2) * np.array([0.5, 0.5, 1.5]) / S0)
    # a pair sharing no attribute is infinitely far; donor statistics skip missing values
    idx, dist = nearest_donors(np.array([[np.nan, 50.0]]), donors, k=3, nan="pairwise")
    np.testing.assert_array_equal(idx[0], [1, 2, 0])
    np.testing.assert_allclose(dist[0, :2], np.sqrt(2) * np.array([40, 60]) / 50)
    assert np.isinf(dist[0, 2])
    with pytest.raises(ValueError, match="nan must be one of"):
        nearest_donors(targets, DONORS, nan="drop")


def test_donor_params_by_k():
    params = np.array([[1.0, 10.0], [2.0, 30.0], [4.0, 20.0], [8.0, 0.0]])
    idx = np.array([[2, 0, 1], [3, 3, 3]])
    np.testing.assert_array_equal(donor_params(params, idx[:, :1]), [[4.0, 20.0], [8.0, 0.0]])
    np.testing.assert_array_equal(donor_params(params, idx), [[2.0, 20.0], [8.0, 0.0]])
    np.testing.assert_allclose(donor_params(params, idx, how="mean"), [[7 / 3, 20.0], [8.0, 0.0]])
    with pytest.raises(ValueError, match="how must be 'median' or 'mean'"):
        donor_params(params, idx, how="mode")
    with pytest.raises(ValueError, match=r"outside 0..3"):
        donor_params(params, np.array([[4]]))


@pytest.fixture(scope="module")
def problem():
    return Problem(DPL.of(HBV(), nmul=1), RMSECombined(), warmup=100)


def test_donor_simulations_average_the_donors_runs(problem, sample):
    sub = sample.isel(basin=[0, 3]).sel(time=slice("1999-10-01", "2000-09-30"))
    forcing = {"prcp": jnp.asarray(sub["prcp"].values), "pet": jnp.asarray(sub["pet"].values),
               "tmean": jnp.asarray(((sub["tmax"] + sub["tmin"]) / 2).values)}
    u = np.random.default_rng(0).uniform(0.1, 0.9, (4, problem.n))
    params = problem.lower + u * (problem.upper - problem.lower)
    idx = np.array([[3, 1], [0, 2]])
    q = donor_simulations(problem, params, idx, forcing)
    assert q.shape == (2, forcing["prcp"].shape[1])
    sim = jax.jit(problem.simulate)
    for m in range(2):
        runs = [np.asarray(sim(jnp.asarray(params[[j]], jnp.float32),
                               {n: v[m:m + 1] for n, v in forcing.items()}))[0] for j in idx[m]]
        np.testing.assert_allclose(q[m], np.mean(runs, axis=0), rtol=1e-5, atol=1e-7)
        assert not np.allclose(runs[0], runs[1])             # the donors do differ
    with pytest.raises(ValueError, match=r"forcing_target\['prcp'\] must be \(3 targets"):
        donor_simulations(problem, params, np.zeros((3, 1), int), forcing)
    with pytest.raises(ValueError, match="params_donor has 14 parameters; the problem has 15"):
        donor_simulations(problem, params[:, :14], idx, forcing)
    with pytest.raises(ValueError, match=r"forcing_target lacks \['pet'\]"):
        donor_simulations(problem, params, idx, {n: v for n, v in forcing.items() if n != "pet"})


def _relation(n=120, seed=0):
    rng = np.random.default_rng(seed)
    attrs = rng.normal(size=(n, 4)) * [1.0, 5.0, 0.1, 2.0] + [0.0, 100.0, 3.0, -1.0]
    lower, upper = np.array([0.0, -1.0, 10.0]), np.array([1.0, 1.0, 20.0])
    u0 = 0.5 + 0.15 * (attrs[:, 0] - 0.0) + 0.02 * (attrs[:, 1] - 100.0)    # linear in attributes
    u1 = rng.uniform(0.05, 0.95, n)                                          # noise
    u2 = 0.5 + 0.3 * np.tanh(attrs[:, 0] * attrs[:, 3])                      # non-linear
    u = np.clip(np.c_[u0, u1, u2], 0.0, 1.0)
    return attrs, lower + u * (upper - lower), (lower, upper)


def test_linear_regression_recovers_a_linear_relation():
    attrs, params, box = _relation()
    target = np.array([[1.0, 105.0, 3.0, 0.0], [-1.0, 95.0, 2.9, 1.0]])
    pred = regression_params(attrs[:100], params[:100], target, box=box, method="linear")
    u0 = 0.5 + 0.15 * target[:, 0] + 0.02 * (target[:, 1] - 100.0)
    # where no training point was clipped the relation is exactly linear in the unit box
    inside = (params[:100, 0] > 0.0) & (params[:100, 0] < 1.0)
    assert inside.mean() > 0.9
    exact = regression_params(attrs[:100][inside], params[:100][inside], target, box=box,
                              method="linear")
    np.testing.assert_allclose(exact[:, 0], u0, atol=1e-9)
    np.testing.assert_allclose(pred[:, 0], u0, atol=0.05)
    # predictions land in the box (clipped): far outside the attributes' range
    wild = regression_params(attrs, params, np.array([[50.0, 100.0, 3.0, 0.0]]), box=box,
                             method="linear")
    assert wild[0, 0] == 1.0 and np.all(wild >= box[0]) and np.all(wild <= box[1])


def test_random_forest_regression_in_the_box(problem):
    attrs, params, box = _relation()
    pred = regression_params(attrs[:100], params[:100], attrs[100:], box=box, n_estimators=50)
    assert pred.shape == (20, 3)
    assert np.all(pred >= box[0]) and np.all(pred <= box[1])
    err = np.abs(pred[:, 0] - params[100:, 0]).mean()
    assert err < 0.5 * np.abs(params[100:, 0] - params[:100, 0].mean()).mean()
    # a Problem gives the box: its 15 HBV parameters, a linear relation recovered exactly
    u = 0.5 + 0.1 * attrs[:, :1] * np.linspace(-1, 1, problem.n)
    p = problem.lower + u * (problem.upper - problem.lower)
    out = regression_params(attrs, p, attrs[:3], box=problem, method="linear")
    np.testing.assert_allclose(out, p[:3], rtol=1e-9, atol=1e-9)


def test_out_of_fold_r2_sees_signal_and_not_noise():
    attrs, params, box = _relation(n=150)
    r2 = out_of_fold_r2(attrs, params, n_folds=5, method="linear", box=box)
    assert r2[0] > 0.95                        # linear in the attributes
    assert r2[1] < 0.05                        # noise: about 0 or negative
    rf = out_of_fold_r2(attrs, params, n_folds=5, method="random_forest", box=box, n_estimators=50)
    assert rf[2] > 0.5 and rf[2] > r2[2] + 0.3      # the forest captures the non-linear one
    assert rf[1] < 0.05
    assert rf[0] > 0.6
    # a constant parameter: SS_tot = 0, R^2 undefined
    const = np.c_[params[:, :1], np.full(len(params), 0.5)]
    assert np.isnan(out_of_fold_r2(attrs, const, method="linear")[1])
    # deterministic by random_state
    np.testing.assert_array_equal(
        rf, out_of_fold_r2(attrs, params, n_folds=5, method="random_forest", box=box, n_estimators=50))


def test_bad_input():
    params = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"k must be an integer in 1..3 \(the number of donors\), got 4"):
        nearest_donors(DONORS[:1], DONORS, k=4)
    with pytest.raises(ValueError, match="k must be an integer in 1..3"):
        nearest_donors(DONORS[:1], DONORS, k=0)
    with pytest.raises(ValueError, match=r"attrs_target has 3 attributes \(columns\); the donors have 2"):
        nearest_donors(np.ones((1, 3)), DONORS)
    with pytest.raises(ValueError, match=r"attrs_donor must be 2-D \(basins, attributes\)"):
        nearest_donors(DONORS[:1], DONORS[0])
    with pytest.raises(ValueError, match="infinite values"):
        nearest_donors(np.array([[np.inf, 0.0]]), DONORS)
    with pytest.raises(ValueError, match="no attribute varies over the donors"):
        nearest_donors(DONORS[:1], np.ones((3, 2)))
    with pytest.raises(ValueError, match="params_donor has 2 rows; attrs_donor has 3 donors"):
        regression_params(DONORS, params[:2], DONORS, box=(np.zeros(2), np.full(2, 2.0)))
    with pytest.raises(ValueError, match="lower < upper for every parameter; not so at \\[1\\]"):
        regression_params(DONORS, params, DONORS, box=(np.zeros(2), np.array([2.0, 0.0])))
    with pytest.raises(ValueError, match="method must be one of"):
        regression_params(DONORS, params, DONORS, box=(np.zeros(2), np.full(2, 2.0)), method="svm")
    with pytest.raises(ValueError, match="params_donor has non-finite values in donors \\[1\\]"):
        regression_params(DONORS, np.array([[1.0, 1], [np.nan, 1], [1, 1]]), DONORS,
                          box=(np.zeros(2), np.full(2, 2.0)))
    with pytest.raises(ValueError, match="pairwise' applies to distances only"):
        regression_params(DONORS, params, DONORS, box=(np.zeros(2), np.full(2, 2.0)), nan="pairwise")
    with pytest.raises(ValueError, match=r"n_folds must be an integer in 2..3"):
        out_of_fold_r2(DONORS, params, n_folds=5)
    with pytest.raises(ValueError, match="attrs has missing"):
        out_of_fold_r2(np.array([[np.nan, 1.0], [1, 2], [3, 4]]), params, n_folds=3)
