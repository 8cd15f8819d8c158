"""Black-box process models: any NumPy callable with declared parameters, forcing and outputs,
run over many parameter sets in parallel processes, cached on disk, failures reported per set.

A black box is a Python function ``fn(params, forcing) -> outputs`` over NumPy arrays: not JAX,
not differentiable, possibly slow (a compiled model behind a subprocess call is fine).
``params`` maps each parameter name to a float, ``forcing`` maps each forcing name to a
``(T,)`` array, and ``outputs`` is a mapping of each output name to a ``(T,)`` array (or a
sequence of them in the order of :attr:`BlackBox.outputs`). With ``vectorized=True`` the
function takes ``k`` runs at once: ``params[name] (k,)``, ``forcing[name] (k, T)`` ->
``outputs[name] (k, T)``.

:func:`run_blackbox` runs parameter sets ``x (N, P)``, each on one basin's forcing, and never
drops a failure silently: a run that raises, returns NaN or inf, returns the wrong shape, or
exceeds ``timeout`` seconds is recorded in :attr:`Runs.failures` with its index, basin and
parameter set, its outputs are NaN and ``Runs.ok`` is False there; the caller decides
(:meth:`Runs.raise_on_failure`, or use ``Runs.ok`` to keep the good runs).

Processes: ``n_workers=0`` runs in this process; ``n_workers >= 1`` starts that many worker
processes with the ``spawn`` start method (no fork of a process that holds JAX's threads), so
``fn`` must be importable by name (defined at module level). Timeouts are enforced inside the
process running ``fn`` with ``SIGALRM`` (Unix; the main thread): Python code and NumPy between
calls are interrupted, a C routine that never returns to Python is not.

Cache: with ``cache_dir`` each successful run is stored as ``<cache_dir>/<key[:2]>/<key>.npz``,
``key`` a SHA-256 of the black box's identity (:attr:`BlackBox.fingerprint`: its name,
version, bounds, names and, when available, the source code of ``fn``), the parameter set
(float64 bytes) and the basin's forcing (float64 bytes). A second call with the same inputs
reads the cache and runs nothing. Failures are not cached: they are retried next time.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import inspect
import json
import math
import multiprocessing as mp
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

FAILURE_KINDS = ("exception", "nan", "timeout", "shape")


@dataclass(frozen=True, eq=False)
class BlackBox:
    """A NumPy model with its parameter names and bounds (physical units), forcing and outputs.

    Args:
      fn: ``fn(params, forcing) -> outputs`` (module docstring); picklable for worker processes.
      bounds: ordered ``name -> (lo, hi)``.
      outputs: names of the outputs, in order.
      forcing: names of the forcing variables ``fn`` reads.
      name: identity of the model for the cache (default: ``fn``'s module and qualified name).
      version: bump it when the model changes in a way its source code does not show (e.g. a
        compiled executable behind ``fn``); part of the cache key.
      vectorized: ``fn`` takes a batch of runs (module docstring).
    """

    fn: Callable
    bounds: Mapping[str, tuple[float, float]]
    outputs: tuple[str, ...]
    forcing: tuple[str, ...] = ("prcp", "tmean", "pet")
    name: str | None = None
    version: str = ""
    vectorized: bool = False

    def __post_init__(self):
        object.__setattr__(self, "bounds", {str(k): (float(lo), float(hi)) for k, (lo, hi) in dict(self.bounds).items()})
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "forcing", tuple(self.forcing))
        if not self.bounds or not self.outputs or not self.forcing:
            raise ValueError("a black box needs at least one parameter, output and forcing name")
        bad = [k for k, (lo, hi) in self.bounds.items() if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi)]
        if bad:
            raise ValueError(f"bounds must be finite with lo < hi; not so for {bad}")
        if self.name is None:
            object.__setattr__(self, "name", f"{getattr(self.fn, '__module__', '?')}.{getattr(self.fn, '__qualname__', repr(self.fn))}")

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.bounds)

    @property
    def lower(self) -> np.ndarray:
        return np.array([lo for lo, _ in self.bounds.values()])

    @property
    def upper(self) -> np.ndarray:
        return np.array([hi for _, hi in self.bounds.values()])

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the model's identity: name, version, declared names and bounds, and the
        source code of ``fn`` when Python can find it."""
        try:
            src = inspect.getsource(self.fn)
        except (OSError, TypeError):
            src = ""
        ident = json.dumps({"name": self.name, "version": self.version, "bounds": self.bounds,
                            "outputs": self.outputs, "forcing": self.forcing, "vectorized": self.vectorized,
                            "source": src}, sort_keys=True)
        return hashlib.sha256(ident.encode()).hexdigest()

    def __call__(self, params, forcing) -> dict[str, np.ndarray]:
        """One run: ``params`` a mapping (or a ``(P,)`` vector in :attr:`param_names` order),
        ``forcing[name] (T,)``; returns ``{output: (T,)}`` (not checked; see :func:`run_blackbox`)."""
        if not isinstance(params, Mapping):
            params = dict(zip(self.param_names, np.asarray(params, np.float64)))
        f = {k: np.asarray(forcing[k], np.float64) for k in self.forcing}
        if self.vectorized:
            out = _as_outputs(self, self.fn({k: np.asarray([v], np.float64) for k, v in params.items()},
                                            {k: v[None] for k, v in f.items()}))
            return {k: v[0] for k, v in out.items()}
        return _as_outputs(self, self.fn({k: float(v) for k, v in params.items()}, f))


@dataclass
class Failure:
    """One failed run: its row ``index`` in ``x``, its ``basin`` (index into the forcing rows),
    its parameter set, the ``kind`` (one of :data:`FAILURE_KINDS`) and a message."""

    index: int
    basin: int
    params: dict
    kind: str
    message: str

    def __str__(self) -> str:
        p = ", ".join(f"{k}={v:.6g}" for k, v in self.params.items())
        return f"run {self.index} (basin {self.basin}; {p}): {self.kind}: {self.message}"


@dataclass
class Runs:
    """Results of :func:`run_blackbox`: ``outputs[name] (N, T)`` (float64, NaN where a run
    failed), ``ok (N,)``, the :class:`Failure` of every failed run, and counts."""

    outputs: dict[str, np.ndarray]
    ok: np.ndarray
    failures: list[Failure] = field(default_factory=list)
    n_cached: int = 0
    n_computed: int = 0
    seconds: float = 0.0

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    def summary(self) -> dict:
        kinds = {k: sum(f.kind == k for f in self.failures) for k in FAILURE_KINDS}
        return {"n_runs": int(self.ok.size), "n_ok": int(self.ok.sum()), "n_failed": self.n_failed,
                "failures_by_kind": kinds, "n_cached": self.n_cached, "n_computed": self.n_computed,
                "seconds": round(self.seconds, 3)}

    def report(self, limit: int = 20) -> str:
        s = self.summary()
        lines = [f"{s['n_ok']} of {s['n_runs']} runs ok ({s['n_cached']} from the cache, {s['n_computed']} run); "
                 f"{s['n_failed']} failed" + (f" {s['failures_by_kind']}" if s["n_failed"] else "")]
        lines += [f"  {f}" for f in self.failures[:limit]]
        if self.n_failed > limit:
            lines.append(f"  ... and {self.n_failed - limit} more")
        return "\n".join(lines)

    def raise_on_failure(self) -> "Runs":
        if self.failures:
            raise BlackBoxError(self.report())
        return self


class BlackBoxError(RuntimeError):
    """Raised by :meth:`Runs.raise_on_failure`: the report of every failed run."""


class _Timeout(Exception):
    pass


def _as_outputs(bb: BlackBox, out) -> dict[str, np.ndarray]:
    if isinstance(out, Mapping):
        missing = [k for k in bb.outputs if k not in out]
        if missing:
            raise KeyError(f"the model returned no output {missing} (it returned {sorted(out)})")
        return {k: np.asarray(out[k], np.float64) for k in bb.outputs}
    seq = list(out) if not isinstance(out, np.ndarray) else [out[i] for i in range(out.shape[0])]
    if len(seq) != len(bb.outputs):
        raise ValueError(f"the model returned {len(seq)} outputs, expected {len(bb.outputs)} {list(bb.outputs)}")
    return {k: np.asarray(v, np.float64) for k, v in zip(bb.outputs, seq)}


def _alarm(_sig, _frame):
    raise _Timeout()


def _with_timeout(timeout, fn, *args):
    """``fn(*args)`` interrupted after ``timeout`` seconds (SIGALRM; none when not possible)."""
    if not timeout:
        return fn(*args)
    try:
        old = signal.signal(signal.SIGALRM, _alarm)
    except (ValueError, AttributeError):  # not the main thread, or no SIGALRM: cannot interrupt
        return fn(*args)
    signal.setitimer(signal.ITIMER_REAL, float(timeout))
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, old)


