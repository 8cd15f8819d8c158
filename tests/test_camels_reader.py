"""CAMELS-US text-layout reader and Hargreaves PET, checked against the reference store.

The reference ``camels_us.zarr`` and the raw-layout fixture live in the shared data folder
(``<repo>/../shared/data`` or ``$DPLJAX_SHARED_DATA``); tests that need them skip when it is
absent. The forcing, PET and streamflow comparisons are exact (bit-for-bit float32): the
reader reproduces the conversion conventions documented in PROVENANCE.md and
``dpljax/data/pet.py``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from dpljax.data.camels import CamelsFormatError, read_attributes, read_camels_us, write_zarr
from dpljax.data.pet import extraterrestrial_radiation, hargreaves

FIXTURE_BASINS = ["01022500", "01547700", "02064000", "03015500"]
DYNAMIC = ["prcp", "tmax", "tmin", "srad", "dayl", "vp", "pet", "streamflow"]


# --------------------------------------------------------------------------- fixtures


def _shared_data_dir() -> Path | None:
    candidate = Path(__file__).resolve().parents[2] / "shared" / "data"
    if (candidate / "camels_us.zarr").is_dir():
        return candidate
    env = os.environ.get("DPLJAX_SHARED_DATA")
    if env and (Path(env) / "camels_us.zarr").is_dir():
        return Path(env)
    return None


@pytest.fixture(scope="module")
def shared_data() -> Path:
    path = _shared_data_dir()
    if path is None:
        pytest.skip("shared CAMELS data not found (set DPLJAX_SHARED_DATA)")
    return path


@pytest.fixture(scope="module")
def raw_dir(shared_data: Path) -> Path:
    path = shared_data / "camels_us_raw_fixture"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def reference_store(shared_data: Path) -> xr.Dataset:
    return xr.open_zarr(shared_data / "camels_us.zarr")


@pytest.fixture(scope="module")
def camels(raw_dir: Path) -> xr.Dataset:
    return read_camels_us(raw_dir)


@pytest.fixture(scope="module")
def reference(camels: xr.Dataset, reference_store: xr.Dataset) -> xr.Dataset:
    """The reference store cut to the basins and days of the fixture read."""
    return reference_store.sel(basin=camels.basin.values, time=camels.time.values).load()


def _copy_fixture(raw_dir: Path, dest: Path, flat: bool = False) -> Path:
    """Copy the raw fixture to ``dest`` (nested as distributed, or every file in one folder)."""
    if not flat:
        shutil.copytree(raw_dir, dest)
        return dest
    dest.mkdir()
    for path in raw_dir.rglob("*.txt"):
        shutil.copy(path, dest / path.name)
    return dest


def _only(folder: Path, name: str) -> Path:
    (path,) = folder.rglob(name)
    return path


def _covered(raw_dir: Path, time: xr.DataArray, suffix: str, date_cols: slice) -> np.ndarray:
    """(basin, time) mask of the days each fixture file has a row for (read independently)."""
    days = pd.DatetimeIndex(time.values)
    mask = np.zeros((len(FIXTURE_BASINS), len(days)), dtype=bool)
    for i, basin in enumerate(FIXTURE_BASINS):
        rows = [
            line.split()[date_cols]
            for line in _only(raw_dir, f"{basin}{suffix}").read_text().splitlines()
            if line[:1].isdigit() and len(line.split()) > 5
        ]
        dates = pd.to_datetime([f"{y}-{m}-{d}" for y, m, d in rows])
        mask[i] = days.isin(dates)
    return mask


# --------------------------------------------------------------------------- Hargreaves PET


def test_extraterrestrial_radiation_fao56_example_8() -> None:
    # FAO-56 chapter 3, example 8: 20 deg S on 3 September (J = 246) -> Ra = 32.2 MJ m-2 d-1.
    assert extraterrestrial_radiation(-20.0, 246) == pytest.approx(32.2, abs=0.05)


def test_hargreaves_hand_computed() -> None:
    # 45 deg N, J = 172 (21 June), Tmax = 30, Tmin = 14 degC, worked step by step:
    #   d_r   = 1 + 0.033 cos(2 pi 172/365)            = 0.967538
    #   delta = 0.409 sin(2 pi 172/365 - 1.39)         = 0.409000 rad
    #   w_s   = arccos(-tan(pi/4) tan(0.409))          = 2.019106 rad
    #   R_a   = 1440/pi * 0.082 * 0.967538 * (w_s sin(phi) sin(delta) + cos(phi) cos(delta) sin(w_s))
    #         = 41.91046 MJ m-2 d-1
    #   PET   = 0.0023 * 0.408 * 41.91046 * (22 + 17.8) * sqrt(16) = 6.261141 mm/day
    assert extraterrestrial_radiation(45.0, 172) == pytest.approx(41.91046, rel=1e-6)
    assert hargreaves(30.0, 14.0, 45.0, 172) == pytest.approx(6.261141, rel=1e-6)


def test_hargreaves_edge_cases() -> None:
    # Polar night (80 N, 1 January): the clipped sunset hour angle gives Ra = 0, PET = 0.
    assert extraterrestrial_radiation(80.0, 1) == pytest.approx(0.0, abs=1e-12)
    # Midnight sun (80 N, 21 June): w_s = pi, Ra is finite and larger than at the equator.
    assert extraterrestrial_radiation(80.0, 172) > extraterrestrial_radiation(0.0, 172)
    pet = hargreaves(
        np.array([10.0, -25.0, 5.0, np.nan, 3.0]),
        np.array([0.0, -30.0, 5.0, 0.0, 4.0]),
        45.0,
        15,
    )
    assert pet[0] > 0
    assert pet[1] == 0.0 and not np.signbit(pet[1])  # Tmean < -17.8 -> clipped to +0
    assert pet[2] == 0.0  # Tmax == Tmin
    assert np.isnan(pet[3])  # missing input stays missing
    assert pet[4] == 0.0  # Tmax < Tmin -> no range term
    # Broadcasting (basin, 1) latitude against (time,) day of year.
    grid = hargreaves(np.full((2, 366), 20.0), np.full((2, 366), 10.0),
                      np.array([[30.0], [-30.0]]), np.arange(1, 367))
    assert grid.shape == (2, 366) and np.all(grid > 0)
    # Northern summer is southern winter.
    assert grid[0, 171] > 2 * grid[1, 171]


def test_hargreaves_jax_matches_numpy() -> None:
    jnp = pytest.importorskip("jax.numpy")
    tmax = np.linspace(-5.0, 35.0, 50)
    tmin = tmax - np.linspace(2.0, 15.0, 50)
    doy = np.arange(1, 366, 7.3)[:50]
    expected = hargreaves(tmax, tmin, 38.5, doy)
    got = hargreaves(jnp.asarray(tmax), jnp.asarray(tmin), 38.5, jnp.asarray(doy))
    assert isinstance(got, type(jnp.zeros(1)))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-5, atol=1e-6)


def test_hargreaves_reproduces_reference_pet(reference_store: xr.Dataset) -> None:
    """Full year 2010 for 8 basins across the climate range: bit-for-bit in float32."""
    basins = ["01022500", "06431500", "08086212", "09081600", "12167000", "03015500",
              "02064000", "01547700"]
    ref = reference_store.sel(basin=basins, time=slice("2010-01-01", "2010-12-31"))
    ref = ref[["tmax", "tmin", "pet", "forcing_lat"]].load()
    doy = ref.time.dt.dayofyear.values[None, :]
    # The header latitude has two decimals; str() of the float32 gives that decimal back.
    lat = np.array([float(str(v)) for v in ref.forcing_lat.values])[:, None]
    pet = hargreaves(ref.tmax.values.astype(np.float64), ref.tmin.values.astype(np.float64),
                     lat, doy).astype(np.float32)
    np.testing.assert_array_equal(pet, ref.pet.values)
    # Using the float32 latitude directly is within float32 rounding.
    pet32lat = hargreaves(ref.tmax.values.astype(np.float64), ref.tmin.values.astype(np.float64),
                          ref.forcing_lat.values.astype(np.float64)[:, None], doy)
    np.testing.assert_allclose(pet32lat, ref.pet.values, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- reader vs store


def test_contract_matches_reference(camels: xr.Dataset, reference: xr.Dataset) -> None:
    assert camels.basin.values.tolist() == FIXTURE_BASINS
    assert camels.basin.dtype.kind == "U"
    assert camels.time.dtype == np.dtype("datetime64[ns]")
    assert pd.DatetimeIndex(camels.time.values).equals(
        pd.date_range("2000-01-01", "2003-12-31", freq="D")
    )
    # Everything in the store except the 531 flag, which is not in the CAMELS download.
    assert set(camels.data_vars) == set(reference.data_vars) - {"in_531"}
    for name, var in camels.data_vars.items():
        ref = reference[name]
        assert var.dims == ref.dims, name
        assert var.dtype.kind == ref.dtype.kind, name
        if ref.dtype.kind == "f":
            assert var.dtype == np.float32, name
        assert var.attrs == ref.attrs, name
        assert "units" in var.attrs, name
    assert camels.basin.attrs == reference.basin.attrs
    assert camels.time.attrs == reference.time.attrs


@pytest.mark.parametrize("name", DYNAMIC)
def test_dynamic_variables_match_reference(
    name: str, camels: xr.Dataset, reference: xr.Dataset, raw_dir: Path
) -> None:
    if name == "streamflow":
        covered = _covered(raw_dir, camels.time, "_streamflow_qc.txt", slice(1, 4))
    else:
        covered = _covered(raw_dir, camels.time, "_lump_cida_forcing_leap.txt", slice(0, 3))
    got = camels[name].values
    ref = reference[name].values
    assert np.isnan(got[~covered]).all()  # days without a row in the file
    # Where the file has a row: equal NaN positions and bit-identical values.
    np.testing.assert_array_equal(np.isnan(got[covered]), np.isnan(ref[covered]))
    np.testing.assert_array_equal(got[covered], ref[covered])


def test_static_attributes_match_reference(camels: xr.Dataset, reference: xr.Dataset) -> None:
    numeric = ["area_gages2", "p_mean", "frac_snow", "aridity", "q_mean", "geol_porosity",
               "root_depth_50", "soil_porosity", "gauge_lat", "forcing_lat", "forcing_elev",
               "forcing_area"]
    for name in numeric:
        np.testing.assert_array_equal(camels[name].values, reference[name].values, err_msg=name)
    for name in ["huc_02", "gauge_name", "dom_land_cover", "geol_1st_class", "high_prec_timing"]:
        assert camels[name].values.tolist() == reference[name].values.tolist(), name
    assert camels.huc_02.values.tolist() == ["01", "02", "03", "05"]
    assert camels.forcing_ok.values.all()
    assert camels.forcing_area.values[0] == np.float32(587675987 / 1e6)


def test_read_attributes_all_basins_match_reference(
    raw_dir: Path, reference_store: xr.Dataset
) -> None:
    attrs = read_attributes(raw_dir)
    assert attrs.basin.values.tolist() == reference_store.basin.values.tolist()
    for name, var in attrs.data_vars.items():
        ref = reference_store[name].values
        assert var.attrs == reference_store[name].attrs, name
        if var.dtype.kind == "f":
            np.testing.assert_array_equal(var.values, ref, err_msg=name)  # NaN == NaN here
        else:
            assert var.values.tolist() == ref.tolist(), name  # incl. "nan" for NA classes


# --------------------------------------------------------------------------- layouts, options


def test_flat_layout_gives_the_same_dataset(
    camels: xr.Dataset, raw_dir: Path, tmp_path: Path
) -> None:
    flat = _copy_fixture(raw_dir, tmp_path / "flat", flat=True)
    assert not any(p.is_dir() for p in flat.iterdir())
    xr.testing.assert_identical(read_camels_us(flat), camels)


def test_basin_selection_and_time_window(camels: xr.Dataset, raw_dir: Path) -> None:
    ds = read_camels_us(raw_dir, basins=[3015500, "01022500"], start="2002-12-30",
                        end="2004-01-02")
    assert ds.basin.values.tolist() == ["03015500", "01022500"]
    assert ds.sizes["time"] == 369
    # 03015500 ends 2002-12-31; 01022500 ends 2003-12-31; 2004 is in no file.
    assert np.isnan(ds.prcp.sel(basin="03015500", time="2003-01-01").item())
    assert np.isnan(ds.prcp.sel(time="2004-01-01")).all()
    xr.testing.assert_equal(
        ds.sel(basin="01022500", time=slice("2002-12-30", "2003-12-31"))[DYNAMIC],
        camels.sel(basin="01022500", time=slice("2002-12-30", "2003-12-31"))[DYNAMIC],
    )


def test_missing_streamflow_marker_becomes_nan(raw_dir: Path, tmp_path: Path) -> None:
    root = _copy_fixture(raw_dir, tmp_path / "camels")
    path = _only(root, "01547700_streamflow_qc.txt")
    lines = path.read_text().splitlines()
    assert lines[9].startswith("01547700 2000 01 10")
    lines[9] = "01547700 2000 01 10  -999.00 M"
    path.write_text("\n".join(lines) + "\n")
    q = read_camels_us(root, basins=["01547700"]).streamflow.sel(basin="01547700")
    assert np.isnan(q.sel(time="2000-01-10").item())
    assert int(q.sel(time=slice("2000-01-01", "2002-12-31")).isnull().sum()) == 1


# --------------------------------------------------------------------------- zarr output


def test_write_zarr_round_trip(camels: xr.Dataset, tmp_path: Path) -> None:
    target = write_zarr(camels, tmp_path / "camels.zarr")
    assert (target / ".zmetadata").is_file()  # consolidated
    back = xr.open_zarr(target)
    xr.testing.assert_identical(back.load(), camels)
    enc = back.prcp.encoding
    assert back.prcp.dtype == np.float32
    (blosc,) = enc["compressors"]
    assert (blosc.cname, blosc.clevel) == ("zstd", 7)
    meta = json.loads((target / "prcp" / ".zarray").read_text())
    assert meta["zarr_format"] == 2 and meta["dtype"] == "<f4"
    assert [p.name for p in tmp_path.iterdir()] == ["camels.zarr"]  # no temporary left
    with pytest.raises(FileExistsError, match="camels.zarr"):
        write_zarr(camels, target)
    write_zarr(camels.isel(basin=[0]), target, overwrite=True)
    assert xr.open_zarr(target).sizes["basin"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["camels.zarr"]


def test_write_zarr_is_atomic(
    camels: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(self: xr.Dataset, store: Path, **kwargs: object) -> None:
        Path(store).mkdir()
        (Path(store) / ".zgroup").write_text("{}")  # a partial store...
        raise OSError("disk full")  # ...then the crash

    monkeypatch.setattr(xr.Dataset, "to_zarr", crash)
    with pytest.raises(OSError, match="disk full"):
        write_zarr(camels, tmp_path / "camels.zarr")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- errors


def test_error_missing_forcing_file(raw_dir: Path) -> None:
    # 01013500 is in the attribute tables but the fixture has no time series for it.
    with pytest.raises(FileNotFoundError, match=r"01013500_lump_cida_forcing_leap\.txt.*01013500"):
        read_camels_us(raw_dir, basins=["01022500", "01013500"])


def test_error_missing_streamflow_file(raw_dir: Path, tmp_path: Path) -> None:
    root = _copy_fixture(raw_dir, tmp_path / "camels")
    _only(root, "02064000_streamflow_qc.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"streamflow.*02064000"):
        read_camels_us(root)


# One line of one file corrupted: (file, line number in the file, how the line is changed,
# basins read, what the error must say). Every error names the file and the line.
CORRUPT_LINES = {
    "forcing_non_number": ("01547700_lump_cida_forcing_leap.txt", 12,
                           lambda lines, i: lines[i].replace("\t", "\tx", 1), None,
                           r"01547700_lump_cida_forcing_leap\.txt, line 12"),
    "forcing_truncated": ("03015500_lump_cida_forcing_leap.txt", 100,
                          lambda lines, i: lines[i].rsplit("\t", 2)[0], ["03015500"],
                          r"line 100: expected 11 columns, found 9"),
    "forcing_header": ("02064000_lump_cida_forcing_leap.txt", 1,
                       lambda lines, i: "latitude?", ["02064000"], r"line 1: header latitude"),
    "streamflow_letter_o": ("01022500_streamflow_qc.txt", 41,
                            lambda lines, i: "01022500 2000 02 10    1O5.00 A", ["01022500"],
                            r"01022500_streamflow_qc\.txt, line 41.*1O5"),
    "streamflow_30_february": ("01022500_streamflow_qc.txt", 60,
                               lambda lines, i: "01022500 2000 02 30   100.00 A", ["01022500"],
                               r"line 60: invalid date"),
    "streamflow_duplicate_date": ("01022500_streamflow_qc.txt", 6,
                                  lambda lines, i: lines[i - 1], ["01022500"],  # repeats 2000-01-05
                                  r"line 6: duplicate date 2000-01-05"),
    "attribute_extra_field": ("camels_clim.txt", 3,
                              lambda lines, i: lines[i].replace(";", ";;", 1), None,
                              r"camels_clim\.txt, line 3: expected 12"),
}


@pytest.mark.parametrize("case", CORRUPT_LINES)
def test_error_corrupt_line(case: str, raw_dir: Path, tmp_path: Path) -> None:
    name, line_no, edit, basins, match = CORRUPT_LINES[case]
    root = _copy_fixture(raw_dir, tmp_path / "camels")
    path = _only(root, name)
    lines = path.read_text().splitlines()
    lines[line_no - 1] = edit(lines, line_no - 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CamelsFormatError, match=match):
        read_camels_us(root, basins=basins)


def test_error_basin_missing_from_attributes(raw_dir: Path, tmp_path: Path) -> None:
    root = _copy_fixture(raw_dir, tmp_path / "camels")
    topo = _only(root, "camels_topo.txt")
    topo.write_text(
        "".join(l for l in topo.read_text().splitlines(True) if not l.startswith("01547700"))
    )
    with pytest.raises(CamelsFormatError, match=r"01547700 missing from .*camels_topo\.txt"):
        read_camels_us(root)


def test_error_missing_attribute_file_and_bad_arguments(raw_dir: Path, tmp_path: Path) -> None:
    root = _copy_fixture(raw_dir, tmp_path / "camels")
    _only(root, "camels_vege.txt").unlink()
    with pytest.raises(FileNotFoundError, match="camels_vege.txt"):
        read_camels_us(root)
    with pytest.raises(ValueError, match="more than once: 01022500"):
        read_camels_us(raw_dir, basins=["01022500", 1022500])
    with pytest.raises(ValueError, match="empty time range"):
        read_camels_us(raw_dir, start="2003-01-01", end="2002-01-01")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_camels_us(tmp_path / "nowhere")
