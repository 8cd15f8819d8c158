"""Training: a training state PyTree, one jitted Optax step over the whole pipeline, and a
short loop around it.

:class:`TrainState` ``(step, theta, opt_state)`` is what the step carries (cf. flax's
``TrainState``). The step is a pure function ``(dpl, state, arrays, seed_key) -> (state,
StepInfo)``: it samples its own minibatch on the device from ``fold_in(seed_key, step)``,
runs network -> process model -> routing, takes the masked loss after the warm-up, and
applies the Optax update only when the loss, every gradient and the updated parameters are
finite. :func:`fit` runs it; its pieces are named: the run's plan (:class:`RunPlan`), a fresh
start or a resume (:meth:`Run.start`, rules in :mod:`dpljax.resume`), the NaN policy
(:meth:`Run.after_step`), the end of an epoch with validation and the best state
(:meth:`Run.end_epoch`), the checkpoint cadence (:meth:`Run.checkpoint_if_due`; I/O in
:mod:`dpljax.checkpoint`) and progress (:class:`Progress`).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .checkpoint import (CheckpointMeta, RunRecord, load_training, read_training_meta, save_checkpoint,
                         save_training)
from .data.dataset import Arrays
from .data.sampler import iterations_per_epoch, sample_batch
from .dpl import DPL, as_source, simulate
from .parallel import basin_mesh, replicate, shard_basins
from .resume import ResumeError, check_resume

__all__ = ["Average", "budget_epochs", "NonFiniteLoss", "ResumeError", "RunPlan", "StepInfo", "TrainConfig", "TrainResult",
           "TrainState", "TrainStep", "fit", "make_optimizer", "make_train_step", "optimizer_of"]


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
    core, on a CPU; see :mod:`dpljax.parallel`); ``batch_basins`` must be a multiple of it;
    ``warmup_grad``: backpropagate through the warm-up days too (True, the reference
    practice), or run them forward only (False): the window then starts from the warm-up's
    state as a constant (process model, and a sequence network's hidden state), so the
    backward pass covers the window alone (:func:`dpljax.dpl.simulate`, ``detach``);
    ``minutes``: a budget of training wall time. A fresh run then times the compiled step on
    this machine (:func:`budget_epochs`, on a throwaway copy of the state) and trains the
    whole epochs that fit, at most ``epochs`` (then a maximum); the learning-rate schedule is
    laid over the epochs chosen, and the checkpoint keeps them, so a resumed run continues
    the same plan. The budget counts the timing, both compilations and the epochs. It is a
    deadline: at each epoch's end the rest is projected at the last epoch's pace, and where the
    machine has slowed so that it would overrun, the run is re-planned to the epochs that
    still fit, the schedule laid over them (:func:`replan_epochs`; recorded in the checkpoint
    and the result's ``replans``).
    ``ema``: a decay per step ``d`` (e.g. 0.999): the run keeps an exponential moving average
    of the parameters, ``sum <- d sum + (1 - d) theta`` after each applied step, divided by its
    weight ``1 - d^n`` (n applied steps; a skipped step changes neither). The average, not the
    last iterate, is what is validated, kept as the best and written as the model (Polyak
    averaging: the noise of the last steps averaged out, one model at no extra cost per step).
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
    warmup_grad: bool = True
    minutes: float | None = None
    ema: float | None = None

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
        number("minutes")
        if self.ema is not None:
            if isinstance(self.ema, bool) or not isinstance(self.ema, (int, float, np.number)) \
                    or not 0.0 < self.ema < 1.0:
                raise ValueError(f"train.ema must be null or a decay per step in (0, 1), e.g. 0.999, got {self.ema!r}")
            self.ema = float(self.ema)
        if self.batch_basins % self.devices:
            raise ValueError(f"train.batch_basins={self.batch_basins} must be a multiple of "
                             f"train.devices={self.devices} (each device takes an equal share)")
        if self.nan_policy not in ("skip", "halt"):
            raise ValueError(f"train.nan_policy must be 'skip' or 'halt', got {self.nan_policy!r}")
        for name in ("resume", "progress", "warmup_grad"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"train.{name} must be true or false, got {getattr(self, name)!r}")


class NonFiniteLoss(FloatingPointError):
    """A step produced a NaN/inf loss or gradient under ``nan_policy='halt'``."""


def make_optimizer(tx: optax.GradientTransformation, clip_grad_norm: float | None):
    """``tx`` preceded by clipping of the global gradient norm to ``clip_grad_norm`` (no
    clipping when ``None`` or 0): ``g <- g * min(1, c / ||g||_2)`` over all parameters."""
    return optax.chain(optax.clip_by_global_norm(clip_grad_norm), tx) if clip_grad_norm else tx


def optimizer_of(tx: optax.GradientTransformation | Callable[[int], optax.GradientTransformation],
                 clip_grad_norm: float | None, total: int = 1) -> optax.GradientTransformation:
    """A run's optimiser (:func:`make_optimizer`) from the ``tx`` that :func:`fit` takes: an
    Optax transformation, or a function of the run's ``total`` number of steps returning one (a
    schedule laid over the run). The state's structure does not depend on ``total``, so a
    checkpoint is read with any."""
    return make_optimizer(tx if isinstance(tx, optax.GradientTransformation) else tx(total), clip_grad_norm)


# ---------------------------------------------------------------------- the state and the step
class Average(NamedTuple):
    """An exponential moving average of the parameters (``train.ema``): the decayed ``sum``
    of the iterates and its ``weight`` (``1 - d^n`` after n updates); the average is
    ``sum / weight``, the mean of the iterates weighted ``(1 - d) d^age``."""

    sum: Any
    weight: jax.Array

    @classmethod
    def zeros(cls, theta) -> "Average":
        return cls(jax.tree.map(jnp.zeros_like, theta), jnp.zeros((), jnp.float32))

    def update(self, theta, decay: float) -> "Average":
        def one(s, t):
            return decay * s + (1.0 - decay) * t if jnp.issubdtype(t.dtype, jnp.inexact) else t
        return Average(jax.tree.map(one, self.sum, theta), decay * self.weight + (1.0 - decay))

    def value(self, like):
        """The average, on ``like``'s tree (``like`` itself before any update)."""
        if not float(self.weight) > 0.0:
            return like
        w = self.weight

        def one(s, t):
            return (s / w).astype(t.dtype) if jnp.issubdtype(t.dtype, jnp.inexact) else t
        return jax.tree.map(one, self.sum, like)


