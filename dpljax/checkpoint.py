"""Checkpoint I/O: a PyTree's leaves and a JSON record in one ``.npz``, written atomically.

A crash or ``kill -9`` at any moment leaves the previous file intact: the file is written
beside its target, flushed to disk, renamed over it, and the directory entry is synced.
A training checkpoint holds a training state PyTree (:class:`dpljax.train.TrainState`) and
the best parameters so far, with a typed record (:class:`CheckpointMeta`) of where the run
is and what it was started with.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def save_checkpoint(path: str | Path, tree: Any, meta: dict) -> None:
    """Write ``tree``'s leaves and ``meta`` atomically: a crash leaves the old file intact.

    The file is written beside its target, flushed to disk, then renamed over it (an atomic
    operation on POSIX file systems), and the directory entry is synced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                     **{f"leaf_{i}": x for i, x in enumerate(leaves)})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems cannot sync a directory; the rename is still atomic
        pass


def store_half(path: str | Path) -> dict:
    """Rewrite a checkpoint's float32 arrays as float16, in place and atomically: half the size
    of a file of weights kept for evaluation (``load_checkpoint`` casts them back to the
    model's float32). The metadata records it (``stored_dtype``); the scores computed from the
    rounded weights must be checked again (``python -m benchmarks.camels check``). Raises if a
    value would not fit in float16 (|x| > 65504) or if the file is a training checkpoint, whose
    optimiser state must stay exact for a resume. Returns the metadata written."""
    path = Path(path)
    leaves, meta = _read(path)
    if "iters_per_epoch" in meta:
        raise ValueError(f"{path} is a training checkpoint: its optimiser state must stay float32 to resume")
    big = [i for i, a in enumerate(leaves) if a.dtype == np.float32 and a.size and np.abs(a).max() > 65504]
    if big:
        raise ValueError(f"{path}: arrays {big} hold values beyond float16's range (65504)")
    halved = [a.astype(np.float16) if a.dtype == np.float32 else a for a in leaves]
    meta = {**meta, "stored_dtype": "float16"}
    save_checkpoint(path, halved, meta)
    return meta


def read_checkpoint_meta(path: str | Path) -> dict:
    """The metadata of a checkpoint, without loading its arrays."""
    with np.load(path) as z:
        return json.loads(z["__meta__"].tobytes().decode())


def _read(path: str | Path) -> tuple[list[np.ndarray], dict]:
    """A checkpoint's arrays, in leaf order, as stored, and its metadata."""
    with np.load(path) as z:
        n = sum(1 for k in z.files if k.startswith("leaf_"))
        return [z[f"leaf_{i}"] for i in range(n)], json.loads(z["__meta__"].tobytes().decode())


def load_checkpoint(path: str | Path, like: Any) -> tuple[Any, dict]:
    """Restore a tree with the structure of ``like`` and return it with the metadata."""
    stored, meta = _read(path)
    leaves_like, treedef = jax.tree.flatten(like)
    if len(stored) != len(leaves_like):
        raise ValueError(f"checkpoint {path} holds {len(stored)} arrays, the model needs {len(leaves_like)}"
                         " (was it written by a different network or optimizer?)")
    leaves = []
    for i, (a, ref) in enumerate(zip(stored, leaves_like)):
        if a.shape != np.shape(ref):
            raise ValueError(f"checkpoint {path}: array {i} has shape {a.shape}, expected {np.shape(ref)}")
        leaves.append(jnp.asarray(a, dtype=jnp.asarray(ref).dtype))
    return jax.tree.unflatten(treedef, leaves), meta


# ------------------------------------------------------------------ training checkpoints
#: The layout of a training checkpoint: arrays ``(TrainState, best parameters or None)``,
#: metadata a :class:`CheckpointMeta`. Format 1 (before the TrainState) stored a dict.
FORMAT = 2


class CheckpointFormatError(ValueError):
    """A training checkpoint written in another layout (by another version of dpljax)."""


@dataclass
class RunRecord:
    """What a run has recorded so far, beyond its arrays: the per-epoch history, the losses of
    the unfinished epoch, the skipped steps, the best validation score and its step, the
    wall time spent training (over every start of the run) and, under ``train.minutes``, the
    re-plans that shortened the run to end inside its budget (:func:`dpljax.train.replan_epochs`)."""

    history: list = field(default_factory=list)
    epoch_losses: list = field(default_factory=list)
    skipped: int = 0
    skipped_batches: list = field(default_factory=list)
    best_score: float | None = None
    best_step: int | None = None
    elapsed_s: float = 0.0
    replans: list = field(default_factory=list)


@dataclass
class CheckpointMeta:
    """The JSON record of a training checkpoint (``checkpoints/last.npz``).

    ``step`` is the sampler's position (batch ``k`` is drawn from ``fold_in(key(seed), k)``);
    ``config`` the :class:`~dpljax.train.TrainConfig` as a dict; ``extra`` what the caller
    asks to be compared on resume (e.g. ``normalizer``, ``experiment``, ``data_fingerprint``),
    stored at the top level of the JSON for readers of the file.
    """

    step: int
    iters_per_epoch: int
    seed: int
    key_data: list
    config: dict
    basins: list | None
    record: RunRecord = field(default_factory=RunRecord)
    has_best: bool = False
    extra: dict = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> dict:
        own = {f.name for f in fields(self)} - {"record", "extra"}
        out = {k: getattr(self, k) for k in sorted(own)}
        out.update(asdict(self.record), epoch=self.step / self.iters_per_epoch,
                   sampler={"position": self.step, "rule": "batch of step k drawn with fold_in(key(seed), k)"})
        clash = set(self.extra) & set(out)
        if clash:
            raise ValueError(f"checkpoint metadata keys {sorted(clash)} are reserved")
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, d: dict, path: str | Path = "checkpoint") -> "CheckpointMeta":
        if d.get("format") != FORMAT:
            raise CheckpointFormatError(
                f"{path} is a training checkpoint of format {d.get('format')!r}; this dpljax reads "
                f"format {FORMAT} (start a new run directory; its weights.npz still evaluates)")
        d = dict(d)
        d.pop("epoch", None), d.pop("sampler", None)
        rec = RunRecord(**{f.name: d.pop(f.name) for f in fields(RunRecord) if f.name in d})
        own = {f.name: d.pop(f.name) for f in fields(cls) if f.name in d}
        return cls(**own, record=rec, extra=d)


def save_training(path: str | Path, state: Any, best: Any, meta: CheckpointMeta) -> None:
    """Write a training state PyTree, the best parameters so far (or ``None``) and ``meta``."""
    save_checkpoint(path, (state, best), replace(meta, has_best=best is not None).to_json())


def read_training_meta(path: str | Path) -> CheckpointMeta:
    """The typed metadata of a training checkpoint, without loading its arrays."""
    return CheckpointMeta.from_json(read_checkpoint_meta(path), path)


def load_training(path: str | Path, like: Any, like_best: Any) -> tuple[Any, Any, CheckpointMeta]:
    """``(state, best or None, meta)`` from a checkpoint of :func:`save_training`; ``like`` and
    ``like_best`` give the structure, shapes and dtypes (the parameters' tree for the best)."""
    meta = read_training_meta(path)
    (state, best), _ = load_checkpoint(path, (like, like_best if meta.has_best else None))
    return state, best, meta
