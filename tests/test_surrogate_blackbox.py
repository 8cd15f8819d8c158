"""Black-box runs: failures reported per parameter set, the cache, processes, Latin hypercube."""
import time

import numpy as np
import pytest

from dpljax.surrogate import VIC, BlackBox, BlackBoxError, latin_hypercube, make_design, run_blackbox

BOUNDS = {"k": (0.0, 1.0), "s": (1.0, 10.0)}


def bucket(params, forcing):
    """A linear reservoir (module level: worker processes import it by name). ``k`` in 0.5..0.6
    raises, ``k`` in 0.6..0.7 returns NaN, ``k`` in 0.7..0.8 hangs; others run."""
    k, s = params["k"], params["s"]
    if 0.5 <= k < 0.6:
        raise RuntimeError("solver diverged")
    if 0.7 <= k < 0.8:
        time.sleep(30)
    st, q = s, np.empty_like(forcing["prcp"])
    for t, p in enumerate(forcing["prcp"]):
        st += p
        q[t] = k * st
        st -= q[t]
    if 0.6 <= k < 0.7:
        q[3] = np.nan
    return {"q": q, "store": np.full_like(q, st)}


BB = BlackBox(bucket, BOUNDS, ("q", "store"), ("prcp",))


def _forcing(n_b=3, n_t=20, seed=0):
    return {"prcp": np.random.default_rng(seed).gamma(0.5, 4.0, (n_b, n_t))}


def test_each_kind_of_failure_is_reported_with_its_parameter_set():
    x = np.array([[0.1, 2.0], [0.55, 3.0], [0.65, 4.0], [0.75, 5.0], [0.3, 6.0]])
    runs = run_blackbox(BB, x, _forcing(), basin=[0, 1, 2, 0, 1], timeout=0.5)
    assert runs.ok.tolist() == [True, False, False, False, True]
    kinds = {f.index: f.kind for f in runs.failures}
    assert kinds == {1: "exception", 2: "nan", 3: "timeout"}
    f1 = next(f for f in runs.failures if f.index == 1)
    assert f1.params == {"k": 0.55, "s": 3.0} and f1.basin == 1 and "solver diverged" in f1.message
    assert "day 3" in next(f for f in runs.failures if f.index == 2).message
    for i in (1, 2, 3):  # a failed run's outputs are NaN, never a partial or stale result
        assert np.isnan(runs.outputs["q"][i]).all()
    assert np.isfinite(runs.outputs["q"][[0, 4]]).all()
    assert runs.summary()["failures_by_kind"] == {"exception": 1, "nan": 1, "timeout": 1, "shape": 0}
    with pytest.raises(BlackBoxError, match="run 1 .*k=0.55"):
        runs.raise_on_failure()
    assert "3 failed" in runs.report()


def test_wrong_shapes_and_missing_outputs_are_failures():
    short = BlackBox(lambda p, f: {"q": f["prcp"][:-1], "store": f["prcp"]}, BOUNDS, ("q", "store"), ("prcp",))
    runs = run_blackbox(short, [[0.1, 2.0]], _forcing(1))
    assert runs.failures[0].kind == "shape"
    missing = BlackBox(lambda p, f: {"q": f["prcp"]}, BOUNDS, ("q", "store"), ("prcp",))
    runs = run_blackbox(missing, [[0.1, 2.0]], _forcing(1))
    assert runs.failures[0].kind == "exception" and "store" in runs.failures[0].message


