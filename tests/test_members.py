"""net.members: an ensemble of parameter networks trained in one compiled program. Each member
in the ensemble's forward pass is the network run alone (vmap == loop, also with dropout and
the warm-up run forward only); the model's flow is the members' mean; a training step moves
each member as its own loss alone would (the mean of the members' losses, not the loss of their
mean flow); the experiment builds, refuses, trains, writes, evaluates and predicts with it."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import xarray as xr
from conftest import short_fit_learns, small_config
from flax import nnx

from dpljax import DPL, HBV, ConfigError, ParameterSpace, build
from dpljax.data import Arrays, fit_normalizer, load, prepare
from dpljax.dpl import NetworkSource, simulate
from dpljax.models.routing import BOUNDS as RB
from dpljax.nets import LSTMMLP, MLP, Members, Stacked
from dpljax.train import TrainConfig, TrainState, make_train_step

B, T, M = 3, 40, 2  # M != B: a member axis taken for the basin axis fails
SPACE = ParameterSpace(HBV().bounds, nmul=2, dynamic=("beta", "k0"), routing_bounds=RB)


def _make(dropout=0.0):
    return lambda rngs: LSTMMLP(3, 4, SPACE.n_outputs, dynamic_columns=SPACE.dynamic_columns, hidden=6,
                                dropout=dropout, mlp_hidden=(8,), rngs=rngs)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    forcing = {"prcp": rng.gamma(0.6, 5.0, (B, T)), "tmean": rng.normal(4.0, 9.0, (B, T)),
               "pet": rng.uniform(0.0, 4.0, (B, T))}
    return Arrays({k: jnp.asarray(v, jnp.float32) for k, v in forcing.items()},
                  jnp.asarray(rng.normal(size=(B, T, 3)), jnp.float32), jnp.asarray(rng.normal(size=(B, 4)), jnp.float32),
                  jnp.asarray(rng.gamma(1.0, 1.5, (B, T)), jnp.float32), jnp.ones(B, jnp.float32))


def member(ens: Members, i: int) -> nnx.Module:
    """Member ``i`` of ``ens`` as a network of its own."""
    graphdef, state = nnx.split(ens.nets)
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))


@pytest.mark.parametrize("detach,dropout", [(0, 0.0), (15, 0.5)])
def test_each_member_is_its_network_run_alone_and_the_flow_is_their_mean(detach, dropout):
    ens = Members(_make(dropout), M, rngs=nnx.Rngs(0))
    dpl, batch = DPL(HBV(), SPACE), _batch()
    key = jax.random.key(7) if dropout else None

    def run(net, key, each=False):
        graphdef, theta = nnx.split(net)
        return jax.jit(lambda th, k: simulate(dpl, NetworkSource(graphdef), th, batch, key=k, detach=detach,
                                              each_member=each))(theta, key)

    each, mean = run(ens, key, each=True), run(ens, key)
    assert each.q.shape == (B, M, T) and mean.q.shape == (B, T)
    keys = [None] * M if key is None else list(jax.random.split(key, M))
    alone = [run(member(ens, i), keys[i]) for i in range(M)]
    n = SPACE.nmul
    for i, r in enumerate(alone):
        np.testing.assert_allclose(each.q[:, i], r.q, rtol=2e-5, atol=1e-6)
        for name, p in r.params.items():  # member i's components are block i of the ensemble's
            np.testing.assert_allclose(mean.params[name][..., i * n:(i + 1) * n], p, rtol=1e-6, atol=1e-7)
        for name, p in r.routing.items():
            np.testing.assert_allclose(mean.routing[name][:, i], p, rtol=1e-6)
        for got, want in zip(jax.tree.leaves(mean.state), jax.tree.leaves(r.state)):
            np.testing.assert_allclose(got[:, i * want.shape[1]:(i + 1) * want.shape[1]], want, rtol=2e-5, atol=1e-6)
    # both kinds of parameter were reached: time-varying (B, T, M * nmul) and static (B, M * nmul)
    assert mean.params["beta"].shape == (B, T, M * n) and mean.params["fc"].shape == (B, M * n)
    np.testing.assert_allclose(mean.q, np.mean([r.q for r in alone], 0), rtol=2e-5, atol=1e-6)
    for got, *want in zip(jax.tree.leaves(mean.fluxes), *(jax.tree.leaves(r.fluxes) for r in alone)):
        np.testing.assert_allclose(got, np.mean(want, 0), rtol=2e-5, atol=1e-6)
    spread = np.abs(np.asarray(each.q[:, 0] - each.q[:, 1])).max()
    assert spread > 1e-3  # the members start from different weights


def test_a_training_step_moves_each_member_as_its_own_loss_would(sample):
    """SGD with learning rate 1 on the ensemble = SGD with 1/M on each member alone, on the same
    batch: the ensemble's loss is the mean of the members' losses. Training on the loss of the
    members' mean flow would couple them and fail this."""
    config = small_config(model={"dynamic": ["beta"]}, net={"name": "lstm_mlp", "hidden": 8, "mlp_hidden": [16],
                                                           "dropout": 0.0, "members": 2})
    exp = build(config)
    ds = load(exp.data, sample)
    arrays, _ = prepare(exp.data, ds, fit_normalizer(exp.data, ds), *exp.data.train, forcing=exp.dpl.model.forcing)
    cfg = TrainConfig(epochs=1, iters_per_epoch=1, batch_basins=4, window=60, warmup=60, progress=False,
                      warmup_grad=False)
    ens = exp.make_net(arrays.x_dynamic.shape[-1], arrays.x_static.shape[-1])
    assert isinstance(ens, Members) and ens.n == 2
    seed_key = jax.random.key(3)

    def stepper(graphdef, lr):  # one compiled step for a graphdef (both members share theirs)
        tx = optax.sgd(lr)
        step = make_train_step(exp.dpl, graphdef, tx, exp.loss, cfg)

        def go(theta):
            start = TrainState.create(jax.tree.map(jnp.copy, theta), tx)  # the step donates its state
            new, info = step(start, arrays, seed_key)
            return new.theta, float(info.loss)
        return go

    graphdef, before = nnx.split(ens)
    after, loss = stepper(graphdef, 1.0)(before)
    alone = stepper(nnx.graphdef(member(ens, 0)), 1.0 / 2)
    losses = []
    for i in range(2):
        b_i = nnx.state(member(ens, i))
        a_i, l_i = alone(b_i)
        losses.append(l_i)
        for x0, x1, y0, y1 in zip(*(jax.tree.leaves(t) for t in (before, after, b_i, a_i))):
            np.testing.assert_allclose(x0[i], y0)
            np.testing.assert_allclose(x1[i] - x0[i], y1 - y0, rtol=2e-4, atol=1e-8)
        assert max(float(np.abs(y1 - y0).max()) for y0, y1 in zip(jax.tree.leaves(b_i), jax.tree.leaves(a_i))) > 1e-6
    assert loss == pytest.approx(np.mean(losses), rel=1e-5)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_members_are_refused_by_name(bad):
    with pytest.raises(ConfigError, match="net.members must be a whole number >= 1"):
        build(small_config(net={"members": bad}))


