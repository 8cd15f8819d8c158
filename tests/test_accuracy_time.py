"""benchmarks.accuracy_time's post-hoc ensemble: the mean of finished runs' test flows, scored."""
import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import accuracy_time as at
from dpljax.evaluate import write_predictions


@pytest.fixture
def variants(tmp_path, monkeypatch):
    """An empty variants file in tmp_path in place of benchmarks/results/accuracy_hour_variants.json."""
    path = tmp_path / "variants.json"
    path.write_text(json.dumps({"what": "t", "parts": {}}))
    monkeypatch.setattr(at, "VARIANTS", path)
    return path


def _runs(tmp_path, sims, obs, basins=("01", "02", "03"), times=None):
    times = pd.date_range("2000-01-01", periods=obs.shape[1]) if times is None else times
    out = []
    for i, q in enumerate(sims):
        d = tmp_path / f"r{i}"
        d.mkdir()
        write_predictions(d / "predictions_test.zarr", q, obs, basins, times)
        out.append(d)
    return out


def test_ensemble_scores_the_mean_flow(tmp_path, variants):
    rng = np.random.default_rng(0)
    obs = rng.gamma(2.0, 1.0, (3, 200))
    obs[1, 5:9] = np.nan  # missing days stay masked for members and mean alike
    err = rng.normal(0, 0.5, obs.shape)
    truth = np.nan_to_num(obs, nan=1.0)  # a model simulates every day, observed or not
    runs = _runs(tmp_path, [truth + err, truth - err], obs)  # errors cancel in the mean
    rec = at.record_ensemble("pair", "two runs", runs)
    assert rec["median_nse"] == pytest.approx(1.0, abs=1e-6)
    assert max(rec["member_median_nse"]) < 0.95
    assert rec["gain_over_best_member"] == pytest.approx(rec["median_nse"] - max(rec["member_median_nse"]))
    assert json.loads(variants.read_text())["parts"]["ensemble_posthoc"]["pair"] == rec


def test_ensemble_refuses_runs_on_other_basins_or_observations(tmp_path, variants):
    obs = np.ones((3, 10)) + np.arange(10)
    a = _runs(_mk(tmp_path, "a"), [obs], obs)
    b = _runs(_mk(tmp_path, "b"), [obs], obs, basins=("01", "02", "04"))
    c = _runs(_mk(tmp_path, "c"), [obs], obs * 2)
    with pytest.raises(ValueError, match="test basins differ"):
        at.record_ensemble("x", "x", a + b)
    with pytest.raises(ValueError, match=r"observed streamflow \(q_obs\) differs .* basin 01, 2000-01-01"):
        at.record_ensemble("x", "x", a + c)
    with pytest.raises(ValueError, match="at least two"):
        at.record_ensemble("x", "x", a)


def _mk(tmp_path, name):
    (tmp_path / name).mkdir()
    return tmp_path / name


def _pub_run(root, name, flows, obs, spec=None, folds=None):
    """A PUB cross-validation directory as ``dpljax`` leaves it after ``dpljax evaluate``: the
    fold split, and per finished fold its summary and held-out flows."""
    d = root / name
    d.mkdir()
    spec = spec or {"spec": {"n_folds": 2, "seed": 0}, "folds": [["01", "02"], ["03"]]}
    (d / "pub.json").write_text(json.dumps(spec))
    times = pd.date_range("2000-01-01", periods=obs.shape[1])
    for k, held in enumerate(spec["folds"]):
        if folds is not None and k not in folds:
            continue
        idx = [int(b) - 1 for b in held]
        f = d / f"fold_{k}"
        (f / "evaluation").mkdir(parents=True)
        (f / "summary.json").write_text("{}")
        write_predictions(f / "evaluation" / "predictions_test.zarr", flows[idx], obs[idx], held, times)
    return d


def test_ensemble_pools_pub_folds_every_member_has(tmp_path, variants):
    rng = np.random.default_rng(1)
    obs = rng.gamma(2.0, 1.0, (3, 150))
    err = rng.normal(0, 0.5, obs.shape)
    a = _pub_run(tmp_path, "a", obs + err, obs)
    b = _pub_run(tmp_path, "b", obs - err, obs)
    rec = at.record_ensemble("pub", "two PUB runs", [a, b])
    assert rec["folds"] == [0, 1] and rec["n_basins"] == 3  # every fold's held-out basins, side by side
    assert rec["median_nse"] == pytest.approx(1.0, abs=1e-6)
    assert json.loads(variants.read_text())["parts"]["ensemble_posthoc_pub"]["pub"] == rec
    c = _pub_run(tmp_path, "c", obs - err, obs, folds=[1])  # fold 0 still training
    rec = at.record_ensemble("pub2", "fold 1 only", [a, c], part="ensemble_posthoc_pub")
    assert rec["folds"] == [1] and rec["n_basins"] == 1
    other = _pub_run(tmp_path, "o", obs, obs, spec={"spec": {"n_folds": 2, "seed": 1}, "folds": [["01"], ["02", "03"]]})
    with pytest.raises(ValueError, match="PUB folds"):
        at.record_ensemble("x", "x", [a, other])
    with pytest.raises(ValueError, match="not PUB"):
        at.record_ensemble("x", "x", [a, _runs(_mk(tmp_path, "plain"), [obs], obs)[0]])