class TrainState(NamedTuple):
    """What the train step carries from one step to the next: ``step`` (int32 scalar), the
    number of batches drawn so far, which is the sampler's position; ``theta``, the network's
    state (``nnx.State``: its parameters and any other variables); ``opt_state``, the
    optimiser's state; ``avg``, the moving average of ``theta`` under ``train.ema``
    (:class:`Average`, else ``None``). A PyTree: it is donated to the step, replicated over
    devices and written whole to a checkpoint."""

    step: jax.Array
    theta: Any
    opt_state: Any
    avg: Average | None = None

    @classmethod
    def create(cls, theta, tx: optax.GradientTransformation, step: int = 0, ema: bool = False) -> "TrainState":
        return cls(jnp.asarray(step, jnp.int32), theta, tx.init(theta), Average.zeros(theta) if ema else None)

    def model(self):
        """The parameters the run stands for: the moving average under ``train.ema``, else
        the last iterate ``theta``."""
        return self.theta if self.avg is None else self.avg.value(self.theta)


class StepInfo(NamedTuple):
    """What a step reports: its loss, whether it was applied (loss, gradient and update all
    finite), and the indices of the batch's basins."""

    loss: jax.Array
    ok: jax.Array
    basin_idx: jax.Array


class TrainStep:
    """The jitted step ``(state, arrays, seed_key) -> (state, StepInfo)``. The chain (``dpl``,
    with a surrogate's weights if any) is an argument of the compiled program, passed by this
    wrapper, never a baked-in constant.

    The form ``(theta, opt_state, step, arrays, seed_key) -> (theta, opt_state, loss, ok,
    basin_idx)`` of earlier versions is still accepted (``benchmarks/throughput.py`` uses it)."""

    def __init__(self, jitted, dpl):
        self.jitted, self.dpl = jitted, dpl

    def __call__(self, *args):
        if len(args) == 3:
            return self.jitted(self.dpl, *args)
        theta, opt_state, step, arrays, seed_key = args
        state, info = self.jitted(self.dpl, TrainState(jnp.asarray(step, jnp.int32), theta, opt_state),
                                  arrays, seed_key)
        return state.theta, state.opt_state, *info

    def lower(self, *args):
        if len(args) == 5:
            args = (TrainState(jnp.asarray(args[2], jnp.int32), *args[:2]), *args[3:])
        return self.jitted.lower(self.dpl, *args)

    def _cache_size(self) -> int:
        return self.jitted._cache_size()


