"""Prediction in ungauged basins: folds, held-out scoring, pooling, resume and re-evaluation."""
import json

import pandas as pd
import pytest

from conftest import EXE, small_config
from dpljax.config import ConfigError
from dpljax.evaluate import evaluate_pub
from dpljax.pub import folds, run_pub


def test_folds_partition_the_basins():
    basins = [f"{i:08d}" for i in range(531)]
    parts = folds(basins, 10, seed=0)
    assert len(parts) == 10 and sorted(b for p in parts for b in p) == basins
    assert {len(p) for p in parts} <= {53, 54}
    assert parts == folds(basins, 10, seed=0) and parts != folds(basins, 10, seed=1)
    with pytest.raises(ValueError, match="n_folds"):
        folds(basins[:3], 4)


def test_pub_on_sample(tmp_path):
    config = small_config(train={"epochs": 1, "iters_per_epoch": 5, "batch_basins": 4})
    quiet = lambda *a: None
    summary = run_pub(config, tmp_path, n_folds=2, seed=3, log=quiet)
    spec = json.loads((tmp_path / "pub.json").read_text())
    held = spec["folds"]
    assert sorted(held[0] + held[1]) == sorted(pd.read_csv(tmp_path / "metrics_test.csv", dtype={"basin": str})["basin"])
    for k in range(2):
        t = pd.read_csv(tmp_path / f"fold_{k}" / "metrics_test.csv", dtype={"basin": str})
        assert sorted(t["basin"]) == sorted(held[k])  # scored only on basins it never trained on
    assert summary["n_basins"] == 8 and summary["n_folds"] == 2
    # finished folds are not trained again
    mtime = (tmp_path / "fold_0" / "weights.npz").stat().st_mtime
    again = run_pub(config, tmp_path, n_folds=2, seed=3, log=quiet)
    assert (tmp_path / "fold_0" / "weights.npz").stat().st_mtime == mtime
    assert again["median_nse"] == summary["median_nse"]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["resumed"][-1]["folds_done"] == [0, 1] and "started" in info  # the first start is kept
    # finished folds are pooled with the ones trained later: what they learn must not change
    changed = small_config(train={"epochs": 2, "iters_per_epoch": 5, "batch_basins": 4})
    with pytest.raises(ConfigError, match=r"train\.epochs \(saved: 1, now: 2\)"):
        run_pub(changed, tmp_path, n_folds=2, seed=3, log=quiet)
    cosmetic = small_config(train={"epochs": 1, "iters_per_epoch": 5, "batch_basins": 4, "checkpoint_minutes": 1.5})
    assert run_pub(cosmetic, tmp_path, n_folds=2, seed=3, log=quiet)["median_nse"] == summary["median_nse"]
    ev = evaluate_pub(tmp_path, log=quiet)
    assert ev["median_nse"] == pytest.approx(summary["median_nse"], abs=1e-6)
    from dpljax.cli import main

    assert main(["evaluate", str(tmp_path)]) is None  # the console script's exit status is 0
    with pytest.raises(ValueError, match="holds a PUB run"):
        run_pub(config, tmp_path, n_folds=4, seed=3, log=quiet)


def test_pub_folds_split_over_calls(tmp_path):
    """pub.folds trains only the listed folds; the pooled summary waits for all of them, and
    folds finished in an earlier call are pooled, not trained again."""
    config = small_config(train={"epochs": 1, "iters_per_epoch": 3, "batch_basins": 4})
    quiet = lambda *a: None
    with pytest.raises(ConfigError, match=r"pub\.folds must list fold numbers 0\.\.1"):
        run_pub(config, tmp_path, n_folds=2, seed=3, folds=[2], log=quiet)
    part = run_pub(config, tmp_path, n_folds=2, seed=3, folds=[1], log=quiet)
    held = json.loads((tmp_path / "pub.json").read_text())["folds"]
    assert not (tmp_path / "fold_0").exists() and not (tmp_path / "summary.json").exists()
    assert part["partial"] and part["folds_done"] == [1] and part["n_basins"] == len(held[1])
    assert json.loads((tmp_path / "summary_partial.json").read_text())["folds_done"] == [1]
    with pytest.raises(Exception, match="never finished"):
        evaluate_pub(tmp_path, log=quiet)
    mtime = (tmp_path / "fold_1" / "weights.npz").stat().st_mtime
    full = run_pub(config, tmp_path, n_folds=2, seed=3, log=quiet)
    assert (tmp_path / "fold_1" / "weights.npz").stat().st_mtime == mtime
    assert "partial" not in full and full["n_basins"] == 8 and not (tmp_path / "summary_partial.json").exists()
    pooled = pd.read_csv(tmp_path / "metrics_test.csv", index_col=0, dtype={"basin": str})
    fold1 = pd.read_csv(tmp_path / "fold_1" / "metrics_test.csv", index_col=0, dtype={"basin": str})
    assert pooled.loc[fold1.index, "nse"].tolist() == pytest.approx(fold1["nse"].tolist(), abs=1e-6)


