"""Learning-rate schedules for ``optim.schedule``, laid over the run's total number of steps.

The total (``train.epochs`` x iterations per epoch) is known only once the data are loaded, so
a schedule is stated in fractions of the run, never in steps::

    optim:
      name: adam
      learning_rate: 3.0e-3
      schedule: {name: cosine, warmup: 0.02, final: 0.01}

``warmup`` is the fraction of the steps spent rising linearly from 0 to ``learning_rate``;
``final`` is the learning rate at the last step as a fraction of ``learning_rate``.
"""
from __future__ import annotations

import math
from typing import Callable

import optax

from .config import ConfigError, check_options, lookup
from .registry import Registry

#: Learning-rate schedules by name: ``fn(lr, total, **fractions) -> optax.Schedule``.
SCHEDULES: Registry[Callable[..., optax.Schedule]] = Registry("schedule")


def _check(warmup: float, final: float) -> None:
    for key, v in (("warmup", warmup), ("final", final)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"optim.schedule.{key} must be a number, got {v!r}")
    if not 0.0 <= warmup < 1.0:
        raise ConfigError(f"optim.schedule.warmup must be a fraction of the run in [0, 1), got {warmup!r}")
    if not 0.0 <= final <= 1.0:
        raise ConfigError(f"optim.schedule.final must be a fraction of learning_rate in [0, 1], got {final!r}")


@SCHEDULES.register("cosine")
def cosine(lr: float, total: int, *, warmup: float = 0.0, final: float = 0.01) -> optax.Schedule:
    """Linear warm-up over ``warmup`` of the run, then cosine decay to ``final * lr``."""
    _check(warmup, final)
    n_warm = int(round(warmup * total))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if n_warm else lr, peak_value=lr, warmup_steps=n_warm,
        decay_steps=max(total, n_warm + 1), end_value=final * lr)


@SCHEDULES.register("linear")
def linear(lr: float, total: int, *, warmup: float = 0.0, final: float = 0.0) -> optax.Schedule:
    """Linear warm-up over ``warmup`` of the run, then linear decay to ``final * lr``."""
    _check(warmup, final)
    n_warm = int(round(warmup * total))
    parts = [optax.linear_schedule(0.0, lr, n_warm)] if n_warm else []
    parts.append(optax.linear_schedule(lr, final * lr, max(total - n_warm, 1)))
    return optax.join_schedules(parts, [n_warm]) if n_warm else parts[0]


def make_schedule(spec: dict, lr: float, total: int) -> optax.Schedule:
    """The schedule ``spec`` (``{name, **fractions}``) over ``total`` steps from peak ``lr``.

    The name is looked up in :data:`SCHEDULES` and the other keys are checked against the
    schedule's keyword options, as every config section is (a :class:`ConfigError` naming
    the key and the bad value)."""
    spec = dict(spec)
    fn = lookup(SCHEDULES, "optim.schedule", spec.pop("name", None))
    check_options(fn, "optim.schedule", spec, fixed=("lr", "total"))
    return fn(lr, total, **spec)
