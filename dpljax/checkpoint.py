"""Checkpoint I/O: a PyTree's leaves and a JSON record in one ``.npz``, written atomically.

A crash or ``kill -9`` at any moment leaves the previous file intact: the file is written
beside its target, flushed to disk, renamed over it, and the directory entry is synced.
"""
from __future__ import annotations

import json
import os
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


def read_checkpoint_meta(path: str | Path) -> dict:
    """The metadata of a checkpoint, without loading its arrays."""
    with np.load(path) as z:
        return json.loads(z["__meta__"].tobytes().decode())


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
