"""The hand-written adjoints (HBV day, LSTM recurrence) equal autodiff, in float64."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpljax.models import HBV, hbv
from dpljax.models.hbv import Forcing
from dpljax.nets import lstm as lstm_mod


def _params(rng, capillary, n_t=None, corner=None, precip=False):
    bounds = dict(hbv.BOUNDS, **(hbv.CAPILLARY_BOUNDS if capillary else {}),
                  **(hbv.PRECIP_BOUNDS if precip else {}))
    if corner is not None:
        p = {k: (lo, hi)[corner if corner in (0, 1) else rng.integers(2)] for k, (lo, hi) in bounds.items()}
    else:
        p = {k: rng.uniform(lo, hi) for k, (lo, hi) in bounds.items()}
    if n_t is not None:  # beta and k0 time-varying, as in the reference dynamic set
        wave = 1 + 0.1 * np.sin(np.arange(n_t) / 30.0)
        p["beta"] = np.clip(p["beta"] * wave, 1.0, 6.0)
        p["k0"] = np.clip(p["k0"] * wave, 0.05, 0.9)
        if precip:
            p["sfcf"] = np.clip(p["sfcf"] * wave, 0.5, 1.5)
    return p


@functools.lru_cache(maxsize=None)
def _loss(remat, capillary, smooth_phase, precip=False):
    def f(p, prcp, tmean, pet, s0):
        out = hbv.run(p, prcp, tmean, pet, s0, capillary=capillary, smooth_phase=smooth_phase,
                      precip_correction=precip, remat=remat)
        return (jnp.sum(out.q ** 2) + 0.3 * jnp.sum(out.et) + 0.1 * jnp.sum(out.q0)
                - 0.2 * jnp.sum(out.q2) + 0.05 * jnp.sum(out.prcp_in * jnp.cos(tmean))
                + sum(jnp.sum(s * (i + 1)) for i, s in enumerate(out.state)))

    return jax.jit(jax.grad(f, argnums=(0, 1, 2, 3, 4)))


def _compare(p, prcp, tmean, pet, capillary, smooth_phase, precip=False):
    s0 = hbv.HBVState(*(np.float64(v) for v in (1.0, 0.5, 80.0, 5.0, 20.0)))
    ref = _loss(False, capillary, smooth_phase, precip)(p, prcp, tmean, pet, s0)
    got = _loss(True, capillary, smooth_phase, precip)(p, prcp, tmean, pet, s0)
    assert set(p) <= set(got[0]) and set(got[0]) == set(ref[0])
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ref), jax.tree.leaves(got)):
        a, b = np.asarray(a), np.asarray(b)
        assert np.all(np.isfinite(b)), jax.tree_util.keystr(path)
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("capillary", [False, True])
@pytest.mark.parametrize("smooth_phase", [0.0, 0.5])
@pytest.mark.parametrize("dynamic", [False, True])
def test_hbv_adjoint_equals_autodiff(forcing10y, capillary, smooth_phase, dynamic):
    """Gradients w.r.t. static and dynamic parameters, all three forcings and the initial state."""
    prcp, tmean, pet = (a[6, :400] for a in forcing10y)  # snowmelt-dominated basin
    rng = np.random.default_rng(11)
    with jax.enable_x64(True):
        for _ in range(2):
            _compare(_params(rng, capillary, 400 if dynamic else None), prcp, tmean, pet,
                     capillary, smooth_phase)


@pytest.mark.parametrize("smooth_phase", [0.0, 0.5])
@pytest.mark.parametrize("dynamic", [False, True])
def test_hbv_adjoint_equals_autodiff_with_precip_correction(forcing10y, smooth_phase, dynamic):
    """The precipitation-correction variant (with capillary rise): gradients w.r.t. rfcf and
    sfcf (sfcf time-varying in the dynamic case), the forcing (prcp's and, through the phase,
    tmean's, which reach rfcf and sfcf) and the corrected-precipitation flux ``prcp_in``."""
    prcp, tmean, pet = (a[6, :400] for a in forcing10y)  # snowmelt-dominated basin
    rng = np.random.default_rng(15)
    with jax.enable_x64(True):
        for _ in range(2):
            _compare(_params(rng, True, 400 if dynamic else None, precip=True), prcp, tmean, pet,
                     True, smooth_phase, True)


@pytest.mark.parametrize("case", ["zero_prcp", "all_snow", "dry_soil", "wet"])
def test_hbv_adjoint_equals_autodiff_on_bounds_and_ties(forcing10y, case):
    """Parameters on their bounds and forcing that makes min/max tie (empty snowpack on cold
    dry days, soil at field capacity, soil at its floor): the 1/2 split on ties must match."""
    prcp, tmean, pet = (a[4, :400].copy() for a in forcing10y)
    if case == "zero_prcp":
        prcp[:] = 0.0
    elif case == "all_snow":
        tmean[:] = -15.0
    elif case == "dry_soil":
        prcp[:], pet[:] = 0.0, 15.0
    else:
        prcp *= 5.0
    rng = np.random.default_rng(12)
    with jax.enable_x64(True):
        for corner in (0, 1, 2, 2):
            _compare(_params(rng, False, corner=corner), prcp, tmean, pet, False, 0.0)


def test_user_vmap_of_run_is_the_batched_model(forcing10y):
    """jax.vmap(jax.vmap(hbv.run)) by hand == HBV.simulate, values and gradients."""
    prcp, tmean, pet = (a[:, :300] for a in forcing10y)
    rng = np.random.default_rng(13)
    nmul = 3
    params = {k: rng.uniform(lo, hi, (prcp.shape[0], nmul)) for k, (lo, hi) in hbv.BOUNDS.items()}
    with jax.enable_x64(True):
        def by_hand(p):
            one = lambda pp, a, b, c: hbv.run(pp, a, b, c).q
            q = jax.vmap(jax.vmap(one, in_axes=(-1, None, None, None)))(p, prcp, tmean, pet)
            return q.mean(axis=1)

        def internal(p):
            return HBV().simulate(p, Forcing(prcp, tmean, pet))[0]["q"]

        np.testing.assert_allclose(by_hand(params), internal(params), rtol=1e-12)
        ga = jax.grad(lambda p: jnp.sum(by_hand(p) ** 2))(params)
        gb = jax.grad(lambda p: jnp.sum(internal(p) ** 2))(params)
        for k in params:
            np.testing.assert_allclose(ga[k], gb[k], rtol=1e-12, err_msg=k)


def test_lstm_recurrence_backward_equals_autodiff():
    rng = np.random.default_rng(14)
    t, b, h = 25, 3, 6
    with jax.enable_x64(True):
        gx = jnp.asarray(rng.normal(size=(t, b, 4 * h)))
        w = jnp.asarray(rng.normal(size=(h, 4 * h)) * 0.4)

        def plain(gates_x, w_hh):
            z = jnp.zeros((b, h), gates_x.dtype)
            (hh, cc), (hs, _, _) = jax.lax.scan(lambda cr, g: lstm_mod._cell(w_hh, cr, g), (z, z), gates_x)
            return (hh, cc), hs

        def loss(f):
            def l(gates_x, w_hh):
                (hh, cc), hs = f(gates_x, w_hh)
                return jnp.sum(jnp.sin(hs)) + 0.3 * jnp.sum(hh) + jnp.sum(cc ** 2)

            return jax.grad(l, argnums=(0, 1))

        out_a, out_b = plain(gx, w), lstm_mod.lstm_recurrence(gx, w)
        for x, y in zip(jax.tree.leaves(out_a), jax.tree.leaves(out_b)):
            np.testing.assert_allclose(y, x, rtol=1e-12)
        for x, y in zip(loss(plain)(gx, w), loss(lstm_mod.lstm_recurrence)(gx, w)):
            np.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-12)