def _finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def make_train_step(dpl: DPL, source, tx: optax.GradientTransformation, loss_fn: Callable,
                    cfg: TrainConfig) -> TrainStep:
    """The jitted step. ``source`` makes the raw parameters from ``theta`` (a network's
    graphdef: the network's state is ``theta``). ``arrays`` and the state are arguments."""
    source = as_source(source)
    n_b, warmup, length = cfg.batch_basins, cfg.warmup, cfg.warmup + cfg.window
    detach = 0 if cfg.warmup_grad else warmup  # warm-up forward only (no backward through it)
    mesh = basin_mesh(cfg.devices) if cfg.devices > 1 else None

    def step_fn(dpl, state: TrainState, arrays: Arrays, seed_key) -> tuple[TrainState, StepInfo]:
        key = jax.random.fold_in(seed_key, state.step)
        k_batch, k_drop = jax.random.split(key)
        idx, b = sample_batch(k_batch, arrays, n_b, length)
        if mesh is not None:
            b = shard_basins(b, mesh)

        def loss_of(theta):
            q = simulate(dpl, source, theta, b, key=k_drop, detach=detach, each_member=True).q
            if q.ndim == 3:  # an ensemble (net.members): the mean of the members' own losses
                return jnp.mean(jax.vmap(lambda qm: loss_fn(qm[:, warmup:], b.obs[:, warmup:], b.obs_std),
                                         in_axes=1)(q))
            return loss_fn(q[:, warmup:], b.obs[:, warmup:], b.obs_std)

        loss, grads = jax.value_and_grad(loss_of)(state.theta)
        ok = jnp.isfinite(loss) & _finite(grads)
        # A non-finite gradient never reaches the parameters or the optimizer's moments ...
        grads = jax.tree.map(lambda g: jnp.where(ok, g, 0.0), grads)
        updates, new_opt = tx.update(grads, state.opt_state, state.theta)
        new_theta = optax.apply_updates(state.theta, updates)
        # ... nor does a non-finite update (e.g. an optimiser dividing 0 by 0).
        ok = ok & _finite(new_theta) & _finite(new_opt)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
        avg = state.avg if state.avg is None else keep(state.avg.update(new_theta, cfg.ema), state.avg)
        new = TrainState(state.step + 1, keep(new_theta, state.theta), keep(new_opt, state.opt_state), avg)
        return new, StepInfo(loss, ok, idx)

    return TrainStep(jax.jit(step_fn, donate_argnums=(1,)), dpl)


# ---------------------------------------------------------------------------- the budget
#: ``train.minutes``: steps timed (after two untimed ones: the compilation and a first run).
BUDGET_TIMED_STEPS = 10
#: Share of the budget planned for steps; the rest absorbs checkpoints and the machine's drift.
BUDGET_SHARE = 0.97


