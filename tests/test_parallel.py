"""Basin sharding over devices (train.devices): the same training as on one device, up to the
order of floating-point sums, and clear errors where it cannot be done."""
import jax
import numpy as np
import pytest

from conftest import small_config
from dpljax import ConfigError, build
from dpljax.data import fit_normalizer, load, prepare
from dpljax.parallel import basin_mesh
from dpljax.train import TrainConfig, fit

CFG = small_config(model={"dynamic": ["beta"]}, net={"name": "lstm", "hidden": 8, "dropout": 0.0},
                   optim={"learning_rate": 1e-2})

needs_two = pytest.mark.skipif(len(jax.devices()) < 2, reason="needs 2 devices (tests/conftest.py asks for them)")


@pytest.fixture(scope="module")
def setup(sample):
    exp = build(CFG)
    ds = load(exp.data, sample)
    arrays, _ = prepare(exp.data, ds, fit_normalizer(exp.data, ds), *exp.data.train, forcing=exp.dpl.model.forcing)
    return exp, arrays


def _fit(setup, devices, **kw):
    exp, arrays = setup
    cfg = TrainConfig(epochs=1, iters_per_epoch=5, batch_basins=4, window=60, warmup=60,
                      progress=False, devices=devices, **kw)
    net = exp.make_net(arrays.x_dynamic.shape[-1], arrays.x_static.shape[-1], seed=0)
    return fit(exp.dpl, net, exp.tx, exp.loss, arrays, cfg, log=lambda *a: None)


@needs_two
def test_sharded_training_equals_one_device(setup):
    one, two = _fit(setup, 1), _fit(setup, 2)
    l1, l2 = jax.tree.leaves(one.state.theta), jax.tree.leaves(two.state.theta)
    assert len(l1) == len(l2)
    for a, b in zip(l1, l2):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
    assert one.history[0]["loss"] == pytest.approx(two.history[0]["loss"], rel=1e-5)
    # the parameters really were spread over both devices
    assert {d.id for leaf in jax.tree.leaves(two.state.theta) for d in leaf.devices()} == {0, 1}


def test_batch_must_divide_over_devices():
    with pytest.raises(ConfigError, match=r"batch_basins=5 must be a multiple of train.devices=2"):
        build({**CFG, "train": {"batch_basins": 5, "devices": 2}})


def test_too_many_devices_is_explained():
    n = len(jax.devices())
    with pytest.raises(ValueError, match=rf"train.devices={n + 1} but JAX has {n} cpu device\(s\).*"
                                         "set train.devices before JAX starts"):
        basin_mesh(n + 1)
