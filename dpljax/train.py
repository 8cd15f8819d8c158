"""Training: one jitted Optax step over the whole pipeline, validation, checkpoints, resume.

The train step is a pure function ``(net_state, opt_state, step, arrays) -> (net_state,
opt_state, loss, ok, basin_idx)``: it samples its own minibatch on the device from
``fold_in(seed_key, step)``, runs network -> HBV -> routing, takes the masked loss after the
warm-up, and applies the Optax update only when the loss and every gradient are finite.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .data.dataset import Arrays
from .data.sampler import iterations_per_epoch, sample_batch
from .dpl import DPL, simulate_split


@dataclass
class TrainConfig:
    """Options of the training loop.

    epochs x iters_per_epoch steps (``iters_per_epoch=None``: enough iterations for every
    basin-day to have been sampled with probability 0.99); minibatches of ``batch_basins``
    basins x ``window`` days after ``warmup`` spin-up days; validation every ``valid_every``
    epochs (when a validation period is configured); a checkpoint every ``checkpoint_every``
    epochs and at the end; ``nan_policy``: "skip" a step whose loss or gradient is not finite,
    or "halt" with an error naming the batch's basins.
    """

    epochs: int = 20
    iters_per_epoch: int | None = None
    batch_basins: int = 100
    window: int = 365
    warmup: int = 365
    seed: int = 0
    clip_grad_norm: float | None = None
    nan_policy: str = "skip"
    valid_every: int = 1
    checkpoint_every: int = 1
    resume: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.nan_policy not in ("skip", "halt"):
            raise ValueError(f"train.nan_policy must be 'skip' or 'halt', got {self.nan_policy!r}")
        for name in ("epochs", "batch_basins", "window"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if int(self.warmup) < 0:
            raise ValueError(f"train.warmup must be >= 0, got {self.warmup}")


class NonFiniteLoss(FloatingPointError):
    """A step produced a NaN/inf loss or gradient under ``nan_policy='halt'``."""


def make_optimizer(tx: optax.GradientTransformation, clip_grad_norm: float | None):
    return optax.chain(optax.clip_by_global_norm(clip_grad_norm), tx) if clip_grad_norm else tx


def make_train_step(dpl: DPL, graphdef, tx: optax.GradientTransformation, loss_fn: Callable,
                    cfg: TrainConfig):
    """The jitted step. ``arrays`` and the states are arguments (never baked-in constants)."""
    n_b, warmup, length = cfg.batch_basins, cfg.warmup, cfg.warmup + cfg.window

    def step_fn(net_state, opt_state, step, arrays: Arrays, seed_key):
        key = jax.random.fold_in(seed_key, step)
        k_batch, k_drop = jax.random.split(key)
        idx, b = sample_batch(k_batch, arrays, n_b, length)

        def loss_of(state):
            q = simulate_split(graphdef, state, dpl, b.x_dynamic, b.x_static, b.forcing, key=k_drop)
            return loss_fn(q[:, warmup:], b.obs[:, warmup:], b.obs_std)

        loss, grads = jax.value_and_grad(loss_of)(net_state)
        ok = jnp.isfinite(loss) & jnp.all(jnp.stack(
            [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        # A non-finite gradient never reaches the parameters or the optimizer's moments.
        grads = jax.tree.map(lambda g: jnp.where(ok, g, 0.0), grads)
        updates, new_opt = tx.update(grads, opt_state, net_state)
        new_state = optax.apply_updates(net_state, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
        return keep(new_state, net_state), keep(new_opt, opt_state), loss, ok, idx

    return jax.jit(step_fn, donate_argnums=(0, 1))


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, tree: Any, meta: dict) -> None:
    """Write ``tree``'s leaves and ``meta`` atomically: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                 **{f"leaf_{i}": x for i, x in enumerate(leaves)})
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, like: Any) -> tuple[Any, dict]:
    """Restore a tree with the structure of ``like`` and return it with the metadata."""
    with np.load(path) as z:
        meta = json.loads(z["__meta__"].tobytes().decode())
        leaves_like, treedef = jax.tree.flatten(like)
        n = sum(1 for k in z.files if k.startswith("leaf_"))
        if n != len(leaves_like):
            raise ValueError(f"checkpoint {path} holds {n} arrays, the model needs {len(leaves_like)}"
                             " (was it written by a different network or optimizer?)")
        leaves = []
        for i, ref in enumerate(leaves_like):
            a = z[f"leaf_{i}"]
            if a.shape != np.shape(ref):
                raise ValueError(f"checkpoint {path}: array {i} has shape {a.shape}, expected {np.shape(ref)}")
            leaves.append(jnp.asarray(a, dtype=jnp.asarray(ref).dtype))
    return jax.tree.unflatten(treedef, leaves), meta


