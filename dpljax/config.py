"""Experiment configs: the error type and the one set of helpers every section is checked with.

A config is a plain dict of sections (``model, net, loss, optim, data, train``); each
section is checked against what it configures (a dataclass's fields, a class's keyword
options and the types of their defaults), and every problem is a :class:`ConfigError`
naming the key, raised before any data are read or anything is compiled.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields

import numpy as np


class ConfigError(ValueError):
    """The experiment config is inconsistent; raised before any compute."""


def open_options():
    """A section field that takes every key the section does not name itself: in
    ``net: {name: mlp, hidden: [64]}`` ``hidden`` lands in ``NetSection.options``, to be
    checked with :func:`check_options` against the network the name selects."""
    return field(default_factory=dict, metadata={"open": True})


def dataclass_section(cls, section: str, values: dict):
    """The one way a config section becomes a typed object: ``cls(**values)`` for a
    dataclass ``cls`` whose ``__post_init__`` checks the values; unknown keys (unless ``cls``
    has an :func:`open_options` field to take them) and every error it raises become a
    :class:`ConfigError` naming ``section`` (messages that start with ``section.`` are kept)."""
    known = {f.name for f in fields(cls) if not f.metadata.get("open")}
    rest = [f.name for f in fields(cls) if f.metadata.get("open")]
    unknown = sorted(set(values) - known)
    if rest:
        values = {**{k: v for k, v in values.items() if k in known},
                  rest[0]: {k: values[k] for k in unknown}}
    elif unknown:
        raise ConfigError(f"unknown key(s) {unknown} in '{section}' (known: {sorted(known)})")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(f"{section}.") else f"'{section}': {msg}") from e


def lookup(registry, section: str, name: str):
    """``registry[name]``, or a :class:`ConfigError` listing the registered names."""
    if name not in registry:
        raise ConfigError(f"{section}.name={name!r} is not registered (choose from {sorted(registry)})")
    return registry[name]



def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def section(config: dict, name: str) -> dict:
    v = config[name]
    if v is None:
        v = {}
    if not isinstance(v, dict):
        raise ConfigError(f"config section '{name}' must be a mapping of keys to values, got {v!r}")
    return dict(v)


def _keyword_options(cls, skip=("self", "rngs", "param_dtype")) -> set[str] | None:
    """Names ``cls(...)`` accepts as options; ``None`` when it takes ``**kwargs``."""
    params = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name not in skip
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_options(cls, section: str, options: dict, fixed: tuple = ()) -> None:
    known = _keyword_options(cls)
    if known is None:
        return
    known -= set(fixed)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in '{section}' (known: {sorted(known) + ['name']})")
    # The type of each option's default says what the option takes.
    sig = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls).parameters
    for k, v in options.items():
        d = sig[k].default
        if d is inspect.Parameter.empty or d is None or v is None:
            continue
        if isinstance(d, bool):
            ok, what = isinstance(v, bool), "true or false"
        elif is_number(d):
            ok, what = is_number(v), "a number"
        elif isinstance(d, (tuple, list)):
            ok, what = isinstance(v, (tuple, list)), "a list"
        elif isinstance(d, str):
            ok, what = isinstance(v, str), "a string"
        else:
            continue
        if not ok:
            raise ConfigError(f"{section}.{k} must be {what}, got {v!r} ({type(v).__name__})")


def _mapping(v, what: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ConfigError(f"{what}, got {v!r}")
    return dict(v)


@dataclass
class ModelSection:
    """``model``: the process model by name (``MODELS``), ``nmul`` components per basin, the
    parameters made time-varying, whether routing follows, the model's own keyword
    ``options`` and ``bounds`` overrides (``{name: [lo, hi]}``, checked against the model's
    parameters once it is built)."""

    name: str | None = None
    nmul: int = 16
    dynamic: tuple = ()
    routing: bool = True
    options: dict = field(default_factory=dict)
    bounds: dict = field(default_factory=dict)

    def __post_init__(self):
        if not is_int(self.nmul) or self.nmul < 1:
            raise ConfigError(f"model.nmul must be an integer >= 1, got {self.nmul!r}")
        d = self.dynamic or ()
        if isinstance(d, str) or not isinstance(d, (list, tuple)) or not all(isinstance(x, str) for x in d):
            raise ConfigError(f"model.dynamic must be a list of parameter names, got {d!r}")
        self.dynamic = tuple(d)
        if not isinstance(self.routing, bool):
            raise ConfigError(f"model.routing must be true or false, got {self.routing!r}")
        self.options = _mapping(self.options, "model.options must be a mapping")
        self.bounds = _mapping(self.bounds, "model.bounds must map parameter names to [lo, hi]")
        for k, v in self.bounds.items():
            if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or len(v) != 2 \
                    or not all(is_number(x) and math.isfinite(x) for x in v):
                raise ConfigError(f"model.bounds.{k} must be a pair [lo, hi] of finite numbers, got {v!r}")
            if not float(v[0]) < float(v[1]):
                raise ConfigError(f"model.bounds.{k}: lower bound {v[0]} must be < upper bound {v[1]}")
            self.bounds[k] = (float(v[0]), float(v[1]))


@dataclass
class NamedSection:
    """``net`` or ``loss``: a registered entry by name (``NETS``, ``LOSSES``); every other key
    is one of its keyword options (checked against its signature once it is looked up)."""

    name: str | None = None
    options: dict = open_options()


@dataclass
class OptimSection:
    """``optim``: an Optax optimiser by name; every other key but ``schedule`` is one of its
    keyword options. ``schedule`` (``{name, **fractions}``, see :mod:`dpljax.schedules`) lays
    the learning rate over the run, from ``learning_rate`` as its peak."""

    name: str | None = None
    schedule: dict | None = None
    options: dict = open_options()

    def __post_init__(self):
        lr = self.options.get("learning_rate")
        if lr is not None and not (is_number(lr) and lr > 0 and math.isfinite(lr)):
            raise ConfigError(f"optim.learning_rate must be a number > 0, got {lr!r}")
        if self.schedule is None:
            return
        if not isinstance(self.schedule, dict):
            raise ConfigError(f"optim.schedule must be a mapping like {{name: cosine, warmup: 0.0, "
                              f"final: 0.01}}, got {self.schedule!r}")
        if lr is None:
            raise ConfigError("optim.schedule needs optim.learning_rate (the peak of the schedule)")
