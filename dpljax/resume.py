"""What may change when a run is continued: every rule, for single runs and PUB, in one place.

A resumed run must end with exactly the parameters of an uninterrupted one, so a checkpoint
is continued only with the configuration and data it was written with, except the settings
listed here, which do not alter the parameters' path. A PUB cross-validation pools its
folds, so it is stricter still: ``train.epochs`` may not change either.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import CheckpointMeta
from .config import ConfigError

_SECTIONS = ("model", "net", "loss", "optim", "data", "train")

#: TrainConfig fields a resumed run may change: they do not alter the parameters' trajectory
#: (``devices`` changes only the order of floating-point sums).
RESUMABLE_CHANGES = ("epochs", "nan_policy", "valid_every", "checkpoint_every",
                     "checkpoint_minutes", "resume", "progress", "devices")


class ResumeError(ValueError):
    """A checkpoint cannot be continued with this configuration or data."""


#: What may change when a PUB cross-validation is continued: nothing that alters what a fold
#: learns, since finished folds are pooled with the ones trained now. The data may move.
PUB_RESUMABLE = tuple(f"train.{k}" for k in RESUMABLE_CHANGES if k not in ("epochs", "nan_policy")) + ("data.source",)


def flat(d: Any, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` after a JSON round trip (tuples become lists)."""
    d = json.loads(json.dumps(d))
    out = {}

    def walk(x, p):
        if isinstance(x, dict) and x:
            for k, v in x.items():
                walk(v, f"{p}.{k}" if p else str(k))
        else:
            out[p] = x

    walk(d, prefix)
    return out


#: Train keys that older configs and checkpoints lack, with what their absence meant.
TRAIN_IMPLICIT = {"warmup_grad": True, "ema": None}
#: Net keys that older configs of these networks lack, with what their absence meant.
NET_IMPLICIT = {"lstm": {"stride": 1, "input_size": None, "compute_dtype": None},
                "lstm_mlp": {"input_size": None, "compute_dtype": None}}


def _implicit(config: Any) -> Any:
    """An experiment config with the keys that older configs lack (``data.attributes``,
    ``data.variables``, :data:`TRAIN_IMPLICIT`, :data:`NET_IMPLICIT`) set to what their absence meant, so that the
    two spell one experiment alike."""
    if isinstance(config, dict) and isinstance(config.get("train"), dict):
        config = {**config, "train": {**TRAIN_IMPLICIT, **config["train"]}}
    if isinstance(config, dict) and isinstance(config.get("net"), dict):
        net = config["net"]
        config = {**config, "net": {**NET_IMPLICIT.get(net.get("name"), {}), **net}}
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        return config
    from .data.contract import ATTRIBUTES_35

    data = {"attributes": list(ATTRIBUTES_35), **config["data"]}
    if not data.get("variables"):  # absent, null or {}: the contract's names
        data.pop("variables", None)
    return {**config, "data": data}


def changes(old: Any, new: Any, ignore=()) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for each flattened key (see :func:`flat`) where two
    nested configs differ, ``"<absent>"`` standing for a side that lacks the key; keys in
    ``ignore`` are skipped."""
    a, b = flat(_implicit(old)), flat(_implicit(new))
    return [(k, a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(set(a) | set(b))
            if k not in ignore and a.get(k, "<absent>") != b.get(k, "<absent>")]


def differences(old: CheckpointMeta, cfg, extra: dict, *, ipe: int | None = None,
                key_data: list | None = None, basins=None, scheduled: bool = False) -> list[str]:
    """What keeps the checkpoint ``old`` from being continued bit-for-bit by this run: its
    train config (but :data:`RESUMABLE_CHANGES`), random key, iterations per epoch, basins and
    ``extra`` records (e.g. normalizer, experiment); with a learning-rate schedule laid over
    the run (``scheduled``), ``train.epochs`` too."""
    diffs = []
    new_cfg = asdict(cfg)
    old_cfg = {**TRAIN_IMPLICIT, **old.config}
    for k, v in new_cfg.items():
        if k not in RESUMABLE_CHANGES and k in old_cfg and old_cfg[k] != v:
            diffs.append(f"train.{k} was {old_cfg[k]!r}, now {v!r}")
    if key_data is not None and old.key_data not in (None, key_data) and not diffs:
        diffs.append("the random key derived from train.seed differs")
    if ipe is not None and old.iters_per_epoch not in (None, ipe):
        diffs.append(f"iterations per epoch were {old.iters_per_epoch}, now {ipe}")
    if basins is not None and old.basins is not None and old.basins != [str(b) for b in basins]:
        diffs.append(f"the training basins differ ({len(old.basins)} in the checkpoint, "
                     f"{len(basins)} now)")
    for k, v in extra.items():
        if k not in old.extra:
            continue
        changed = changes(old.extra[k], v)
        if changed:
            shown = ", ".join(f"{x}: {o!r} -> {n!r}" for x, o, n in changed[:6])
            more = f" (+{len(changed) - 6} more)" if len(changed) > 6 else ""
            diffs.append(f"{k} differs: {shown}{more}")
    old_epochs = old.config.get("epochs", cfg.epochs)
    if scheduled and old_epochs != cfg.epochs:
        diffs.append(f"train.epochs was {old_epochs}, now {cfg.epochs}, and the learning-rate "
                     "schedule is laid over the whole run (optim.schedule), so it would change")
    return diffs


def check_resume(path, old: CheckpointMeta, cfg, extra: dict, *, ipe: int, total: int,
                 key_data: list, basins=None, scheduled: bool = False) -> None:
    """Raise a :class:`ResumeError` unless ``fit`` may continue the checkpoint ``old`` (at
    ``path``) with this config and data to the run's ``total`` steps."""
    diffs = differences(old, cfg, extra, ipe=ipe, key_data=key_data, basins=basins, scheduled=scheduled)
    if diffs:
        raise ResumeError(f"cannot resume from {path}: " + "; ".join(diffs) + ". Resume with the "
                          "configuration and data of the original run, or start a new run directory.")
    if old.step > total:
        raise ResumeError(f"cannot resume from {path}: it is at step {old.step} (epoch "
                          f"{old.step / ipe:g}), beyond train.epochs={cfg.epochs} x {ipe} iterations")


