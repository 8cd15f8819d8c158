"""benchmarks.anchor: a run against a study's published per-basin scores, fold by fold and
pooled, on exactly the run's basins; and the vendored scores of Kratzert et al. (2019)."""
import json
import statistics

import numpy as np
import pytest

from benchmarks import anchor as A


def _anchor(tmp_path, nse):
    d = tmp_path / "anchors"
    d.mkdir()
    (d / "study.json").write_text(json.dumps({"series": {"pub": {"what": "a PUB model", "nse": nse}}}))
    return d


def _fold(run, k, scores, finished=True):
    f = run / f"fold_{k}"
    f.mkdir(parents=True)
    lines = ["basin,nse,kge"] + [f"{b},{v},0.5" for b, v in scores.items()]
    (f / "metrics_test.csv").write_text("\n".join(lines) + "\n")
    if finished:
        (f / "summary.json").write_text("{}")


def test_a_pub_run_is_paired_fold_by_fold_and_pooled(tmp_path):
    ref = {"01000001": 0.5, "01000002": 0.6, "01000003": 0.7, "01000004": 0.8, "01000005": 0.1}
    anchors = _anchor(tmp_path, {**ref, "09999999": 0.9})  # a basin the run lacks is no matter
    run = tmp_path / "run"
    run.mkdir()
    (run / "pub.json").write_text("{}")
    _fold(run, 0, {"01000001": 0.7, "01000002": 0.5})           # +0.2, -0.1
    _fold(run, 1, {"01000003": 0.75, "01000004": 0.6, "01000005": 0.3})  # +0.05, -0.2, +0.2
    _fold(run, 2, {"01000005": 0.99}, finished=False)             # still training: not counted
    r = A.compare(run, "study", "pub", anchors=anchors)
    assert list(r["parts"]) == ["fold_0", "fold_1"]
    f0, f1, pooled = r["parts"]["fold_0"], r["parts"]["fold_1"], r["pooled"]
    assert f0["n_basins"] == 2 and f0["median_nse"] == pytest.approx(0.6) and f0["anchor_median_nse"] == pytest.approx(0.55)
    assert f0["median_paired_difference"] == pytest.approx(0.05) and f0["better_in"] == 1
    assert f1["median_nse"] == pytest.approx(0.6) and f1["anchor_median_nse"] == pytest.approx(0.7)
    assert f1["median_paired_difference"] == pytest.approx(0.05) and f1["better_in"] == 2
    ours = [0.7, 0.5, 0.75, 0.6, 0.3]
    assert pooled["n_basins"] == 5 and pooled["median_nse"] == pytest.approx(statistics.median(ours))
    assert pooled["anchor_median_nse"] == pytest.approx(0.6)
    assert pooled["median_paired_difference"] == pytest.approx(0.05) and pooled["better_in"] == 3
    assert any("fold_1: 3 basins, median NSE 0.6000 against 0.7000" in x for x in A.lines(r))


def test_a_basin_the_study_lacks_is_named_unless_common_is_asked(tmp_path):
    anchors = _anchor(tmp_path, {"01000001": 0.5, "01000002": None})
    run = tmp_path / "run"
    _fold(run, 0, {"01000001": 0.7, "01000002": 0.5, "01000003": 0.6})
    (run / "pub.json").write_text("{}")
    with pytest.raises(ValueError, match=r"lack 2 of the run's basins: \['01000002', '01000003'\]"):
        A.compare(run, "study", "pub", anchors=anchors)
    r = A.compare(run, "study", "pub", anchors=anchors, common=True)
    assert r["parts"]["fold_0"]["n_basins"] == 1 and r["left_out"]["fold_0"]["basins"] == ["01000002", "01000003"]
    with pytest.raises(ValueError, match=r"not finite for 1 basins: \['01000001'\]"):
        A.paired({"01000001": float("nan")}, {"01000001": 0.5})
    with pytest.raises(ValueError, match="no series 'gauged'"):
        A.compare(run, "study", "gauged", anchors=anchors)
    with pytest.raises(ValueError, match="no published per-basin scores named 'other'"):
        A.compare(run, "other", "pub", anchors=anchors)


def test_a_basin_in_two_folds_and_a_recorded_result(tmp_path):
    anchors = _anchor(tmp_path, {"01000001": 0.5, "01000002": 0.6})
    run = tmp_path / "run"
    (run).mkdir()
    (run / "pub.json").write_text("{}")
    _fold(run, 0, {"01000001": 0.7})
    _fold(run, 1, {"01000001": 0.6})
    with pytest.raises(ValueError, match="in more than one fold"):
        A.compare(run, "study", "pub", anchors=anchors)
    rec = tmp_path / "rec.json"
    rec.write_text(json.dumps({"per_basin_nse": {"01000001": 0.4, "01000002": 0.8}}))
    r = A.compare(rec, "study", "pub", anchors=anchors)
    assert list(r["parts"]) == ["all"] and "pooled" not in r and r["parts"]["all"]["better_in"] == 1


def test_the_vendored_kratzert2019_scores(camels_zarr):
    """531 basins (the data's in_531, basin for basin), and the medians the study reports:
    0.69 for the PUB LSTM, SAC-SMA 0.64, the National Water Model 0.58."""
    import xarray as xr

    a = A.load_anchor("kratzert2019")
    assert a["source"]["license"].startswith("Apache-2.0")
    med = {k: statistics.median(v for v in s["nse"].values() if v is not None) for k, s in a["series"].items()}
    assert round(med["pub_lstm"], 2) == 0.69 and round(med["benchmark_sacsma_ensemble"], 2) == 0.64
    assert round(med["benchmark_nwm_retrospective"], 2) == 0.58
    ds = xr.open_zarr(camels_zarr)
    in_531 = {str(b) for b in np.asarray(ds["basin"].values)[np.asarray(ds["in_531"].values).astype(bool)]}
    for s in a["series"].values():
        assert set(s["nse"]) == in_531


