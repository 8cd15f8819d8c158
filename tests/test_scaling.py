"""The scaling-curve pipeline (benchmarks/scaling.py) end to end on the embedded sample, tiny
settings: results JSON, figure and tables exist, and the numbers come from the right basins."""
import json
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from benchmarks import scaling as S
from benchmarks import scaling_report as R


def test_subsets_are_nested_and_sized():
    basins = [f"{i:08d}" for i in range(531)]
    for seed in (0, 1, 2):
        perm = S.permutation(basins, seed)
        assert sorted(perm) == basins and perm == S.permutation(list(reversed(basins)), seed)
        sets = [set(S.subset(perm, f)) for f in S.FRACTIONS]
        assert [len(x) for x in sets] == [17, 33, 66, 133, 266, 531]  # round(f * 531)
        assert all(a < b for a, b in zip(sets, sets[1:]))            # nested, strictly growing
        for f in S.FRACTIONS:
            assert set(S.subset(perm, f)).isdisjoint(S.heldout(perm, f))
            assert len(S.subset(perm, f)) + len(S.heldout(perm, f)) == 531
    assert S.permutation(basins, 0) != S.permutation(basins, 1)
    assert S.heldout(S.permutation(basins, 0), "1") == []
    assert [S.batch_basins(n, 100, 2) for n in (17, 33, 66, 133)] == [16, 32, 66, 100]
    assert [S.batch_basins(n, 100, 1) for n in (17, 33, 531)] == [17, 33, 100]


def test_crossing_interpolates_in_log2():
    assert R._crossing(["1/4", "1/2", "1"], [-0.1, -0.05, 0.05]) == ("1", 2 ** -0.5)
    assert R._crossing(["1/4", "1/2"], [0.1, 0.2]) == ("1/4", None)
    assert R._crossing(["1/4", "1/2"], [-0.1, -0.2]) == (None, None)


