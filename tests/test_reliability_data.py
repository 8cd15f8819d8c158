"""Bad input gets a clear answer before any compute: data validation, opt-in exclusion of bad
basins, masked-observation counts, and config validation.

``BAD_INPUTS`` is the table of the README section "Bad input and what you see": every row is
tried here and must give the error quoted there (or, where marked, no error).
"""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import small_config
from dpljax import ConfigError, build
from dpljax.data import DataConfig, DataError, load
from dpljax.data.dataset import load_with_report

B, D0, D1 = "06431500", "1995-03-02", "1995-03-04"


def _set(var, value, basin=B, dates=(D0, D1)):
    def mutate(ds):
        ds[var].loc[dict(basin=basin, time=slice(*dates))] = value
        return ds
    return mutate


def _kelvin(ds):
    for v in ("tmax", "tmin"):
        ds[v].loc[dict(basin=B)] = ds[v].sel(basin=B) + 273.15
    return ds


def _strings(ds):
    ds["prcp"] = ds["prcp"].astype(str)
    return ds


T = lambda i: np.r_[0:i, i + 1, i, i + 2:12784]  # noqa: E731  (swap days i and i+1)

#: (row of the README table, mutation of the sample, DataConfig overrides, regex of the error)
BAD_INPUTS = [
    ("NaN in a forcing", _set("prcp", np.nan), {},
     r"forcing 'prcp' has NaN or inf: basin 06431500: 1995-03-02, 1995-03-03, 1995-03-04"),
    ("inf in a forcing", _set("tmax", np.inf), {},
     r"forcing 'tmax' has NaN or inf: basin 06431500: 1995-03-02"),
    ("negative precipitation", _set("prcp", -1.0), {}, r"forcing 'prcp' is negative: basin 06431500: 1995-03-02"),
    ("negative PET", _set("pet", -0.5), {}, r"forcing 'pet' is negative: basin 06431500: 1995-03-02"),
    ("tmin > tmax", _set("tmin", 60.0), {}, r"tmin > tmax: basin 06431500: 1995-03-02"),
    ("temperatures in Kelvin", _kelvin, {},
     r"forcing 'tmax' lies outside -90..65 degC: basin 06431500: 1989-10-01.*not Kelvin"),
    ("impossible precipitation (> 2000 mm/d)", _set("prcp", 5000.0), {},
     r"forcing 'prcp' exceeds 2000 mm/d: basin 06431500: 1995-03-02"),
    ("missing-value code -999 in streamflow", _set("streamflow", -999.0), {},
     r"'streamflow' is negative: basin 06431500: 1995-03-02.*missing-value code"),
    ("inf in streamflow", _set("streamflow", np.inf), {}, r"'streamflow' has inf.*basin 06431500: 1995-03-02"),
    ("basin without observations in its training period",
     _set("streamflow", np.nan, dates=("1989-10-01", "1999-09-30")), {},
     r"'streamflow': no observations between 1989-10-01 and 1999-09-30 for basin\(s\) 06431500"),
    ("missing variable", lambda ds: ds.drop_vars("pet"), {}, r"dataset lacks variable\(s\) \['pet'\]"),
    ("missing attribute", lambda ds: ds.drop_vars("aridity"), {}, r"dataset lacks variable\(s\) \['aridity'\]"),
    ("wrong dims (time, basin)", lambda ds: ds.transpose("time", "basin"), {},
     r"variable 'pet' has dims \('time', 'basin'\); expected \('basin', 'time'\)"),
    ("no basin dimension", lambda ds: ds.rename({"basin": "gauge"}), {}, r"dataset has no 'basin' dimension"),
    ("non-numeric forcing", _strings, {}, r"variable 'prcp' has dtype <U\d+; expected numbers"),
    ("duplicated time stamps", lambda ds: ds.isel(time=np.r_[0:100, 99, 100:12784]), {},
     r"duplicated time stamps: 1980-04-09"),
    ("unsorted time", lambda ds: ds.isel(time=T(100)), {},
     r"time is not sorted: 1980-04-11 is followed by 1980-04-10"),
    ("gap in time", lambda ds: ds.isel(time=np.r_[0:100, 101:12784]), {},
     r"time axis is not daily and continuous: 1980-04-09 -> 1980-04-11 \(1 gaps\)"),
    ("duplicated basin ids", lambda ds: ds.isel(basin=[0, 1, 1, 2]), {}, r"duplicated basin ids: 01547700"),
    ("test period before the data start", None, {"test": ("1975-10-01", "1985-09-30")},
     r"test period 1975-10-01..1985-09-30 lies outside the data \(1980-01-01..2014-12-31\): "
     r"it starts 1553 days before the data start"),
    ("training period after the data end", None, {"train": ("2010-10-01", "2016-09-30")},
     r"train period 2010-10-01..2016-09-30 lies outside the data .*it ends 639 days after the data end"),
    ("basin not in the dataset", None, {"basins": ["01022500", "99999999"]},
     r"basin\(s\) not in the dataset: 99999999"),
]


