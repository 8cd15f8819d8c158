"""GR4J against an independent plain-Python reference, with inputs chosen so that every
branch of its day fires (and counted), plus a hand-computed unit hydrograph."""
import jax
import numpy as np
import pytest
from reference_gr4j import reference_gr4j

from dpljax.models import gr4j

# Parameter sets reaching every branch: a gaining and a losing catchment, a small routing
# store with strong losses (emptied store, clipped direct flow), and a large one.
SETS = [dict(x1=350.0, x2=1.5, x3=90.0, x4=1.7), dict(x1=800.0, x2=-1.0, x3=250.0, x4=2.6),
        dict(x1=150.0, x2=-5.0, x3=20.0, x4=1.1)]
SNOW = dict(tt=0.5, cfmax=6.0)


@pytest.mark.parametrize("snow", [False, True])
def test_matches_plain_python_reference_on_every_branch(forcing10y, snow):
    prcp, tmean, pet = forcing10y
    total = {}
    with jax.enable_x64(True):
        for b in range(prcp.shape[0]):
            for k, base in enumerate(SETS):
                if (b + k) % 2 and not snow:  # half the combinations keep the run short
                    continue
                p = dict(base, **SNOW) if snow else base
                ref, ref_state, counts = reference_gr4j(p, prcp[b], pet[b], tmean[b], snow)
                out = gr4j.run(p, prcp[b], tmean[b], pet[b], snow=snow)
                for name in ref:
                    np.testing.assert_allclose(np.asarray(out.fluxes[name]), ref[name], rtol=1e-9,
                                               atol=1e-10, err_msg=f"basin {b}, set {k}, {name}")
                for name, v in ref_state.items():
                    np.testing.assert_allclose(np.asarray(out.state[name]), v, rtol=1e-9, atol=1e-10)
                for c, v in counts.items():
                    total[c] = total.get(c, 0) + v
    print("GR4J branch days:", total)
    for c in ("production", "evaporation", "exchange_gain", "exchange_loss", "direct_flow_clipped"):
        assert total[c] >= 20, (c, total)
    if snow:
        assert total["melt"] >= 200 and total["melt_limited_by_pack"] >= 20, total


def test_hand_computed_unit_hydrographs():
    # x4 = 2: SH1(1) = (1/2)^2.5, SH1(j >= 2) = 1; SH2(1) = 0.5 (1/2)^2.5, SH2(2) = 0.5,
    # SH2(3) = 1 - 0.5 (2 - 3/2)^2.5, SH2(j >= 4) = 1.
    a = 0.5 ** 2.5
    with jax.enable_x64(True):
        uh1, uh2 = (np.asarray(u) for u in gr4j.unit_hydrographs(2.0))
    np.testing.assert_allclose(uh1[:3], [a, 1 - a, 0.0], rtol=1e-12)
    np.testing.assert_allclose(uh2[:5], [0.5 * a, 0.5 - 0.5 * a, 0.5 - 0.5 * a, 0.5 * a, 0.0], rtol=1e-12)
    assert uh1[3:].sum() == 0 and uh2[4:].sum() == 0


def test_emptied_routing_store_matches_reference(forcing10y):
    """``R + Q9 + F < 0`` (the store is emptied and the exchange is what it held) cannot
    happen from airGR's initial state within the bounds (|F| <= 5 (R/x3)^3.5 < R while
    R <= x3); it does from a given state with R above x3 and strong losses."""
    prcp, tmean, pet = (a[3, :200] for a in forcing10y)
    p = dict(x1=300.0, x2=-5.0, x3=20.0, x4=1.5)
    state = {"S": 100.0, "R": 70.0, "uh1": [0.0] * 20, "uh2": [0.0] * 40, "snowpack": 0.0}
    with jax.enable_x64(True):
        ref, ref_state, counts = reference_gr4j(p, prcp, pet, state=state)
        s0 = gr4j.GR4JState(100.0, 70.0, np.zeros(20), np.zeros(40), 0.0)
        out = gr4j.run(p, prcp, tmean, pet, state=s0)
    assert counts["routing_store_emptied"] >= 1
    for name in ref:
        np.testing.assert_allclose(np.asarray(out.fluxes[name]), ref[name], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(float(out.state.R), ref_state["R"], rtol=1e-9, atol=1e-10)