def test_members_1_is_the_network_alone_and_any_network_can_be_an_ensemble():
    assert isinstance(build(small_config(net={"members": 1})).make_net(3, 5), MLP)
    ens = build(small_config(net={"members": 4})).make_net(3, 5)
    assert isinstance(ens, Members) and not ens.is_sequence
    assert ens.nets.head.kernel.shape == (4, 16, build(small_config()).dpl.space.n_outputs)
    out = ens(jnp.zeros((2, 5, 3)), jnp.ones((2, 5)))
    assert isinstance(out, Stacked) and out.raw.shape[:2] == (4, 2)
    with pytest.raises(ConfigError, match="unknown key"):  # the options still go to the network
        build(small_config(net={"members": 2, "hiden": [8]}))


@pytest.mark.slow  # a step of the ensemble is each member's own step (above); each network alone learns
def test_a_short_fit_of_an_ensemble_learns_on_the_sample(sample):
    short_fit_learns(sample, small_config(model={"dynamic": ["beta", "betaet"]}, optim={"learning_rate": 1e-2},
                                          net={"name": "lstm_mlp", "hidden": 16, "mlp_hidden": [32], "dropout": 0.0,
                                               "members": 2}))


def test_the_experiment_writes_evaluates_and_predicts_an_ensemble(tmp_path):
    from dpljax.evaluate import evaluate_run
    from dpljax.experiment import run_experiment
    from dpljax.predict import predict_run

    quiet = lambda *a: None  # noqa: E731
    train = {"epochs": 1, "iters_per_epoch": 5, "batch_basins": 4, "window": 120, "warmup": 120}
    run = tmp_path / "run"
    summary = run_experiment(small_config(train=train, net={"members": 3}), run, log=quiet)
    assert abs(evaluate_run(run, write=False, log=quiet)["median_nse"] - summary["median_nse"]) < 1e-6
    predict_run(run, "sample", out=tmp_path / "pred", basins=["01022500", "06431500"], log=quiet)
    pred = xr.open_zarr(tmp_path / "pred" / "predictions.zarr")
    assert pred["param_fc"].dims == ("basin", "component") and pred.sizes["component"] == 3 * 2
    assert pred["param_route_a"].dims == ("basin", "member") and pred.sizes["member"] == 3
