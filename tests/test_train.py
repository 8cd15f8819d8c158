"""Training learns something real; checkpoints round-trip; the CLI runs end to end."""
import json
import os
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import EXE, small_config
from dpljax import build
from dpljax.experiment import run_experiment
from dpljax.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def config(**train):
    return small_config(model={"nmul": 4}, net={"hidden": [64]},
                        train={"epochs": 1, "iters_per_epoch": 10, "batch_basins": 8, "window": 365,
                               "warmup": 365, **train})


def test_learns_on_real_data(tmp_path):
    """Untrained parameters give poor flows; 400 steps give a median test NSE above 0.6 on
    basins and years training never saw."""
    quiet = lambda *a: None
    before = run_experiment(config(epochs=1, iters_per_epoch=1), tmp_path / "a", log=quiet)
    after = run_experiment(config(epochs=4, iters_per_epoch=100), tmp_path / "b", log=quiet)
    assert after["median_nse"] > 0.6
    assert after["median_nse"] > before["median_nse"] + 0.2


def test_checkpoint_roundtrip_and_atomicity(tmp_path):
    tree = {"a": np.arange(3.0, dtype=np.float32), "b": [np.ones((2, 2)), np.int32(7)]}
    p = tmp_path / "c.npz"
    save_checkpoint(p, tree, {"step": 5})
    back, meta = load_checkpoint(p, tree)
    assert meta["step"] == 5
    for x, y in zip(jax.tree.leaves(tree), jax.tree.leaves(back)):
        np.testing.assert_array_equal(x, y)
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="holds 3 arrays"):
        load_checkpoint(p, {"a": tree["a"]})


def test_config_errors_before_compute():
    from dpljax import ConfigError

    bad = config()
    bad["train"]["bogus"] = 1
    with pytest.raises(ConfigError, match="unknown key.*bogus.*'train'"):
        build(bad)
    bad = config()
    bad["model"]["dynamic"] = ["beta"]
    with pytest.raises(ConfigError, match="sequence network"):
        build(bad)
    bad = config()
    bad["model"]["bounds"] = {"fc": [500, 100]}
    with pytest.raises(ConfigError, match="lower bound"):
        build(bad)
    bad = config()
    bad["net"]["name"] = "transformer"
    with pytest.raises(ConfigError, match="not registered"):
        build(bad)


def test_cli_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = subprocess.run(
        [str(EXE), "model.nmul=2", "train.epochs=2", "train.iters_per_epoch=15", "train.progress=false",
         "net.hidden=[32]", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("median test NSE:")]
    assert line, out.stdout[-2000:]
    nse = float(line[-1].split(":")[1])
    for f in ("config.yaml", "run_info.json", "normalizer.json", "weights.npz", "metrics_test.csv",
              "summary.json", "predictions_test.zarr", "figures/hydrographs.png", "figures/nse_cdf.png",
              "checkpoints/last.npz"):
        assert (run_dir / f).exists(), f
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["median_nse"] == pytest.approx(nse, abs=1e-4)
    ev = subprocess.run([str(EXE), "evaluate", str(run_dir)], capture_output=True, text=True, cwd=ROOT,
                        env=env, timeout=600)
    assert ev.returncode == 0, ev.stderr[-3000:]
    again = json.loads((run_dir / "evaluation" / "summary.json").read_text())
    assert again["median_nse"] == pytest.approx(summary["median_nse"], abs=1e-6)