@pytest.mark.slow  # ~40 s: every unit of the scaling benchmark on the sample; the pieces are tested above
def test_sample_pipeline_end_to_end(tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "results"
    argv = ["--sample", "--work", str(work), "--out", str(out), "--fractions", "1/2", "1", "--seeds", "0",
            "--sample-steps", "2", "--sample-evals", "100", "--cal-seeds", "2", "--quiet"]
    assert S.main(argv) == 0
    doc = json.loads((out / "scaling_sample.json").read_text())
    assert (out / "scaling_sample.png").stat().st_size > 10_000
    md = (out / "scaling_sample.md").read_text()
    assert "| 1/2 | 4 |" in md and "spread SCE-UA (2 seeds)" in md and "spread dPL (1 seed)" in md

    plan = json.loads((work / "plan.json").read_text())
    assert doc["n_basins"] == 8 and doc["nested"] is True and doc["fractions"] == ["1/2", "1"]
    sce = pd.read_csv(work / "sceua" / "metrics_test.csv", index_col=0, dtype={"basin": str})
    grad = pd.read_csv(work / "gradcal" / "metrics_test.csv", index_col=0, dtype={"basin": str})
    assert len(doc["runs"]) == 2
    for r in doc["runs"]:
        perm = plan["permutations"][str(r["seed"])]
        train, held = S.subset(perm, r["fraction"]), S.heldout(perm, r["fraction"])
        assert (r["n_train"], r["n_heldout"]) == (len(train), len(held)) == (
            round(float(Fraction(r["fraction"])) * 8), 8 - round(float(Fraction(r["fraction"])) * 8))
        d = work / "dpl" / f"{S.label(r['fraction'])}_s{r['seed']}"
        # temporal: the trained basins (the run's own test table); spatial: the complement
        t = pd.read_csv(d / "metrics_test.csv", index_col=0, dtype={"basin": str})
        assert sorted(t.index) == train and r["dpl"]["temporal_basins_are_trained_basins"]
        assert r["dpl"]["temporal"]["median_nse"] == pytest.approx(float(np.nanmedian(t["nse"])))
        assert r["dpl"]["steps"] == 2 and r["dpl"]["batch_basins"] == len(train)
        # calibration baselines: their test tables restricted to the trained basins
        assert r["sceua_temporal"]["median_nse"] == pytest.approx(float(np.nanmedian(sce.loc[train, "nse"])))
        assert r["gradcal_temporal"]["median_nse"] == pytest.approx(float(np.nanmedian(grad.loc[train, "nse"])))
        reg = work / "regional" / f"{S.label(r['fraction'])}_s{r['seed']}"
        if held:
            s = pd.read_csv(d / "spatial" / "metrics_test.csv", index_col=0, dtype={"basin": str})
            assert sorted(s.index) == held and r["dpl"]["spatial_basins_are_heldout_basins"]
            assert r["dpl"]["spatial"]["median_nse"] == pytest.approx(float(np.nanmedian(s["nse"])))
            assert r["regional"]["n_donors"] == len(train) and r["regional"]["k_donors"] == min(5, len(train))
            for m in R.REGIONAL:
                tab = pd.read_csv(reg / f"metrics_{m}.csv", index_col=0, dtype={"basin": str})
                assert sorted(tab.index) == held and r["regional"]["methods"][m]["basins_are_heldout_basins"]
                assert np.isfinite(tab["nse"]).all()
            z = np.load(reg / "params.npz")
            # the nearest donor's parameters are one of the donors' calibrated sets
            import xarray as xr
            cal = xr.open_zarr(work / "sceua" / "calibration.zarr")
            donor_sets = cal["params"].sel(basin=train).values
            assert all(np.any(np.all(np.isclose(donor_sets, row), axis=1)) for row in z["nearest1"])
            lo, hi = cal["lower"].values, cal["upper"].values
            assert ((z["forest"] >= lo - 1e-9) & (z["forest"] <= hi + 1e-9)).all()
        else:  # all basins trained on / all donors: nothing held out, nothing regionalised
            assert not (d / "spatial" / "metrics_test.csv").exists() and "spatial" not in r["dpl"]
            done = json.loads((reg / "done.json").read_text())
            assert done["n_heldout"] == 0 and done["methods"] == {} and r["regional"]["methods"] == {}
    # the curve averages each seed's median; the statements are computed from it
    c = doc["curve"]
    assert c["1/2"]["dpl_temporal"]["mean"] == pytest.approx(
        np.mean([r["dpl"]["temporal"]["median_nse"] for r in doc["runs"] if r["fraction"] == "1/2"]))
    assert c["1"]["sceua_temporal"]["mean"] == pytest.approx(float(np.nanmedian(sce["nse"])))
    assert set(c["1/2"]) == set(R.SERIES) and "dpl_spatial" not in c["1"]
    st = doc["statements"]
    assert set(st["dpl_spatial_vs_regionalisation"]) == {"1/2"}
    first = st["dpl_reaches_sceua"]["first_fraction"]
    diffs = st["dpl_reaches_sceua"]["dpl_minus_sceua"]
    assert first == next((f for f in ["1/2", "1"] if diffs[f] >= 0), None)
    assert st["dpl_reaches_sceua"]["text"] in md
    # cost and coherence
    assert doc["cost"]["sceua"]["n_basins"] == 8 and doc["cost"]["dpl_all"]["steps"] == 2
    assert doc["cost"]["dpl_runs_counted"] == 2
    coh = doc["coherence"]["methods"]
    assert coh["dpl"]["n_seeds"] == 1 and coh["sceua"]["n_seeds"] == 2 and coh["gradcal"]["n_seeds"] == 2
    assert "spread_median" not in coh["dpl"]  # one seed: no spread to measure
    for m in coh.values():
        assert set(m["oof_r2"]) == set(doc["coherence"]["parameters"]) and len(m["oof_r2"]) == 15
    for m in ("sceua", "gradcal"):
        assert all(0 <= v < 1 for v in coh[m]["spread_median"].values())

    # re-running the same command does nothing but the report; --dry-run lists every unit done
    sessions = json.loads((work / "sessions.json").read_text())
    assert S.main(argv) == 0
    again = json.loads((work / "sessions.json").read_text())
    assert len(again) == len(sessions) + 1 and again[-1]["units"] == []
    capsys.readouterr()
    assert S.main(argv + ["--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "to do" not in listing and listing.count("done") >= 2 + 2 + 2 + 2 + 1
    # another --work with other settings is refused rather than mixed
    with pytest.raises(SystemExit):
        S.main([a if a != "2" or i != argv.index("--sample-steps") + 1 else "4" for i, a in enumerate(argv)])

    # the README section is rendered from the JSON alone
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nother text\n")
    R.render_readme(out / "scaling_sample.json", readme)
    R.render_readme(out / "scaling_sample.json", readme)  # idempotent: replaced, not appended
    text = readme.read_text()
    assert text.count(R.END) == 1 and text.startswith("# Benchmarks\n\nother text\n")
    assert R.markdown(doc, "scaling_sample.png") in text