@pytest.mark.parametrize("row,mutate,overrides,regex", BAD_INPUTS, ids=[r[0] for r in BAD_INPUTS])
def test_bad_input_table(sample, row, mutate, overrides, regex):
    ds = mutate(sample.copy(deep=True)) if mutate else sample
    with pytest.raises(DataError, match=regex):
        load(DataConfig(**overrides), ds)


def test_nan_observations_are_not_an_error_and_are_counted(sample):
    """Missing streamflow is the normal case: masked in losses and metrics, and counted."""
    from dpljax import metrics as M

    ds = _set("streamflow", np.nan)(sample.copy(deep=True))
    out = load(DataConfig(), ds)
    assert out.sizes["basin"] == 8
    obs = out["streamflow"].values[:, :50]
    t = M.table(obs + 0.1, obs, out["basin"].values)
    assert (t["n_missing"] + t["n_obs"] == 50).all()
    assert t["n_missing"].sum() == int(np.isnan(obs).sum())


def test_exclusion_is_opt_in_logged_and_reported(sample):
    ds = sample.copy(deep=True)
    _set("prcp", np.nan)(ds)
    _set("streamflow", np.nan, basin="08086212", dates=("1989-10-01", "1999-09-30"))(ds)
    with pytest.raises(DataError, match="set data.on_bad_basin=exclude"):
        load(DataConfig(), ds)
    logs = []
    out, report = load_with_report(DataConfig(on_bad_basin="exclude"), ds, log=logs.append)
    assert out.sizes["basin"] == 6 and B not in out["basin"].values
    assert set(report.excluded) == {B, "08086212"}
    assert "forcing 'prcp' has NaN or inf on 1995-03-02" in report.excluded[B]
    assert "no observations" in report.excluded["08086212"]
    assert any(B in l and "1995-03-02" in l for l in logs)
    assert any("2 of 8 basins excluded" in l for l in logs)
    assert report.to_dict()["n_excluded"] == 2
    everything = _set("prcp", -1.0, basin=list(sample.basin.values))(sample.copy(deep=True))
    with pytest.raises(DataError, match="every basin has bad data"):
        load(DataConfig(on_bad_basin="exclude"), everything)


def test_tmin_above_tmax_can_be_accepted_and_reported(sample):
    ds = _set("tmin", 60.0)(sample.copy(deep=True))
    logs = []
    out, report = load_with_report(DataConfig(tmin_above_tmax="warn"), ds, log=logs.append)
    assert out.sizes["basin"] == 8 and not report.excluded
    w = report.warnings["tmin_above_tmax"]
    assert w["cells"] == 3 and w["basins"] == [B] and "1995-03-02" in w["message"]
    assert any("3 basin-days in 1 basins accepted" in l for l in logs)


def test_full_camels_store_passes_its_reference_configs(camels_zarr):
    """The CAMELS-US config accepts the known Daymet tmin > tmax days and nothing else."""
    from pathlib import Path

    import yaml

    conf = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "data" / "camels_us.yaml").read_text())
    conf["source"] = str(camels_zarr)
    for extra in ({}, {"basins": "in_531", "train": ["1999-10-01", "2008-09-30"],
                       "test": ["1989-10-01", "1999-09-30"]}):
        out, report = load_with_report(DataConfig(**{**conf, **extra}), log=lambda *a: None)
        assert out.sizes["basin"] == (531 if extra else 671) and not report.excluded
        assert set(report.warnings) <= {"tmin_above_tmax"}


