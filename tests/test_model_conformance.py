"""The same conformance tests over every registered process model (and its variants).

Each model is driven only through the protocol (``bounds``, ``forcing``, ``initial_state``,
``storage``, ``net_inflow``, generic ``run``/``simulate``), so a model added to the registry
is tested here without a line of test code of its own. ``VARIANTS`` lists option sets worth
testing beyond the defaults; a registered model missing from it is still tested with its
defaults.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpljax.models import ADJOINTS, MODELS, base
from dpljax.surrogate import Surrogate
from dpljax.surrogate.emulator import EmulatorSpec

VARIANTS = {"hbv": [{}, {"capillary": True}, {"smooth_phase": 0.5},
                    {"precip_correction": True, "smooth_phase": 0.5}],
            "gr4j": [{}, {"snow": True}],
            "surrogate": [{}, {"output": "sm1"}]}


def _tiny_surrogate(**opts):
    """A surrogate with random weights (it emulates nothing, but runs through the protocol)."""
    spec = EmulatorSpec(("a", "b", "c"), ((0.0, 1.0), (10.0, 100.0), (-2.0, 2.0)), ("prcp", "tmean", "pet"),
                        ("sm1", "et", "q"), (True, False, False), (0.3, 8.0, 2.5), (0.3, 9.0, 1.5),
                        (20.0, 1.5, 2.0), (5.0, 1.0, 2.0), 8, "tiny")
    return Surrogate.random(spec, jax.random.key(0), **opts)


#: Models that need more than options to be built (a surrogate needs its weights).
FACTORIES = {"surrogate": _tiny_surrogate}


def _model(name, opts):
    return FACTORIES.get(name, MODELS[name])(**opts)


def _out(model, out):
    """The flux a model predicts (``model.output``: runoff ``q`` unless it says otherwise)."""
    return getattr(out.fluxes, model.output)
CASES = [(name, opts) for name in MODELS.names() for opts in VARIANTS.get(name, [{}])]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}" for n, o in CASES]


def test_every_registered_model_is_covered():
    assert {"hbv", "gr4j", "surrogate"} <= set(MODELS.names())


def _forcing(forcing10y, model, basin=slice(None), days=slice(None)):
    prcp, tmean, pet = forcing10y
    have = {"prcp": prcp, "tmean": tmean, "pet": pet}
    return {n: have[n][basin, days] for n in model.forcing}


def _params(model, rng, shape=()):
    return {k: rng.uniform(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo), shape)
            for k, (lo, hi) in model.bounds.items()}


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_water_balance_closes_over_ten_years(forcing10y, name, opts):
    model = _model(name, opts)
    if not model.water_balance:
        with pytest.raises(NotImplementedError):
            model.storage(model.initial_state(model.Params(**_params(model, np.random.default_rng(0)))))
        pytest.skip(f"{name} declares no water balance of its own (water_balance=False)")
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        f = _forcing(forcing10y, model)
        n = next(iter(f.values())).shape[0]

        @jax.jit
        @jax.vmap
        def one(p, x):
            out = base.run(model, p, x)
            s0 = model.initial_state(model.Params(**p))
            gain = jax.vmap(model.net_inflow)(model.Forcing(**x), out.fluxes).sum()
            return gain, model.storage(out.state) - model.storage(s0), jnp.sum(x["prcp"])

        for _ in range(3):
            gain, change, rain = one(_params(model, rng, (n,)), f)
            assert next(iter(f.values())).shape[1] >= 3652
            np.testing.assert_allclose(np.asarray(gain), np.asarray(change), rtol=1e-9,
                                       atol=1e-9 * float(np.max(rain)))


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_gradient_matches_finite_differences(forcing10y, name, opts):
    model = _model(name, opts)
    rng = np.random.default_rng(1)
    names = list(model.bounds)
    with jax.enable_x64(True):
        x = _forcing(forcing10y, model, 6, slice(0, 365))
        p0 = _params(model, rng)
        if "tt" in p0:
            p0["tt"] = 0.3  # off every day's tmean: the hard rain/snow switch is not crossed
        lo = np.array([model.bounds[k][0] for k in names])
        hi = np.array([model.bounds[k][1] for k in names])

        def loss(u):  # u in the unit box
            p = dict(zip(names, lo + u * (hi - lo)))
            out = base.run(model, p, x)
            return jnp.mean((_out(model, out) - 1.0) ** 2) + 0.1 * jnp.mean(out.et)

        u = jnp.array([(p0[k] - l) / (h - l) for k, l, h in zip(names, lo, hi)])
        g = np.asarray(jax.jit(jax.grad(loss))(u))
        f = jax.jit(loss)
        for i, k in enumerate(names):
            e = np.zeros(len(names))
            e[i] = 1e-6
            fd = (float(f(u + e)) - float(f(u - e))) / 2e-6
            assert np.isclose(g[i], fd, rtol=1e-4, atol=1e-8), (k, g[i], fd)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_gradients_finite_at_the_bounds(forcing10y, name, opts, dtype):
    model = _model(name, opts)
    rng = np.random.default_rng(2)
    bounds = model.bounds
    corners = [{k: lo for k, (lo, hi) in bounds.items()}, {k: hi for k, (lo, hi) in bounds.items()}]
    corners += [{k: (lo, hi)[rng.integers(2)] for k, (lo, hi) in bounds.items()} for _ in range(3)]
    with jax.enable_x64(dtype == np.float64):
        real = _forcing(forcing10y, model, 4, slice(0, 730))
        cases = {"real": real,
                 "dry": {k: (np.zeros_like(v) if k == "prcp" else np.full_like(v, 15.0) if k == "pet"
                             else v) for k, v in real.items()},
                 "frozen": {k: (np.full_like(v, -15.0) if k == "tmean" else v) for k, v in real.items()}}

        def total(p, x):
            out = base.run(model, p, x)
            return jnp.sum(_out(model, out)) + jnp.sum(out.et) + sum(jnp.sum(s) for s in jax.tree.leaves(out.state))

        grad = jax.jit(jax.grad(total))
        for case, x in cases.items():
            x = {k: v.astype(dtype) for k, v in x.items()}
            for p in corners:
                g = grad({k: jnp.asarray(v, dtype) for k, v in p.items()}, x)
                for k, v in g.items():
                    assert np.all(np.isfinite(np.asarray(v))), (case, k, p)


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_simulate_equals_a_loop_over_basins_and_components(forcing10y, name, opts):
    model = _model(name, opts)
    rng = np.random.default_rng(3)
    f = {k: v[:, :500].astype(np.float32) for k, v in _forcing(forcing10y, model).items()}
    n, nmul = next(iter(f.values())).shape[0], 3
    params = {k: v.astype(np.float32) for k, v in _params(model, rng, (n, nmul)).items()}
    out = jax.jit(model.simulate)(params, f)
    assert _out(model, out).shape == (n, 500)
    # The loop's unit is one basin and one component, compiled once (an eager base.run would
    # trace and compile its scan again on every call).
    one = jax.jit(lambda pp, xx: base.run(model, pp, xx))
    for i in range(n):
        comps = [one({k: v[i, j] for k, v in params.items()}, {k: v[i] for k, v in f.items()})
                 for j in range(nmul)]
        np.testing.assert_allclose(_out(model, out)[i], np.mean([_out(model, c) for c in comps], axis=0),
                                   rtol=2e-5, atol=1e-6)
        for leaf, *per in zip(jax.tree.leaves(out.state), *(jax.tree.leaves(c.state) for c in comps)):
            np.testing.assert_allclose(leaf[i], np.stack(per), rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_jit_compiles_once_and_adjoints_agree(forcing10y, name, opts):
    model = _model(name, opts)
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        x = _forcing(forcing10y, model, 0, slice(0, 300))
        p = _params(model, rng)
        run = jax.jit(lambda pp, xx: _out(model, base.run(model, pp, xx)).sum())
        run(p, x)
        run(_params(model, rng), {k: v * 1.01 for k, v in x.items()})
        assert run._cache_size() == 1
        grads = {}
        for adjoint in ADJOINTS:
            if adjoint == "model" and not model.has_adjoint:
                with pytest.raises(ValueError, match="no hand-written adjoint"):
                    base.run(model, p, x, adjoint=adjoint)
                continue
            grads[adjoint] = jax.grad(lambda pp: _out(model, base.run(model, pp, x, adjoint=adjoint)).sum())(p)
        for adjoint, g in grads.items():
            for k in g:
                np.testing.assert_allclose(g[k], grads["autodiff"][k], rtol=1e-10, atol=1e-12,
                                           err_msg=f"{adjoint}: {k}")


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_model_is_a_pytree_and_names_its_data(name, opts):
    model = _model(name, opts)
    leaves, treedef = jax.tree.flatten(model)
    assert jax.tree.unflatten(treedef, leaves) == model
    assert model.output in model.Fluxes._fields and "et" in model.Fluxes._fields
    if model.water_balance:
        assert model.output == "q"
    assert set(model.forcing) <= set(model.Forcing._fields)
    assert all(lo < hi for lo, hi in model.bounds.values())
    with pytest.raises(KeyError, match="missing"):
        base.run(model, {}, {n: np.zeros(3) for n in model.forcing})
    with pytest.raises(KeyError, match="needs forcing"):
        base.run(model, _params(model, np.random.default_rng(0)), {})
