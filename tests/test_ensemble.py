"""Post-hoc ensembles (dpljax.ensemble, ``dpljax ensemble``): the mean of members' flows,
scored like one model; checks that members share a split; re-evaluation from the saved models."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from conftest import small_config
from dpljax import metrics as M
from dpljax.cli import main
from dpljax.ensemble import build_ensemble, check_members, score_mean
from dpljax.experiment import run_experiment
from dpljax.pub import run_pub
from dpljax.rundir import RunDirError

TRAIN = {"epochs": 1, "iters_per_epoch": 5, "batch_basins": 4}
quiet = lambda *a: None


def flows(path):
    return xr.open_zarr(path).load()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two small dPL runs on the sample that differ in seed and network width."""
    root = tmp_path_factory.mktemp("members")
    a, b = root / "a", root / "b"
    run_experiment(small_config(train={**TRAIN, "seed": 0}), a, log=quiet)
    run_experiment(small_config(train={**TRAIN, "seed": 1}, net={"hidden": [8]}), b, log=quiet)
    return a, b


def test_the_mean_of_two_runs_is_scored_and_evaluate_redoes_it(runs, tmp_path):
    a, b = runs
    out = tmp_path / "ens"
    assert main(["ensemble", str(out), str(a), str(b)]) is None
    fa, fb, fe = flows(a / "predictions_test.zarr"), flows(b / "predictions_test.zarr"), flows(out / "predictions_test.zarr")
    assert np.abs(fa.q_sim.values - fb.q_sim.values).max() > 1e-2  # the members differ
    np.testing.assert_allclose(fe.q_sim.values, (fa.q_sim.values + fb.q_sim.values) / 2, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(fe.q_obs.values, fa.q_obs.values)
    table = pd.read_csv(out / "metrics_test.csv", index_col=0, dtype={"basin": str})
    expect = M.table(fe.q_sim.values, fe.q_obs.values, fe.basin.values)
    np.testing.assert_allclose(table["nse"].values, expect["nse"].values, rtol=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    for m, run in zip(summary["members"], (a, b)):  # each member's median as its own run scored it
        assert abs(m["median_nse"] - json.loads((run / "summary.json").read_text())["median_nse"]) < 1e-6
        assert (out / m["run"]).resolve() == run.resolve()  # relative to the ensemble's directory
    assert summary["n_members"] == 2 and summary["median_nse"] == pytest.approx(float(table["nse"].median()), abs=1e-6)
    assert summary["gain_over_best_member"] == pytest.approx(
        summary["median_nse"] - max(m["median_nse"] for m in summary["members"]))
    # the squared error of the mean is at most the members' mean squared error (convexity):
    # in every basin the mean's NSE is at least the members' mean NSE
    per = [pd.read_csv(r / "metrics_test.csv", index_col=0, dtype={"basin": str})["nse"] for r in (a, b)]
    assert (table["nse"] >= (per[0] + per[1]) / 2 - 1e-5).all()
    # dpljax evaluate re-runs both members' models and scores the mean again
    assert main(["evaluate", str(out)]) is None
    again = json.loads((out / "evaluation" / "summary.json").read_text())
    assert abs(again["median_nse"] - summary["median_nse"]) < 1e-5
    assert (a / "evaluation" / "predictions_test.zarr").exists() and (b / "evaluation" / "predictions_test.zarr").exists()
    # the same members again: scored again in place; other members or another run's directory: refused
    assert build_ensemble(out, [a, b], log=quiet)["median_nse"] == summary["median_nse"]
    with pytest.raises(RunDirError, match="ensemble of other members"):
        build_ensemble(out, [b, a], log=quiet)
    with pytest.raises(RunDirError, match="something else than an ensemble"):
        build_ensemble(a, [tmp_path / "x", b], log=quiet)
    with pytest.raises(ValueError, match="named twice"):
        build_ensemble(tmp_path / "e2", [a, a], log=quiet)
    with pytest.raises(ValueError, match="at least two"):
        build_ensemble(tmp_path / "e3", [a], log=quiet)
    with pytest.raises(ValueError, match="cannot be a member or lie inside one"):
        build_ensemble(a / "ens", [a, b], log=quiet)
    with pytest.raises(SystemExit):
        main(["evaluate", str(out), "--which", "last"])


def test_a_member_that_kept_only_its_weights_is_evaluated_first(runs, tmp_path):
    """A committed model directory keeps weights, config and normaliser but no predictions:
    the ensemble re-runs its model and gets the flows the run wrote."""
    a, b = runs
    bare = tmp_path / "bare"
    shutil.copytree(b, bare, ignore=shutil.ignore_patterns("predictions_test.zarr", "evaluation*", "figures"))
    summary = build_ensemble(tmp_path / "ens", [a, bare], log=quiet)
    np.testing.assert_allclose(flows(bare / "evaluation" / "predictions_test.zarr").q_sim.values,
                               flows(b / "predictions_test.zarr").q_sim.values, rtol=1e-5, atol=1e-6)
    assert summary["members"][1]["median_nse"] == pytest.approx(
        json.loads((b / "summary.json").read_text())["median_nse"], abs=1e-5)


def _synthetic(n=3, t=40, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.gamma(2.0, 1.0, (n, t)).astype(np.float32)
    obs[0, 5] = np.nan  # a missing observation is the same in every member
    return xr.Dataset({"q_sim": (("basin", "time"), (np.nan_to_num(obs, nan=1.0) + rng.normal(0, .3, (n, t))).astype(np.float32)),
                       "q_obs": (("basin", "time"), obs)},
                      coords={"basin": [f"0{i}" for i in range(n)], "time": pd.date_range("2000-01-01", periods=t)})


def test_members_on_another_split_or_with_bad_flows_are_refused_by_name():
    a = _synthetic()
    b = a.copy(deep=True)
    b["q_sim"] = b.q_sim + 0.1
    mean, table, summary = score_mean([a, b], ["a", "b"])
    np.testing.assert_allclose(mean, a.q_sim.values + 0.05, rtol=1e-6)
    assert table.loc["00", "n_obs"] == 39 and summary["n_members"] == 2
    later = b.assign_coords(time=b.time + pd.Timedelta(days=1))
    with pytest.raises(ValueError, match=r"member b: its test times differ .*2000-01-01"):
        check_members([a, later], ["a", "b"])
    fewer = b.isel(basin=[0, 1])
    with pytest.raises(ValueError, match=r"member b: its test basins differ from a's \(2 against 3"):
        check_members([a, fewer], ["a", "b"])
    other = b.copy(deep=True)
    other["q_obs"][1, 7] = 99.0
    with pytest.raises(ValueError, match=r"member b: observed streamflow \(q_obs\) differs .* basin 01, 2000-01-08"):
        check_members([a, other], ["a", "b"])
    broken = b.copy(deep=True)
    broken["q_sim"][2, 30] = np.nan
    with pytest.raises(ValueError, match=r"member b: simulated streamflow \(q_sim\) is nan at basin 02, 2000-01-31"):
        check_members([a, broken], ["a", "b"])


def test_pub_members_are_pooled_over_their_folds_and_must_share_them(runs, tmp_path):
    config = small_config(train=TRAIN)
    p0, p1, p_other = tmp_path / "p0", tmp_path / "p1", tmp_path / "p_other"
    run_pub(config, p0, n_folds=2, seed=3, log=quiet)
    run_pub({**config, "train": {**config["train"], "seed": 1}}, p1, n_folds=2, seed=3, log=quiet)
    summary = build_ensemble(tmp_path / "ens", [p0, p1], log=quiet)
    held = json.loads((p0 / "pub.json").read_text())["folds"]
    table = pd.read_csv(tmp_path / "ens" / "metrics_test.csv", index_col=0, dtype={"basin": str})
    assert list(table.index) == held[0] + held[1] and summary["n_folds"] == 2 and summary["n_basins"] == 8
    for m, run in zip(summary["members"], (p0, p1)):  # each member's pooled median as its run scored it
        assert abs(m["median_nse"] - json.loads((run / "summary.json").read_text())["median_nse"]) < 1e-6
    run_pub(config, p_other, n_folds=2, seed=4, log=quiet)
    with pytest.raises(ValueError, match="its PUB folds .* differ"):
        build_ensemble(tmp_path / "e2", [p0, p_other], log=quiet)
    with pytest.raises(ValueError, match="cannot be mixed with single runs"):
        build_ensemble(tmp_path / "e3", [p0, runs[0]], log=quiet)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(p1, unfinished)
    (unfinished / "summary.json").unlink()
    with pytest.raises(RunDirError, match="never finished"):
        build_ensemble(tmp_path / "e4", [p0, unfinished], log=quiet)