def test_pub_folds_from_the_command_line(tmp_path):
    import subprocess

    exe = str(EXE)
    bad = subprocess.run([exe, "pub={n_folds: 2, seed: 3, fold: [1]}", f"hydra.run.dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown pub key(s) ['fold'] (known: n_folds, seed, folds)" in bad.stderr
    run = tmp_path / "run"
    ok = subprocess.run([exe, "pub={n_folds: 2, seed: 3, folds: [1]}", "train.epochs=1", "train.iters_per_epoch=2", "train.batch_basins=4",
                         "train.progress=false", f"hydra.run.dir={run}"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (run / "fold_1" / "summary.json").exists() and not (run / "fold_0").exists()
    assert "the pooled result waits for folds [0]" in ok.stdout


def test_finished_folds_travel_to_another_run_directory(tmp_path):
    """benchmarks.camels keep/restore: a PUB run's finished folds, kept (as they would be
    committed) while the others train, are put back into a fresh run directory elsewhere;
    there the same run trains only the missing fold and pools the kept one unchanged."""
    from benchmarks import camels

    config = small_config(train={"epochs": 1, "iters_per_epoch": 3, "batch_basins": 4})
    quiet = lambda *a: None
    first, weights = tmp_path / "session1", tmp_path / "weights"
    run_pub(config, first, n_folds=2, seed=3, folds=[1], log=quiet)
    (first / "fold_0").mkdir()  # an unfinished fold is not kept
    assert camels.keep(first, "pub", weights=weights) == [1]
    assert not (weights / "pub" / "fold_0").exists() and (weights / "pub" / "fold_1" / "metrics_test.csv").exists()
    assert not (weights / "pub" / "fold_1" / "checkpoints").exists()
    later = tmp_path / "session2"
    (later / "fold_1").mkdir(parents=True)  # a half-trained copy of a fold finished elsewhere is replaced
    assert camels.restore("pub", later, weights=weights) == [1]
    assert camels.restore("pub", later, weights=weights) == []  # already there: left as it is
    kept = (weights / "pub" / "fold_1" / "weights.npz").read_bytes()
    full = run_pub(config, later, n_folds=2, seed=3, log=quiet)
    assert (later / "fold_1" / "weights.npz").read_bytes() == kept  # not trained again
    assert "partial" not in full and full["n_basins"] == 8
    pooled = pd.read_csv(later / "metrics_test.csv", index_col=0, dtype={"basin": str})
    fold1 = pd.read_csv(first / "fold_1" / "metrics_test.csv", index_col=0, dtype={"basin": str})
    assert pooled.loc[fold1.index, "nse"].tolist() == pytest.approx(fold1["nse"].tolist(), abs=1e-6)
    rec = [f for f in camels._fold_records(later)]
    assert [f["fold"] for f in rec] == [0, 1] and all(f["git_commit"] for f in rec)
    # a different PUB run is refused in both directions
    other = tmp_path / "other"
    run_pub(config, other, n_folds=2, seed=4, folds=[0], log=quiet)
    with pytest.raises(ValueError, match="holds another PUB run"):
        camels.keep(other, "pub", weights=weights)
    with pytest.raises(ValueError, match="holds another PUB run"):
        camels.restore("pub", other, weights=weights)
    with pytest.raises(ValueError, match="not a PUB run directory"):
        camels.keep(tmp_path / "nothing", "x", weights=weights)
