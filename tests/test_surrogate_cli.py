"""A user's own black box through the whole workflow from the command line; an emulator
as the model of an ordinary dPL experiment (what ``dpljax`` runs) with no special case."""
import json

import numpy as np
import pytest

from dpljax import run_experiment
from dpljax.surrogate import BlackBox
from dpljax.surrogate.__main__ import main

from conftest import small_config


def bucket_model(params, forcing):
    """A user's model: a soil bucket of capacity ``smax`` filled by rain and emptied by ET and
    drainage ``k * s``; outputs runoff q, soil water s and ET (plain NumPy, one run)."""
    s, out = 0.5 * params["smax"], {k: np.empty_like(forcing["prcp"]) for k in ("q", "s", "et")}
    for t, (p, e) in enumerate(zip(forcing["prcp"], forcing["pet"])):
        s += p
        over = max(s - params["smax"], 0.0)
        s -= over
        et = min(e * s / params["smax"], s)
        s -= et
        d = params["k"] * s
        s -= d
        out["q"][t], out["s"][t], out["et"][t] = over + d, s, et
    return out


BUCKET = BlackBox(bucket_model, {"smax": (50.0, 300.0), "k": (0.01, 0.3)}, ("q", "s", "et"), ("prcp", "pet"))


@pytest.mark.slow
def test_a_users_black_box_through_the_command_line(tmp_path, capsys):
    d = tmp_path / "emu"
    main(["build", "--model", "test_surrogate_cli:BUCKET", "--data", "sample", "--start", "1999-10-01",
          "--end", "2000-06-30", "--sets", "6", "--dir", str(d), "--hidden", "8", "--steps", "30",
          "--batch", "8", "--learning-rate", "0.02", "--out-scale", "s=smax", "--param-log", "smax,k",
          "--warmup", "20", "--window", "100", "--no-warmup-grad"])
    out = capsys.readouterr().out
    assert "48 of 48 runs ok" in out and "test_params" in out and "test_basins" in out
    rep = json.loads((d / "report.json").read_text())
    assert {"q", "s", "et"} <= set(rep["test_basins"]) and rep["test_basins"]["q"]["rmse"] > 0
    assert json.loads((d / "failures.json").read_text())["summary"]["n_failed"] == 0
    spec = json.loads((d / "emulator" / "spec.json").read_text())
    assert spec["out_scale"] == ["smax" if k == "s" else "" for k in spec["outputs"]]
    assert spec["param_log"] == [True, True]
    # a second run reads every run from the cache
    main(["run", "--model", "test_surrogate_cli:BUCKET", "--dir", str(d)])
    assert "48 from the cache, 0 run" in capsys.readouterr().out


@pytest.mark.slow
def test_an_emulator_is_the_model_of_an_ordinary_dpl_experiment(tmp_path):
    """``model.name=surrogate`` in an experiment config: data, training, test and metrics as for
    HBV (random weights: the plumbing, not the skill, is under test)."""
    import jax

    from dpljax.surrogate import Emulator
    from dpljax.surrogate.emulator import init_weights, make_spec

    spec = make_spec(BUCKET.bounds, BUCKET.forcing, BUCKET.outputs, {"prcp": np.ones(3), "pet": np.ones(3)},
                     {"q": np.array([0.0, 2.0]), "s": np.array([0.0, 100.0]), "et": np.array([0.0, 2.0])}, hidden=8)
    Emulator(spec, {k: np.asarray(v) for k, v in init_weights(spec, jax.random.key(0)).items()}).save(tmp_path / "emu")
    cfg = small_config(model={"name": "surrogate", "nmul": 1, "routing": False,
                              "options": {"path": str(tmp_path / "emu")}},
                       train={"progress": False, "epochs": 1, "batch_basins": 4, "iters_per_epoch": 2,
                              "warmup": 100, "window": 100},
                       data={"source": "sample", "train": ["1999-10-01", "2000-06-30"],
                             "test": ["2000-01-01", "2000-06-30"]})
    summary = run_experiment(cfg, tmp_path / "run", log=lambda *a: None)
    assert (tmp_path / "run" / "summary.json").exists() and summary


def test_out_scale_pairs_are_checked(tmp_path):
    with pytest.raises(SystemExit, match="output=parameter"):
        main(["train", "--dir", str(tmp_path), "--out-scale", "sm1"])


def test_a_broken_model_reference_is_named():
    with pytest.raises(SystemExit, match="module:name"):
        main(["run", "--model", "dpljax.surrogate", "--dir", "x"])
