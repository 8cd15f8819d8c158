"""Property-based tests (hypothesis) of the data validator: a corruption of any kind, in any
variable, at any basin and day the experiment uses, is caught before any compute, with a
message that names the variable, the basin and the date; with ``on_bad_basin=exclude`` that
basin, and only it, is dropped."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpljax.data import DataConfig, DataError, load
from dpljax.data.dataset import load_with_report

CFG = dict(train=("1995-10-01", "1996-09-30"), test=("1996-10-01", "1997-09-30"), test_warmup_days=0)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def small(sample):
    """3 basins x 2 water years: the validator's cost is not what is tested here."""
    return sample.isel(basin=[0, 4, 6]).sel(time=slice("1995-10-01", "1997-09-30")).load()


# kind -> (variables it applies to, how it corrupts value v of a cell (tmax of that cell
# given), the phrase the message must hold)
KINDS = {
    "nan": (("prcp", "tmax", "tmin", "pet"), lambda v, tmax, u: np.nan, "forcing '{var}' has NaN or inf"),
    "inf": (("prcp", "tmax", "tmin", "pet"), lambda v, tmax, u: np.inf, "forcing '{var}' has NaN or inf"),
    "-inf": (("prcp", "tmax", "tmin", "pet"), lambda v, tmax, u: -np.inf, "forcing '{var}' has NaN or inf"),
    "negative": (("prcp", "pet"), lambda v, tmax, u: -u, "forcing '{var}' is negative"),
    "kelvin": (("tmax", "tmin"), lambda v, tmax, u: v + 273.15, "forcing '{var}' lies outside"),
    "above tmax": (("tmin",), lambda v, tmax, u: tmax + u, "tmin > tmax"),
    "flood": (("prcp",), lambda v, tmax, u: 2000.0 + 100 * u, "forcing 'prcp' exceeds"),
    "obs negative": (("streamflow",), lambda v, tmax, u: -u, "'streamflow' is negative"),
    "obs inf": (("streamflow",), lambda v, tmax, u: np.inf, "'streamflow' has inf"),
}


@st.composite
def corruption(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    var = draw(st.sampled_from(KINDS[kind][0]))
    return kind, var, draw(st.integers(0, 2)), draw(st.integers(0, 730)), \
        draw(st.floats(0.01, 50.0, allow_nan=False))


@SETTINGS
@given(c=corruption())
def test_any_value_corruption_is_named(small, c):
    kind, var, b, t, u = c
    ds = small.copy(deep=True)
    tmax = float(ds["tmax"].values[b, t])
    ds[var].values[b, t] = KINDS[kind][1](float(ds[var].values[b, t]), tmax, u)
    basin, date = str(ds["basin"].values[b]), str(pd.Timestamp(ds["time"].values[t]).date())
    with pytest.raises(DataError) as e:
        load(DataConfig(**CFG), ds)
    msg = str(e.value)
    assert msg.startswith(KINDS[kind][2].format(var=var)), msg
    assert f"basin {basin}: {date}" in msg, msg
    kept, report = load_with_report(DataConfig(**CFG, on_bad_basin="exclude"), ds, log=lambda *a: None)
    assert list(report.excluded) == [basin] and date in report.excluded[basin]
    assert basin not in kept["basin"].values and kept.sizes["basin"] == 2


@SETTINGS
@given(b=st.integers(0, 2), t=st.integers(0, 730))
def test_a_missing_observation_is_not_an_error(small, b, t):
    ds = small.copy(deep=True)
    ds["streamflow"].values[b, t] = np.nan
    assert load(DataConfig(**CFG), ds).sizes["basin"] == 3


@SETTINGS
@given(kind=st.sampled_from(["duplicate", "swap", "drop"]), i=st.integers(1, 728))
def test_any_time_axis_corruption_is_named(small, kind, i):
    n = small.sizes["time"]
    idx = {"duplicate": np.r_[0:i + 1, i, i + 1:n], "swap": np.r_[0:i, i + 1, i, i + 2:n],
           "drop": np.r_[0:i, i + 1:n]}[kind]
    day = lambda k: str(pd.Timestamp(small["time"].values[k]).date())  # noqa: E731
    want = {"duplicate": f"duplicated time stamps: {day(i)}",
            "swap": f"time is not sorted: {day(i + 1)} is followed by {day(i)}",
            "drop": f"time axis is not daily and continuous: {day(i - 1)} -> {day(i + 1)}"}[kind]
    with pytest.raises(DataError) as e:
        load(DataConfig(**CFG), small.isel(time=idx))
    assert str(e.value).startswith(want), str(e.value)
