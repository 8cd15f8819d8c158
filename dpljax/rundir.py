"""A run directory: one writer at a time, and files that agree with each other.

**The lock.** Every command that writes into a run directory (training, a PUB
cross-validation, a calibration, ``dpljax evaluate``) holds ``RUN_DIR/.dpljax.lock`` while it
runs: an exclusive ``flock`` on that file, which records the holder's pid, host, start time
and command. A second command on the same directory is refused at once with
:class:`RunDirLocked`, naming the holder, before it writes anything. The kernel drops the lock
when its process ends, however it ends (``kill -9`` included), so a lock left by a dead
process is stale by construction and is simply taken over; on a file system without
``flock`` the file is created with ``O_EXCL`` instead and taken over when its pid is no longer
alive on this host. Locks are re-entrant within a process (the command line takes the lock
before Hydra writes its own files; the library functions it calls take it again). The file is
removed when the lock is released.

**Consistency.** :func:`check_finished_run` refuses to score a run directory whose files
disagree: no ``summary.json`` (the run never finished), missing or unreadable weights or
normalisation statistics, or a ``config.yaml`` that differs from the configuration the
weights were trained with (recorded in ``weights.npz`` and in the training checkpoint).
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

LOCK_NAME = ".dpljax.lock"


class RunDirError(ValueError):
    """A run directory cannot be used as asked: its files disagree, or it is incomplete."""


class RunDirLocked(RunDirError):
    """Another process is writing into this run directory."""


_held: dict[str, list] = {}  # realpath -> [fd, depth, lock path]


def _holder_record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500]}


def _describe(raw: str) -> str:
    try:
        h = json.loads(raw)
        return (f"pid {h.get('pid')} on {h.get('host')}, started {h.get('started')}: "
                f"{h.get('command')!r}")
    except (ValueError, TypeError, AttributeError):
        return "a process that has not recorded itself yet"


def _refusal(run_dir: Path, holder: str) -> RunDirLocked:
    return RunDirLocked(f"{run_dir} is in use by another dpljax command ({holder}); nothing was "
                        "written. Wait for it to finish, or choose another run directory "
                        "(hydra.run.dir=...)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire_excl(path: Path, run_dir: Path) -> int:
    """The ``O_EXCL`` protocol, for file systems without ``flock``."""
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                raw = path.read_text()
                h = json.loads(raw)
            except FileNotFoundError:
                continue
            except ValueError:  # being written right now
                time.sleep(0.05)
                raw = path.read_text() if path.exists() else ""
                h = {}
            if h.get("host") == socket.gethostname() and isinstance(h.get("pid"), int) \
                    and not _pid_alive(h["pid"]):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # stale: its process is gone
                continue
            raise _refusal(run_dir, _describe(raw)) from None
        os.write(fd, json.dumps(_holder_record()).encode())
        os.fsync(fd)
        return fd
    raise RunDirLocked(f"could not take the lock {path}: it keeps changing hands")


def _acquire(run_dir: Path) -> int:
    import fcntl

    path = run_dir / LOCK_NAME
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                try:
                    raw = os.pread(fd, 4096, 0).decode(errors="replace")
                finally:
                    os.close(fd)
                raise _refusal(run_dir, _describe(raw)) from None
            os.close(fd)  # no flock on this file system
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size == 0:
                    path.unlink()
            return _acquire_excl(path, run_dir)
        # The previous holder may have removed the file between our open and flock: then we
        # hold a lock on a file nobody else will see; start again on the current one.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder_record()).encode(), 0)
        return fd
    raise RunDirLocked(f"could not take the lock {path}: it keeps changing hands")


def acquire(run_dir: str | Path) -> None:
    """Take (or re-enter) the lock of ``run_dir``, creating the directory if need be.
    Raises :class:`RunDirLocked` when another process holds it."""
    run_dir = Path(run_dir)
    key = os.path.realpath(run_dir)
    if key in _held:
        _held[key][1] += 1
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    _held[key] = [_acquire(run_dir), 1, run_dir / LOCK_NAME]


def release(run_dir: str | Path) -> None:
    key = os.path.realpath(Path(run_dir))
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _held[key]
    fd, _, path = entry
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # while still holding it: the next holder recreates it
    os.close(fd)


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the lock of ``run_dir`` (see the module doc) for the ``with`` block."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    acquire(run_dir)
    try:
        yield run_dir
    finally:
        release(run_dir)
        if created:  # a refused command leaves no empty directory behind
            with contextlib.suppress(OSError):
                run_dir.rmdir()


def holds_lock(run_dir: str | Path) -> bool:
    return os.path.realpath(Path(run_dir)) in _held


# ------------------------------------------------------------------------------ JSON
def jsonable(x: Any) -> Any:
    """``x`` with every NaN or infinite float replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", None) == 0:  # NumPy scalars
        return jsonable(x.item())
    return x


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (undefined numbers as ``null``), atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(obj), indent=1, allow_nan=False))
    os.replace(tmp, path)


# ------------------------------------------------------------------------ consistency
#: Keys of ``config.yaml`` that may differ from the configuration the weights were trained
#: with: where the data live, and settings of the training loop that do not change the model.
MAY_DIFFER = ("data.source", "train.resume", "train.progress", "train.devices", "train.checkpoint_every",
              "train.checkpoint_minutes", "train.valid_every", "train.nan_policy", "train.epochs")


