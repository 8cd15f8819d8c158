"""Training: one jitted Optax step over the whole pipeline, validation, checkpoints, resume.

The train step is a pure function ``(net_state, opt_state, step, arrays) -> (net_state,
opt_state, loss, ok, basin_idx)``: it samples its own minibatch on the device from
``fold_in(seed_key, step)``, runs network -> HBV -> routing, takes the masked loss after the
warm-up, and applies the Optax update only when the loss, every gradient and the updated
parameters are finite. :func:`fit` runs it, validates, writes atomic checkpoints holding
everything a bit-exact resume needs, and resumes from them.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .data.dataset import Arrays
from .data.sampler import iterations_per_epoch, sample_batch
from .checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from .dpl import DPL, as_source, simulate
from .parallel import basin_mesh, replicate, shard_basins
from .resume import ResumeError, differences


@dataclass
class TrainConfig:
    """Options of the training loop.

    epochs x iters_per_epoch steps (``iters_per_epoch=None``: enough iterations for every
    basin-day to have been sampled with probability 0.99); minibatches of ``batch_basins``
    basins x ``window`` days after ``warmup`` spin-up days; validation every ``valid_every``
    epochs (when a validation period is configured); a checkpoint every ``checkpoint_every``
    epochs, every ``checkpoint_minutes`` of wall time (if set; mid-epoch too) and at the end;
    ``nan_policy``: "skip" a step whose loss or gradient is not finite, or "halt" with an
    error naming the batch's basins (after writing a checkpoint of the last good state);
    ``clip_grad_norm``: clip the gradient to this global norm before the optimiser;
    ``resume``: continue from the run directory's ``checkpoints/last.npz``;
    ``devices``: split each batch's basins over this many devices (host CPU devices, one per
    core, on a CPU; see :mod:`dpljax.parallel`); ``batch_basins`` must be a multiple of it.
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
    checkpoint_minutes: float | None = None
    resume: bool = False
    progress: bool = True
    devices: int = 1

    def __post_init__(self):
        def integer(name, lo, optional=False):
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                need = "null or " if optional else ""
                raise ValueError(f"train.{name} must be {need}an integer >= {lo}, got {v!r}"
                                 + (f" ({type(v).__name__})" if not isinstance(v, (int, np.integer)) else ""))
            setattr(self, name, int(v))

        def number(name):
            v = getattr(self, name)
            if v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not v > 0 \
                    or not math.isfinite(v):
                raise ValueError(f"train.{name} must be null or a number > 0, got {v!r}")
            setattr(self, name, float(v))

        for name in ("epochs", "batch_basins", "window", "valid_every", "checkpoint_every", "devices"):
            integer(name, 1)
        integer("iters_per_epoch", 1, optional=True)
        integer("warmup", 0)
        integer("seed", -(2 ** 63))
        number("clip_grad_norm")
        number("checkpoint_minutes")
        if self.batch_basins % self.devices:
            raise ValueError(f"train.batch_basins={self.batch_basins} must be a multiple of "
                             f"train.devices={self.devices} (each device takes an equal share)")
        if self.nan_policy not in ("skip", "halt"):
            raise ValueError(f"train.nan_policy must be 'skip' or 'halt', got {self.nan_policy!r}")
        for name in ("resume", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"train.{name} must be true or false, got {getattr(self, name)!r}")


class NonFiniteLoss(FloatingPointError):
    """A step produced a NaN/inf loss or gradient under ``nan_policy='halt'``."""


def make_optimizer(tx: optax.GradientTransformation, clip_grad_norm: float | None):
    return optax.chain(optax.clip_by_global_norm(clip_grad_norm), tx) if clip_grad_norm else tx


class TrainStep:
    """The jitted step ``(theta, opt_state, step, arrays, seed_key) -> (theta, opt_state,
    loss, ok, basin_idx)``. The chain (``dpl``, with a surrogate's weights if any) is an
    argument of the compiled program, passed by this wrapper, never a baked-in constant."""

    def __init__(self, jitted, dpl):
        self.jitted, self.dpl = jitted, dpl

    def __call__(self, theta, opt_state, step, arrays, seed_key):
        return self.jitted(self.dpl, theta, opt_state, step, arrays, seed_key)

    def lower(self, *args):
        return self.jitted.lower(self.dpl, *args)

    def _cache_size(self) -> int:
        return self.jitted._cache_size()