# ------------------------------------------------------------------ runs on a corrupted store
def _config(**train):
    return small_config(data={"test": ["1999-10-01", "2001-09-30"], "test_warmup_days": 365},
                        train={"epochs": 1, "iters_per_epoch": 2, "batch_basins": 4, "window": 100,
                               "warmup": 100, **train})


@pytest.fixture(scope="module")
def corrupted_store(sample, tmp_path_factory):
    """The sample with: NaN prcp in 06431500 (training period), 5 missing observations of
    01022500 in training and 7 of 02064000 in the test period."""
    ds = sample.copy(deep=True)
    _set("prcp", np.nan)(ds)
    _set("streamflow", np.nan, basin="01022500", dates=("1990-01-01", "1990-01-05"))(ds)
    _set("streamflow", np.nan, basin="02064000", dates=("2000-06-01", "2000-06-07"))(ds)
    for v in ds.variables:
        ds[v].encoding = {}
    path = tmp_path_factory.mktemp("store") / "bad.zarr"
    ds.to_zarr(path, zarr_format=2, consolidated=True)
    return path, ds


def test_run_reports_exclusions_and_masked_counts(corrupted_store, tmp_path):
    from dpljax.experiment import run_experiment
    from dpljax.train import ResumeError

    path, ds = corrupted_store
    cfg = _config()
    cfg["data"].update(source=str(path), on_bad_basin="exclude")
    logs = []
    summary = run_experiment(cfg, tmp_path / "run", log=logs.append)
    assert summary["n_excluded"] == 1 and B in summary["excluded_basins"]
    assert "prcp" in summary["excluded_basins"][B]
    kept = ds.drop_sel(basin=B)["streamflow"]
    want_train = int(np.isnan(kept.sel(time=slice("1989-10-01", "1999-09-30")).values).sum())
    want_test = int(np.isnan(kept.sel(time=slice("1999-10-01", "2001-09-30")).values).sum())
    assert summary["train_obs_masked"] == want_train and want_train >= 5
    assert summary["test_obs_masked"] == want_test and want_test >= 7
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["per_basin"]["01022500"]["train_obs_masked"] >= 5
    assert report["per_basin"]["02064000"]["test_obs_masked"] >= 7
    assert report["excluded_basins"].keys() == {B}
    table = pd.read_csv(tmp_path / "run" / "metrics_test.csv", dtype={"basin": str}).set_index("basin")
    assert B not in table.index and table.loc["02064000", "n_missing"] >= 7
    # A finished run directory is never overwritten by accident ...
    with pytest.raises(ConfigError, match="already holds a training run.*train.resume=true"):
        run_experiment(cfg, tmp_path / "run", log=logs.append)
    # ... is resumed only with the same config ...
    other = json.loads(json.dumps(cfg))
    other["train"]["resume"] = True
    other["model"]["nmul"] = 3
    with pytest.raises(ResumeError, match="model.nmul: 2 -> 3"):
        run_experiment(other, tmp_path / "run", log=logs.append)
    other["model"]["nmul"], other["train"]["seed"] = 2, 5
    with pytest.raises(ResumeError, match="train.seed was 0, now 5"):
        run_experiment(other, tmp_path / "run", log=logs.append)
    # ... and resuming a finished run just re-evaluates it.
    other["train"]["seed"] = 0
    again = run_experiment(other, tmp_path / "run", log=logs.append)
    assert again["median_nse"] == summary["median_nse"] and again["resumed_from_step"] == 2


@pytest.mark.parametrize("data,train,regex", [
    ({"basins": ["01022500", "01547700", "02064000"]}, {"batch_basins": 4},
     r"train.batch_basins=4 is larger than the 3 basins the experiment trains on; set train.batch_basins <= 3"),
    ({"basins": ["01022500", "01547700", "02064000", B], "on_bad_basin": "exclude"}, {"batch_basins": 4},
     r"larger than the 3 basins .*\(1 of 4 were excluded for bad data\)"),
    ({}, {"window": 3000, "warmup": 1000},
     r"train.warmup \+ train.window = 1000 \+ 3000 days is longer than the training period"),
    ({"test": ["1970-10-01", "1985-09-30"]}, {}, r"test period 1970-10-01..1985-09-30 lies outside the data"),
])
def test_data_dependent_config_errors_come_before_compute(corrupted_store, tmp_path, monkeypatch,
                                                          data, train, regex):
    import dpljax.experiment as X

    def no_compute(*a, **k):
        raise AssertionError("compute started before the config was checked")

    monkeypatch.setattr(X, "prepare", no_compute)
    monkeypatch.setattr(X, "fit", no_compute)
    cfg = _config(**train)
    cfg["data"].update(source=str(corrupted_store[0]), **data)
    with pytest.raises((ConfigError, DataError), match=regex):
        X.run_experiment(cfg, tmp_path / "run", log=lambda *a: None)
    assert not (tmp_path / "run" / "checkpoints").exists()


