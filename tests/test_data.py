"""Dataset contract, validation messages, normalisation and the batch sampler."""
import jax
import numpy as np
import pandas as pd
import pytest

from dpljax.data import DataConfig, DataError, Normalizer, fit_normalizer, load, prepare, sample_batch
from dpljax.data.sample import SAMPLE_BASINS, SAMPLE_PATH
from dpljax.models import HBV


def test_embedded_sample_contract(sample):
    assert SAMPLE_PATH.stat().st_size < 3e6
    assert list(sample.basin.values) == list(SAMPLE_BASINS)
    assert sample.sizes["time"] == 12784
    for v in ("prcp", "tmax", "tmin", "pet", "streamflow"):
        assert sample[v].dims == ("basin", "time") and sample[v].dtype == np.float32
    assert "license" in sample.attrs and "CC-BY" in sample.attrs["license"]


def test_sample_equals_full_store(sample, camels_zarr):
    import xarray as xr

    full = xr.open_zarr(camels_zarr).sel(basin=list(SAMPLE_BASINS))
    for v in ("prcp", "tmax", "pet", "streamflow", "aridity"):
        np.testing.assert_array_equal(sample[v].values, full[v].values)


def test_load_and_prepare(sample):
    cfg = DataConfig()
    ds = load(cfg, sample)
    norm = fit_normalizer(cfg, ds)
    arrays, times = prepare(cfg, ds, norm, *cfg.train, forcing=HBV.forcing)
    assert set(arrays.forcing) == {"prcp", "tmean", "pet"}
    assert arrays.forcing["prcp"].shape == (8, 3652) and arrays.x_static.shape == (8, 35)
    assert times[0] == pd.Timestamp("1989-10-01")
    xs = np.asarray(arrays.x_static)
    assert np.all(np.isfinite(xs)) and np.allclose(xs.mean(0), 0, atol=1e-5)
    xd = np.asarray(arrays.x_dynamic)
    assert np.allclose(xd.reshape(-1, 3).mean(0), 0, atol=1e-3)


def test_normalizer_roundtrip(tmp_path, sample):
    cfg = DataConfig()
    norm = fit_normalizer(cfg, load(cfg, sample))
    norm.to_json(tmp_path / "n.json")
    back = Normalizer.from_json(tmp_path / "n.json")
    assert back == norm
    assert "dom_land_cover" in back.categories


def _bad(sample, var, basin, dates, value):
    ds = sample.copy(deep=True)
    ds[var].loc[dict(basin=basin, time=slice(*dates))] = value
    return ds


@pytest.mark.parametrize("var,value,msg", [
    ("prcp", np.nan, "forcing 'prcp' has NaN or inf"),
    ("pet", np.inf, "forcing 'pet' has NaN or inf"),
    ("prcp", -1.0, "forcing 'prcp' is negative"),
    ("tmin", 60.0, "tmin > tmax"),
])
def test_bad_forcing_names_variable_basin_and_date(sample, var, value, msg):
    ds = _bad(sample, var, "06431500", ("1995-03-02", "1995-03-04"), value)
    with pytest.raises(DataError, match=msg) as e:
        load(DataConfig(), ds)
    assert "06431500" in str(e.value) and "1995-03-02" in str(e.value)


def test_basin_without_training_observations(sample):
    ds = _bad(sample, "streamflow", "08086212", ("1989-01-01", "2000-01-01"), np.nan)
    with pytest.raises(DataError, match="no observations.*08086212"):
        load(DataConfig(), ds)


def test_structure_errors(sample):
    with pytest.raises(DataError, match="lacks variable"):
        load(DataConfig(), sample.drop_vars("pet"))
    with pytest.raises(DataError, match="not sorted"):
        load(DataConfig(), sample.isel(time=np.r_[0:100, 101, 100, 102:sample.sizes["time"]]))
    with pytest.raises(DataError, match="duplicated time"):
        load(DataConfig(), sample.isel(time=np.r_[0:100, 99, 100:sample.sizes["time"]]))
    with pytest.raises(DataError, match="test period .* outside the data"):
        load(DataConfig(test=("2010-01-01", "2016-01-01")), sample)
    with pytest.raises(DataError, match="not in the dataset: 99999999"):
        load(DataConfig(basins=["01022500", "99999999"]), sample)
    with pytest.raises(DataError, match="dims"):
        load(DataConfig(), sample.transpose("time", "basin"))


def test_sampler_windows_are_slices_of_the_data(sample):
    cfg = DataConfig()
    ds = load(cfg, sample)
    arrays, _ = prepare(cfg, ds, fit_normalizer(cfg, ds), *cfg.train, forcing=HBV.forcing)
    idx, b = jax.jit(sample_batch, static_argnums=(2, 3))(jax.random.key(3), arrays, 5, 730)
    idx = np.asarray(idx)
    assert len(set(idx.tolist())) == 5 and b.forcing["pet"].shape == (5, 730)
    full = np.asarray(arrays.forcing["pet"])
    for j, i in enumerate(idx):
        win = np.asarray(b.forcing["pet"][j])
        starts = [s for s in range(full.shape[1] - 729) if np.array_equal(full[i, s:s + 730], win)]
        assert starts, "window is not a contiguous slice of its basin"
    idx2, b2 = sample_batch(jax.random.key(3), arrays, 5, 730)
    np.testing.assert_array_equal(np.asarray(b2.obs), np.asarray(b.obs))  # same key, same batch
