"""The VIC-style NumPy black box: exact water balance (float64) and sensible behaviour."""
import numpy as np
import pytest

from dpljax.surrogate import VIC, latin_hypercube, run_blackbox, vic


def _params(n, seed=0):
    return dict(zip(vic.BOUNDS, latin_hypercube(vic.BOUNDS, n, seed=seed).T))


def test_water_balance_closes_on_ten_years_of_real_forcing(forcing10y):
    prcp, tmean, pet = forcing10y
    f = {"prcp": prcp, "tmean": tmean, "pet": pet}
    for seed in range(3):
        p = _params(prcp.shape[0], seed)
        out, end = vic.run(p, f, return_state=True)
        start = vic.initial_state(p)
        change = sum(end[k] - start[k] for k in vic.STATES)
        gain = prcp.sum(-1) - out["et"].sum(-1) - out["q"].sum(-1)
        np.testing.assert_allclose(gain, change, rtol=0, atol=1e-9 * prcp.sum(-1).max())
        # and every day: yesterday's storage + today's net inflow = today's storage
        store = out["swe"] + out["sm1"] + out["sm2"] + out["sm3"]
        s0 = sum(start[k] for k in vic.STATES)
        prev = np.concatenate([s0[:, None], store[:, :-1]], 1)
        np.testing.assert_allclose(prev + prcp - out["et"] - out["q"], store, rtol=0, atol=1e-9)
        for k in vic.OUTPUTS:
            assert np.all(out[k] >= 0), k
        assert np.all(out["sm1"] <= p["w1max"][:, None] + 1e-9)
        assert np.all(out["sm2"] <= p["w2max"][:, None] + 1e-9)
        assert np.all(out["sm3"] <= p["w3max"][:, None] + 1e-9)
        assert np.all(out["et"] <= pet + 1e-12)
        np.testing.assert_allclose(out["q"], out["runoff"] + out["baseflow"])


def test_sensible_behaviour():
    n_t = 120
    p = {k: np.float64((lo + hi) / 2) for k, (lo, hi) in vic.BOUNDS.items()}
    dry = {"prcp": np.zeros(n_t), "tmean": np.full(n_t, 15.0), "pet": np.full(n_t, 4.0)}
    out = vic.run(p, dry)
    for k in ("sm1", "sm2", "sm3"):  # no rain: every layer dries out monotonically
        assert np.all(np.diff(out[k]) <= 1e-12) and out[k][-1] < out[k][0]
    assert np.all(out["runoff"] == 0) and out["et"][-1] < out["et"][0]  # ET falls with soil water
    cold = {"prcp": np.full(n_t, 5.0), "tmean": np.full(n_t, -5.0), "pet": np.zeros(n_t)}
    out = vic.run(p, cold)
    np.testing.assert_allclose(out["swe"], 5.0 * np.arange(1, n_t + 1))  # it all stays as snow
    assert np.all(out["runoff"] == 0)
    warm = {"prcp": np.zeros(10), "tmean": np.full(10, 4.0), "pet": np.zeros(10)}
    o2 = vic.run(p, warm, state={"swe": 100.0, "sm1": 0.0, "sm2": 0.0, "sm3": 0.0})
    np.testing.assert_allclose(100.0 - o2["swe"], np.minimum(p["ddf"] * 4.0 * np.arange(1, 11), 100.0))  # degree-day
    # wetter soil or a larger VIC shape b: more surface runoff from the same storm
    W, Wc, P = 100.0, 200.0, 30.0
    assert vic.vic_curve_runoff(P, 150.0, Wc, 0.2) > vic.vic_curve_runoff(P, W, Wc, 0.2)
    assert vic.vic_curve_runoff(P, W, Wc, 0.4) > vic.vic_curve_runoff(P, W, Wc, 0.05)
    assert vic.vic_curve_runoff(P, Wc, Wc, 0.2) == pytest.approx(P)  # saturated: all runs off
    assert vic.vic_curve_runoff(P, 0.0, Wc, 0.2) < 0.2 * P


def test_arno_baseflow_is_continuous_and_reaches_dsmax():
    w3max, dsmax, ds, ws = 500.0, 10.0, 0.1, 0.7
    x = np.linspace(0, w3max, 2001)
    qb = vic.arno_baseflow(x, w3max, dsmax, ds, ws)
    assert np.all(np.diff(qb) >= 0) and qb[-1] == pytest.approx(dsmax)
    i = np.searchsorted(x, ws * w3max)
    assert qb[i] == pytest.approx(ds * dsmax, rel=1e-3)
    assert np.max(np.abs(np.diff(qb))) < 0.05  # no jump at the knee


def test_the_black_box_wrapper_runs_it_vectorised_and_single():
    f = {"prcp": np.abs(np.random.default_rng(0).normal(3, 3, (2, 40))), "tmean": np.full((2, 40), 10.0),
         "pet": np.full((2, 40), 2.0)}
    x = latin_hypercube(VIC.bounds, 4, seed=1)
    runs = run_blackbox(VIC, x, f, basin=[0, 1, 0, 1])
    assert runs.ok.all()
    one = VIC(x[3], {k: v[1] for k, v in f.items()})
    np.testing.assert_allclose(runs.outputs["sm1"][3], one["sm1"])