def test_terciles_of_an_attribute_pair_each_third(tmp_path):
    """Six basins, ranked by an attribute into thirds of two: the run wins in the wet third and
    loses in the dry one; a basin without a value is named."""
    ref = {f"0100000{i}": 0.5 for i in range(6)}
    anchors = _anchor(tmp_path, ref)
    rec = tmp_path / "rec.json"
    ours = {"01000000": 0.7, "01000001": 0.6, "01000002": 0.5, "01000003": 0.5, "01000004": 0.3, "01000005": 0.2}
    rec.write_text(json.dumps({"per_basin_nse": ours}))
    aridity = {"01000000": 0.3, "01000001": 0.4, "01000002": 0.8, "01000003": 0.9, "01000004": 2.0, "01000005": 1.5}
    r = A.compare(rec, "study", "pub", anchors=anchors, by={"aridity": aridity})
    t = r["by"]["aridity"]
    assert t["low"]["median_paired_difference"] == pytest.approx(0.15) and t["low"]["better_in"] == 2
    assert t["low"]["range"] == [0.3, 0.4] and t["high"]["range"] == [1.5, 2.0]
    assert t["mid"]["median_paired_difference"] == pytest.approx(0.0) and t["mid"]["better_in"] == 0
    assert t["high"]["median_paired_difference"] == pytest.approx(-0.25) and t["high"]["n_basins"] == 2
    assert any(x.startswith("aridity high (1.5-2): 2 basins") for x in A.lines(r))
    with pytest.raises(ValueError, match=r"attribute 'aridity' has no value for basins \['01000005'\]"):
        A.compare(rec, "study", "pub", anchors=anchors, by={"aridity": {**aridity, "01000005": float("nan")}})


def test_terciles_read_from_the_store(camels_zarr):
    """The attribute read from the CAMELS-US store for the run's basins: 531 basins in thirds
    of 177, their aridity ranges in order."""
    r = A.compare(A.HERE / "results" / "camels671_temporal_1h_h384.json", "kratzert2019", "global_lstm_static",
                  common=True, by=["aridity"], store=camels_zarr)
    t = r["by"]["aridity"]
    assert [t[k]["n_basins"] for k in ("low", "mid", "high")] == [177, 177, 177]
    assert t["low"]["range"][1] <= t["mid"]["range"][0] and t["mid"]["range"][1] <= t["high"]["range"][0]
    assert r["left_out"]["all"]["n_basins"] == 140


def test_decompose_gives_the_run_s_terms_pooled_and_per_tercile(tmp_path):
    """Two folds with test predictions: a flashy basin (sim = 2 obs - mean) in the high third of
    an attribute, a wet one (obs + 1) in the low third; the medians of the terms land in the
    right third, pooled over both folds; a fold without predictions is named."""
    import xarray as xr

    rng = np.random.default_rng(0)
    obs = {f"0100000{i}": rng.gamma(0.8, 2.0, 200) for i in range(6)}
    kind = {"01000000": "wet", "01000001": "wet", "01000002": "same", "01000003": "same",
            "01000004": "flashy", "01000005": "flashy"}
    sim = {b: {"wet": o + 1.0, "same": o.copy(), "flashy": 2 * o - o.mean()}[kind[b]] for b, o in obs.items()}
    run = tmp_path / "run"
    run.mkdir()
    (run / "pub.json").write_text("{}")
    for k, basins in enumerate((["01000000", "01000002", "01000004"], ["01000001", "01000003", "01000005"])):
        _fold(run, k, {b: 1.0 - float(np.mean((sim[b] - obs[b]) ** 2) / np.var(obs[b])) for b in basins})
        xr.Dataset({"q_obs": (("basin", "time"), np.stack([obs[b] for b in basins])),
                    "q_sim": (("basin", "time"), np.stack([sim[b] for b in basins]))},
                   coords={"basin": basins}).to_zarr(run / f"fold_{k}" / "predictions_test.zarr")
    anchors = _anchor(tmp_path, {b: 0.5 for b in obs})
    attr = {b: float(i) for i, b in enumerate(sorted(obs))}
    r = A.compare(run, "study", "pub", anchors=anchors, by={"x": attr}, decompose=True)
    lo, mid, hi = (r["by"]["x"][t]["terms"] for t in ("low", "mid", "high"))
    assert lo["volume"] == pytest.approx(np.median([1 / np.std(obs[b]) ** 2 for b in ("01000000", "01000001")]))
    assert lo["timing"] == pytest.approx(0, abs=1e-12) and mid["variability"] == pytest.approx(0, abs=1e-12)
    assert hi["alpha"] == pytest.approx(2.0) and hi["variability"] == pytest.approx(1.0)
    assert hi["volume"] == pytest.approx(0, abs=1e-12) and r["terms"]["r"] == pytest.approx(1.0)
    assert r["terms"]["alpha"] == pytest.approx(1.0)  # the pooled median: 1, 1 | 1, 1 | 2, 2
    assert any("pooled: 6 basins" in x and "variability" in x for x in A.lines(r))
    import shutil

    shutil.rmtree(run / "fold_1" / "predictions_test.zarr")
    with pytest.raises(ValueError, match=r"fold_1 has no predictions_test.zarr"):
        A.compare(run, "study", "pub", anchors=anchors, decompose=True)
