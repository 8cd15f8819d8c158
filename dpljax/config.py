"""Experiment configs: the error type and the one set of helpers every section is checked with.

A config is a plain dict of sections (``model, net, loss, optim, data, train``); each
section is checked against what it configures (a dataclass's fields, a class's keyword
options and the types of their defaults), and every problem is a :class:`ConfigError`
naming the key, raised before any data are read or anything is compiled.
"""
from __future__ import annotations

import inspect
from dataclasses import fields

import numpy as np


class ConfigError(ValueError):
    """The experiment config is inconsistent; raised before any compute."""


def dataclass_section(cls, section: str, values: dict):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
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
