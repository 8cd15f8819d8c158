"""The calibration experiment (dpljax.calibrate.runner): a run directory like training's,
re-evaluated by ``dpljax evaluate``, resumed bit for bit after an interruption, per-basin
results independent of the other basins, and bad input refused with a clear error."""
import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import small_config

from dpljax.calibrate import Problem
from dpljax.calibrate.methods import SCEUA
from dpljax.calibrate.runner import evaluate_calibration, run_calibration
from dpljax.config import ConfigError

BASINS = ["01022500", "09081600"]


def _config(**calibrate):
    c = small_config(model={"nmul": 1},
                     data={"basins": BASINS, "train": ["1995-10-01", "1998-09-30"],
                           "test": ["1998-10-01", "2000-09-30"], "test_warmup_days": 365},
                     train={"warmup": 365, "checkpoint_minutes": 1e-6})
    c["calibrate"] = {"method": "sceua", "max_evals": 400, "n_complexes": 2, "chunk_loops": 1, **calibrate}
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = tmp_path_factory.mktemp("cal") / "run"
    summary = run_calibration(_config(), run, log=lambda *a: None)
    return run, summary


def test_run_directory_scores_and_reevaluates(finished):
    run, summary = finished
    for name in ("config.yaml", "run_info.json", "normalizer.json", "calibration.zarr", "metrics_test.csv",
                 "predictions_test.zarr", "summary.json", "figures/nse_cdf.png", "checkpoints/calibration.npz"):
        assert (run / name).exists(), name
    cal = xr.open_zarr(run / "calibration.zarr")
    assert list(cal["basin"].values) == BASINS and cal["params"].shape == (2, 15)
    lo, hi = cal["lower"].values, cal["upper"].values
    assert np.all(cal["params"].values >= lo) and np.all(cal["params"].values <= hi)
    assert np.all(cal["n_evals"].values <= 400) and np.all(cal["n_evals"].values >= 62)
    assert summary["n_evals_total"] == int(cal["n_evals"].values.sum())
    # The search improved on its initial population: the loss is below a random point's.
    assert np.all(np.isfinite(cal["objective"].values))
    table = pd.read_csv(run / "metrics_test.csv", index_col=0, dtype={"basin": str})
    again = evaluate_calibration(run, log=lambda *a: None)
    np.testing.assert_allclose(again["nse"].values, table["nse"].values, rtol=0, atol=1e-5)
    assert json.loads((run / "evaluation" / "summary.json").read_text())["median_nse"] == \
        pytest.approx(summary["median_nse"], abs=1e-5)
    # A finished directory is refused rather than overwritten.
    with pytest.raises(ConfigError, match="already holds"):
        run_calibration(_config(), run, log=lambda *a: None)


def test_the_objective_is_the_training_loss_of_the_calibrated_parameters(finished):
    """calibration.zarr's objective is what the problem computes from its parameters."""
    from dpljax.data.dataset import fit_normalizer, load, prepare
    from dpljax.experiment import SECTIONS, build

    run, _ = finished
    c = _config()
    exp = build({k: c[k] for k in SECTIONS})
    ds = load(exp.data, forcing=exp.dpl.model.forcing)
    arrays, _ = prepare(exp.data, ds, fit_normalizer(exp.data, ds), *exp.data.train, forcing=exp.dpl.model.forcing)
    pb = Problem(exp.dpl, exp.loss, 365)
    cal = xr.open_zarr(run / "calibration.zarr")
    got = np.asarray(pb.losses(cal["params"].values.astype(np.float32), arrays.forcing, arrays.obs, arrays.obs_std))
    np.testing.assert_allclose(got, cal["objective"].values, rtol=1e-5)
    # ... and it beats the middle of the box on every basin.
    mid = np.tile((pb.lower + pb.upper) / 2, (2, 1)).astype(np.float32)
    assert np.all(got < np.asarray(pb.losses(mid, arrays.forcing, arrays.obs, arrays.obs_std)))


