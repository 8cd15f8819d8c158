"""The training state PyTree and its checkpoint: a round trip restores every leaf (step,
parameters, optimiser state, best parameters) and the typed record; a checkpoint of another
layout is refused with a message that says so; the metadata's reserved keys cannot be
overwritten by the caller's records."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpljax.checkpoint import (CheckpointFormatError, CheckpointMeta, RunRecord, load_training,
                               load_checkpoint, read_checkpoint_meta, read_training_meta, save_checkpoint, save_training,
                               store_half)
from dpljax.train import TrainState


def _state(seed=0, step=7):
    rng = np.random.default_rng(seed)
    theta = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(rng.normal(size=4), jnp.float32)}
    tx = optax.adam(1e-2)
    state = TrainState.create(theta, tx, step=step)
    # one real update, so that the moments and the count are not their initial values
    updates, opt = tx.update(jax.tree.map(jnp.ones_like, theta), state.opt_state, theta)
    return state._replace(theta=optax.apply_updates(theta, updates), opt_state=opt)


def _meta(step=7, **kw):
    rec = RunRecord(history=[{"epoch": 1, "step": 5, "loss": 0.5}], epoch_losses=[0.25, 0.75],
                    skipped=1, skipped_batches=[{"step": 3, "basins": ["a"], "loss": None}],
                    best_score=0.6, best_step=5, elapsed_s=12.5)
    return CheckpointMeta(step, 5, 3, [0, 3], {"epochs": 2, "seed": 3}, ["a", "b"], rec,
                          extra={"normalizer": {"dynamic": {"prcp": [0.1, 0.2]}}}, **kw)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def same(a, b):
    la, lb = leaves(a), leaves(b)
    return len(la) == len(lb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(la, lb))


@pytest.mark.parametrize("with_best", [True, False])
def test_train_state_round_trip(tmp_path, with_best):
    state, best = _state(0), (_state(1).theta if with_best else None)
    path = tmp_path / "last.npz"
    save_training(path, state, best, _meta())
    fresh = TrainState.create(jax.tree.map(jnp.zeros_like, state.theta), optax.adam(1e-2))
    back, back_best, meta = load_training(path, fresh, fresh.theta)
    assert isinstance(back, TrainState) and int(back.step) == 7 and back.step.dtype == jnp.int32
    assert same(back, state) and not same(back, fresh)
    assert (back_best is None) == (not with_best)
    if with_best:
        assert same(back_best, best)
    assert meta == _meta(has_best=with_best)


def test_meta_json_keeps_the_readable_layout(tmp_path):
    """Readers of the file (and resume) find the step, the sampler's position, the record and
    the caller's records at the top level of the JSON."""
    path = tmp_path / "last.npz"
    save_training(path, _state(), None, _meta())
    raw = read_checkpoint_meta(path)
    assert raw["step"] == 7 and raw["epoch"] == 7 / 5 and raw["sampler"]["position"] == 7
    assert raw["history"][0]["loss"] == 0.5 and raw["best_score"] == 0.6 and raw["skipped"] == 1
    assert raw["normalizer"] == {"dynamic": {"prcp": [0.1, 0.2]}} and raw["has_best"] is False
    assert read_training_meta(path) == _meta()


def test_an_older_checkpoint_layout_is_refused(tmp_path):
    path = tmp_path / "last.npz"
    save_checkpoint(path, {"net": {"w": np.zeros(3)}, "opt": {}}, {"format": 1, "step": 4})
    with pytest.raises(CheckpointFormatError, match="format 1; this dpljax reads format 2.*new run directory"):
        read_training_meta(path)
    with pytest.raises(CheckpointFormatError):
        load_training(path, _state(), None)


def test_a_record_cannot_shadow_the_metadata(tmp_path):
    meta = _meta()
    meta.extra["step"] = 99
    with pytest.raises(ValueError, match=r"keys \['step'\] are reserved"):
        save_training(tmp_path / "x.npz", _state(), None, meta)
    assert not (tmp_path / "x.npz").exists()


def test_a_structure_mismatch_is_an_error(tmp_path):
    path = tmp_path / "last.npz"
    save_training(path, _state(), None, _meta())
    other = TrainState.create({"w": jnp.zeros((3, 4))}, optax.sgd(1.0))
    with pytest.raises(ValueError, match="holds .* arrays, the model needs"):
        load_training(path, other, other.theta)


def test_weights_stored_as_float16_load_as_float32_within_rounding(tmp_path):
    """``store_half`` halves a weights file: loaded back against the float32 model every leaf is
    float32 and within float16's rounding (2**-11 relative) of the original, integer leaves are
    untouched, the metadata says so; a training checkpoint and an out-of-range value refuse."""
    rng = np.random.default_rng(0)
    tree = {"w": jnp.asarray(rng.normal(size=(64, 32)) * 3, jnp.float32), "n": jnp.arange(5, dtype=jnp.int32)}
    path = tmp_path / "weights.npz"
    save_checkpoint(path, tree, {"step": 9})
    size = path.stat().st_size
    meta = store_half(path)
    assert meta == {"step": 9, "stored_dtype": "float16"} == read_checkpoint_meta(path)
    assert path.stat().st_size < 0.6 * size
    got, _ = load_checkpoint(path, tree)
    assert got["w"].dtype == jnp.float32 and got["n"].dtype == jnp.int32
    np.testing.assert_array_equal(got["n"], tree["n"])
    np.testing.assert_allclose(got["w"], tree["w"], rtol=2.0 ** -11, atol=0)
    assert not np.array_equal(got["w"], tree["w"])  # it was rounded, not kept

    save_checkpoint(path, {"w": jnp.full(3, 7e4, jnp.float32)}, {})
    with pytest.raises(ValueError, match="beyond float16"):
        store_half(path)
    save_training(path, _state(), None, _meta())
    with pytest.raises(ValueError, match="training checkpoint"):
        store_half(path)