def _check_one(bb: BlackBox, out: dict, n_t: int):
    """``(status, payload)`` of one run's outputs: ``("ok", (n_out, T) array)`` or a failure."""
    bad_shape = [f"{k} {np.shape(v)}" for k, v in out.items() if np.shape(v) != (n_t,)]
    if bad_shape:
        return "shape", f"outputs must be ({n_t},); got {', '.join(bad_shape)}"
    arr = np.stack([out[k] for k in bb.outputs])
    if not np.all(np.isfinite(arr)):
        which = [k for k in bb.outputs if not np.all(np.isfinite(out[k]))]
        day = int(np.flatnonzero(~np.isfinite(arr).all(0))[0])
        return "nan", f"non-finite values in {which} (first on day {day})"
    return "ok", arr


def _run_single(bb: BlackBox, params: np.ndarray, forcing: dict, timeout):
    n_t = next(iter(forcing.values())).shape[-1]
    try:
        out = _with_timeout(timeout, bb, params, forcing)
    except _Timeout:
        return "timeout", f"exceeded {timeout:g} s"
    except Exception as e:  # noqa: BLE001 - any error of a user's model is a reported failure
        tb = traceback.format_exception_only(type(e), e)[-1].strip()
        return "exception", tb
    return _check_one(bb, out, n_t)


