"""train.minutes: a run sized to a budget of wall time. The epochs that fit are computed from the
timed step (and what the timing and a second compilation cost); the timing leaves no trace on
the trained parameters; a resume keeps the checkpoint's plan."""
import copy
from dataclasses import replace
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


# ------------------------------------------------------------------ the budget as a deadline
def test_replan_epochs_keeps_a_plan_on_pace_and_shortens_one_that_would_overrun():
    # 16 epochs planned in an hour, 4 done in 14 min at 3.5 min each: on pace (56 min)
    assert T.replan_epochs(done=4, planned=16, elapsed_s=840.0, epoch_s=210.0, minutes=60.0) is None
    # the machine slowed to 4 min an epoch: 14 + 12 x 4 = 62 min; 0.97 x 60 min less 14 min and
    # a 30 s compilation leave 43.7 min: 10 more epochs
    r = T.replan_epochs(done=4, planned=16, elapsed_s=840.0, epoch_s=240.0, minutes=60.0, recompile_s=30.0)
    assert r["epochs_to"] == 14 and r["epochs_from"] == 16 and r["epoch"] == 4
    assert r["projected_s"] == pytest.approx(840.0 + 12 * 240.0)
    assert "re-planned to 14 epochs" in r["line"] and "62.0 min" in r["line"]
    # at the budget's edge nothing more fits: the run ends at this epoch
    r = T.replan_epochs(done=14, planned=16, elapsed_s=3500.0, epoch_s=240.0, minutes=60.0)
    assert r["epochs_to"] == 14 and "the run ends here" in r["line"]
    # a finished plan is never re-planned, and a plan is never lengthened
    assert T.replan_epochs(done=16, planned=16, elapsed_s=4000.0, epoch_s=240.0, minutes=60.0) is None
    assert T.replan_epochs(done=2, planned=16, elapsed_s=100.0, epoch_s=10.0, minutes=60.0) is None


def _clocked(monkeypatch, *, slow_after: int, crash_at: int | None = None, compile_s: float = 2.0,
             slow_s: float = 1.0):
    """A fake clock for the train module, advanced by each call of a compiled step: ``compile_s``
    more for each program's first call, then 0.5 s a step, ``slow_s`` from the ``slow_after``-th
    training step on (the machine slows down); the ``crash_at``-th training step raises."""
    clock = FakeClock()
    monkeypatch.setattr(T.time, "perf_counter", clock)
    real = T.make_train_step
    counter = {"train": 0}

    def make(*a, **kw):
        step, calls = real(*a, **kw), []

        def run(state, arrays, key):
            out = step(state, arrays, key)
            counter["train"] += 1
            if crash_at is not None and counter["train"] == crash_at:
                raise KeyboardInterrupt("killed")
            clock.now += (compile_s if not calls else 0.0) + (slow_s if counter["train"] > slow_after else 0.5)
            calls.append(1)
            return out
        return run
    monkeypatch.setattr(T, "make_train_step", make)
    return counter


@pytest.mark.parametrize("config", [BASE, COSINE], ids=["fixed", "cosine"])
def test_a_run_that_slows_down_is_replanned_to_end_inside_its_budget(data, config, monkeypatch, tmp_path):
    """A one-minute budget planned at 1.5 s an epoch (3 steps of 0.5 s); from epoch 11 the
    steps take twice as long, so the plan would end at about 90 s. At the end of epoch 11 the
    run is shortened to the epochs that fit (a cosine is laid over them, another compilation),
    ends inside the minute, records the re-plan, and a run killed after it resumes the new plan
    to the same parameters."""
    tc = tcfg(epochs=60, minutes=1.0)
    # the budget's 12 timing calls count 10 of the training steps' clock; drift from epoch 11
    counter = _clocked(monkeypatch, slow_after=12 + 30)
    r = _fit(config, data, tc, run_dir=tmp_path / "a")
    scheduled = config is COSINE
    planned = int((0.97 * 60 - 8.0 - (2.5 if scheduled else 0.0)) // 1.5)  # as budget_epochs plans
    assert r.budget["epochs"] == planned == (31 if scheduled else 33)
    assert len(r.replans) == 1, r.replans
    rp = r.replans[0]
    assert rp["epoch"] == 11 and rp["epochs_from"] == planned and rp["epoch_s"] == pytest.approx(3.0)
    assert rp["projected_s"] > 60.0
    assert rp["epochs_to"] == 11 + int((0.97 * 60 - rp["elapsed_s"] - (2.5 if scheduled else 0.0)) // 3.0)
    assert r.epochs == rp["epochs_to"] and r.step == 3 * r.epochs
    assert r.wall_time <= 60.0, r.wall_time
    assert counter["train"] == 12 + r.step
    meta = T.read_training_meta(tmp_path / "a" / "checkpoints" / "last.npz")
    assert meta.config["epochs"] == r.epochs and meta.record.replans == r.replans

    # the same run killed in epoch 15 (its last checkpoint is the end of epoch 14, after the
    # re-plan), then resumed on a machine as slow: the checkpoint's plan, the same parameters
    monkeypatch.undo()
    _clocked(monkeypatch, slow_after=12 + 30, crash_at=12 + 3 * 14 + 2)
    with pytest.raises(KeyboardInterrupt):
        _fit(config, data, tc, run_dir=tmp_path / "b")
    monkeypatch.undo()
    _clocked(monkeypatch, slow_after=0)
    again = _fit(config, data, replace(tc, resume=True), run_dir=tmp_path / "b")
    assert again.resumed_from == 3 * 14 and again.epochs == r.epochs and again.replans == r.replans
    assert again.budget is None and again.wall_time <= 60.0, again.wall_time
    assert all(np.array_equal(x, y) for x, y in zip(leaves(r), leaves(again)))


def test_a_run_with_no_time_left_ends_at_the_epoch_and_is_validated_there(data, monkeypatch):
    """Steps 20x slower from epoch 11: at its end (53 s into a one-minute budget) not one more
    epoch fits, so the run ends there, and the validation due at the run's last epoch (with
    valid_every=100, only there) is made on it."""
    _clocked(monkeypatch, slow_after=12 + 30, slow_s=10.0)
    scores = []

    def validate(theta):
        scores.append(float(len(scores)))
        return scores[-1]
    exp = build(BASE)
    arrays, basins = data
    net = exp.make_net(arrays.x_dynamic.shape[-1], arrays.x_static.shape[-1], seed=0)
    r = fit(exp.dpl, net, exp.tx, exp.loss, arrays, tcfg(epochs=60, minutes=1.0, valid_every=100),
            basins=basins, log=lambda *a: None, validate=validate)
    assert [(p["epoch"], p["epochs_to"]) for p in r.replans] == [(11, 11)]
    assert r.epochs == 11 and r.step == 33 and r.wall_time <= 60.0
    assert len(scores) == 2 and "valid" in r.history[-1] and all("valid" not in h for h in r.history[:-1])
    assert r.best_theta is not None
