"""Potential evapotranspiration from daily temperature extremes (Hargreaves).

The CAMELS-US store ``camels_us.zarr`` carries a *derived* ``pet`` variable computed
with the Hargreaves (1985) temperature method and the FAO-56 extraterrestrial
radiation. This module is the one implementation of it; the CAMELS reader
(:mod:`dpljax.data.camels`) calls it, and any model that needs PET on the fly can too.

Equations (Allen et al. 1998, FAO Irrigation and Drainage Paper 56, chapter 3;
Hargreaves & Samani 1985)::

    phi   = lat_deg / 180 * pi                                  latitude [rad]
    d_r   = 1 + 0.033 cos(2 pi J / 365)                         FAO-56 eq. 23
    delta = 0.409 sin(2 pi J / 365 - 1.39)                      FAO-56 eq. 24
    w_s   = arccos(clip(-tan(phi) tan(delta), -1, 1))           FAO-56 eq. 25
    R_a   = 24*60/pi * G_sc * d_r * (w_s sin(phi) sin(delta)
                                     + cos(phi) cos(delta) sin(w_s))   FAO-56 eq. 21
    PET   = max(0, 0.0023 * 0.408 R_a * (T_mean + 17.8) * sqrt(max(T_max - T_min, 0)))

with ``J`` the day of the year (1 = 1 January, up to 366 in leap years), the solar
constant ``G_sc = 0.0820`` MJ m-2 min-1, ``R_a`` in MJ m-2 d-1, and ``0.408`` the
conversion from MJ m-2 d-1 to mm/day of evaporated water (1 / latent heat of
vaporisation, 1/2.45 MJ kg-1). The clip in eq. 25 keeps ``w_s`` defined at polar
latitudes (polar night: ``w_s = 0``, ``R_a = 0``; midnight sun: ``w_s = pi``).

Conventions that reproduce ``camels_us.zarr`` ``pet`` *bit for bit* (checked on all
671 basins x 12784 days; see ``tests/test_camels_reader.py``):

* ``T_mean = (T_max + T_min) / 2``, from the Daymet daily extremes (no Daymet mean
  temperature is used);
* ``T_max``, ``T_min`` are the stored float32 values, promoted to float64;
* the latitude is the float64 value written in the Daymet file header (``forcing_lat``
  with two decimals; from the float32 ``forcing_lat`` recover it with
  ``float(str(np.float32(lat)))``, which gives the shortest decimal that round-trips,
  i.e. the header text);
* ``J`` = calendar day of the year, 1..366 (``pandas.DatetimeIndex.day_of_year``);
* everything is evaluated in float64 and cast to float32 once at the end;
* negative values (cold days with ``T_mean < -17.8 degC``) are set to 0: PET is a
  non-negative demand. Without this clip the formula gives values down to about
  -0.2 mm/day in northern winters, which the reference store does not contain.

Using the float32 latitude directly instead changes about 20 % of the values by one
float32 ulp (max relative difference 2.4e-7); computing in float32 throughout
changes most values by a few ulps (max relative difference about 6e-7).

References
----------
Hargreaves, G. H. and Samani, Z. A. (1985): Reference crop evapotranspiration from
temperature. Applied Engineering in Agriculture 1(2), 96-99.

Allen, R. G., Pereira, L. S., Raes, D. and Smith, M. (1998): Crop evapotranspiration.
Guidelines for computing crop water requirements. FAO Irrigation and Drainage Paper 56,
FAO, Rome. Equations 21, 23, 24, 25 (extraterrestrial radiation) and 52 (Hargreaves).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["SOLAR_CONSTANT", "extraterrestrial_radiation", "hargreaves"]

#: Solar constant G_sc [MJ m-2 min-1] (FAO-56, eq. 21).
SOLAR_CONSTANT = 0.0820
#: Hargreaves coefficient [degC^-1.5] (Hargreaves & Samani 1985).
_HARGREAVES_COEF = 0.0023
#: Temperature offset of the Hargreaves equation [degC].
_HARGREAVES_OFFSET = 17.8
#: Radiation (MJ m-2 d-1) to equivalent evaporation (mm/day), 1 / 2.45 MJ kg-1 (FAO-56 eq. 20).
_MJ_TO_MM = 0.408


def _namespace(*arrays: Any) -> ModuleType:
    """Return ``jax.numpy`` if any argument is a JAX array or tracer, else ``numpy``.

    Checking the type's module avoids importing JAX when only numpy is used.
    """
    for a in arrays:
        if type(a).__module__.split(".")[0] in ("jax", "jaxlib"):
            import jax.numpy as jnp

            return jnp
    return np


def extraterrestrial_radiation(lat_deg: Any, doy: Any, xp: ModuleType | None = None) -> Any:
    """Daily extraterrestrial radiation R_a (FAO-56 eq. 21) [MJ m-2 d-1].

    Parameters
    ----------
    lat_deg
        Latitude [degrees north, negative south]; any shape broadcastable with ``doy``.
    doy
        Day of the year ``J`` [1..366], 1 = 1 January.
    xp
        Array module (``numpy`` or ``jax.numpy``); inferred from the inputs if omitted.

    Returns
    -------
    R_a with the broadcast shape of the inputs. With numpy inputs the computation is in
    float64 (Python floats and integer arrays are promoted); with JAX it follows JAX's
    default float precision.

    Notes
    -----
    Uses FAO-56 eqs. 23 (inverse relative Earth-Sun distance ``d_r``), 24 (solar
    declination ``delta``) and 25 (sunset hour angle ``w_s``), the last with its
    ``arccos`` argument clipped to [-1, 1] so that latitudes beyond the polar circles
    give ``w_s`` = 0 (no sunrise) or pi (no sunset) instead of NaN.
    """
    xp = _namespace(lat_deg, doy) if xp is None else xp
    lat = xp.asarray(lat_deg)
    j = xp.asarray(doy)
    if not xp.issubdtype(lat.dtype, xp.floating):
        lat = lat.astype(float)
    phi = lat / 180.0 * math.pi
    year_angle = 2.0 * math.pi / 365.0 * j
    dr = 1.0 + 0.033 * xp.cos(year_angle)  # eq. 23
    delta = 0.409 * xp.sin(year_angle - 1.39)  # eq. 24
    ws = xp.arccos(xp.clip(-xp.tan(phi) * xp.tan(delta), -1.0, 1.0))  # eq. 25
    return (
        24.0 * 60.0 / math.pi
        * SOLAR_CONSTANT
        * dr
        * (ws * xp.sin(phi) * xp.sin(delta) + xp.cos(phi) * xp.cos(delta) * xp.sin(ws))
    )  # eq. 21


def hargreaves(
    tmax: Any, tmin: Any, lat_deg: Any, doy: Any, xp: ModuleType | None = None
) -> Any:
    """Hargreaves (1985) potential evapotranspiration [mm/day].

    ``PET = max(0, 0.0023 * 0.408 * R_a * (T_mean + 17.8) * sqrt(max(T_max - T_min, 0)))``
    with ``T_mean = (T_max + T_min) / 2`` and ``R_a`` from
    :func:`extraterrestrial_radiation` (FAO-56 eq. 21). See the module docstring for
    the full set of equations and for the conventions that reproduce the ``pet``
    variable of ``camels_us.zarr`` exactly.

    Parameters
    ----------
    tmax, tmin
        Daily maximum and minimum 2 m air temperature [degC].
    lat_deg
        Latitude [degrees north].
    doy
        Day of the year [1..366].
    xp
        Array module (``numpy`` or ``jax.numpy``); inferred from the inputs if omitted.

    All inputs broadcast against each other, e.g. ``tmax`` of shape (basin, time), ``lat_deg``
    of shape (basin, 1) and ``doy`` of shape (time,). NaN in a temperature gives NaN.

    Returns
    -------
    PET [mm/day], non-negative, with the broadcast shape. numpy computes in the
    promoted input precision: pass float64 (or float32 arrays cast to float64) and cast
    the result to float32 to reproduce the reference store.

    Notes
    -----
    ``sqrt`` has an infinite derivative at ``T_max = T_min``; this function is meant for
    data preparation, not to be differentiated through.

    References
    ----------
    Hargreaves & Samani (1985), Applied Engineering in Agriculture 1(2), 96-99;
    Allen et al. (1998), FAO Irrigation and Drainage Paper 56, eqs. 21, 23-25, 52.
    """
    xp = _namespace(tmax, tmin, lat_deg, doy) if xp is None else xp
    tmax = xp.asarray(tmax)
    tmin = xp.asarray(tmin)
    ra = extraterrestrial_radiation(lat_deg, doy, xp=xp)
    tmean = (tmax + tmin) / 2.0
    pet = (
        _HARGREAVES_COEF
        * _MJ_TO_MM
        * ra
        * (tmean + _HARGREAVES_OFFSET)
        * xp.sqrt(xp.maximum(tmax - tmin, 0.0))
    )
    # Clip cold-day negatives to 0 with `where` (not `maximum`) so that -0.0 becomes
    # +0.0 as in the reference store; NaN (missing temperature) is kept.
    return xp.where(xp.isnan(pet) | (pet > 0.0), pet, 0.0)