def _work(bb: BlackBox, params: np.ndarray, forcing: dict, timeout):
    """Worker task: runs of ``params (k, P)`` on ``forcing[name] (k, T)``; one
    ``(status, payload)`` per run. A vectorised model runs the batch in one call; if that call
    fails as a whole (an exception, a timeout), each run is retried alone to name the culprit."""
    k = params.shape[0]
    if bb.vectorized and k > 1:
        n_t = next(iter(forcing.values())).shape[-1]
        call = lambda: _as_outputs(bb, bb.fn(dict(zip(bb.param_names, params.T.copy())), forcing))
        try:
            out = _with_timeout(timeout * k if timeout else None, call)
        except (_Timeout, Exception):  # noqa: BLE001
            out = None
        if out is not None and all(np.shape(v) == (k, n_t) for v in out.values()):
            return [_check_one(bb, {n: v[i] for n, v in out.items()}, n_t) for i in range(k)]
    return [_run_single(bb, params[i], {n: v[i] for n, v in forcing.items()}, timeout) for i in range(k)]


def _digest(a: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(a, np.float64).tobytes()).digest()


def run_blackbox(bb: BlackBox, x, forcing: Mapping[str, Any], basin=None, *, n_workers: int = 0,
                 cache_dir: str | Path | None = None, timeout: float | None = None, chunk: int | None = None,
                 log: Callable | None = None) -> Runs:
    """Run ``bb`` on parameter sets ``x`` over basins' forcing.

    Args:
      x: ``(N, P)`` parameter sets in ``bb.param_names`` order (physical units), or a mapping
        of each name to ``(N,)``.
      forcing: ``{name: (B, T)}`` the forcing of ``B`` basins (the names of ``bb.forcing``).
      basin: ``(N,)`` index of the basin each set runs on; default ``arange(N)`` (``B == N``).
      n_workers: 0 runs here; ``>= 1`` that many spawned worker processes.
      cache_dir: where runs are cached (module docstring); ``None``: no cache.
      timeout: seconds one run may take (``None``: no limit).
      chunk: runs per task (default: 64 for a vectorised model, else enough for ~4 tasks per
        worker).
      log: called with a progress line per finished task, if given.

    Returns:
      :class:`Runs`. Parameter sets outside ``bb.bounds`` are run as given (the model decides).
    """
    t0 = time.perf_counter()
    names = bb.param_names
    if isinstance(x, Mapping):
        x = np.stack([np.asarray(x[k], np.float64) for k in names], -1)
    x = np.atleast_2d(np.asarray(x, np.float64))
    if x.shape[1] != len(names):
        raise ValueError(f"x must be (N, {len(names)}) for parameters {list(names)}, got {x.shape}")
    missing = [k for k in bb.forcing if k not in forcing]
    if missing:
        raise KeyError(f"{bb.name} needs forcing {list(bb.forcing)}; missing {missing}")
    f = {k: np.asarray(forcing[k], np.float64) for k in bb.forcing}
    n_b, n_t = next(iter(f.values())).shape
    if any(v.shape != (n_b, n_t) for v in f.values()):
        raise ValueError(f"every forcing must be (B, T) with the same B and T; got "
                         f"{ {k: v.shape for k, v in f.items()} }")
    n = x.shape[0]
    basin = np.arange(n) if basin is None else np.asarray(basin, np.int64)
    if basin.shape != (n,) or (n and (basin.min() < 0 or basin.max() >= n_b)):
        raise ValueError(f"basin must be ({n},) indices into the {n_b} forcing rows")

    outputs = np.full((n, len(bb.outputs), n_t), np.nan)
    status: list[tuple[str, str] | None] = [None] * n
    keys = [None] * n
    cache = Path(cache_dir) if cache_dir is not None else None
    n_cached = 0
    if cache is not None:
        fp = bb.fingerprint.encode()
        fdig = {b: b"".join(_digest(f[k][b]) for k in bb.forcing) for b in np.unique(basin)}
        for i in range(n):
            keys[i] = hashlib.sha256(fp + _digest(x[i]) + fdig[basin[i]]).hexdigest()
            path = cache / keys[i][:2] / f"{keys[i]}.npz"
            if path.exists():
                try:
                    with np.load(path) as z:
                        arr = z["outputs"]
                    if arr.shape == outputs.shape[1:]:
                        outputs[i] = arr
                        status[i] = ("ok", "")
                        n_cached += 1
                except (OSError, ValueError, KeyError):
                    pass  # an unreadable entry is recomputed (and rewritten)
    todo = np.array([i for i in range(n) if status[i] is None], np.int64)
    if chunk is None:
        chunk = 64 if bb.vectorized else max(1, math.ceil(len(todo) / (4 * max(n_workers, 1))))
    tasks = [todo[j:j + chunk] for j in range(0, len(todo), chunk)]

    def args(idx):
        return bb, x[idx], {k: v[basin[idx]] for k, v in f.items()}, timeout

    def finish(idx, res):
        for i, (st, payload) in zip(idx, res):
            if st == "ok":
                outputs[i] = payload
                status[i] = ("ok", "")
                if cache is not None:
                    d = cache / keys[i][:2]
                    d.mkdir(parents=True, exist_ok=True)
                    tmp = d / f".{keys[i]}.{os.getpid()}.tmp.npz"
                    np.savez(tmp, outputs=payload)
                    os.replace(tmp, d / f"{keys[i]}.npz")
            else:
                status[i] = (st, payload)
        if log is not None:
            done = sum(s is not None for s in status)
            log(f"black box {bb.name}: {done}/{n} runs done")

    if n_workers <= 0:
        for idx in tasks:
            finish(idx, _work(*args(idx)))
    elif tasks:
        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=min(n_workers, len(tasks)), mp_context=ctx) as pool:
            futs = {pool.submit(_work, *args(idx)): idx for idx in tasks}
            for fut in cf.as_completed(futs):
                idx = futs[fut]
                try:
                    res = fut.result()
                except Exception as e:  # noqa: BLE001 - a worker died (e.g. the model crashed it)
                    res = [("exception", f"worker process failed: {type(e).__name__}: {e}")] * len(idx)
                finish(idx, res)

    failures = []
    for i in range(n):
        st, msg = status[i]
        if st != "ok":
            outputs[i] = np.nan
            failures.append(Failure(int(i), int(basin[i]), dict(zip(names, map(float, x[i]))), st, msg))
    ok = np.array([s[0] == "ok" for s in status], bool)
    return Runs({k: outputs[:, j] for j, k in enumerate(bb.outputs)}, ok, failures, n_cached,
                len(todo), time.perf_counter() - t0)