# ---------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    net_state: Any
    opt_state: Any
    step: int
    history: list[dict]
    best_state: Any = None
    wall_time: float = 0.0
    skipped_steps: int = 0


def fit(dpl: DPL, net: nnx.Module, tx: optax.GradientTransformation, loss_fn: Callable,
        arrays: Arrays, cfg: TrainConfig, *, run_dir: str | Path | None = None,
        validate: Callable[[Any], float] | None = None, basins=None, log: Callable = print) -> TrainResult:
    """Train ``net`` in place of a fresh start or, with ``cfg.resume``, from ``run_dir``'s last
    checkpoint. ``validate(net_state) -> score`` (higher is better) picks the best state."""
    n_basins, n_days = arrays.obs.shape
    if cfg.batch_basins > n_basins:
        raise ValueError(f"train.batch_basins={cfg.batch_basins} is larger than the "
                         f"{n_basins} training basins")
    length = cfg.warmup + cfg.window
    if length > n_days:
        raise ValueError(f"train.warmup + train.window = {length} days is longer than the "
                         f"training period ({n_days} days)")
    ipe = cfg.iters_per_epoch or iterations_per_epoch(n_basins, n_days, cfg.batch_basins, cfg.window)
    total = cfg.epochs * ipe
    tx = make_optimizer(tx, cfg.clip_grad_norm)
    graphdef, net_state = nnx.split(net)
    opt_state = tx.init(net_state)
    seed_key = jax.random.key(cfg.seed)
    step0, history, best_score, best_state, skipped = 0, [], -math.inf, None, 0
    ckpt_dir = Path(run_dir) / "checkpoints" if run_dir is not None else None
    if cfg.resume and ckpt_dir is not None and (ckpt_dir / "last.npz").exists():
        (net_state, opt_state), meta = load_checkpoint(ckpt_dir / "last.npz", (net_state, opt_state))
        step0, history, skipped = meta["step"], meta["history"], meta.get("skipped", 0)
        best_score = -math.inf if meta.get("best_score") is None else meta["best_score"]
        if (ckpt_dir / "best.npz").exists():
            best_state, _ = load_checkpoint(ckpt_dir / "best.npz", net_state)
        log(f"resumed from {ckpt_dir / 'last.npz'} at step {step0}")
    train_step = make_train_step(dpl, graphdef, tx, loss_fn, cfg)
    t0 = time.perf_counter()
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step0, desc="train", mininterval=0.5, dynamic_ncols=True)
    epoch_losses: list = []
    for step in range(step0, total):
        net_state, opt_state, loss, ok, idx = train_step(net_state, opt_state, step, arrays, seed_key)
        epoch_losses.append(loss)
        if not bool(ok):
            names = [str(basins[i]) for i in np.asarray(idx)] if basins is not None else np.asarray(idx).tolist()
            msg = f"step {step}: loss or gradient not finite (loss={float(loss)}); batch basins: {names}"
            if cfg.nan_policy == "halt":
                raise NonFiniteLoss(msg)
            skipped += 1
            log(msg + " -- step skipped")
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}")
        if (step + 1) % ipe == 0 or step + 1 == total:
            epoch = (step + 1) // ipe if (step + 1) % ipe == 0 else (step + 1) / ipe
            ls = np.asarray(jnp.stack(epoch_losses))
            entry = {"epoch": epoch, "step": step + 1, "loss": float(np.nanmean(ls)),
                     "time": time.perf_counter() - t0}
            epoch_losses = []
            if validate is not None and (int(math.ceil(epoch)) % cfg.valid_every == 0 or step + 1 == total):
                score = float(validate(net_state))
                entry["valid"] = score
                if score > best_score:
                    best_score, best_state = score, net_state
                    if ckpt_dir is not None:
                        save_checkpoint(ckpt_dir / "best.npz", net_state, {"step": step + 1, "score": score})
            history.append(entry)
            if ckpt_dir is not None and (int(math.ceil(epoch)) % cfg.checkpoint_every == 0 or step + 1 == total):
                save_checkpoint(ckpt_dir / "last.npz", (net_state, opt_state),
                                {"step": step + 1, "history": history, "skipped": skipped,
                                 "best_score": best_score if math.isfinite(best_score) else None,
                                 "config": asdict(cfg)})
            if bar is None:
                log(json.dumps(entry))
    if bar is not None:
        bar.close()
    return TrainResult(net_state, opt_state, total, history, best_state,
                       time.perf_counter() - t0, skipped)
