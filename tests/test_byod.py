"""Bring your own data: a store of one's own (tmean, no attributes, own variable names) trained
through the command line, predictions for a basin without streamflow, the CSV converter (round
trip, errors), the data config's keys, and progress output that is not a terminal's."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from conftest import EXE, ROOT, small_config

ENV = dict(os.environ, PYTHONUNBUFFERED="1")
QUIET = lambda *a: None  # noqa: E731
#: Tiny training on short periods (2 years + 1 test year), so a test takes seconds.
TINY = ["train.epochs=1", "train.iters_per_epoch=5", "model.nmul=2", "train.window=100",
        "train.warmup=50", "train.batch_basins=4", "data.train=[1995-10-01,1997-09-30]",
        "data.test=[1997-10-01,1998-09-30]"]
OWN_NAMES = {"prcp": "P_mm", "tmean": "T_C", "pet": "PET_mm", "streamflow": "Q_mm"}


def own_store(sample, path: Path, basins, streamflow: bool = True) -> Path:
    """A store as a user might have one: tmean instead of tmax/tmin, no attributes, own names."""
    b = sample.sel(basin=basins, time=slice("1994-01-01", "2000-12-31"))
    ds = xr.Dataset({"P_mm": b["prcp"], "PET_mm": b["pet"],
                     "T_C": ((b["tmax"] + b["tmin"]) / 2).astype(np.float32)})
    if streamflow:
        ds["Q_mm"] = b["streamflow"]
    ds.to_zarr(path, mode="w", zarr_format=2, consolidated=True)
    return path


def dpljax(*args, **kw):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=300, **kw)


@pytest.fixture(scope="module")
def own_run(sample, tmp_path_factory):
    """A model trained through the CLI on 4 basins of an own store (tmean, no attributes), as the
    README's "Bring your own data" says: an LSTM, which learns each basin's parameters from its
    forcings."""
    tmp = tmp_path_factory.mktemp("own")
    gauged = own_store(sample, tmp / "own.zarr", list(sample["basin"].values[:4]))
    run = tmp / "run"
    mapping = "{" + ",".join(f"{k}:{v}" for k, v in OWN_NAMES.items()) + "}"
    r = dpljax(f"data.source={gauged}", "data.attributes=[]", f"data.variables={mapping}", "net=lstm",
               "net.hidden=16", *TINY,
               f"hydra.run.dir={run}")  # train.progress is true: the output is not a terminal
    assert r.returncode == 0, r.stderr[-3000:]
    return run, r, tmp


def test_own_store_trains_through_the_cli(own_run):
    run, r, _ = own_run
    assert "median test NSE:" in r.stdout
    assert "no static attributes (data.attributes=[])" in r.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_basins"] == 4 and np.isfinite(summary["median_nse"])
    # progress on a non-terminal: plain lines, never a carriage-return redraw
    assert "\r" not in r.stdout and "\r" not in r.stderr
    assert "train: 5/5 steps (100.0%)" in r.stdout


def test_predict_a_basin_without_streamflow(own_run, sample):
    run, _, tmp = own_run
    ungauged = own_store(sample, tmp / "ungauged.zarr", list(sample["basin"].values[5:7]), streamflow=False)
    out = tmp / "pred"
    r = dpljax("predict", run, ungauged, "--start", "1999-01-01", "--end", "2000-06-30", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "\r" not in r.stderr
    p = xr.open_zarr(out / "predictions.zarr")
    assert p["basin"].values.tolist() == list(sample["basin"].values[5:7])
    assert str(p["time"].values[0])[:10] == "1999-01-01" and str(p["time"].values[-1])[:10] == "2000-06-30"
    q = p["q_sim"].values
    assert q.shape == (2, 547) and np.isfinite(q).all() and (q >= 0).all() and q.max() > 0
    assert "q_obs" not in p  # the store has no streamflow
    summary = json.loads((out / "summary.json").read_text())
    assert summary["observations"] is False and summary["warmup_start"] == "1996-12-31"  # 731 days: the training length
    assert not (out / "metrics.csv").exists()
    # without attributes the LSTM still tells basins apart, by their forcings
    fc = p["param_fc"].values
    assert fc.shape == (2, 2) and not np.allclose(fc[0], fc[1])


def test_without_attributes_an_mlp_learns_one_parameter_set_for_all(sample, tmp_path):
    """net=mlp on no attributes sees a constant: every basin gets the same parameters."""
    from dpljax.experiment import run_experiment
    from dpljax.predict import predict_run

    store = own_store(sample, tmp_path / "own.zarr", list(sample["basin"].values[:3]))
    config = small_config(data={"source": str(store), "attributes": [], "variables": OWN_NAMES,
                                "train": ["1995-10-01", "1997-09-30"], "test": ["1997-10-01", "1998-09-30"]},
                          train={"epochs": 1, "iters_per_epoch": 3, "window": 100, "warmup": 50,
                                 "batch_basins": 3, "progress": False})
    lines = []
    run_experiment(config, tmp_path / "run", log=lines.append)
    assert any("learns one parameter set shared by every basin" in str(x) for x in lines), lines
    predict_run(tmp_path / "run", str(store), out=tmp_path / "pred", log=QUIET)
    fc = xr.open_zarr(tmp_path / "pred" / "predictions.zarr")["param_fc"].values
    assert fc.shape == (3, 2) and np.array_equal(fc[0], fc[1]) and np.array_equal(fc[1], fc[2])


def test_predict_reproduces_the_runs_own_test_predictions(own_run):
    run, _, tmp = own_run
    out = tmp / "again"
    r = dpljax("predict", run, tmp / "own.zarr", "--start", "1997-10-01", "--end", "1998-09-30", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = xr.open_zarr(out / "predictions.zarr"), xr.open_zarr(run / "predictions_test.zarr")
    assert np.array_equal(a["q_sim"].values, b["q_sim"].values)
    assert np.array_equal(a["q_obs"].values, b["q_obs"].values, equal_nan=True)
    assert json.loads((out / "summary.json").read_text())["median_nse"] == \
        json.loads((run / "summary.json").read_text())["median_nse"]


def test_predict_errors_are_named(own_run, sample, tmp_path, capsys):
    import re

    from dpljax.cli import main

    run, _, tmp = own_run
    lacking = tmp_path / "lacking.zarr"
    b = sample.isel(basin=[6], time=slice(0, 3000))
    xr.Dataset({"P_mm": b["prcp"], "T_C": b["tmax"]}).to_zarr(lacking, zarr_format=2, consolidated=True)
    cal = tmp_path / "cal"
    cal.mkdir()
    (cal / "config.yaml").write_text("calibrate: {method: sceua}\ndata: {source: sample}\n")
    cases = [((run, lacking), r"lacks daily variable\(s\) \[\"pet \(read from 'PET_mm'\)\"\] that the model of .* "
                              r"was trained with"),
             ((run, tmp / "own.zarr", "--start", "2001-01-01"),
              r"the period 2001-01-01..2000-12-31 lies outside|--start 2001-01-01 is after --end"),
             ((run, tmp / "own.zarr", "--start", "1990-01-01", "--end", "1995-01-01"),
              r"the period 1990-01-01..1995-01-01 lies outside the days of .* \(1994-01-01..2000-12-31\)"),
             ((run, tmp / "own.zarr", "--basins", "99999999"), r"basin\(s\) not in the dataset: 99999999"),
             ((run, tmp / "own.zarr", "--variables", "prcp"), r"--variables takes NAME=STORE_NAME pairs"),
             ((cal, lacking), r"is a per-basin calibration \(sceua\): it has parameters only for the basins it "
                              r"calibrated")]
    for args, pattern in cases:
        with pytest.raises(SystemExit) as e:
            main(["predict", *map(str, args)])
        err = capsys.readouterr().err
        assert e.value.code in (1, 2) and re.search(pattern, err), (args, err)
        assert "Traceback" not in err


def test_missing_attributes_named_for_predict(sample):
    from dpljax.data.contract import DataError
    from dpljax.data.normalize import Normalizer
    from dpljax.experiment import build
    from dpljax.predict import _check_inputs

    exp = build(small_config())
    norm = Normalizer(dynamic={"prcp": (0, 1), "tmean": (0, 1), "pet": (0, 1)},
                      static={"aridity": (0, 1), "p_mean": (0, 1)})
    _check_inputs(sample, "sample", exp, norm, Path("run"))  # tmean from tmax and tmin
    with pytest.raises(DataError, match=r"lacks attribute\(s\) \['aridity'\]"):
        _check_inputs(sample.drop_vars("aridity"), "x.zarr", exp, norm, Path("run"))


# --------------------------------------------------------------------------- data config
def test_data_config_keys(sample):
    from dpljax.data.contract import ATTRIBUTES_35, DataError
    from dpljax.data.dataset import DataConfig, load_with_report

    import yaml

    for f in ("sample", "camels_us"):  # a documented key, holding the reference list
        d = yaml.safe_load((ROOT / "conf" / "data" / f"{f}.yaml").read_text())
        assert tuple(d["attributes"]) == ATTRIBUTES_35 and d["variables"] is None
    with pytest.raises(ValueError, match=r"data.variables must map contract names"):
        DataConfig(variables=["prcp"])
    with pytest.raises(ValueError, match=r"'prcp' and 'pet' are both read from 'X'"):
        DataConfig(variables={"prcp": "X", "pet": "X"})
    renamed = sample.rename({"prcp": "P_mm"})
    with pytest.raises(DataError, match=r"data.variables reads 'prcp' from 'precip', but the store has no such"):
        load_with_report(DataConfig(variables={"prcp": "precip"}), renamed, log=QUIET)
    ds, _ = load_with_report(DataConfig(variables={"prcp": "P_mm"}), renamed, log=QUIET)
    assert np.array_equal(ds["prcp"].values, sample["prcp"].values)
    # what the store lacks, in the config's terms
    own = sample[["prcp", "pet", "streamflow", "aridity"]].assign(temp=sample["tmax"])
    with pytest.raises(DataError, match=r"dataset lacks variable\(s\) \['tmean', 'p_mean'\]; 'tmean' may instead be "
                                        r"derived from 'tmax' and 'tmin'; .*map them: data.variables=\{tmean: <store "
                                        r"name>\}; \['p_mean'\] are listed in data.attributes: .*; the store has: "
                                        r"aridity, pet, prcp, streamflow, temp$"):
        load_with_report(DataConfig(attributes=["aridity", "p_mean"]), own, log=QUIET)
    # tmean beside tmax and tmin: the store's tmean is used, and said so
    both = sample.assign(tmean=((sample["tmax"] + sample["tmin"]) / 2 + 0.5).astype(np.float32))
    lines = []
    ds, _ = load_with_report(DataConfig(attributes=[]), both, log=lines.append)
    assert any("the model uses the store's tmean (tmax and tmin are not read)" in l for l in lines)
    assert "tmean" in ds and "tmax" not in ds


def test_older_configs_without_the_new_keys_are_the_same_experiment():
    from dpljax.data.contract import ATTRIBUTES_35
    from dpljax.resume import changes

    old = small_config()
    for variables in (None, {}):
        new = small_config(data={"attributes": list(ATTRIBUTES_35), "variables": variables})
        assert changes(old, new) == []
    assert changes(old, small_config(data={"attributes": []}))  # a real change still shows


# --------------------------------------------------------------------------- CSV
def write_csvs(ds, folder: Path, variables, attributes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dates = pd.DatetimeIndex(ds["time"].values).strftime("%Y-%m-%d")
    for b in ds["basin"].values:
        df = pd.DataFrame({"date": dates, **{v: ds[v].sel(basin=b).values for v in variables}})
        df.to_csv(folder / f"{b}.csv", index=False, float_format="%.9g")  # float32 exactly
    a = pd.DataFrame({"basin": ds["basin"].values, **{k: ds[k].values for k in attributes}})
    a.to_csv(folder / "attributes.csv", index=False, float_format="%.9g")
    return folder


def test_csv_round_trip_and_training(sample, tmp_path, capsys):
    from dpljax.cli import main
    from dpljax.data.contract import ATTRIBUTES_35
    from dpljax.experiment import run_experiment

    variables = ["prcp", "tmax", "tmin", "pet", "streamflow"]
    sample = sample.sel(time=slice("1994-01-01", "1999-12-31"))  # what the training below reads
    src = write_csvs(sample, tmp_path / "csv", variables, ATTRIBUTES_35)
    out = tmp_path / "from_csv.zarr"
    main(["data", "csv", str(src), str(out)])
    assert "wrote" in capsys.readouterr().out
    ds = xr.open_zarr(out).load()
    assert ds["basin"].values.tolist() == sample["basin"].values.tolist()
    assert np.array_equal(ds["time"].values, sample["time"].values)
    for v in [*variables, *ATTRIBUTES_35]:
        assert ds[v].dtype == sample[v].dtype or ds[v].dtype.kind == sample[v].dtype.kind == "U", v
        assert np.array_equal(ds[v].values, sample[v].values, equal_nan=ds[v].dtype.kind == "f"), v
    assert ds["prcp"].attrs["units"] == "mm/day" and ds["tmax"].attrs["units"] == "degC"
    # the same training on the zarr sample and on the store converted from CSV
    tiny = dict(train={"epochs": 1, "iters_per_epoch": 5, "window": 100, "warmup": 50, "batch_basins": 4},
                data={"train": ["1995-10-01", "1997-09-30"], "test": ["1997-10-01", "1998-09-30"]})
    ref = run_experiment(small_config(train=dict(tiny["train"], progress=False), data=tiny["data"]),
                         tmp_path / "ref", log=QUIET)
    got = run_experiment(small_config(train=dict(tiny["train"], progress=False), data=dict(tiny["data"], source=str(out))),
                         tmp_path / "got", log=QUIET)
    assert np.isfinite(ref["median_nse"]) and got["median_nse"] == ref["median_nse"]


def _basin(text: str) -> str:
    return "date,prcp,tmean,pet,streamflow\n" + text


GOOD = _basin("2000-01-01,1.5,3.0,1.0,0.5\n2000-01-02,0.0,2.0,1.1,\n")


@pytest.mark.parametrize("files, args, pattern", [
    ({"A.csv": _basin("2000-01-01,1,2,3,4\n2000-01-02,1,2,3\n")}, [],
     r"A.csv, line 3: 4 field\(s\), the header line \(line 1\) has 5"),
    ({"A.csv": _basin("2000-01-01,1,2,3,4\n2000-01-02,1,x,3,4\n")}, [],
     r"A.csv, line 3 \(date 2000-01-02\), column 'tmean' is not a number \('x'\)"),
    ({"A.csv": _basin("2000-01-01,1,2,3,4\n2000-01-01,1,2,3,4\n")}, [],
     r"A.csv, lines 2 and 3: the date 2000-01-01 appears twice"),
    ({"A.csv": _basin("2000-01-01,1,2,3,4\n01/02/2000,1,2,3,4\n")}, [],
     r"A.csv, line 3, column 'date': '01/02/2000' is not a date \(dates must be YYYY-MM-DD\)"),
    ({"A.csv": _basin("2000-01-01 06:00,1,2,3,4\n")}, [], r"A.csv, line 2, column 'date'.*a time of day"),
    ({"A.csv": "day,prcp\n2000-01-01,1\n"}, [], r"A.csv, line 1: no 'date' column \(found \['day', 'prcp'\]\)"),
    ({"A.csv": GOOD, "B.csv": "date,prcp,tmean,pet\n2000-01-01,1,2,3\n"}, [],
     r"B.csv, line 1: columns differ from those of A.csv .*lacks \['streamflow'\]"),
    ({"A.csv": _basin("2000-01-01,-1,2,3,4\n")}, [],
     r"A.csv, line 2 \(date 2000-01-01\), column 'prcp': -1 is negative"),
    ({"A.csv": _basin("2000-01-01,1,275.1,3,4\n")}, [],
     r"column 'tmean': 275.1 lies outside -90..65 degC \(temperatures must be in degC, not Kelvin"),
    ({"A.csv": _basin("2000-01-01,1,2,3,-999\n")}, [],
     r"A.csv, line 2 \(date 2000-01-01\), column 'streamflow' is -999, which looks like a missing-value code.*"
     r"--missing-values -999"),
    ({"A.csv": GOOD, "attributes.csv": "basin,area\nA,3\nB,4\n"}, [],
     r"attributes.csv, line 3: basin 'B' has attributes but no file .*B.csv"),
    ({"A.csv": GOOD, "B.csv": GOOD, "attributes.csv": "basin,area\nA,3\n"}, [],
     r"attributes.csv: no row for basin\(s\) B"),
    ({"A.csv": GOOD, "attributes.csv": "basin,area\nA,3\nA,4\n"}, [],
     r"attributes.csv, line 3, column 'basin': basin 'A' already has a row \(line 2\)"),
    ({"A.csv": ""}, [], r"A.csv: the file is empty"),
    ({}, [], r"no basin file \*.csv in"),
])
def test_bad_csv_is_named(tmp_path, capsys, files, args, pattern):
    import re

    from dpljax.cli import main

    src = tmp_path / "src"
    src.mkdir()
    for name, text in files.items():
        (src / name).write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["data", "csv", str(src), str(tmp_path / "out.zarr"), *args])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("dpljax data: error: ") and err.count("\n") == 1, err
    assert re.search(pattern, err), err
    assert not (tmp_path / "out.zarr").exists()


def test_csv_missing_codes_gaps_and_categories(tmp_path, capsys):
    from dpljax.data.csvdir import read_csv_dir

    src = tmp_path / "src"
    src.mkdir()
    (src / "A.csv").write_text(_basin("2000-01-01,1,2,3,-999\n2000-01-03,1,2,3,NA\n"))
    (src / "B.csv").write_text(_basin("2000-01-02,1,2,3,4\n"))
    (src / "attributes.csv").write_text("basin,area,land\nA,3.5,forest\nB,,\n")
    lines = []
    ds = read_csv_dir(src, missing_values=[-999], log=lines.append)
    assert ds["time"].values.astype("datetime64[D]").astype(str).tolist() == ["2000-01-01", "2000-01-02", "2000-01-03"]
    assert np.isnan(ds["streamflow"].values[0]).all() and ds["streamflow"].values[1, 1] == 4
    assert np.isnan(ds["prcp"].values[0, 1]) and np.isnan(ds["prcp"].values[1, [0, 2]]).all()
    assert any("A.csv: 1 day(s) without a row" in l for l in lines)
    assert any("B.csv covers 2000-01-02..2000-01-02" in l for l in lines)
    assert ds["area"].dtype == np.float32 and np.isnan(ds["area"].values[1])
    assert ds["land"].values.tolist() == ["forest", "nan"]
    assert any("['land'] are text" in l for l in lines)
