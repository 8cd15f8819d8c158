"""Masked losses and per-basin metrics, against hand-computed values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpljax import metrics as M
from dpljax.losses import NSEBatch, RMSECombined, log_sqrt_q, masked_rmse


def test_masked_rmse_ignores_nan_in_value_and_gradient():
    obs = jnp.array([[1.0, jnp.nan, 3.0], [jnp.nan, 2.0, 2.0]])
    pred = jnp.array([[2.0, 100.0, 3.0], [5.0, 2.0, 4.0]])
    assert float(masked_rmse(pred, obs)) == pytest.approx(np.sqrt((1 + 0 + 0 + 4) / 4))
    g = jax.grad(lambda p: RMSECombined()(p, obs))(pred)
    assert np.all(np.isfinite(g))
    assert float(g[0, 1]) == 0.0 and float(g[1, 0]) == 0.0


def test_rmse_combined_value():
    obs = jnp.array([[1.0, 2.0, 4.0]])
    pred = jnp.array([[1.5, 2.0, 3.0]])
    a = np.sqrt(np.mean((np.array([1.5, 2, 3]) - np.array([1, 2, 4])) ** 2))
    t = lambda x: np.log10(np.sqrt(x + 1e-6) + 0.1)
    b = np.sqrt(np.mean((t(np.array([1.5, 2, 3])) - t(np.array([1, 2, 4]))) ** 2))
    assert float(RMSECombined()(pred, obs)) == pytest.approx(0.75 * a + 0.25 * b, rel=1e-5)


def test_losses_finite_gradient_at_perfect_fit_and_all_missing():
    obs = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    for loss in (RMSECombined(), NSEBatch()):
        g = jax.grad(lambda p: loss(p, obs, jnp.array([0.5, 0.0])))(obs)
        assert np.all(np.isfinite(g))
        allnan = jnp.full((2, 2), jnp.nan)
        v, g = jax.value_and_grad(lambda p: loss(p, allnan, jnp.array([0.5, 0.0])))(obs)
        assert float(v) == 0.0 and np.all(np.asarray(g) == 0)


def test_nse_batch_value():
    obs = jnp.array([[1.0, 3.0], [2.0, jnp.nan]])
    pred = jnp.array([[2.0, 3.0], [1.0, 7.0]])
    std = jnp.array([1.0, 0.4])
    want = (1 / 1.1**2 + 0 + 1 / 0.5**2) / 3
    assert float(NSEBatch()(pred, obs, std)) == pytest.approx(want, rel=1e-5)


def test_metrics_hand_values():
    obs = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    assert M.nse(obs, obs) == 1.0
    assert M.nse(np.full(5, 2.5), obs) == pytest.approx(0.0)
    assert M.kge(obs, obs) == pytest.approx(1.0)
    sim = np.array([2.0, 3.0, 4.0, 5.0, 9.0])
    assert M.rmse(sim, obs) == pytest.approx(1.0)
    assert M.bias(sim, obs) == pytest.approx(0.4)
    assert M.pearson_r(sim, obs) == pytest.approx(1.0)
    # KGE with r=1, alpha=1, beta=1.4
    assert M.kge(sim, obs) == pytest.approx(1 - 0.4)
    assert M.fhv(obs, obs) == 0.0
    lf = np.exp(np.linspace(-3, 2, 50))
    assert M.flv(lf, lf) == pytest.approx(0.0) and M.flv(lf * 0.5, lf) == pytest.approx(0.0, abs=0.01)  # percent; the 1e-6 offset
    assert M.flv(lf ** 1.2, lf) < 0  # steeper low-flow recession: less low-flow volume
    q = np.linspace(1, 100, 100)
    assert M.fhv(q * 1.1, q) == pytest.approx(10.0)


def test_metrics_table_counts_observations():
    obs = np.array([[1.0, 2.0, np.nan, 4.0], [1.0, 1.5, 2.0, 2.5]])
    t = M.table(obs + 0.1, obs, ["a", "b"])
    assert list(t.index) == ["a", "b"]
    assert t.loc["a", "n_obs"] == 3 and t.loc["b", "n_obs"] == 4
    assert set(M.METRICS) <= set(t.columns)


def test_log_sqrt_q_finite_gradient_at_zero():
    assert np.isfinite(jax.grad(lambda q: log_sqrt_q(q))(0.0))


@pytest.mark.parametrize("name", ["rmse_combined", "nse_batch"])
def test_per_basin_loss_is_each_basin_alone(name):
    from dpljax.losses import LOSSES

    rng = np.random.default_rng(5)
    pred, obs = rng.gamma(1.0, 1.0, (4, 50)), rng.gamma(1.0, 1.0, (4, 50))
    obs[1, :20] = np.nan
    std = np.nanstd(obs, axis=1)
    loss = LOSSES[name]()
    per = np.asarray(loss.per_basin(jnp.asarray(pred), jnp.asarray(obs), jnp.asarray(std)))
    assert per.shape == (4,)
    for i in range(4):
        alone = float(loss(jnp.asarray(pred[i:i + 1]), jnp.asarray(obs[i:i + 1]), jnp.asarray(std[i:i + 1])))
        assert per[i] == pytest.approx(alone, rel=1e-6)
    # a basin's loss has gradient in its own predictions only
    g = jax.grad(lambda p: loss.per_basin(p, jnp.asarray(obs), jnp.asarray(std))[2])(jnp.asarray(pred))
    assert np.all(np.asarray(g)[[0, 1, 3]] == 0) and np.any(np.asarray(g)[2] != 0)


@pytest.mark.parametrize("name", ["rmse_combined", "nse_batch"])
def test_a_nan_simulation_never_scores_as_a_perfect_fit(name):
    """A NaN prediction where an observation exists makes the loss NaN (so training skips the
    step and calibration ranks the point last), never 0, the best possible loss."""
    import jax.numpy as jnp

    from dpljax.losses import LOSSES

    loss = LOSSES[name]()
    pred = jnp.array([[1.0, jnp.nan, 2.0], [1.0, 1.0, 1.0]])
    obs = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    std = jnp.array([1.0, 1.0])
    per = loss.per_basin(pred, obs, std)
    assert np.isnan(float(per[0])) and float(per[1]) == 0.0
    assert np.isnan(float(loss(pred, obs, std)))
    # A NaN prediction on a day without observation is masked as before.
    obs_gap = jnp.array([[1.0, jnp.nan, 2.0], [1.0, 1.0, 1.0]])
    assert np.isfinite(float(loss.per_basin(pred, obs_gap, std)[0]))


def test_nse_terms_add_up_to_one_minus_nse_and_name_the_failure():
    """The three terms sum to 1 - NSE on random, flashy, damped and biased simulations (with
    missing days); each failure shows in its own term; NaN and too-short inputs give NaN."""
    rng = np.random.default_rng(3)
    obs = rng.gamma(0.8, 2.0, 400)
    obs[::17] = np.nan
    ok = np.isfinite(obs)
    cases = {"noisy": obs + rng.normal(0, 0.8, 400), "flashy": 1.8 * obs - 0.8 * np.nanmean(obs),
             "damped": 0.4 * obs + 0.6 * np.nanmean(obs), "wet": obs + 1.5}
    got = {}
    for name, sim in cases.items():
        t = M.nse_terms(sim, obs)
        assert t["timing"] + t["variability"] + t["volume"] == pytest.approx(1 - M.nse(sim, obs), rel=1e-10)
        assert t["r"] == pytest.approx(np.corrcoef(sim[ok], obs[ok])[0, 1])
        got[name] = t
    assert got["flashy"]["alpha"] == pytest.approx(1.8) and got["flashy"]["variability"] == pytest.approx(0.64)
    assert got["damped"]["alpha"] == pytest.approx(0.4) and got["damped"]["variability"] == pytest.approx(0.36)
    assert got["wet"]["volume"] == pytest.approx((1.5 / np.nanstd(obs)) ** 2)
    assert got["wet"]["timing"] == pytest.approx(0, abs=1e-12) and got["flashy"]["volume"] == pytest.approx(0, abs=1e-12)
    bad_sim = cases["noisy"].copy()
    bad_sim[1] = np.nan  # on a day with an observation (day 0 has none)
    assert all(np.isnan(v) for v in M.nse_terms(bad_sim, obs).values())
    assert all(np.isnan(v) for v in M.nse_terms(obs[:1], obs[:1]).values())