def make_train_step(dpl: DPL, source, tx: optax.GradientTransformation, loss_fn: Callable,
                    cfg: TrainConfig) -> TrainStep:
    """The jitted step. ``source`` makes the raw parameters from ``theta`` (a network's
    graphdef: the network's state is ``theta``). ``arrays`` and the states are arguments."""
    source = as_source(source)
    n_b, warmup, length = cfg.batch_basins, cfg.warmup, cfg.warmup + cfg.window
    mesh = basin_mesh(cfg.devices) if cfg.devices > 1 else None

    def step_fn(dpl, net_state, opt_state, step, arrays: Arrays, seed_key):
        key = jax.random.fold_in(seed_key, step)
        k_batch, k_drop = jax.random.split(key)
        idx, b = sample_batch(k_batch, arrays, n_b, length)
        if mesh is not None:
            b = shard_basins(b, mesh)

        def loss_of(state):
            q = simulate(dpl, source, state, b, key=k_drop).q
            return loss_fn(q[:, warmup:], b.obs[:, warmup:], b.obs_std)

        loss, grads = jax.value_and_grad(loss_of)(net_state)
        def finite(tree):
            leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
                      if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
            return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)

        ok = jnp.isfinite(loss) & finite(grads)
        # A non-finite gradient never reaches the parameters or the optimizer's moments ...
        grads = jax.tree.map(lambda g: jnp.where(ok, g, 0.0), grads)
        updates, new_opt = tx.update(grads, opt_state, net_state)
        new_state = optax.apply_updates(net_state, updates)
        # ... nor does a non-finite update (e.g. an optimiser dividing 0 by 0).
        ok = ok & finite(new_state) & finite(new_opt)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
        return keep(new_state, net_state), keep(new_opt, opt_state), loss, ok, idx

    return TrainStep(jax.jit(step_fn, donate_argnums=(1, 2)), dpl)


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
    skipped_batches: list = field(default_factory=list)
    resumed_from: int | None = None


#: Skipped batches recorded individually (steps, basins); beyond, only counted.
MAX_SKIPPED_RECORDS = 100


