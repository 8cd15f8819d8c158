"""train.minutes: a run sized to a budget of wall time. The epochs that fit are computed from the
timed step (and what the timing and a second compilation cost); the timing leaves no trace on
the trained parameters; a resume keeps the checkpoint's plan."""
import copy
from types import SimpleNamespace

import jax
import numpy as np
import pytest

import dpljax.train as T
from conftest import small_config
from dpljax import build
from dpljax.data import fit_normalizer, load, prepare
from dpljax.train import ResumeError, TrainConfig, budget_epochs, fit

BASE = small_config(optim={"learning_rate": 1e-2})
COSINE = copy.deepcopy(BASE)
COSINE["optim"]["schedule"] = {"name": "cosine", "warmup": 0.1, "final": 0.01}


class FakeClock:
    """perf_counter of the train module, advanced only by the fake step below."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def fake_step(clock, first_s, step_s):
    calls = []

    def step(state, arrays, key):
        clock.now += first_s if not calls else step_s
        calls.append(1)
        return state, SimpleNamespace(loss=np.float32(len(calls)))
    return step, calls


@pytest.mark.parametrize("recompile, valid_s, expected", [(False, 0.0, 9), (True, 0.0, 8), (True, 3.0, 4)])
def test_epochs_fit_the_budget(monkeypatch, recompile, valid_s, expected):
    """1 minute at 0.5 s a step, 10 steps an epoch (5 s): 0.97 x 60 = 58.2 s, less the timing
    (5.5 s compile + 0.5 + 10 x 0.5 = 11 s, plus a validation), less a second compile when the
    schedule needs one, leaves whole epochs of 5 s (+ a validation each when there is one)."""
    clock = FakeClock()
    monkeypatch.setattr(T.time, "perf_counter", clock)
    step, calls = fake_step(clock, 5.5, 0.5)

    def validate(theta):
        clock.now += valid_s
        return 0.0
    b = budget_epochs(step, None, None, None, minutes=1.0, ipe=10, max_epochs=50, recompile=recompile,
                      validate=validate if valid_s else None)
    assert len(calls) == 2 + T.BUDGET_TIMED_STEPS
    assert b["step_s"] == pytest.approx(0.5) and b["compile_s"] == pytest.approx(5.5)
    assert b["timing_s"] == pytest.approx(11.0 + valid_s)
    left = 0.97 * 60 - 11.0 - valid_s - (5.5 if recompile else 0.0)
    assert b["epochs"] == b["epochs_fit"] == expected == int(left // (5.0 + valid_s))
    assert f"{expected} epochs fit" in b["line"]


def test_budget_is_capped_by_epochs_and_too_short_a_budget_is_an_error(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(T.time, "perf_counter", clock)
    b = budget_epochs(fake_step(clock, 5.5, 0.5)[0], None, None, None, minutes=1.0, ipe=10, max_epochs=3,
                      recompile=False)
    assert b["epochs"] == 3 and b["epochs_fit"] == 9 and "train.epochs=3 is the most" in b["line"]
    with pytest.raises(ValueError, match=r"train.minutes=0.2 is too short here: one epoch of 10 steps takes"):
        budget_epochs(fake_step(clock, 5.5, 0.5)[0], None, None, None, minutes=0.2, ipe=10, max_epochs=3,
                      recompile=False)


@pytest.fixture(scope="module")
def data(sample):
    exp = build(BASE)
    ds = load(exp.data, sample)
    arrays, _ = prepare(exp.data, ds, fit_normalizer(exp.data, ds), *exp.data.train, forcing=exp.dpl.model.forcing)
    return arrays, [str(b) for b in ds["basin"].values]


def _fit(cfg_dict, data, tcfg, **kw):
    exp = build(cfg_dict)
    arrays, basins = data
    net = exp.make_net(arrays.x_dynamic.shape[-1], arrays.x_static.shape[-1], seed=tcfg.seed)
    return fit(exp.dpl, net, exp.tx, exp.loss, arrays, tcfg, basins=basins, log=lambda *a: None, **kw)


def leaves(r):
    return [np.asarray(x) for x in jax.tree.leaves(r.state)]


def tcfg(**kw):
    return TrainConfig(**{**dict(epochs=2, iters_per_epoch=3, batch_basins=3, window=60, warmup=60,
                                 progress=False), **kw})


@pytest.mark.parametrize("config", [BASE, COSINE], ids=["fixed", "cosine"])
def test_budgeted_run_equals_the_run_of_its_epochs(data, config, monkeypatch):
    """A budget that fits 5 epochs, with at most 9 and then 2 allowed: the timing steps (on a
    copy of the state) leave the run bit-identical to a plain run of the epochs chosen, and a
    schedule is laid over those epochs, not over train.epochs (a cosine over 9 would differ)."""
    real = T.budget_epochs

    def five(*a, **kw):  # the real timing, then a fixed answer (the machine's speed varies)
        b = real(*a, **kw)
        return {**b, "epochs": min(5, kw["max_epochs"]), "epochs_fit": 5}
    monkeypatch.setattr(T, "budget_epochs", five)
    runs = {e: _fit(config, data, tcfg(epochs=e, minutes=600.0)) for e in (9, 2)}
    assert runs[9].epochs == 5 and runs[9].step == 15 and runs[2].epochs == 2 and runs[2].step == 6
    assert runs[9].budget["epochs_fit"] == 5 and runs[9].budget["step_s"] > 0
    assert runs[9].wall_time >= runs[9].budget["timing_s"]  # the timing is training time too
    for e, r in runs.items():
        plain = _fit(config, data, tcfg(epochs=r.epochs))
        assert all(np.array_equal(x, y) for x, y in zip(leaves(r), leaves(plain))), e
    if config is COSINE:  # the guard above can fail: a cosine laid over 9 epochs gives other weights
        exp = build(config)
        arrays, basins = data
        net = exp.make_net(arrays.x_dynamic.shape[-1], arrays.x_static.shape[-1], seed=0)
        wrong = fit(exp.dpl, net, lambda total: exp.tx(27), exp.loss, arrays, tcfg(epochs=5), basins=basins,
                    log=lambda *a: None)
        assert not all(np.array_equal(x, y) for x, y in zip(leaves(runs[9]), leaves(wrong)))


def test_resume_keeps_the_checkpoints_plan(data, tmp_path, monkeypatch):
    real = T.budget_epochs
    monkeypatch.setattr(T, "budget_epochs", lambda *a, **kw: {**real(*a, **kw), "epochs": 2})
    first = _fit(COSINE, data, tcfg(epochs=9, minutes=600.0), run_dir=tmp_path)
    assert first.epochs == 2 and first.step == 6

    def no_timing(*a, **kw):
        raise AssertionError("a resumed budgeted run must not time the step again")
    monkeypatch.setattr(T, "budget_epochs", no_timing)
    again = _fit(COSINE, data, tcfg(epochs=9, minutes=600.0, resume=True), run_dir=tmp_path)
    assert again.epochs == 2 and again.step == 6 and again.resumed_from == 6
    assert all(np.array_equal(x, y) for x, y in zip(leaves(first), leaves(again)))
    with pytest.raises(ResumeError, match=r"train.minutes was 600.0, now 30.0"):
        _fit(COSINE, data, tcfg(epochs=9, minutes=30.0, resume=True), run_dir=tmp_path)


def test_minutes_must_be_a_positive_number():
    for bad in (0, -1.0, True, float("nan")):
        with pytest.raises(ValueError, match="train.minutes must be null or a number > 0"):
            tcfg(minutes=bad)