def budget_epochs(step: "TrainStep", state: "TrainState", arrays: Arrays, seed_key, *, minutes: float,
                  ipe: int, max_epochs: int, recompile: bool, validate: Callable | None = None,
                  valid_every: int = 1, theta=None, timed: int = BUDGET_TIMED_STEPS) -> dict:
    """Whole epochs of ``ipe`` steps that fit in ``minutes`` of wall time (at most
    ``max_epochs``), from the median time of ``timed`` runs of the compiled ``step`` on
    ``state`` (a throwaway copy: the step donates it). What is spent here counts against the
    budget, and so does a second compilation of the same length when ``recompile`` (the
    learning-rate schedule is laid over the epochs chosen, so the real step is another
    program), and a validation (timed once, on ``theta``) every ``valid_every`` epochs."""
    t0 = time.perf_counter()
    for _ in range(2):
        state, info = step(state, arrays, seed_key)
        jax.block_until_ready(info.loss)
        if _ == 0:
            compile_s = time.perf_counter() - t0
    times = []
    for _ in range(timed):
        t = time.perf_counter()
        state, info = step(state, arrays, seed_key)
        jax.block_until_ready(info.loss)
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times))
    valid_s = 0.0
    if validate is not None:
        t = time.perf_counter()
        validate(theta)
        valid_s = time.perf_counter() - t
    spent = time.perf_counter() - t0
    left = BUDGET_SHARE * 60.0 * minutes - spent - (compile_s if recompile else 0.0)
    per_epoch = step_s * ipe + valid_s / valid_every
    fit_epochs = int(left // per_epoch) if left > 0 else 0
    if fit_epochs < 1:
        raise ValueError(f"train.minutes={minutes:g} is too short here: one epoch of {ipe} steps takes "
                         f"{per_epoch / 60:.1f} min on this machine (a step {step_s:.3f} s, median of {timed}), "
                         f"and timing it took {spent / 60:.1f} min; raise train.minutes, or lower "
                         "train.iters_per_epoch or train.batch_basins")
    epochs = min(fit_epochs, max_epochs)
    line = (f"train.minutes={minutes:g}: a step takes {step_s:.3f} s here (median of {timed}; compiling "
            f"{compile_s:.0f} s), an epoch of {ipe} steps {per_epoch / 60:.1f} min: {fit_epochs} epochs fit, "
            f"training {epochs}" + (f" (train.epochs={max_epochs} is the most)" if fit_epochs > max_epochs else "")
            + f" = {epochs * ipe} steps")
    return {"epochs": epochs, "epochs_fit": fit_epochs, "step_s": step_s, "step_times_s": times,
            "compile_s": compile_s, "valid_s": valid_s, "timing_s": spent, "minutes": minutes, "line": line}


def replan_epochs(*, done: int, planned: int, elapsed_s: float, epoch_s: float, minutes: float,
                  recompile_s: float = 0.0) -> dict | None:
    """The budget as a deadline: after ``done`` of ``planned`` epochs, ``elapsed_s`` into the
    run, with the last epoch having taken ``epoch_s``, will the rest end inside ``minutes``?
    If so, None. If not (the machine slowed down since the step was timed: shared cores, a
    VM's drift), the whole epochs that fit in the same share of the budget as the first plan
    (:data:`BUDGET_SHARE`), after ``recompile_s`` for the step of the new schedule; ``done``
    itself when not one more fits (the run ends at this epoch). Only ever fewer epochs: a run
    never grows past its first plan."""
    deadline = 60.0 * minutes
    projected = elapsed_s + (planned - done) * epoch_s
    if done >= planned or projected <= deadline:
        return None
    left = BUDGET_SHARE * deadline - elapsed_s - recompile_s
    epochs = done + (max(0, int(left // epoch_s)) if epoch_s > 0 else 0)
    epochs = min(epochs, planned - 1)
    return {"epoch": done, "epochs_from": planned, "epochs_to": epochs, "elapsed_s": elapsed_s,
            "epoch_s": epoch_s, "projected_s": projected, "recompile_s": recompile_s,
            "line": (f"train.minutes={minutes:g}: the last epoch took {epoch_s / 60:.2f} min, so the "
                     f"{planned - done} planned after epoch {done} would end at {projected / 60:.1f} min; "
                     + (f"re-planned to {epochs} epochs (the schedule laid over them)" if epochs > done
                        else "no further epoch fits: the run ends here"))}


def _checkpointed_epochs(run_dir, cfg: TrainConfig) -> int | None:
    """The epochs a budgeted run's checkpoint was planned with (None: no checkpoint to resume)."""
    if run_dir is None:
        return None
    last = Path(run_dir) / "checkpoints" / "last.npz"
    if not last.exists():
        return None
    old = read_training_meta(last)
    if old.config.get("minutes") != cfg.minutes:  # check_resume names this difference
        return cfg.epochs
    return int(old.config["epochs"])


# ---------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    state: TrainState
    step: int
    history: list[dict]
    best_theta: Any = None
    wall_time: float = 0.0
    skipped_steps: int = 0
    skipped_batches: list = field(default_factory=list)
    resumed_from: int | None = None
    epochs: int | None = None      # the epochs trained (chosen by the budget under train.minutes)
    budget: dict | None = None     # the step timing behind that choice (a fresh budgeted run)
    replans: list = field(default_factory=list)  # where the budget shortened the run (replan_epochs)


#: Skipped batches recorded individually (steps, basins); beyond, only counted.
MAX_SKIPPED_RECORDS = 100


@dataclass(frozen=True)
class RunPlan:
    """The run's length and randomness: ``ipe`` iterations per epoch, ``total`` steps, the
    seed's key (batch ``k`` is drawn from ``fold_in(seed_key, k)``) and its data."""

    ipe: int
    total: int
    seed_key: Any
    key_data: list

    @classmethod
    def of(cls, arrays: Arrays, cfg: TrainConfig) -> "RunPlan":
        n_basins, n_days = arrays.obs.shape
        if cfg.batch_basins > n_basins:
            raise ValueError(f"train.batch_basins={cfg.batch_basins} is larger than the "
                             f"{n_basins} training basins")
        length = cfg.warmup + cfg.window
        if length > n_days:
            raise ValueError(f"train.warmup + train.window = {length} days is longer than the "
                             f"training period ({n_days} days)")
        ipe = cfg.iters_per_epoch or iterations_per_epoch(n_basins, n_days, cfg.batch_basins, cfg.window)
        key = jax.random.key(cfg.seed)
        return cls(ipe, cfg.epochs * ipe, key, np.asarray(jax.random.key_data(key)).tolist())


class Progress:
    """Progress of the steps (``train.progress``): a bar on a terminal, else a plain line at
    most every :data:`dpljax.progress.LOG_INTERVAL_S` seconds (no carriage returns in a log
    file; :mod:`dpljax.progress`); one JSON line per epoch unless the bar is shown."""

    def __init__(self, enabled: bool, total: int, start: int, log: Callable, stream=None):
        from .progress import Progress as _Shared

        self.log = log
        self.shared = _Shared(enabled, total, desc="train", unit="steps", start=start, log=log, stream=stream)

    def step(self, step: int, loss) -> None:
        if not self.shared.enabled:
            return
        if self.shared.is_bar:  # the loss is read (a device sync) only every 10 steps
            self.shared.update(step + 1, f"loss={float(loss):.4f}" if step % 10 == 0 else "")
        else:  # ... or when a line is written
            self.shared.update(step + 1, lambda: f"loss={float(loss):.4f}")

    def retotal(self, total: int) -> None:
        self.shared.retotal(total)

    def epoch(self, entry: dict) -> None:
        if not self.shared.is_bar:
            self.log(json.dumps(entry))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shared.close()


class Run:
    """The host side of one :func:`fit`: the record (history, skipped steps, best state), the
    checkpoints in ``run_dir/checkpoints`` and the clock."""

    def __init__(self, cfg: TrainConfig, plan: RunPlan, run_dir, basins, extra: dict, log: Callable):
        self.cfg, self.plan, self.basins, self.extra, self.log = cfg, plan, basins, extra, log
        self.dir = Path(run_dir) / "checkpoints" if run_dir is not None else None
        self.last = self.dir / "last.npz" if self.dir is not None else None
        self.record, self.best_theta = RunRecord(), None
        self.step0, self.resumed_from = 0, None

    def names(self, idx) -> list:
        idx = np.asarray(idx)
        return [str(self.basins[i]) for i in idx] if self.basins is not None else idx.tolist()

    def start(self, fresh: TrainState, scheduled: bool) -> TrainState:
        """``fresh``, or with ``train.resume`` the state of the last checkpoint (if any),
        after :func:`~dpljax.resume.check_resume` found nothing that would change its path."""
        if not (self.cfg.resume and self.last is not None and self.last.exists()):
            return fresh
        old = read_training_meta(self.last)
        check_resume(self.last, old, self.cfg, self.extra, ipe=self.plan.ipe, total=self.plan.total,
                     key_data=self.plan.key_data, basins=self.basins, scheduled=scheduled)
        state, self.best_theta, old = load_training(self.last, fresh, fresh.theta)
        self.record, self.step0 = old.record, old.step
        self.resumed_from = old.step
        self.log(f"resumed from {self.last} at step {old.step} of {self.plan.total} "
                 f"(epoch {old.step / self.plan.ipe:g} of {self.cfg.epochs})")
        return state

    def clock(self) -> None:
        self.t0 = self.last_save = time.perf_counter()

    def elapsed(self) -> float:
        return self.record.elapsed_s + time.perf_counter() - self.t0

    def save(self, step: int, state: TrainState) -> None:
        rec = replace(self.record, elapsed_s=self.elapsed(),
                      epoch_losses=[float(x) for x in self.record.epoch_losses])
        meta = CheckpointMeta(step, self.plan.ipe, self.cfg.seed, self.plan.key_data, asdict(self.cfg),
                              [str(b) for b in self.basins] if self.basins is not None else None,
                              rec, extra=self.extra)
        save_training(self.last, state, self.best_theta, meta)
        self.last_save = time.perf_counter()

    def after_step(self, step: int, state: TrainState, info: StepInfo) -> None:
        """The NaN policy: a step that was not applied is skipped (counted, its basins named)
        or, under ``nan_policy='halt'``, ends the run after saving the state before it."""
        self.record.epoch_losses.append(info.loss)
        if bool(info.ok):
            return
        msg = (f"step {step} (epoch {step // self.plan.ipe + 1}): loss, gradient or update not "
               f"finite (loss={float(info.loss)}); batch basins: {self.names(info.basin_idx)}")
        if self.cfg.nan_policy == "halt":
            # The guarded step left the parameters untouched: save them, so that nothing
            # since the last checkpoint is lost.
            if self.last is not None:
                self.save(step, state._replace(step=jnp.asarray(step, jnp.int32)))
                msg += (f". The parameters before this step are saved in {self.last} (step {step}); "
                        "to go on past such batches, resume with train.resume=true train.nan_policy=skip")
            raise NonFiniteLoss(msg)
        self.record.skipped += 1
        if len(self.record.skipped_batches) < MAX_SKIPPED_RECORDS:
            self.record.skipped_batches.append({"step": step, "basins": self.names(info.basin_idx),
                                                "loss": float(info.loss)})
        self.log(msg + " -- step skipped, parameters unchanged")

    def end_epoch(self, done: int, theta, validate: Callable | None) -> dict:
        """The epoch's history entry (mean loss, skipped steps, time, validation score)."""
        rec, epoch = self.record, done // self.plan.ipe
        ls = np.asarray(jnp.stack([jnp.asarray(x, jnp.float32) for x in rec.epoch_losses]))
        entry = {"epoch": epoch, "step": done,
                 "loss": float(np.nanmean(ls)) if np.isfinite(ls).any() else None,
                 "skipped": rec.skipped - sum(h.get("skipped", 0) for h in rec.history),
                 "time": self.elapsed()}
        rec.epoch_losses = []
        if validate is not None and (epoch % self.cfg.valid_every == 0 or done == self.plan.total):
            entry["valid"] = float(validate(theta))
            self.offer_best(entry["valid"], done, theta)
        rec.history.append(entry)
        return entry

    def offer_best(self, score: float, step: int, theta) -> None:
        """Keep ``theta`` (and write ``best.npz``) if ``score`` beats the best so far (an
        undefined score, NaN, never does)."""
        if not score > (-math.inf if self.record.best_score is None else self.record.best_score):
            return
        # A copy: the train step donates (and may overwrite) the state's buffers.
        self.best_theta = jax.tree.map(jnp.copy, theta)
        self.record.best_score, self.record.best_step = score, step
        if self.dir is not None:
            save_checkpoint(self.dir / "best.npz", self.best_theta, {"step": step, "score": score})

    def replan(self, change: dict, arrays: Arrays) -> tuple[TrainConfig, RunPlan]:
        """The run shortened to ``change["epochs_to"]`` epochs (:func:`replan_epochs`),
        recorded, so that the checkpoints keep the new plan."""
        self.record.replans.append(change)
        self.cfg = replace(self.cfg, epochs=change["epochs_to"])
        self.plan = RunPlan.of(arrays, self.cfg)
        return self.cfg, self.plan

    def checkpoint_if_due(self, done: int, state: TrainState) -> None:
        """At the end of every ``checkpoint_every``-th epoch and of the run, and in between
        every ``checkpoint_minutes`` of wall time."""
        if self.last is None:
            return
        if done % self.plan.ipe == 0:
            due = (done // self.plan.ipe) % self.cfg.checkpoint_every == 0 or done == self.plan.total
        else:
            due = self.cfg.checkpoint_minutes is not None and \
                time.perf_counter() - self.last_save >= 60.0 * self.cfg.checkpoint_minutes
        if due:
            self.save(done, state)

    def result(self, state: TrainState) -> TrainResult:
        rec = self.record
        return TrainResult(state, self.plan.total, rec.history, self.best_theta, self.elapsed(),
                           rec.skipped, rec.skipped_batches, self.resumed_from, replans=list(rec.replans))


class Deadline:
    """``train.minutes`` as a deadline: at each epoch's end (from the second of a process on,
    the first holding a compilation) the rest of the plan is projected at the last epoch's
    pace and, where it would overrun, shortened (:func:`replan_epochs`). ``recompile_s``: what
    a step of a new schedule costs to compile (None: taken from the first step of this
    process, which compiles)."""

    def __init__(self, minutes: float, recompile_s: float | None):
        self.minutes, self.recompile_s, self.last = minutes, recompile_s, None

    def stepped(self, seconds: float) -> None:
        if self.recompile_s is None:
            self.recompile_s = seconds

    def check(self, elapsed_s: float, done: int, planned: int) -> dict | None:
        change = None if self.last is None else replan_epochs(
            done=done, planned=planned, elapsed_s=elapsed_s, epoch_s=elapsed_s - self.last,
            minutes=self.minutes, recompile_s=self.recompile_s or 0.0)
        self.last = elapsed_s
        return change

    def compiled(self) -> None:
        """A new program: the next epoch holds its compilation, so it sets no pace."""
        self.last = None


def fit(dpl: DPL, net: nnx.Module, tx: optax.GradientTransformation | Callable[[int], optax.GradientTransformation],
        loss_fn: Callable, arrays: Arrays, cfg: TrainConfig, *, run_dir: str | Path | None = None,
        validate: Callable[[Any], float] | None = None, basins=None, log: Callable = print,
        meta: dict | None = None) -> TrainResult:
    """Train ``net`` from a fresh start or, with ``cfg.resume``, from ``run_dir``'s last
    checkpoint. ``validate(theta) -> score`` (higher is better) picks the best state.
    ``tx`` is an Optax transformation or a function of the run's total number of steps that
    returns one (a learning-rate schedule laid over the run).

    A checkpoint (``run_dir/checkpoints/last.npz``) holds the :class:`TrainState` and the best
    parameters so far, with a :class:`~dpljax.checkpoint.CheckpointMeta`: the step, seed and
    random key, history, skipped batches, this config, the basins and ``meta`` (e.g. the
    normalisation statistics and the experiment config). Resuming checks them
    (:func:`dpljax.resume.check_resume`), so a resumed run ends with exactly the parameters of
    an uninterrupted one.
    """
    plan = RunPlan.of(arrays, cfg)
    scheduled = not isinstance(tx, optax.GradientTransformation)
    fixed = None if scheduled else optimizer_of(tx, cfg.clip_grad_norm)  # one instance: the timed step is reused

    def make_tx(total: int) -> optax.GradientTransformation:  # ``tx`` stays the caller's (a factory)
        return fixed if fixed is not None else optimizer_of(tx, cfg.clip_grad_norm, total)
    graphdef, theta = nnx.split(net)
    arrays = replicate(arrays, cfg.devices)
    t_start = time.perf_counter()
    timed_step, budget = None, None
    if cfg.minutes is not None:
        epochs = _checkpointed_epochs(run_dir, cfg) if cfg.resume else None
        if epochs is None:  # a fresh plan: time the step here
            probe_tx = make_tx(plan.total)
            probe_step = make_train_step(dpl, graphdef, probe_tx, loss_fn, cfg)
            scratch = replicate(TrainState.create(jax.tree.map(jnp.copy, theta), probe_tx, ema=cfg.ema is not None),
                                cfg.devices)
            budget = budget_epochs(probe_step, scratch, arrays, plan.seed_key, minutes=cfg.minutes, ipe=plan.ipe,
                                   max_epochs=cfg.epochs, recompile=scheduled,
                                   validate=validate,
                                   valid_every=cfg.valid_every, theta=theta)
            epochs = budget["epochs"]
            timed_step = None if scheduled else probe_step  # a fixed optimiser: the same program
            log(budget["line"])
        else:
            log(f"train.minutes={cfg.minutes:g}: resuming the checkpoint's plan of {epochs} epochs")
        cfg = replace(cfg, epochs=epochs)
        plan = RunPlan.of(arrays, cfg)
    run_tx = make_tx(plan.total)
    run = Run(cfg, plan, run_dir, basins, dict(meta or {}), log)
    state = run.start(TrainState.create(theta, run_tx, ema=cfg.ema is not None), scheduled)
    train_step = timed_step or make_train_step(dpl, graphdef, run_tx, loss_fn, cfg)
    state = replicate(state, cfg.devices)
    if cfg.devices > 1:
        log(f"training: each batch's {cfg.batch_basins} basins split over {cfg.devices} "
            f"{jax.devices()[0].platform} devices")
    run.clock()
    if budget is not None:  # the budget's own timing is training time too
        run.record.elapsed_s += time.perf_counter() - t_start
    deadline = None if cfg.minutes is None else \
        Deadline(cfg.minutes, 0.0 if not scheduled else (budget["compile_s"] if budget is not None else None))
    with Progress(cfg.progress, plan.total, run.step0, log) as progress:
        step = run.step0
        while step < plan.total:
            t = time.perf_counter()
            state, info = train_step(state, arrays, plan.seed_key)
            run.after_step(step, state, info)  # reads the step's result: the step is done
            if deadline is not None:
                deadline.stepped(time.perf_counter() - t)
            progress.step(step, info.loss)
            step += 1
            entry = run.end_epoch(step, state.model(), validate) if step % plan.ipe == 0 else None
            change = deadline.check(run.elapsed(), step // plan.ipe, cfg.epochs) \
                if entry is not None and deadline is not None else None
            if change is not None:
                log(change.pop("line"))
                cfg, plan = run.replan(change, arrays)
                progress.retotal(plan.total)
                if step < plan.total and scheduled:  # the schedule laid over the new total
                    train_step = make_train_step(dpl, graphdef, make_tx(plan.total), loss_fn, cfg)
                    deadline.compiled()
                elif step == plan.total and validate is not None and "valid" not in entry:
                    entry["valid"] = float(validate(state.model()))  # the run's last epoch now
                    run.offer_best(entry["valid"], step, state.model())
            run.checkpoint_if_due(step, state)
            if entry is not None:
                progress.epoch(entry)
    result = run.result(state)
    result.epochs, result.budget = cfg.epochs, budget
    return result