def fit(dpl: DPL, net: nnx.Module, tx: optax.GradientTransformation | Callable[[int], optax.GradientTransformation],
        loss_fn: Callable,
        arrays: Arrays, cfg: TrainConfig, *, run_dir: str | Path | None = None,
        validate: Callable[[Any], float] | None = None, basins=None, log: Callable = print,
        meta: dict | None = None) -> TrainResult:
    """Train ``net`` from a fresh start or, with ``cfg.resume``, from ``run_dir``'s last
    checkpoint. ``validate(net_state) -> score`` (higher is better) picks the best state.
    ``tx`` is an Optax transformation or a function of the run's total number of steps that
    returns one (a learning-rate schedule laid over the run).

    A checkpoint (``run_dir/checkpoints/last.npz``) holds the network parameters, the
    optimiser state and the best state so far; its metadata hold the step, epoch, seed and
    random key (the sampler's position is the step: batch ``k`` is drawn from
    ``fold_in(key(seed), k)``), history, skipped batches, this config and ``meta`` (e.g. the
    normalisation statistics and the experiment config). Resuming checks that the config
    (except :data:`RESUMABLE_CHANGES`), ``meta`` and ``basins`` match the checkpoint's, so a
    resumed run ends with exactly the parameters of an uninterrupted one.
    """
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
    scheduled = not isinstance(tx, optax.GradientTransformation)
    if scheduled:
        tx = tx(total)
    tx = make_optimizer(tx, cfg.clip_grad_norm)
    graphdef, net_state = nnx.split(net)
    opt_state = tx.init(net_state)
    seed_key = jax.random.key(cfg.seed)
    key_data = np.asarray(jax.random.key_data(seed_key)).tolist()
    meta = dict(meta or {})
    names_of = (lambda idx: [str(basins[i]) for i in np.asarray(idx)]) if basins is not None \
        else (lambda idx: np.asarray(idx).tolist())
    step0, history, best_score, best_state, best_step = 0, [], -math.inf, None, None
    skipped, skipped_batches, epoch_losses, elapsed0, resumed_from = 0, [], [], 0.0, None
    ckpt_dir = Path(run_dir) / "checkpoints" if run_dir is not None else None
    last = ckpt_dir / "last.npz" if ckpt_dir is not None else None
    if cfg.resume and last is not None and last.exists():
        old = read_checkpoint_meta(last)
        diffs = differences(old, cfg, meta, ipe=ipe, key_data=key_data, basins=basins)
        old_epochs = old.get("config", {}).get("epochs", cfg.epochs)
        if scheduled and old_epochs != cfg.epochs:
            diffs.append(f"train.epochs was {old_epochs}, now {cfg.epochs}, and the learning-rate "
                         "schedule is laid over the whole run (optim.schedule), so it would change")
        if diffs:
            raise ResumeError(f"cannot resume from {last}: " + "; ".join(diffs) + ". Resume with the "
                              "configuration and data of the original run, or start a new run directory.")
        if old["step"] > total:
            raise ResumeError(f"cannot resume from {last}: it is at step {old['step']} (epoch "
                              f"{old['step'] / ipe:g}), beyond train.epochs={cfg.epochs} x {ipe} iterations")
        like = {"net": net_state, "opt": opt_state}
        if old.get("has_best"):
            like["best"] = net_state
        tree, old = load_checkpoint(last, like)
        net_state, opt_state, best_state = tree["net"], tree["opt"], tree.get("best")
        step0, history, skipped = old["step"], old["history"], old.get("skipped", 0)
        skipped_batches, epoch_losses = old.get("skipped_batches", []), old.get("epoch_losses", [])
        best_score = -math.inf if old.get("best_score") is None else old["best_score"]
        best_step, elapsed0, resumed_from = old.get("best_step"), old.get("elapsed_s", 0.0), step0
        log(f"resumed from {last} at step {step0} of {total} (epoch {step0 / ipe:g} of {cfg.epochs})")
    train_step = make_train_step(dpl, graphdef, tx, loss_fn, cfg)
    arrays, net_state, opt_state = replicate((arrays, net_state, opt_state), cfg.devices)
    if cfg.devices > 1:
        log(f"training: each batch's {cfg.batch_basins} basins split over {cfg.devices} "
            f"{jax.devices()[0].platform} devices")
    t0 = time.perf_counter()
    last_save = t0

    def checkpoint(step: int, path: Path | None = None) -> None:
        tree = {"net": net_state, "opt": opt_state}
        if best_state is not None:
            tree["best"] = best_state
        save_checkpoint(path or last, tree, {
            "format": 1, "step": step, "epoch": step / ipe, "iters_per_epoch": ipe, "seed": cfg.seed,
            "key_data": key_data,
            "sampler": {"position": step, "rule": "batch of step k drawn with fold_in(key(seed), k)"},
            "history": history, "epoch_losses": [float(x) for x in epoch_losses],
            "skipped": skipped, "skipped_batches": skipped_batches,
            "best_score": best_score if math.isfinite(best_score) else None, "best_step": best_step,
            "has_best": best_state is not None, "elapsed_s": elapsed0 + time.perf_counter() - t0,
            "config": asdict(cfg), "basins": [str(b) for b in basins] if basins is not None else None,
            **meta})

    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step0, desc="train", mininterval=0.5, dynamic_ncols=True)
    for step in range(step0, total):
        net_state, opt_state, loss, ok, idx = train_step(net_state, opt_state, step, arrays, seed_key)
        if not bool(ok):
            msg = (f"step {step} (epoch {step // ipe + 1}): loss, gradient or update not finite "
                   f"(loss={float(loss)}); batch basins: {names_of(idx)}")
            if cfg.nan_policy == "halt":
                # The guarded step left the parameters untouched: save them, so that nothing
                # since the last checkpoint is lost.
                if last is not None:
                    checkpoint(step)
                    msg += (f". The parameters before this step are saved in {last} (step {step}); "
                            "to go on past such batches, resume with train.resume=true "
                            "train.nan_policy=skip")
                if bar is not None:
                    bar.close()
                raise NonFiniteLoss(msg)
            skipped += 1
            if len(skipped_batches) < MAX_SKIPPED_RECORDS:
                skipped_batches.append({"step": step, "basins": names_of(idx), "loss": float(loss)})
            log(msg + " -- step skipped, parameters unchanged")
        epoch_losses.append(loss)
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}")
        done = step + 1
        if done % ipe == 0:
            epoch = done // ipe
            ls = np.asarray(jnp.stack([jnp.asarray(x, jnp.float32) for x in epoch_losses]))
            entry = {"epoch": epoch, "step": done,
                     "loss": float(np.nanmean(ls)) if np.isfinite(ls).any() else None,
                     "skipped": skipped - sum(h.get("skipped", 0) for h in history),
                     "time": elapsed0 + time.perf_counter() - t0}
            epoch_losses = []
            if validate is not None and (epoch % cfg.valid_every == 0 or done == total):
                score = float(validate(net_state))
                entry["valid"] = score
                if score > best_score:
                    # A copy: the train step donates (and may overwrite) net_state's buffers.
                    best_score, best_step = score, done
                    best_state = jax.tree.map(jnp.copy, net_state)
                    if ckpt_dir is not None:
                        save_checkpoint(ckpt_dir / "best.npz", best_state, {"step": done, "score": score})
            history.append(entry)
            if last is not None and (epoch % cfg.checkpoint_every == 0 or done == total):
                checkpoint(done)
                last_save = time.perf_counter()
            if bar is None:
                log(json.dumps(entry))
        elif last is not None and cfg.checkpoint_minutes is not None and \
                time.perf_counter() - last_save >= 60.0 * cfg.checkpoint_minutes:
            checkpoint(done)
            last_save = time.perf_counter()
    if bar is not None:
        bar.close()
    return TrainResult(net_state, opt_state, total, history, best_state,
                       elapsed0 + time.perf_counter() - t0, skipped, skipped_batches, resumed_from)
