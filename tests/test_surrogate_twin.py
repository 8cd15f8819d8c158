"""The twin experiment's fixed pieces: true parameters and the observation pattern."""
import numpy as np
import pytest

from benchmarks.surrogate_twin import ATTRS, TRUTH, observation_mask, true_parameters
from dpljax.surrogate import vic


def test_true_parameters_are_a_non_trivial_function_inside_the_bounds():
    rng = np.random.default_rng(0)
    attrs = rng.normal(size=(50, len(ATTRS)))
    attrs[3, 2] = np.nan  # a missing attribute counts as the mean
    p = true_parameters(attrs)
    assert p.shape == (50, len(vic.BOUNDS)) and np.all(np.isfinite(p))
    lo, hi = np.array(list(vic.BOUNDS.values())).T
    assert np.all(p > lo + 0.1 * (hi - lo) - 1e-9) and np.all(p < hi - 0.1 * (hi - lo) + 1e-9)
    assert np.all(np.std(p, 0) > 0.05 * (hi - lo))  # every parameter varies between basins
    assert set(TRUTH) == set(vic.BOUNDS)
    used = {a for w in TRUTH.values() for k in w for a in (k if isinstance(k, tuple) else (k,))}
    assert used <= set(ATTRS)


def test_observations_every_two_or_three_days():
    m = observation_mask(5, 400, seed=0)
    for row in m:
        gaps = np.diff(np.flatnonzero(row))
        assert set(gaps.tolist()) <= {2, 3} and len(set(gaps.tolist())) == 2
        assert np.flatnonzero(row)[0] <= 2


@pytest.mark.slow  # 25-40 s: four compiled programs and an emulator, for the resume logic
def test_twin_end_to_end_and_resumes_from_finished_units(tmp_path):
    """The one command on the 8 embedded basins with tiny budgets; a rerun recomputes nothing, and a
    per-basin calibration finds its finished chunk again (its file is used, not recomputed)."""
    import json
    import os

    from benchmarks.surrogate_twin import main

    work, res = tmp_path / "work", tmp_path / "results"
    args = ["--sample", "--work", str(work), "--results", str(res), "--set", "sets=12", "--set", "emu_steps=30",
            "--set", "hidden=8", "--set", "dpl_steps=10", "--set", "sce_evals=60", "--set", "bb_basins=1",
            "--set", "bb_evals=40", "--set", "fractions=1/2,1"]
    assert main(args) == 0
    out = json.loads((res / "surrogate_twin_sample.json").read_text())
    methods = {(r["method"], r["fraction"]) for r in out["rows"]}
    assert methods == {("dpl", "1/2"), ("dpl", "1"), ("sceua_surrogate", "1")}
    assert all(np.isfinite(r["rmse_sm1"]) and len(r["recovery"]) == len(vic.BOUNDS) for r in out["rows"])
    assert out["sceua_blackbox"][0]["basins"] == 1 and (res / "surrogate_twin_sample.md").exists()

    units = sorted(p for p in work.rglob("*") if p.is_file() and "bb_cache" not in p.parts)
    stamps = {p: os.stat(p).st_mtime_ns for p in units}
    assert main(args + ["--no-report"]) == 0  # every unit is done: nothing is written again
    assert {p: os.stat(p).st_mtime_ns for p in units} == stamps

    # a run killed after the calibration's first chunk: the chunk's file is read back, not recomputed
    (part,) = (work / "sceua" / "1y_parts").glob("*.npz")
    d = dict(np.load(part))
    centre = np.array(list(vic.BOUNDS.values())).mean(axis=1)
    d["x"] = np.broadcast_to(centre, d["x"].shape).copy()  # every basin at the box's centre
    np.savez(part, **d)
    (work / "sceua" / "1y.json").unlink()
    assert main(args + ["--only", "sceua"]) == 0
    again = json.loads((work / "sceua" / "1y.json").read_text())
    np.testing.assert_allclose(np.asarray(again["learned"]), d["x"])


def test_chunk_claims_between_processes(tmp_path):
    """A chunk claimed by a live process is left to it; a dead claimant's chunk is taken over."""
    import os
    import subprocess
    import sys

    from benchmarks.surrogate_twin import _claim

    c = tmp_path / "00000_64_3000.claim"
    assert _claim(c) and c.read_text() == str(os.getpid())
    assert _claim(c)  # our own claim stays ours
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        c.write_text(str(other.pid))
        assert not _claim(c)  # held by a live process
    finally:
        other.kill()
        other.wait()
    assert _claim(c) and c.read_text() == str(os.getpid())  # its process is gone
