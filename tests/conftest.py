import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# Two host devices, so that basin sharding (train.devices) is tested; arrays not sharded
# explicitly live on the first, as with one.
from dpljax.parallel import use_host_devices  # noqa: E402

use_host_devices(2)

ROOT = Path(__file__).resolve().parents[1]


def small_config(**sections) -> dict:
    """A small experiment on the embedded sample (HBV with 2 components, an MLP of 16, Adam);
    each keyword's mapping updates that section, e.g. ``small_config(train={"epochs": 2})``."""
    config = {
        "model": {"name": "hbv", "nmul": 2, "dynamic": [], "routing": True, "options": {}},
        "net": {"name": "mlp", "hidden": [16], "dropout": 0.0},
        "loss": {"name": "rmse_combined", "alpha": 0.25},
        "optim": {"name": "adam", "learning_rate": 3e-3},
        "data": {"source": "sample", "train": ["1989-10-01", "1999-09-30"], "test": ["1999-10-01", "2008-09-30"]},
        "train": {"progress": False},
    }
    for name, update in sections.items():
        config[name] = {**config[name], **update}
    return config


def shared_data() -> Path | None:
    """``../shared/data`` beside the checkout (or $DPLJAX_SHARED_DATA); None when absent."""
    env = os.environ.get("DPLJAX_SHARED_DATA")
    for p in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (p / "camels_us.zarr").exists():
            return p
    return None


@pytest.fixture(scope="session")
def sample():
    from dpljax.data import load_sample

    return load_sample()


@pytest.fixture(scope="session")
def camels_zarr():
    p = shared_data()
    if p is None:
        pytest.skip("../shared/data/camels_us.zarr is not available")
    return p / "camels_us.zarr"


@pytest.fixture(scope="session")
def forcing10y(sample):
    """Ten years of real daily forcing of every sample basin (float64 NumPy, (N, T))."""
    sub = sample.sel(time=slice("1989-10-01", "1999-09-30"))
    prcp = sub["prcp"].values.astype(np.float64)
    tmean = ((sub["tmax"] + sub["tmin"]) / 2).values.astype(np.float64)
    pet = sub["pet"].values.astype(np.float64)
    return prcp, tmean, pet