def test_interrupted_calibration_resumes_bit_for_bit(finished, tmp_path, monkeypatch):
    run_full, _ = finished
    run = tmp_path / "run"
    calls = {"n": 0}
    advance = SCEUA.advance

    def interrupted(self, problem, data, state):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a Ctrl-C between chunks
        return advance(self, problem, data, state)

    monkeypatch.setattr(SCEUA, "advance", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_calibration(_config(), run, log=lambda *a: None)
    monkeypatch.setattr(SCEUA, "advance", advance)
    assert (run / "checkpoints" / "calibration.npz").exists() and not (run / "summary.json").exists()
    with pytest.raises(ConfigError, match="already holds a calibration"):
        run_calibration(_config(), run, log=lambda *a: None)
    changed = _config(max_evals=500)
    changed["train"]["resume"] = True
    with pytest.raises(ConfigError, match="max_evals"):
        run_calibration(changed, run, log=lambda *a: None)
    resumed = _config()
    resumed["train"]["resume"] = True
    run_calibration(resumed, run, log=lambda *a: None)
    a, b = xr.open_zarr(run_full / "calibration.zarr"), xr.open_zarr(run / "calibration.zarr")
    np.testing.assert_array_equal(a["params"].values, b["params"].values)
    np.testing.assert_array_equal(a["n_evals"].values, b["n_evals"].values)
    assert len(json.loads((run / "run_info.json").read_text())["resumed"]) == 1


@pytest.mark.slow
def test_a_basin_calibration_does_not_depend_on_the_other_basins(finished, tmp_path):
    run_full, _ = finished
    c = _config()
    c["data"]["basins"] = BASINS[1:]
    run_calibration(c, tmp_path / "one", log=lambda *a: None)
    a = xr.open_zarr(run_full / "calibration.zarr")["params"].sel(basin=BASINS[1]).values
    b = xr.open_zarr(tmp_path / "one" / "calibration.zarr")["params"].sel(basin=BASINS[1]).values
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("calibrate, match", [
    ({"method": "nelder_mead"}, "calibrate.method='nelder_mead' is not a calibration method"),
    ({"max_evals": 20}, "smaller than one population"),
    ({"seeds": 0}, "calibrate.seeds must be an integer >= 1"),
    ({"chunk_loops": 0}, "chunk_loops must be an integer >= 1"),
    ({"n_complexes": 1.5}, "n_complexes"),
    ({"popsize": 3}, "unknown key"),
])
def test_bad_calibration_config_is_refused_before_any_compute(tmp_path, calibrate, match):
    c = _config(**calibrate)
    with pytest.raises(ConfigError, match=match):
        run_calibration(c, tmp_path / "bad", log=lambda *a: None)
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_reversed_bounds_and_time_varying_parameters_are_refused(tmp_path):
    c = _config()
    c["model"]["bounds"] = {"fc": [500.0, 50.0]}
    with pytest.raises(ConfigError, match="fc"):
        run_calibration(c, tmp_path / "b1", log=lambda *a: None)
    c = _config()
    c["model"]["dynamic"] = ["beta"]
    c["net"] = {"name": "lstm", "hidden": 8}
    with pytest.raises(ConfigError, match="one value per parameter"):
        run_calibration(c, tmp_path / "b2", log=lambda *a: None)


def test_gradient_method_runs_resumes_and_reevaluates(tmp_path, monkeypatch):
    from dpljax.calibrate.methods import Gradient

    def config():
        c = _config()
        c["calibrate"] = {"method": "gradient", "restarts": 2, "steps": 30, "learning_rate": 0.1,
                          "chunk_steps": 10}
        return c

    full = run_calibration(config(), tmp_path / "full", log=lambda *a: None)
    cal = xr.open_zarr(tmp_path / "full" / "calibration.zarr")
    assert np.all(cal["n_evals"].values == 2 * 30 + 2)  # forward + backward passes, and the final ones
    assert set(np.unique(cal["restart_by_seed"].values)) <= {0, 1}
    np.testing.assert_allclose(cal["objective"].values,
                               np.minimum(cal["loss_restart_0_by_seed"].values[0], cal["loss_restart_1_by_seed"].values[0]))
    again = evaluate_calibration(tmp_path / "full", log=lambda *a: None)
    assert float(np.nanmedian(again["nse"])) == pytest.approx(full["median_nse"], abs=1e-5)
    # Interrupted after the first chunk, then resumed: the same parameters bit for bit.
    advance, calls = Gradient.advance, {"n": 0}

    def interrupted(self, problem, data, state):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return advance(self, problem, data, state)

    monkeypatch.setattr(Gradient, "advance", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_calibration(config(), tmp_path / "cut", log=lambda *a: None)
    monkeypatch.setattr(Gradient, "advance", advance)
    c = config()
    c["train"]["resume"] = True
    run_calibration(c, tmp_path / "cut", log=lambda *a: None)
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "cut" / "calibration.zarr")["params"].values,
                                  cal["params"].values)


def test_rows_split_over_two_devices_give_the_same_calibration(finished, tmp_path):
    """train.devices=2 pads the rows (3 basins -> 4) and splits them over two host devices;
    every basin's result is the one-device result."""
    run_full, _ = finished
    c = _config()
    c["data"]["basins"] = BASINS + ["12167000"]
    c["train"]["devices"] = 2
    run_calibration(c, tmp_path / "two", log=lambda *a: None)
    two = xr.open_zarr(tmp_path / "two" / "calibration.zarr")
    assert list(two["basin"].values) == BASINS + ["12167000"] and two["params"].shape == (3, 15)
    one = xr.open_zarr(run_full / "calibration.zarr")
    np.testing.assert_allclose(two["params"].sel(basin=BASINS).values, one["params"].values, rtol=1e-6)
    np.testing.assert_array_equal(two["n_evals"].sel(basin=BASINS).values, one["n_evals"].values)


def test_a_refused_calibration_start_leaves_the_directory_as_it_was(finished, tmp_path):
    """Every check comes before the first write: a training period the warm-up fills, a
    finished run, or the start of another configuration's calibration (stopped before its
    first checkpoint) is refused, and no file is created or changed."""
    from dpljax.rundir import RunDirError

    c = _config()
    c["data"]["train"] = ["1997-10-01", "1998-09-30"]  # 365 days: all warm-up
    with pytest.raises(ConfigError, match="training period"):
        run_calibration(c, tmp_path / "new", log=lambda *a: None)
    assert not any(p.name != ".dpljax.lock" for p in (tmp_path / "new").glob("*"))

    run, _ = finished
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".dpljax.lock"}
    with pytest.raises((ConfigError, RunDirError), match="already holds"):
        run_calibration(_config(), run, log=lambda *a: None)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".dpljax.lock"} == before

    started = tmp_path / "started"
    started.mkdir()
    other = _config(max_evals=800)
    import yaml
    (started / "config.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    with pytest.raises(RunDirError, match="holds the start of another run"):
        run_calibration(_config(), started, log=lambda *a: None)
    assert sorted(p.name for p in started.iterdir() if p.name != ".dpljax.lock") == ["config.yaml"]
    assert yaml.safe_load((started / "config.yaml").read_text()) == other