def test_results_match_a_direct_call_and_the_cache_skips_reruns(tmp_path, monkeypatch):
    f = _forcing()
    x = np.array([[0.1, 2.0], [0.3, 6.0], [0.9, 1.5]])
    runs = run_blackbox(BB, x, f, cache_dir=tmp_path)
    assert runs.n_computed == 3 and runs.n_cached == 0
    np.testing.assert_array_equal(runs.outputs["q"][1], bucket({"k": 0.3, "s": 6.0}, {"prcp": f["prcp"][1]})["q"])
    calls = []
    counting = BlackBox(lambda p, fo: calls.append(1) or bucket(p, fo), BOUNDS, ("q", "store"), ("prcp",),
                        name=BB.name)
    # same identity (name, names, bounds) but another function: the source differs, so no hit
    assert counting.fingerprint != BB.fingerprint
    again = run_blackbox(BB, x, f, cache_dir=tmp_path)
    assert again.n_cached == 3 and again.n_computed == 0
    np.testing.assert_array_equal(again.outputs["q"], runs.outputs["q"])
    # a new parameter set or new forcing is a miss; the cached ones are still hits
    more = run_blackbox(BB, np.vstack([x, [[0.2, 3.0]]]), f, basin=[0, 1, 2, 2], cache_dir=tmp_path)
    assert (more.n_cached, more.n_computed) == (3, 1)
    f2 = {"prcp": f["prcp"] * 1.5}
    assert run_blackbox(BB, x, f2, cache_dir=tmp_path).n_cached == 0
    # failures are not cached: they are run again
    bad = run_blackbox(BB, [[0.55, 2.0]], f, basin=[0], cache_dir=tmp_path)
    assert run_blackbox(BB, [[0.55, 2.0]], f, basin=[0], cache_dir=tmp_path).n_computed == 1 and bad.n_failed == 1


def test_two_worker_processes_give_the_serial_results_and_failures():
    # one pool of two spawned workers (each imports dpljax: a few seconds), runs ok and failed
    x = np.column_stack([np.linspace(0.05, 0.69, 12), np.linspace(1.0, 9.0, 12)])
    fb = _forcing(4, 50)
    basin = np.arange(12) % 4
    a = run_blackbox(BB, x, fb, basin, n_workers=0)
    b = run_blackbox(BB, x, fb, basin, n_workers=2, chunk=2)
    assert b.n_computed == 12
    assert [(e.index, e.kind) for e in a.failures] == [(e.index, e.kind) for e in b.failures]
    expect_ok = ~((x[:, 0] >= 0.5) & (x[:, 0] < 0.7))
    assert {e.kind for e in a.failures} == {"exception", "nan"} and a.ok.tolist() == expect_ok.tolist()
    for k in BB.outputs:
        np.testing.assert_array_equal(a.outputs[k], b.outputs[k])


def test_a_vectorised_black_box_names_the_failing_set_in_a_batch():
    def vec(params, forcing):
        if np.any(params["k"] > 0.9):
            raise ValueError("k too large")
        return {"q": forcing["prcp"] * params["k"][:, None], "store": forcing["prcp"] * 0}

    bb = BlackBox(vec, BOUNDS, ("q", "store"), ("prcp",), vectorized=True)
    x = np.array([[0.1, 2.0], [0.95, 3.0], [0.5, 4.0]])
    runs = run_blackbox(bb, x, _forcing(), chunk=3)
    assert runs.ok.tolist() == [True, False, True] and runs.failures[0].kind == "exception"
    np.testing.assert_allclose(runs.outputs["q"][2], _forcing()["prcp"][2] * 0.5)


def test_latin_hypercube_is_in_bounds_and_stratified():
    b = {"a": (-2.0, 3.0), "b": (100.0, 1000.0), "c": (0.0, 1e-3)}
    n = 50
    x = latin_hypercube(b, n, seed=7)
    assert x.shape == (n, 3)
    for j, (lo, hi) in enumerate(b.values()):
        assert np.all((x[:, j] >= lo) & (x[:, j] <= hi))
        strata = np.floor((x[:, j] - lo) / (hi - lo) * n).astype(int)
        assert sorted(strata.tolist()) == list(range(n))  # exactly one point per stratum
    np.testing.assert_array_equal(x, latin_hypercube(b, n, seed=7))
    assert not np.array_equal(x, latin_hypercube(b, n, seed=8))


def test_design_holds_out_parameter_sets_and_whole_basins():
    d = make_design(VIC.bounds, 10, 20, test_params=0.25, test_basins=0.2, seed=0)
    assert d.x.shape == (200, len(VIC.bounds))
    test_b = set(d.basin[d.subset("test_basins")])
    assert len(test_b) == 2 and not test_b & set(d.basin[d.subset("train")])
    assert not test_b & set(d.basin[d.subset("test_params")])
    assert 0.1 < len(d.subset("test_params")) / 160 < 0.4
    assert np.all(d.x >= VIC.lower) and np.all(d.x <= VIC.upper)
