"""benchmarks.accuracy_time's post-hoc ensemble: the mean of finished runs' test flows, scored."""
import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import accuracy_time as at
from dpljax.evaluate import write_predictions


def _runs(tmp_path, sims, obs, basins=("01", "02", "03"), times=None):
    times = pd.date_range("2000-01-01", periods=obs.shape[1]) if times is None else times
    out = []
    for i, q in enumerate(sims):
        d = tmp_path / f"r{i}"
        d.mkdir()
        write_predictions(d / "predictions_test.zarr", q, obs, basins, times)
        out.append(d)
    return out


def test_ensemble_scores_the_mean_flow(tmp_path, monkeypatch):
    monkeypatch.setattr(at, "VARIANTS", tmp_path / "variants.json")
    (tmp_path / "variants.json").write_text(json.dumps({"what": "t", "parts": {}}))
    rng = np.random.default_rng(0)
    obs = rng.gamma(2.0, 1.0, (3, 200))
    obs[1, 5:9] = np.nan  # missing days stay masked for members and mean alike
    err = rng.normal(0, 0.5, obs.shape)
    runs = _runs(tmp_path, [obs + err, obs - err], obs)  # errors cancel in the mean
    rec = at.record_ensemble("pair", "two runs", runs)
    assert rec["median_nse"] == pytest.approx(1.0, abs=1e-6)
    assert max(rec["member_median_nse"]) < 0.95
    assert rec["gain_over_best_member"] == pytest.approx(rec["median_nse"] - max(rec["member_median_nse"]))
    assert json.loads((tmp_path / "variants.json").read_text())["parts"]["ensemble_posthoc"]["pair"] == rec


def test_ensemble_refuses_runs_on_other_basins_or_observations(tmp_path, monkeypatch):
    monkeypatch.setattr(at, "VARIANTS", tmp_path / "variants.json")
    obs = np.ones((3, 10)) + np.arange(10)
    a = _runs(_mk(tmp_path, "a"), [obs], obs)
    b = _runs(_mk(tmp_path, "b"), [obs], obs, basins=("01", "02", "04"))
    c = _runs(_mk(tmp_path, "c"), [obs], obs * 2)
    with pytest.raises(ValueError, match="test basins differ"):
        at.record_ensemble("x", "x", a + b)
    with pytest.raises(ValueError, match="observed flows differ"):
        at.record_ensemble("x", "x", a + c)
    with pytest.raises(ValueError, match="at least two"):
        at.record_ensemble("x", "x", a)


def _mk(tmp_path, name):
    (tmp_path / name).mkdir()
    return tmp_path / name
