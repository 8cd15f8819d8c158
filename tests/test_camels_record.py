"""benchmarks.camels record: a result names the command that trained it, overrides included; `half`
stores committed weights as float16."""
import pytest
import yaml

from benchmarks import camels


def test_the_recorded_command_keeps_what_was_trained_and_drops_where(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
        ["experiment=camels671_temporal_1h", "net.hidden=256", "net.mlp_hidden=[256,256]",
         "+data.net_forcing=[prcp,srad]", "train.progress=false", "hydra.run.dir=runs/x", "pub.folds=[2]"]))
    assert camels.command(tmp_path, "other_name") == (
        "dpljax experiment=camels671_temporal_1h net.hidden=256 'net.mlp_hidden=[256,256]' "
        "'+data.net_forcing=[prcp,srad]'")
    assert camels.command(tmp_path / "none", "camels531_static") == "dpljax experiment=camels531_static"


def test_an_ensemble_of_recorded_runs_is_recorded_and_evaluate_reproduces_it(tmp_path, monkeypatch):
    """record-ensemble: the members must be recorded runs (weights/NAME + results/NAME.json);
    weights/ENS/ensemble.json points at their committed weights, and dpljax evaluate of it
    re-runs them to the recorded median."""
    import json

    import pytest

    from conftest import small_config
    from dpljax.ensemble import build_ensemble
    from dpljax.experiment import run_experiment

    weights, results = tmp_path / "weights", tmp_path / "results"
    monkeypatch.setattr(camels, "WEIGHTS", weights)
    monkeypatch.setattr(camels, "RESULTS", results)
    quiet = lambda *a: None
    train = {"epochs": 1, "iters_per_epoch": 5, "batch_basins": 4}
    for name, seed in (("camels_a", 0), ("camels_b", 1)):
        run_experiment(small_config(train={**train, "seed": seed}), tmp_path / name, log=quiet)
        camels.record(tmp_path / name, name)
    with pytest.raises(ValueError, match="not recorded runs"):
        build_ensemble(tmp_path / "loose", [tmp_path / "camels_a", tmp_path / "camels_b"], log=quiet)
        camels.record_ensemble(tmp_path / "loose", "camels_ens")
    summary = build_ensemble(tmp_path / "ens", [weights / "camels_a", weights / "camels_b"], log=quiet)
    rec = camels.record_ensemble(tmp_path / "ens", "camels_ens", "two seeds")
    members = [json.loads((results / f"{n}.json").read_text()) for n in ("camels_a", "camels_b")]
    assert rec["members"] == ["camels_a", "camels_b"] and rec["median_nse"] == summary["median_nse"]
    assert rec["member_median_nse"] == pytest.approx([m["median_nse"] for m in members], abs=1e-6)
    assert rec["train_wall_time_s"] == pytest.approx(sum(m["train_wall_time_s"] for m in members))
    assert len(rec["per_basin_nse"]) == 8
    assert json.loads((weights / "camels_ens" / "ensemble.json").read_text())["members"] == ["../camels_a",
                                                                                           "../camels_b"]
    assert camels.check("camels_ens") < 1e-4  # `dpljax evaluate weights/camels_ens`: its printed median


def test_half_stores_every_fold_s_weights_as_float16_and_refuses_an_empty_directory(tmp_path):
    import numpy as np

    from dpljax.checkpoint import read_checkpoint_meta, save_checkpoint

    for sub in ("run", "run/fold_0", "run/fold_3"):
        save_checkpoint(tmp_path / sub / "weights.npz", [np.ones((4, 4), np.float32)], {"step": 1})
    assert camels.half("run", weights=tmp_path) == ["run/fold_0/weights.npz", "run/fold_3/weights.npz",
                                                    "run/weights.npz"]
    for sub in ("run", "run/fold_0", "run/fold_3"):
        assert read_checkpoint_meta(tmp_path / sub / "weights.npz")["stored_dtype"] == "float16"
        with np.load(tmp_path / sub / "weights.npz") as z:
            assert z["leaf_0"].dtype == np.float16
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no weights.npz"):
        camels.half("empty", weights=tmp_path)
