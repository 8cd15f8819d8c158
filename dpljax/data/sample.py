"""The embedded CAMELS-US sample: 8 real basins, 1980-2014, shipped inside the package.

Basins (all in the 531 set, <= 0.7 % missing streamflow): 01022500 Narraguagus R. ME,
01547700 Marsh Ck. PA, 02064000 Falling R. VA, 03015500 Brokenstraw Ck. PA, 06431500
Spearfish Ck. SD, 08086212 Hubbard Ck. TX, 09081600 Crystal R. CO, 12167000 NF Stillaguamish
R. WA: humid, snowy, semi-arid, arid-flashy, snowmelt and wet regimes.

Data: CAMELS-US (Newman et al. 2015, HESS 19, 209-223, doi:10.5194/hess-19-209-2015; time
series v1.2, doi:10.5065/D6MW2F4D; attributes v2.0, Addor et al. 2017, HESS 21, 5293-5313,
doi:10.5065/D6G73C3Q), CC-BY-4.0. Daymet basin-mean forcing; ``pet`` is Hargreaves (1985)
derived from tmax, tmin and latitude; streamflow converted to mm/d with ``area_gages2``.

Rebuild from the full store with ``python -m dpljax.data.sample SOURCE.zarr``.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numcodecs
import xarray as xr

SAMPLE_BASINS = ("01022500", "01547700", "02064000", "03015500",
                 "06431500", "08086212", "09081600", "12167000")
SAMPLE_PATH = Path(__file__).parent / "sample" / "camels_us_sample.zarr.zip"


def load_sample() -> xr.Dataset:
    """The embedded sample as an in-memory :class:`xarray.Dataset` (dims basin, time)."""
    from zarr.storage import ZipStore

    store = ZipStore(SAMPLE_PATH, mode="r")
    try:
        return xr.open_zarr(store, consolidated=True).load()
    finally:
        store.close()


def build_sample(source: str | os.PathLike, out: str | os.PathLike = SAMPLE_PATH,
                 basins=SAMPLE_BASINS) -> Path:
    """Cut ``basins`` from a contract store and write them as one zipped zarr (v2) file."""
    ds = xr.open_zarr(source).sel(basin=list(basins)).load()
    for v in ds.variables:
        ds[v].encoding = {}
    comp = numcodecs.Blosc(cname="zstd", clevel=9, shuffle=numcodecs.Blosc.SHUFFLE)
    enc = {v: {"compressors": [comp]} for v in ds.data_vars if ds[v].dtype.kind == "f"}
    ds.attrs["history"] = (ds.attrs.get("history", "") + "; cut to 8 basins by dpljax.data.sample").strip("; ")
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "s.zarr"
        ds.to_zarr(store, zarr_format=2, consolidated=True, encoding=enc)
        part = out.with_suffix(".part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as zf:
            for f in sorted(store.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(store).as_posix())
        os.replace(part, out)
    return out


if __name__ == "__main__":
    print(build_sample(sys.argv[1]))