def _with(path, value):
    def mutate(cfg):
        *head, last = path.split(".")
        d = cfg
        for k in head:
            d = d[k]
        d[last] = value
        return cfg
    return mutate


CONFIG_ERRORS = [
    ("train.bogus", 1, r"unknown key\(s\) \['bogus'\] in 'train'"),
    ("net.hiden", [32], r"unknown key\(s\) \['hiden'\] in 'net' \(known: \['dropout', 'hidden', 'name'\]\)"),
    ("loss.beta", 1.0, r"unknown key\(s\) \['beta'\] in 'loss'"),
    ("optim.lr", 0.1, r"unknown key\(s\) \['lr'\] in 'optim'"),
    ("model.nmull", 4, r"unknown key\(s\) \['nmull'\] in 'model'"),
    ("data.trian", ["1989-10-01", "1999-09-30"], r"unknown key\(s\) \['trian'\] in 'data'"),
    ("extra", {}, r"unknown top-level config key\(s\) \['extra'\]"),
    ("train.epochs", "ten", r"train.epochs must be an integer >= 1, got 'ten' \(str\)"),
    ("train.batch_basins", 2.5, r"train.batch_basins must be an integer >= 1, got 2.5"),
    ("train.resume", "yes", r"train.resume must be true or false, got 'yes'"),
    ("train.clip_grad_norm", 0, r"train.clip_grad_norm must be null or a number > 0"),
    ("train.nan_policy", "ignore", r"train.nan_policy must be 'skip' or 'halt'"),
    ("model.nmul", "16", r"model.nmul must be an integer >= 1, got '16'"),
    ("model.routing", "no", r"model.routing must be true or false"),
    ("model.options.capillary", "yes", r"model.options.capillary must be true or false"),
    ("net.hidden", "abc", r"net.hidden must be a list, got 'abc'"),
    ("net.dropout", "half", r"net.dropout must be a number, got 'half'"),
    ("optim.learning_rate", -1e-3, r"optim.learning_rate must be a number > 0"),
    ("optim.name", "adamw2", r"optim.name='adamw2' is not an Optax optimiser"),
    ("loss.alpha", "x", r"loss.alpha must be a number"),
    ("data.train", "1989-10-01", r"data.train must be a pair of dates \[start, end\], got '1989-10-01'"),
    ("data.train", ["1989-10-01", "1999-13-45"], r"data.train: end '1999-13-45' is not a date"),
    ("data.test", ["2008-09-30", "1999-10-01"], r"data.test: start 2008-09-30 is after end 1999-10-01"),
    ("data.test_warmup_days", -5, r"data.test_warmup_days must be null or an integer >= 0"),
    ("data.on_bad_basin", "drop", r"data.on_bad_basin must be 'error' or 'exclude'"),
    ("data.tmin_above_tmax", "ignore", r"data.tmin_above_tmax must be 'error' or 'warn'"),
    ("model.bounds", {"fc": [500, 100]}, r"model.bounds.fc: lower bound 500 must be < upper bound 100"),
    ("model.bounds", {"fc": [100, 100]}, r"model.bounds.fc: lower bound 100 must be < upper bound 100"),
    ("model.bounds", {"fc": [100, "1e3"]}, r"model.bounds.fc must be a pair \[lo, hi\] of finite numbers"),
    ("model.bounds", {"fcc": [1, 2]}, r"model.bounds: 'fcc' is not a parameter of hbv"),
    ("model.dynamic", ["beta"], r"needs a sequence network"),
    ("net.name", "transformer", r"net.name='transformer' is not registered"),
]


@pytest.mark.parametrize("key,value,regex", CONFIG_ERRORS, ids=[f"{k}={v!r}" for k, v, _ in CONFIG_ERRORS])
def test_config_errors_name_the_key(key, value, regex):
    with pytest.raises(ConfigError, match=regex):
        build(_with(key, value)(_config()))