def _resume_hint(run_dir: Path) -> str:
    return f"resume it with `dpljax train.resume=true hydra.run.dir={run_dir}`"


def read_config(run_dir: Path) -> dict:
    import yaml

    path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory (dpljax evaluate takes a run directory)")
    if not path.exists():
        raise RunDirError(f"{run_dir} is not a run directory: it has no config.yaml")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RunDirError(f"{path} is not valid YAML ({type(e).__name__}: {str(e).splitlines()[0]}); "
                          "restore the file the run wrote") from None
    if not isinstance(config, dict):
        raise RunDirError(f"{path} does not hold a run's configuration (got {type(config).__name__})")
    return config


def checkpoint_meta(path: Path, what: str) -> dict:
    """A checkpoint's metadata, after checking that every array in it can be read
    (a truncated or corrupt file is named as such)."""
    import zipfile

    import numpy as np

    if not path.exists():
        raise RunDirError(f"{path} is missing")
    try:
        with np.load(path) as z:
            meta = json.loads(z["__meta__"].tobytes().decode())
            for k in z.files:
                z[k]  # noqa: B018 - reading each array checks its CRC
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        raise RunDirError(f"{path} cannot be read: the {what} file is truncated or corrupt "
                          f"({type(e).__name__}: {e})") from None
    return meta


def check_finished_run(run_dir: str | Path) -> dict:
    """The config of a finished run directory, after checking that its files agree (see the
    module doc); raises :class:`RunDirError` naming what is wrong."""
    from .resume import changes

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    last = run_dir / "checkpoints" / ("calibration.npz" if config.get("calibrate") else "last.npz")
    if not (run_dir / "summary.json").exists():
        where = ""
        if last.exists():
            try:
                m = checkpoint_meta(last, "checkpoint")
                where = f" (its last checkpoint, {last}, is at step {m.get('step', m.get('chunk'))})"
            except RunDirError:
                pass
        raise RunDirError(f"{run_dir} holds a run that never finished: it has no summary.json{where}; "
                          + (_resume_hint(run_dir) if last.exists() else "start it again in a new run directory"))
    if config.get("calibrate"):
        if not (run_dir / "calibration.zarr").exists():
            raise RunDirError(f"{run_dir}/calibration.zarr is missing: the calibrated parameters are gone")
        if last.exists():
            from .calibrate.runner import MAY_CHANGE

            saved = checkpoint_meta(last, "checkpoint").get("config")
            if saved is not None:
                _compare(run_dir, saved, config, MAY_CHANGE + MAY_DIFFER, str(last))
        return config
    meta = checkpoint_meta(run_dir / "weights.npz", "weights")
    for name in ("normalizer.json",):
        p = run_dir / name
        if not p.exists():
            raise RunDirError(f"{p} is missing: the model cannot be run without its normalisation statistics")
        try:
            json.loads(p.read_text())
        except ValueError as e:
            raise RunDirError(f"{p} cannot be read ({e}): restore the file the run wrote") from None
    if meta.get("config") is not None:
        _compare(run_dir, meta["config"], config, MAY_DIFFER, f"{run_dir}/weights.npz")
    elif last.exists():  # older runs: the checkpoint's record of the experiment
        saved = checkpoint_meta(last, "checkpoint").get("experiment")
        if saved is not None:
            view = {s: config.get(s) for s in ("model", "net", "loss", "optim")}
            diffs = changes({s: saved.get(s) for s in view}, view)
            if diffs:
                _refuse_diffs(run_dir, diffs, str(last))
    return config


def _compare(run_dir: Path, saved: dict, config: dict, ignore, where: str) -> None:
    from .resume import changes

    diffs = changes(saved, config, ignore=ignore)
    if diffs:
        _refuse_diffs(run_dir, diffs, where)


def _refuse_diffs(run_dir: Path, diffs, where: str) -> None:
    shown = "; ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in diffs[:6])
    more = f" (+{len(diffs) - 6} more)" if len(diffs) > 6 else ""
    raise RunDirError(f"{run_dir}/config.yaml disagrees with the configuration the run was trained with "
                      f"(recorded in {where}): {shown}{more}. Was config.yaml edited? Restore it, or train "
                      "a new run with the new configuration")


def check_new_start(run_dir: Path, config: dict, checkpoint: Path) -> None:
    """Before a fresh (not resumed) start in ``run_dir``: refuse a directory that holds a
    finished run, or the beginning of a run with another configuration (one that was stopped
    before its first checkpoint; the same configuration simply starts again)."""
    from .resume import changes

    if (run_dir / "summary.json").exists() or (run_dir / "weights.npz").exists():
        raise RunDirError(f"{run_dir} already holds a finished run; choose a new run directory")
    saved_path = run_dir / "config.yaml"
    if saved_path.exists() and not checkpoint.exists():
        try:
            saved = read_config(run_dir)
        except RunDirError:
            return
        diffs = changes(saved, config, ignore=("train.resume", "train.progress"))
        if diffs:
            shown = "; ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in diffs[:6])
            raise RunDirError(f"{run_dir} holds the start of another run (config.yaml differs: {shown}), "
                              "stopped before its first checkpoint; choose a new run directory, or "
                              "delete that one")