def experiment_view(exp) -> dict:
    """The parts of an experiment a resumed run must share with its checkpoint (the train
    section is compared by :func:`check_resume`; the data's location may move)."""
    data = asdict(exp.data)
    data.pop("source")
    for k in ("attribute_missing_codes", "variables"):  # absent from older checkpoints: same meaning
        if not data.get(k):
            data.pop(k, None)
    view = {s: exp.config[s] for s in ("model", "net", "loss", "optim")}
    if view["net"].get("members") == 1:  # absent from older checkpoints: the same one network
        view["net"] = {k: v for k, v in view["net"].items() if k != "members"}
    view["data"] = data
    return json.loads(json.dumps(view))


def resume_config(composed: dict, run_dir: str | Path, overrides: list[str], log=print) -> dict:
    """The config of a resumed command-line run: the run's saved ``config.yaml``, with the
    command line's changes of :data:`RESUMABLE_CHANGES` (e.g. ``train.epochs``)
    applied. Any other override that contradicts the saved config is a :class:`ConfigError`;
    overrides of whole config trees (``experiment=...``) are ignored: the saved run governs.
    """
    saved_path = Path(run_dir) / "config.yaml"
    if not saved_path.exists():
        return composed
    saved = yaml.safe_load(saved_path.read_text())
    out = copy.deepcopy(saved)
    out.setdefault("train", {})["resume"] = True
    if isinstance(saved.get("train"), dict):  # compared as today's keys spell it; ``out`` stays as saved
        saved = {**saved, "train": {**TRAIN_IMPLICIT, **saved["train"]}}
    missing = object()

    def get(d, parts):
        for p in parts:
            if not isinstance(d, dict) or p not in d:
                return missing
            d = d[p]
        return d

    conflicts = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        parts = key.split(".")
        if parts[0] not in _SECTIONS:
            continue
        new, old = get(composed, parts), get(saved, parts)
        if json.dumps(new, sort_keys=True, default=str) == json.dumps(old, sort_keys=True, default=str):
            continue
        if len(parts) == 2 and parts[0] == "train" and parts[1] in RESUMABLE_CHANGES:
            out["train"][parts[1]] = new
            if parts[1] != "resume":
                log(f"resume: {key} changed from {old!r} to {new!r}")
        else:
            conflicts.append(f"{key} (saved: {'absent' if old is missing else repr(old)}, "
                             f"now: {'absent' if new is missing else repr(new)})")
    if conflicts:
        raise ConfigError(f"cannot resume {run_dir} with a different configuration: "
                          f"{'; '.join(conflicts)}. A resumed run may change only "
                          f"{['train.' + k for k in RESUMABLE_CHANGES]}")
    return out


def check_pub_config(run_dir: Path, config: dict) -> None:
    """Refuse to continue a cross-validation with a config its finished folds were not trained with."""
    path = run_dir / "config.yaml"
    if not path.exists():
        return
    saved = yaml.safe_load(path.read_text())
    saved.pop("pub", None)
    diffs = [f"{k} (saved: {o!r}, now: {n!r})" for k, o, n in changes(saved, config, PUB_RESUMABLE)]
    if diffs:
        raise ConfigError(f"cannot continue the PUB run in {run_dir} with a different configuration: "
                          f"{'; '.join(diffs)}. Its folds are pooled, so a continued run may change "
                          f"only {list(PUB_RESUMABLE)}; start a new run directory instead")
