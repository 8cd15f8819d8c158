"""GR4J (dpljax.models.gr4j) against an independent plain-Python reference
(tests/reference_gr4j.py, written from DESIGN.md's equations), with parameter sets chosen so
that every branch of its day fires on many days (counted by the reference and asserted);
plus the water balance, a hand-computed unit hydrograph, gradients, vmap, jit and simulate."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_gr4j import reference_gr4j

from dpljax.models import base, gr4j

# A gaining catchment (x2 > 0), a losing one (x2 < 0: Qd clipped at 0 on many days), and a
# small routing store with strong losses. x3 = 2 mm lies below the physical bounds on
# purpose: within them (x3 >= 20) the clip R = max(0, R + Q9 + F) can never bind from a state
# with R < x3 (see the module docstring), and this is the branch it exercises.
SETS = [dict(x1=350.0, x2=1.5, x3=90.0, x4=1.7), dict(x1=800.0, x2=-1.0, x3=250.0, x4=2.6),
        dict(x1=150.0, x2=-5.0, x3=2.0, x4=1.1)]
SNOW = dict(tt=0.5, cfmax=6.0)
SNOWY = 6  # 09081600, snowmelt-dominated
FLUXES = ("q", "qr", "qd", "et", "perc", "exch")


def _batched(snow, adjoint="autodiff"):
    """jit(vmap over basins) of gr4j.run, parameters shared by every basin."""
    return jax.jit(jax.vmap(lambda p, pr, tm, pe: gr4j.run(p, pr, tm, pe, snow=snow, adjoint=adjoint),
                            in_axes=(None, 0, 0, 0)))


@pytest.mark.parametrize("snow", [False, True])
def test_matches_plain_python_reference_and_every_branch_fires(forcing10y, snow):
    prcp, tmean, pet = forcing10y
    n_basins = prcp.shape[0]
    total, snowy = {}, {}
    with jax.enable_x64(True):
        run = _batched(snow)
        for k, base_p in enumerate(SETS):
            p = dict(base_p, **SNOW) if snow else dict(base_p)
            out = run({n: jnp.float64(v) for n, v in p.items()}, prcp, tmean, pet)
            for b in range(n_basins):
                ref, ref_state, counts = reference_gr4j(p, prcp[b].tolist(), pet[b].tolist(),
                                                        tmean[b].tolist(), snow)
                for name in FLUXES:
                    np.testing.assert_allclose(np.asarray(out.fluxes[name][b]), ref[name], rtol=1e-9,
                                               atol=1e-10, err_msg=f"basin {b}, set {k}, {name}")
                for name, v in ref_state.items():
                    got = np.atleast_1d(np.asarray(out.state[name][b]))
                    v = np.atleast_1d(np.asarray(v, dtype=float))
                    # The model's queues are airGR's first ceil(x4_max), ceil(2 x4_max) slots;
                    # airGR's later slots stay empty within the bounds.
                    assert not np.any(v[got.size:]), (name, v)
                    np.testing.assert_allclose(got, v[:got.size], rtol=1e-9, atol=1e-10,
                                               err_msg=f"basin {b}, set {k}, state {name}")
                for c, v in counts.items():
                    total[c] = total.get(c, 0) + int(v)
                    if b == SNOWY:
                        snowy[c] = snowy.get(c, 0) + int(v)
    print(f"GR4J branch days (snow={snow}), all basins and sets:", total, "snowy basin:", snowy)
    for c in ("production", "evaporation", "exchange_gain", "exchange_loss", "direct_flow_clipped"):
        assert total[c] >= 1000, (c, total)
    assert total["routing_store_emptied"] >= 500, total
    if snow:
        assert snowy["melt"] >= 300 and snowy["melt_limited_by_pack"] >= 30, snowy
    else:
        assert total["melt"] == 0


def test_hand_computed_unit_hydrographs():
    # x4 = 2: SH1(1) = (1/2)^2.5, SH1(j >= 2) = 1; SH2(1) = 0.5 (1/2)^2.5, SH2(2) = 0.5,
    # SH2(3) = 1 - 0.5 (2 - 3/2)^2.5 = 1 - 0.5 (1/2)^2.5, SH2(j >= 4) = 1.
    a = 0.5 ** 2.5
    with jax.enable_x64(True):
        uh1, uh2 = (np.asarray(u) for u in gr4j.unit_hydrographs(jnp.float64(2.0)))
        np.testing.assert_allclose(uh1[:2], [a, 1 - a], rtol=1e-12)
        np.testing.assert_allclose(uh2[:4], [0.5 * a, 0.5 - 0.5 * a, 0.5 - 0.5 * a, 0.5 * a], rtol=1e-12)
        assert np.all(uh1[2:] == 0) and np.all(uh2[4:] == 0)
        for x4 in (1.1, 1.7, 2.9):  # every ordinate set sums to one
            u1, u2 = gr4j.unit_hydrographs(jnp.float64(x4))
            np.testing.assert_allclose([float(u1.sum()), float(u2.sum())], [1.0, 1.0], rtol=1e-12)
            # The model's short queues (3 and 6 slots within the bounds) hold the same ordinates.
            s1, s2 = gr4j.unit_hydrographs(jnp.float64(x4), *gr4j.queue_lengths(2.9))
            np.testing.assert_allclose(np.asarray(s1), np.asarray(u1[:3]), rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(np.asarray(s2), np.asarray(u2[:6]), rtol=1e-12, atol=1e-15)
            assert not np.any(np.asarray(u1[3:])) and not np.any(np.asarray(u2[6:]))
        # Beyond x4_max the last slot takes the rest of the S-curve: the water is kept.
        s1, s2 = gr4j.unit_hydrographs(jnp.float64(4.0), 3, 6)
        u1, u2 = gr4j.unit_hydrographs(jnp.float64(4.0))
        np.testing.assert_allclose([float(s1.sum()), float(s2.sum())], [1.0, 1.0], rtol=1e-12)
        np.testing.assert_allclose(np.asarray(s1[:2]), np.asarray(u1[:2]), rtol=1e-12)
        assert float(s1[2]) == pytest.approx(float(u1[2:].sum()), rel=1e-12)
        # One day of effective rainfall on an empty, dry basin: Q9 and Q1 trace the ordinates.
        p = gr4j.GR4JParams(x1=jnp.float64(300.0), x2=jnp.float64(0.0), x3=jnp.float64(1e9),
                            x4=jnp.float64(2.0))
        s = gr4j.GR4JState(jnp.float64(0.0), jnp.float64(0.0), jnp.zeros(20), jnp.zeros(40), jnp.float64(0.0))
        s, f = gr4j.step(p, s, gr4j.GR4JForcing(prcp=jnp.float64(50.0), pet=jnp.float64(0.0)))
        pr = [50.0 - float(s.S)]  # Pr = Perc + Pn - Ps, and S = Ps - Perc from S = 0
        qd = [float(f.qd)]
        for _ in range(5):  # dry days: Pr is the percolation alone
            s, f = gr4j.step(p, s, gr4j.GR4JForcing(prcp=jnp.float64(0.0), pet=jnp.float64(0.0)))
            qd.append(float(f.qd))
            pr.append(float(f.perc))
        ords = [0.5 * a, 0.5 - 0.5 * a, 0.5 - 0.5 * a, 0.5 * a] + [0.0] * 2
        want = [0.1 * sum(ords[t - k] * pr[k] for k in range(t + 1)) for t in range(6)]
        np.testing.assert_allclose(qd, want, rtol=1e-10, atol=1e-14)
        assert qd[0] == pytest.approx(0.1 * pr[0] * 0.5 * a, rel=1e-12)


@pytest.mark.parametrize("snow", [False, True])
def test_water_balance_closes_over_ten_years(forcing10y, snow):
    prcp, tmean, pet = forcing10y
    model = gr4j.GR4J(snow=snow)

    def balance(p, pr, tm, pe):
        out = gr4j.run(p, pr, tm, pe, snow=snow)
        s0 = model.initial_state(model.Params(**p))
        x = model.Forcing(prcp=pr, pet=pe, tmean=tm if snow else None)
        gain = jnp.sum(jax.vmap(model.net_inflow)(x, out.fluxes))
        gain2 = jnp.sum(pr) + jnp.sum(out.exch) - jnp.sum(out.et) - jnp.sum(out.q)
        return gain, gain2, model.storage(out.state) - model.storage(s0)

    for dtype, rtol in ((np.float64, 1e-9), (np.float32, 2e-4)):
        with jax.enable_x64(dtype == np.float64):
            f = jax.jit(jax.vmap(balance, in_axes=(None, 0, 0, 0)))
            for p in SETS:
                p = dict(p, **SNOW) if snow else p
                gain, gain2, change = f({k: jnp.asarray(v, dtype) for k, v in p.items()},
                                        *(a.astype(dtype) for a in (prcp, tmean, pet)))
                scale = float(prcp.sum(axis=1).max())
                np.testing.assert_allclose(np.asarray(gain), np.asarray(change), rtol=rtol, atol=rtol * scale)
                np.testing.assert_allclose(np.asarray(gain2), np.asarray(change), rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("snow", [False, True])
def test_gradients_match_central_finite_differences(forcing10y, snow):
    prcp, tmean, pet = (a[SNOWY, :365] for a in forcing10y)
    p0 = dict(x1=420.0, x2=-0.7, x3=85.0, x4=1.9)
    if snow:
        p0.update(tt=0.3, cfmax=3.0)  # tt off every day's tmean: the hard switch is not crossed
    names = list(p0)
    with jax.enable_x64(True):
        def loss(v):
            out = gr4j.run(dict(zip(names, v)), prcp, tmean, pet, snow=snow)
            return jnp.mean((out.q - 1.0) ** 2) + 0.1 * jnp.mean(out.et)

        v0 = jnp.array([p0[k] for k in names])
        g = np.asarray(jax.jit(jax.grad(loss))(v0))
        f = jax.jit(loss)
        for i, k in enumerate(names):
            h = 1e-6 * max(abs(p0[k]), 1.0)
            e = np.zeros(len(names))
            e[i] = h
            fd = (float(f(v0 + e)) - float(f(v0 - e))) / (2 * h)
            assert np.isclose(g[i], fd, rtol=1e-5, atol=1e-10), (k, g[i], fd)
            assert g[i] != 0.0 or k == "tt", k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_finite_at_the_bound_corners(forcing10y, dtype):
    prcp, tmean, pet = (a[SNOWY, :730] for a in forcing10y)
    bounds = dict(gr4j.BOUNDS, **gr4j.SNOW_BOUNDS)
    rng = np.random.default_rng(0)
    corners = [{k: lo for k, (lo, hi) in bounds.items()}, {k: hi for k, (lo, hi) in bounds.items()}]
    corners += [{k: (lo, hi)[rng.integers(2)] for k, (lo, hi) in bounds.items()} for _ in range(4)]
    cases = {"real": (prcp, tmean, pet),
             "no rain": (np.zeros_like(prcp), tmean, np.full_like(pet, 15.0)),
             "no rain no pet": (np.zeros_like(prcp), tmean, np.zeros_like(pet)),
             "all snow": (prcp, np.full_like(tmean, -15.0), pet)}
    with jax.enable_x64(dtype == np.float64):
        for snow in (False, True):
            def total(p, pr, tm, pe):
                if not snow:
                    p = {k: v for k, v in p.items() if k in gr4j.BOUNDS}
                out = gr4j.run(p, pr, tm, pe, snow=snow)
                return jnp.sum(out.q) + jnp.sum(out.et) + sum(jnp.sum(s) for s in jax.tree.leaves(out.state))

            grad = jax.jit(jax.grad(total))
            for case, x in cases.items():
                x = [a.astype(dtype) for a in x]
                for p in corners:
                    g = grad({k: jnp.asarray(v, dtype) for k, v in p.items()}, *x)
                    for k, v in g.items():
                        assert np.isfinite(float(v)), (snow, case, k, p)


def test_vmap_over_basins_equals_a_loop_and_jit_compiles_once(forcing10y):
    prcp, tmean, pet = (a[:, :400] for a in forcing10y)
    p = dict(SETS[1], **SNOW)
    with jax.enable_x64(True):
        batched = _batched(True)
        out = batched(p, prcp, tmean, pet)
        single = jax.jit(lambda pp, pr, tm, pe: gr4j.run(pp, pr, tm, pe, snow=True))
        for b in range(prcp.shape[0]):
            one = single(p, prcp[b], tmean[b], pet[b])
            for name in FLUXES:
                np.testing.assert_allclose(np.asarray(out.fluxes[name][b]), np.asarray(one.fluxes[name]),
                                           rtol=1e-12, atol=1e-12)
        batched(dict(SETS[0], tt=-1.0, cfmax=2.0), prcp * 1.1, tmean, pet * 0.9)
        assert batched._cache_size() == 1
        # Time-varying x4 (the ordinates are computed each day): a constant series is the scalar.
        x4 = np.full(prcp.shape[1], p["x4"])
        dyn = gr4j.run(dict(p, x4=x4), prcp[SNOWY], tmean[SNOWY], pet[SNOWY], snow=True)
        one = gr4j.run(p, prcp[SNOWY], tmean[SNOWY], pet[SNOWY], snow=True)
        np.testing.assert_allclose(np.asarray(dyn.q), np.asarray(one.q), rtol=1e-12, atol=1e-12)
        # The checkpointed adjoint gives the same gradient.
        g = [jax.grad(lambda x1: gr4j.run(dict(p, x1=x1), prcp[0], tmean[0], pet[0], snow=True,
                                          adjoint=adj).q.sum())(p["x1"]) for adj in ("autodiff", "checkpoint")]
        np.testing.assert_allclose(float(g[0]), float(g[1]), rtol=1e-10)


def test_simulate_with_three_components_is_the_mean_of_the_components(forcing10y):
    prcp, tmean, pet = (a[:, :500].astype(np.float32) for a in forcing10y)
    model = gr4j.GR4J(snow=True)
    assert model.default_routing is None and model.forcing == ("prcp", "tmean", "pet")
    assert gr4j.GR4J().forcing == ("prcp", "pet") and "tt" not in gr4j.GR4J().bounds
    rng = np.random.default_rng(3)
    n, nmul = prcp.shape[0], 3
    params = {k: rng.uniform(lo, hi, (n, nmul)).astype(np.float32) for k, (lo, hi) in model.bounds.items()}
    out = jax.jit(model.simulate)(params, {"prcp": prcp, "tmean": tmean, "pet": pet})
    assert out.q.shape == (n, 500) and out.state.uh1.shape == (n, nmul, 3)
    single = jax.jit(lambda pp, pr, tm, pe: gr4j.run(pp, pr, tm, pe, snow=True))
    for i in range(n):
        comps = [single({k: v[i, j] for k, v in params.items()}, prcp[i], tmean[i], pet[i])
                 for j in range(nmul)]
        for name in FLUXES:
            np.testing.assert_allclose(np.asarray(out.fluxes[name][i]),
                                       np.mean([np.asarray(c.fluxes[name]) for c in comps], axis=0),
                                       rtol=2e-5, atol=1e-6)
        for leaf, *per in zip(jax.tree.leaves(out.state), *(jax.tree.leaves(c.state) for c in comps)):
            np.testing.assert_allclose(leaf[i], np.stack(per), rtol=2e-5, atol=1e-5)
    same = base.simulate(model, params, {"prcp": prcp, "tmean": tmean, "pet": pet})
    np.testing.assert_allclose(np.asarray(same.q), np.asarray(out.q), rtol=1e-6, atol=1e-7)


def test_emptied_routing_store_from_a_given_state(forcing10y):
    """From a given state with R well above x3 and strong losses the clip on R binds even
    within the bounds (x3 = 20); the state is passed through ``state=``."""
    prcp, tmean, pet = (a[3, :200] for a in forcing10y)
    p = dict(x1=300.0, x2=-5.0, x3=20.0, x4=1.5)
    state = {"S": 100.0, "R": 70.0, "uh1": [0.0] * 20, "uh2": [0.0] * 40, "snowpack": 0.0}
    with jax.enable_x64(True):
        ref, ref_state, counts = reference_gr4j(p, prcp.tolist(), pet.tolist(), state=state)
        s0 = gr4j.GR4JState(100.0, 70.0, np.zeros(20), np.zeros(40), 0.0)
        out = gr4j.run(p, prcp, tmean, pet, state=s0)
    assert counts["routing_store_emptied"] >= 1
    for name in FLUXES:
        np.testing.assert_allclose(np.asarray(out.fluxes[name]), ref[name], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(float(out.state.R), ref_state["R"], rtol=1e-9, atol=1e-10)


def test_registered_with_its_options():
    from dpljax.models import MODELS

    m = MODELS["gr4j"](snow=True, adjoint="checkpoint")
    assert isinstance(m, gr4j.GR4J) and m.snow and m.adjoint == "checkpoint"
    with pytest.raises(ValueError, match="no hand-written adjoint"):
        gr4j.GR4J(adjoint="model")
    with pytest.raises(KeyError, match="missing"):
        gr4j.run({"x1": 300.0}, np.ones(3), None, np.ones(3))


def test_short_queues_equal_airgr_queues_and_follow_the_bounds(forcing10y):
    """The model's queues of ceil(x4_max) and ceil(2 x4_max) slots give exactly airGR's
    20- and 40-slot results; an x4 above the default bound sizes them up (run, DPL)."""
    from dpljax.dpl import DPL

    prcp, tmean, pet = (a[SNOWY] for a in forcing10y)
    with jax.enable_x64(True):
        for x4 in (1.1, 2.0, 2.9, 4.7):
            p = dict(x1=420.0, x2=-0.7, x3=85.0, x4=x4, **SNOW)
            short = gr4j.run(p, prcp, tmean, pet, snow=True)
            airgr = gr4j.run(p, prcp, tmean, pet, gr4j.initial_state(gr4j.GR4JParams(**p)), snow=True)
            assert short.state.uh1.shape == (max(3, int(np.ceil(x4))),) and airgr.state.uh1.shape == (20,)
            for name in FLUXES:
                np.testing.assert_array_equal(np.asarray(short.fluxes[name]), np.asarray(airgr.fluxes[name]))
    assert gr4j.queue_lengths(2.9) == (3, 6) and gr4j.queue_lengths(20.0) == (20, 40)
    with pytest.raises(ValueError, match="x4_max"):
        gr4j.GR4J(x4_max=25.0)
    wide = DPL.of(gr4j.GR4J(snow=True), nmul=2, routing=False,
                  bounds=dict(gr4j.BOUNDS, x4=(1.1, 6.0), **gr4j.SNOW_BOUNDS))
    assert wide.model.x4_max == 6.0 and wide.model.snow
    assert DPL.of(gr4j.GR4J(), nmul=2, routing=False).model.x4_max == 2.9
