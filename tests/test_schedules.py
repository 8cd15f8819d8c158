"""Learning-rate schedules (optim.schedule): their shape over the run, config errors, and that
training follows them (and a resume cannot silently re-lay them)."""
import copy

import jax

import numpy as np
import optax
import pytest

from conftest import small_config
from dpljax import ConfigError, build
from dpljax.data import fit_normalizer, load, prepare
from dpljax.schedules import make_schedule
from dpljax.train import ResumeError, TrainConfig, fit

BASE = small_config(optim={"learning_rate": 1e-2})


def with_schedule(schedule, **optim):
    cfg = copy.deepcopy(BASE)
    cfg["optim"].update(optim, schedule=schedule)
    return cfg


def test_cosine_shape():
    s = make_schedule({"name": "cosine", "warmup": 0.1, "final": 0.01}, 1e-2, 1000)
    lr = np.array([float(s(i)) for i in range(0, 1001, 50)])
    assert float(s(0)) == 0.0
    assert float(s(100)) == pytest.approx(1e-2, rel=1e-6)       # the peak, after the warm-up
    assert float(s(1000)) == pytest.approx(1e-4, rel=1e-4)      # final * lr at the last step
    assert np.all(np.diff(lr[2:]) <= 0)                          # decays after the peak
    # the cosine's midpoint: halfway between peak and end
    assert float(s(550)) == pytest.approx((1e-2 + 1e-4) / 2, rel=1e-3)


def test_cosine_without_warmup_starts_at_peak():
    s = make_schedule({"name": "cosine"}, 3e-3, 200)
    assert float(s(0)) == pytest.approx(3e-3)
    assert float(s(200)) == pytest.approx(3e-5, rel=1e-4)


def test_linear_shape():
    s = make_schedule({"name": "linear", "warmup": 0.2, "final": 0.1}, 1.0, 100)
    assert [float(s(i)) for i in (0, 10, 20, 60, 100)] == pytest.approx([0.0, 0.5, 1.0, 0.55, 0.1])


@pytest.mark.parametrize("schedule, match", [
    ({"name": "step"}, r"optim.schedule.name='step' is not registered \(choose from \['cosine', 'linear'\]\)"),
    ({"name": "cosine", "warmpu": 0.1}, r"unknown key\(s\) \['warmpu'\]"),
    ({"name": "cosine", "warmup": 1.5}, "warmup must be a fraction"),
    ({"name": "cosine", "final": -0.1}, "final must be a fraction"),
    ({"name": "cosine", "final": "low"}, "final must be a number"),
    ("cosine", "must be a mapping"),
])
def test_bad_schedule_is_a_config_error(schedule, match):
    with pytest.raises(ConfigError, match=match):
        build(with_schedule(schedule))


def test_schedule_needs_a_learning_rate():
    cfg = with_schedule({"name": "cosine"})
    del cfg["optim"]["learning_rate"]
    with pytest.raises(ConfigError, match="needs optim.learning_rate"):
        build(cfg)


@pytest.fixture(scope="module")
def data(sample):
    exp = build(BASE)
    ds = load(exp.data, sample)
    arrays, _ = prepare(exp.data, ds, fit_normalizer(exp.data, ds), *exp.data.train, forcing=exp.dpl.model.forcing)
    return arrays, [str(b) for b in ds["basin"].values]


def _fit(cfg_dict, data, tcfg, tx=None, **kw):
    exp = build(cfg_dict)
    arrays, basins = data
    net = exp.make_net(arrays.x_dynamic.shape[-1], arrays.x_static.shape[-1], seed=tcfg.seed)
    return fit(exp.dpl, net, tx or exp.tx, exp.loss, arrays, tcfg, basins=basins, log=lambda *a: None, **kw)


def test_training_follows_the_schedule(data):
    """The schedule is laid over epochs x iterations per epoch: training with the configured
    optimiser equals training with the same schedule built by hand for that many steps, and
    differs from one laid over another length."""
    spec = {"name": "linear", "warmup": 0.25, "final": 0.0}
    tcfg = TrainConfig(epochs=2, iters_per_epoch=4, batch_basins=3, window=60, warmup=60, progress=False)
    res = _fit(with_schedule(spec, name="sgd"), data, tcfg)
    by_hand = lambda total: optax.sgd(make_schedule(spec, 1e-2, total))
    same = _fit(BASE, data, tcfg, tx=by_hand(8))
    other = _fit(BASE, data, tcfg, tx=by_hand(16))
    leaves = lambda r: [np.asarray(x) for x in jax.tree.leaves(r.state.theta)]
    assert all(np.array_equal(x, y) for x, y in zip(leaves(res), leaves(same)))
    assert not all(np.array_equal(x, y) for x, y in zip(leaves(res), leaves(other)))


def test_resume_cannot_change_epochs_under_a_schedule(data, tmp_path):
    cfg = with_schedule({"name": "cosine"})
    short = TrainConfig(epochs=1, iters_per_epoch=3, batch_basins=3, window=60, warmup=60, progress=False)
    _fit(cfg, data, short, run_dir=tmp_path)
    longer = TrainConfig(**{**short.__dict__, "epochs": 2, "resume": True})
    with pytest.raises(ResumeError, match="schedule is laid over the whole run"):
        _fit(cfg, data, longer, run_dir=tmp_path)
    # the same length resumes (nothing left to do) without complaint
    same = TrainConfig(**{**short.__dict__, "resume": True})
    assert _fit(cfg, data, same, run_dir=tmp_path).step == 3


def test_schedules_are_one_registry():
    from dpljax.config import ConfigError as CE
    from dpljax.registry import Registry
    from dpljax.schedules import SCHEDULES, cosine, linear

    assert isinstance(SCHEDULES, Registry) and SCHEDULES.names() == ["cosine", "linear"]
    assert SCHEDULES["cosine"] is cosine and SCHEDULES["linear"] is linear
    with pytest.raises(CE, match=r"optim.schedule.name=None is not registered \(choose from \['cosine', 'linear'\]\)"):
        make_schedule({"warmup": 0.1}, 1e-3, 10)
    with pytest.raises(CE, match=r"optim.schedule.final must be a number, got True \(bool\)"):
        make_schedule({"name": "linear", "final": True}, 1e-3, 10)
    with pytest.raises(ValueError, match="registered twice"):
        SCHEDULES.register("cosine")(linear)
