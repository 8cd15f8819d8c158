"""An LSTM emulator of a black box's outputs from its forcing and parameters.

Per day the emulator reads ``x_t = [forcing_t (normalised), params_t (normalised)]`` and
advances an LSTM cell; a linear head on ``[h_t, x_t]`` gives the outputs, normalised, which
are then de-normalised (the skip from ``x_t`` lets a flux answer the day's forcing at once,
as runoff answers rain; it starts at zero). Forcing ``prcp`` (any name listed in :data:`LOG_FORCING`) goes first through
``log10(sqrt(x) + 0.1)``; every forcing is then z-scored with the training data's statistics;
a parameter ``p`` in ``[lo, hi]`` enters as ``2 (p - lo)/(hi - lo) - 1``; each output ``y`` is
learned as ``(y - mean)/std``.

The computation is written once, as pure functions of the weights (:func:`encode`,
:func:`cell`, :func:`readout`), and used twice: by :class:`EmulatorLSTM` (a Flax NNX module,
what :func:`train_emulator` trains, with the input projection of all days as one product and
the project's LSTM recurrence, :func:`dpljax.nets.lstm.lstm_recurrence`) and by the frozen
process model :class:`~dpljax.surrogate.Surrogate` (one day per protocol ``step``; the state
is ``(h, c)``). Tests check that the two agree.

An :class:`Emulator` is a :class:`EmulatorSpec` (names, bounds, normalisation, size; hashable,
saved as JSON) plus its weights (saved as ``.npz``): :meth:`Emulator.save`, :func:`load_emulator`.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..nets.lstm import lstm_recurrence, lstm_recurrence_from

LOG_FORCING = ("prcp", "precipitation", "total_precipitation_sum")
WEIGHT_NAMES = ("w_ih", "w_hh", "b", "w_out", "w_x", "b_out")
FORMAT = "dpljax-emulator/1"


@dataclass(frozen=True)
class EmulatorSpec:
    """What an emulator reads and emits, and its normalisation (all tuples: hashable, so a
    process model can hold it as static metadata)."""

    param_names: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]
    forcing: tuple[str, ...]
    outputs: tuple[str, ...]
    forcing_log: tuple[bool, ...]
    forcing_mean: tuple[float, ...]
    forcing_std: tuple[float, ...]
    out_mean: tuple[float, ...]
    out_std: tuple[float, ...]
    hidden: int
    model_name: str = ""
    #: per output, the parameter it is learned relative to ("" for none): the network predicts
    #: ``y / p`` (normalised) and the readout multiplies by ``p`` (e.g. ``sm1`` relative to ``w1max``)
    out_scale: tuple[str, ...] = ()
    #: per parameter, True: it enters on a log scale, ``2 (log p - log lo)/(log hi - log lo) - 1``
    param_log: tuple[bool, ...] = ()

    @property
    def n_in(self) -> int:
        return len(self.forcing) + len(self.param_names)

    @property
    def bounds_dict(self) -> dict[str, tuple[float, float]]:
        return dict(zip(self.param_names, self.bounds))

    def to_json(self) -> dict:
        return {"format": FORMAT, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}}

    @classmethod
    def from_json(cls, d: Mapping) -> "EmulatorSpec":
        if d.get("format") != FORMAT:
            raise ValueError(f"not an emulator spec of format {FORMAT!r} (format {d.get('format')!r})")
        kw = {k: v for k, v in d.items() if k != "format"}
        kw["bounds"] = tuple(tuple(float(a) for a in b) for b in kw["bounds"])
        for k in ("param_names", "forcing", "outputs"):
            kw[k] = tuple(str(v) for v in kw[k])
        kw["forcing_log"] = tuple(bool(v) for v in kw["forcing_log"])
        for k in ("forcing_mean", "forcing_std", "out_mean", "out_std"):
            kw[k] = tuple(float(v) for v in kw[k])
        kw["hidden"] = int(kw["hidden"])
        kw["out_scale"] = tuple(str(v) for v in kw.get("out_scale", ()))
        kw["param_log"] = tuple(bool(v) for v in kw.get("param_log", ()))
        return cls(**kw)

    def scale_index(self) -> tuple[int, ...]:
        """Per output, the index of the parameter it is relative to, or -1."""
        names = self.out_scale or ("",) * len(self.outputs)
        return tuple(self.param_names.index(n) if n else -1 for n in names)


def make_spec(bounds: Mapping[str, tuple[float, float]], forcing_names, outputs, forcing: Mapping[str, Any],
              out_values: Mapping[str, Any], hidden: int = 64, model_name: str = "",
              out_scale: Mapping[str, str] | None = None, param_log=()) -> EmulatorSpec:
    """A spec whose normalisation statistics come from training data: ``forcing[name]`` and
    ``out_values[name]`` arrays of any shape (NaN ignored; for an output in ``out_scale``,
    the values of ``y / p``). ``out_scale``: ``{output: parameter}``; ``param_log``: names of
    parameters to normalise on a log scale (their bounds must be positive)."""
    out_scale = dict(out_scale or {})
    bad = [f"{k} (relative to {v!r})" for k, v in out_scale.items() if k not in outputs or v not in bounds]
    if bad:
        raise ValueError(f"out_scale: unknown output or parameter: {', '.join(bad)}")
    bad = [n for n in param_log if n not in bounds or bounds[n][0] <= 0]
    if bad:
        raise ValueError(f"param_log: {bad} are not parameters with positive bounds")
    logs = tuple(n in LOG_FORCING for n in forcing_names)
    fm, fs = [], []
    for n, lg in zip(forcing_names, logs):
        v = np.asarray(forcing[n], np.float64)
        v = _log_sqrt_np(v) if lg else v
        fm.append(float(np.nanmean(v)))
        fs.append(float(np.nanstd(v)) or 1.0)
    om = [float(np.nanmean(out_values[k])) for k in outputs]
    os_ = [float(np.nanstd(out_values[k])) or 1.0 for k in outputs]
    return EmulatorSpec(tuple(bounds), tuple((float(a), float(b)) for a, b in bounds.values()),
                        tuple(forcing_names), tuple(outputs), logs, tuple(fm), tuple(fs), tuple(om), tuple(os_),
                        int(hidden), model_name,
                        tuple(out_scale.get(k, "") for k in outputs) if out_scale else (),
                        tuple(n in param_log for n in bounds) if param_log else ())


def _log_sqrt_np(x):
    return np.log10(np.sqrt(np.maximum(x, 0.0)) + 0.1)


# ---------------------------------------------------------------- the computation, pure functions
def encode(spec: EmulatorSpec, params, forcing):
    """Normalised input ``(..., n_in)`` from ``params`` (a ``(..., P)`` array in
    ``spec.param_names`` order) and ``forcing`` (``(..., F)`` in ``spec.forcing`` order)."""
    dtype = jnp.result_type(params, forcing)
    f = jnp.asarray(forcing, dtype)
    logs = np.asarray(spec.forcing_log)
    if logs.any():
        fl = jnp.log10(jnp.sqrt(jnp.maximum(f, 0.0) + 1e-12) + 0.1)  # +1e-12: a finite gradient at 0
        f = jnp.where(logs, fl, f)
    f = (f - np.asarray(spec.forcing_mean)) / np.asarray(spec.forcing_std)
    lo, hi, lg = _param_box(spec)
    p = jnp.asarray(params, dtype)
    if lg.any():  # floored: a finite log (and gradient) for any value a caller passes
        p = jnp.where(lg, jnp.log(jnp.maximum(p, np.where(lg, 1e-3 * np.exp(lo), 0.0))), p)
    u = 2.0 * (p - lo) / (hi - lo) - 1.0
    return jnp.concatenate([f, u], -1).astype(dtype)


def _param_box(spec: EmulatorSpec):
    """Lower and upper ends of each parameter's (log-)scale, and which are logs."""
    lg = np.asarray(spec.param_log or (False,) * len(spec.param_names), bool)
    lo = np.array([b[0] for b in spec.bounds], np.float64)
    hi = np.array([b[1] for b in spec.bounds], np.float64)
    return np.where(lg, np.log(np.where(lg, lo, 1.0)), lo), np.where(lg, np.log(np.where(lg, hi, 1.0)), hi), lg


def denormalise(spec: EmulatorSpec, y, x):
    """Outputs in physical units from normalised ones ``y (..., n_out)`` and the day's input
    ``x (..., n_in)`` (an output relative to a parameter is multiplied by it, recovered from ``x``)."""
    y = y * np.asarray(spec.out_std, np.float32) + np.asarray(spec.out_mean, np.float32)
    idx = np.asarray(spec.scale_index())
    if (idx < 0).all():
        return y
    lo, hi, lg = _param_box(spec)
    nf = len(spec.forcing)
    j = np.maximum(idx, 0)
    v = lo[j] + (x[..., nf + j] + 1.0) / 2.0 * (hi[j] - lo[j])
    p = jnp.where(lg[j], jnp.exp(v), v)
    return jnp.where(idx >= 0, y * p.astype(y.dtype), y)


def cell(w_hh, h, c, gx):
    """One LSTM step (gate order i, f, g, o): ``gx`` is the input projection plus bias."""
    n = h.shape[-1]
    g = gx + h @ w_hh
    i = jax.nn.sigmoid(g[..., :n])
    f = jax.nn.sigmoid(g[..., n:2 * n])
    gg = jnp.tanh(g[..., 2 * n:3 * n])
    o = jax.nn.sigmoid(g[..., 3 * n:])
    c = f * c + i * gg
    return o * jnp.tanh(c), c


def readout(spec: EmulatorSpec, w_out, w_x, b_out, h, x):
    """De-normalised outputs ``(..., n_out)`` from the hidden state ``h`` and the day's input
    ``x`` (a linear skip: a flux such as runoff answers today's rain at once)."""
    return denormalise(spec, h @ w_out + x @ w_x + b_out, x)


def init_weights(spec: EmulatorSpec, key, dtype=jnp.float32) -> dict[str, jax.Array]:
    """Random weights (LeCun-normal input, orthogonal recurrent, forget-gate bias 1)."""
    h = spec.hidden
    k1, k2, k3 = jax.random.split(key, 3)
    return {"w_ih": nnx.initializers.lecun_normal()(k1, (spec.n_in, 4 * h), dtype),
            "w_hh": nnx.initializers.orthogonal()(k2, (h, 4 * h), dtype),
            "b": jnp.zeros((4 * h,), dtype).at[h:2 * h].set(1.0),
            "w_out": nnx.initializers.lecun_normal()(k3, (h, len(spec.outputs)), dtype) * 0.1,
            "w_x": jnp.zeros((spec.n_in, len(spec.outputs)), dtype),
            "b_out": jnp.zeros((len(spec.outputs),), dtype)}


def forward(w: Mapping[str, Any], x):
    """Normalised outputs ``(B, T, n_out)`` of inputs ``x (B, T, n_in)`` from zero state: the
    input projection of every day as one product, then the recurrence of :func:`cell`."""
    gx = jnp.swapaxes(x @ w["w_ih"] + w["b"], 0, 1)          # (T, B, 4H), time-major
    _, hs = lstm_recurrence(gx, w["w_hh"])
    return jnp.swapaxes(hs, 0, 1) @ w["w_out"] + x @ w["w_x"] + w["b_out"]  # (B, T, n_out)


def forward_after(w: Mapping[str, Any], x, detach: int):
    """Normalised outputs of days ``detach:`` only, ``(B, T - detach, n_out)``: the first
    ``detach`` days run forward only (stop-gradiented weights, no residuals kept), and the rest
    starts from their final state ``(h, c)`` as a constant, so the backward pass covers the later
    days only (truncated back-propagation at the warm-up's end; values as :func:`forward`)."""
    sg = jax.lax.stop_gradient
    gx_w = jnp.swapaxes(x[:, :detach] @ sg(w["w_ih"]) + sg(w["b"]), 0, 1)
    (h, c), _ = lstm_recurrence(gx_w, sg(w["w_hh"]))
    xv = x[:, detach:]
    gx = jnp.swapaxes(xv @ w["w_ih"] + w["b"], 0, 1)
    _, hs = lstm_recurrence_from(gx, w["w_hh"], sg(h), sg(c))
    return jnp.swapaxes(hs, 0, 1) @ w["w_out"] + xv @ w["w_x"] + w["b_out"]


class EmulatorLSTM(nnx.Module):
    """The emulator as a Flax NNX module: ``x (B, T, n_in)`` (from :func:`encode`) ->
    normalised outputs ``(B, T, n_out)``, from zero state."""

    def __init__(self, spec: EmulatorSpec, *, rngs: nnx.Rngs, weights: Mapping[str, Any] | None = None):
        w = init_weights(spec, rngs.params()) if weights is None else weights
        for k in WEIGHT_NAMES:
            setattr(self, k, nnx.Param(jnp.asarray(w[k])))

    def __call__(self, x, detach: int = 0):
        """Outputs of all days; with ``detach > 0`` of days ``detach:`` only, the earlier ones
        run forward only (:func:`forward_after`)."""
        w = {k: getattr(self, k)[...] for k in WEIGHT_NAMES}
        return forward_after(w, x, int(detach)) if detach else forward(w, x)

    def weights(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(getattr(self, k)[...]) for k in WEIGHT_NAMES}


@dataclass(frozen=True, eq=False)
class Emulator:
    """A trained emulator: its spec and weights (NumPy)."""

    spec: EmulatorSpec
    weights: Mapping[str, np.ndarray]

    def predict(self, x, forcing: Mapping[str, Any], chunk: int = 64) -> dict[str, np.ndarray]:
        """Outputs ``{name: (N, T)}`` of parameter sets ``x (N, P)`` on ``forcing[name] (N, T)``,
        from zero state (each run from its first day), in NumPy. Runs go in chunks of
        ``chunk`` (the last one padded), so one compiled program serves any ``N``."""
        x = np.asarray(x, np.float32)
        f = np.stack([np.asarray(forcing[n], np.float32) for n in self.spec.forcing], -1)
        fwd = _predict_fn(self.spec)
        w = {k: jnp.asarray(v) for k, v in self.weights.items()}
        parts = []
        for i in range(0, len(x), chunk):
            xi, fi = x[i:i + chunk], f[i:i + chunk]
            pad = chunk - len(xi)
            if pad:
                xi = np.concatenate([xi, np.repeat(xi[-1:], pad, 0)])
                fi = np.concatenate([fi, np.repeat(fi[-1:], pad, 0)])
            parts.append(np.asarray(fwd(w, xi, fi))[:chunk - pad])
        y = np.concatenate(parts, 0)
        return {k: y[..., j] for j, k in enumerate(self.spec.outputs)}

    def save(self, path: str | Path) -> Path:
        """``path/spec.json`` and ``path/weights.npz`` (written atomically)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / ".weights.tmp.npz"
        np.savez(tmp, **{k: np.asarray(v) for k, v in self.weights.items()})
        tmp.replace(path / "weights.npz")
        tmpj = path / ".spec.tmp.json"
        tmpj.write_text(json.dumps(self.spec.to_json(), indent=1))
        tmpj.replace(path / "spec.json")
        return path


def load_emulator(path: str | Path) -> Emulator:
    """The emulator saved by :meth:`Emulator.save` in ``path``."""
    path = Path(path)
    if not (path / "spec.json").exists() or not (path / "weights.npz").exists():
        raise FileNotFoundError(f"{path} holds no emulator (spec.json and weights.npz expected)")
    spec = EmulatorSpec.from_json(json.loads((path / "spec.json").read_text()))
    with np.load(path / "weights.npz") as z:
        w = {k: z[k] for k in WEIGHT_NAMES}
    h, n_in, n_out = spec.hidden, spec.n_in, len(spec.outputs)
    want = {"w_ih": (n_in, 4 * h), "w_hh": (h, 4 * h), "b": (4 * h,), "w_out": (h, n_out), "w_x": (n_in, n_out),
            "b_out": (n_out,)}
    bad = [f"{k} {w[k].shape} (expected {s})" for k, s in want.items() if w[k].shape != s]
    if bad:
        raise ValueError(f"{path}: weights do not match spec.json: {', '.join(bad)}")
    return Emulator(spec, w)


@functools.lru_cache(maxsize=16)
def _predict_fn(spec: EmulatorSpec):
    @jax.jit
    def fwd(w, x, f):
        inp = encode(spec, jnp.broadcast_to(x[:, None, :], f.shape[:2] + x.shape[-1:]), f)
        return denormalise(spec, forward(w, inp), inp)

    return fwd


# -------------------------------------------------------------------------------- training
@dataclass
class TrainData:
    """Emulator training data: parameter sets ``x (N, P)``, each run's basin ``basin (N,)``,
    the basins' forcing ``forcing[name] (B, T)`` and the black box's outputs ``y[name] (N, T)``."""

    x: np.ndarray
    basin: np.ndarray
    forcing: dict
    y: dict


@dataclass
class EmulatorFit:
    emulator: Emulator
    history: list
    seconds: float
    steps: int


def train_emulator(data: TrainData, bounds: Mapping[str, tuple[float, float]], forcing_names, outputs, *,
                   hidden: int = 64, steps: int = 1000, batch: int = 32, learning_rate: float = 3e-3,
                   window: int | None = None, warmup: int = 0, seed: int = 0, model_name: str = "",
                   log: Callable | None = None, log_every: int = 100, checkpoint: str | Path | None = None,
                   checkpoint_every: int = 500, out_scale: Mapping[str, str] | None = None,
                   param_log=(), warmup_grad: bool = True) -> EmulatorFit:
    """Train an :class:`EmulatorLSTM` of ``outputs`` on ``data`` with Adam (cosine-decayed
    learning rate, gradient norm clipped at 1): MSE of the normalised outputs, averaged over
    outputs, after ``warmup`` days of each training sequence. ``window``: train on random
    windows of that many days (each from zero state, so ``warmup`` should cover the model's
    memory), ``None``: on whole runs. Runs with any NaN output (failed runs) are left out.

    ``checkpoint``: a ``.npz`` file written every ``checkpoint_every`` steps (atomically) with
    the weights, optimiser state, random key and step; a call that finds it continues from it
    and ends with exactly the weights of an uninterrupted run. It is refused when it belongs to
    another training (other data size, settings or spec).

    ``out_scale``: ``{output: parameter}``, an output learned relative to a parameter (the
    network predicts ``y / p``, normalised; e.g. a layer's water content relative to the
    layer's capacity, a saturation of the same order in every run); ``param_log``: names of
    parameters that enter on a log scale (scale parameters spanning orders of magnitude).
    ``warmup_grad=False``: the ``warmup`` days run forward only and the gradient is truncated
    at their end (the backward pass covers the loss days only: about a third less time per
    step with a window twice the warm-up; the loss values are the same)."""
    t0 = time.perf_counter()
    good = np.all([np.all(np.isfinite(data.y[k]), axis=1) for k in outputs], axis=0)
    idx_all = np.flatnonzero(good)
    if len(idx_all) == 0:
        raise ValueError("no run without NaN outputs to train on")
    used_basins = np.unique(data.basin[idx_all])
    out_scale = dict(out_scale or {})
    names = tuple(bounds)
    bad = [f"{k} (relative to {v!r})" for k, v in out_scale.items() if k not in outputs or v not in names]
    if bad:
        raise ValueError(f"out_scale: unknown output or parameter: {', '.join(bad)}")
    # the learned targets: y, or y / p for an output relative to a parameter p
    target = {k: (data.y[k] / data.x[:, names.index(out_scale[k])][:, None] if k in out_scale else data.y[k])
              for k in outputs}
    spec = make_spec(bounds, forcing_names, outputs, {n: data.forcing[n][used_basins] for n in forcing_names},
                     {k: target[k][idx_all] for k in outputs}, hidden, model_name, out_scale, tuple(param_log))
    n_t = next(iter(data.y.values())).shape[1]
    win = n_t if window is None else int(min(window, n_t))
    if not 0 <= warmup < win:
        raise ValueError(f"warmup ({warmup}) must be less than the training window ({win} days)")
    f_all = jnp.asarray(np.stack([data.forcing[n] for n in forcing_names], -1), jnp.float32)        # (B, T, F)
    x_all = jnp.asarray(data.x, jnp.float32)                                                         # (N, P)
    y_all = jnp.asarray(np.stack([(target[k] - m) / s for k, m, s in zip(outputs, spec.out_mean, spec.out_std)],
                                 -1), jnp.float32)                                                     # (N, T, O)
    basin_all = jnp.asarray(data.basin, jnp.int32)
    net = EmulatorLSTM(spec, rngs=nnx.Rngs(seed))
    graphdef, theta = nnx.split(net)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1), alpha=0.05)))
    opt_state = tx.init(theta)

    # The data are arguments of the compiled step, not constants folded into it (compiling
    # a program with a large array baked in costs seconds per megabyte).
    arrays = (f_all, x_all, y_all, basin_all, jnp.asarray(idx_all, jnp.int32))

    def loss_fn(theta, arrays, runs, start):
        f_all, x_all, y_all, basin_all, _ = arrays
        fwin = jax.vmap(lambda b, s: jax.lax.dynamic_slice_in_dim(f_all[b], s, win, 0))(basin_all[runs], start)
        ywin = jax.vmap(lambda r, s: jax.lax.dynamic_slice_in_dim(y_all[r], s, win, 0))(runs, start)
        xin = encode(spec, jnp.broadcast_to(x_all[runs][:, None, :], (batch, win, x_all.shape[1])), fwin)
        if warmup_grad or warmup == 0:
            pred = nnx.merge(graphdef, theta)(xin)[:, warmup:]
        else:
            pred = nnx.merge(graphdef, theta)(xin, detach=warmup)
        return jnp.mean((pred - ywin[:, warmup:]) ** 2)

    @jax.jit
    def train_step(theta, opt_state, key, arrays):
        k1, k2 = jax.random.split(key)
        idx = arrays[-1]
        runs = idx[jax.random.randint(k1, (batch,), 0, idx.shape[0])]
        start = jax.random.randint(k2, (batch,), 0, n_t - win + 1)
        loss, g = jax.value_and_grad(loss_fn)(theta, arrays, runs, start)
        upd, opt_state = tx.update(g, opt_state, theta)
        return optax.apply_updates(theta, upd), opt_state, loss

    key = jax.random.key(seed)
    history, run_loss, start = [], [], 0
    ident = json.dumps({"spec": spec.to_json(), "steps": steps, "batch": batch, "learning_rate": learning_rate,
                        "window": win, "warmup": warmup, "seed": seed,
                        **({} if warmup_grad else {"warmup_grad": False}), "runs": int(len(idx_all)),
                        "y": float(np.asarray(y_all[:, ::97]).sum())}, sort_keys=True)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        with np.load(ckpt) as z:
            if str(z["ident"]) != ident:
                raise ValueError(f"{ckpt} is the checkpoint of another emulator training (other data, "
                                 "settings or spec); remove it or pass another path")
            treedef = jax.tree.structure((theta, opt_state))
            n = treedef.num_leaves
            theta, opt_state = jax.tree.unflatten(treedef, [jnp.asarray(z[f"leaf_{i}"]) for i in range(n)])
            key = jax.random.wrap_key_data(jnp.asarray(z["key"]))
            start, history = int(z["step"]), json.loads(str(z["history"]))
        if log is not None:
            log(f"emulator: resumed from {ckpt} at step {start}")

    def save(step):
        tmp = ckpt.with_name(ckpt.name + ".tmp.npz")
        leaves = {f"leaf_{i}": np.asarray(v) for i, v in enumerate(jax.tree.leaves((theta, opt_state)))}
        np.savez(tmp, ident=ident, key=np.asarray(jax.random.key_data(key)), step=step,
                 history=json.dumps(history), **leaves)
        tmp.replace(ckpt)

    for step in range(start, steps):
        key, k = jax.random.split(key)
        theta, opt_state, loss = train_step(theta, opt_state, k, arrays)
        run_loss.append(loss)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            mean = float(np.mean(np.asarray(jnp.stack(run_loss))))
            history.append({"step": step + 1, "loss": mean, "seconds": round(time.perf_counter() - t0, 2)})
            run_loss = []
        if ckpt is not None and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            save(step + 1)
        if log is not None and ((step + 1) % log_every == 0 or step + 1 == steps):
            log(f"emulator step {step + 1}/{steps}: normalised MSE {history[-1]['loss']:.4f}")
    w = nnx.merge(graphdef, theta).weights()
    return EmulatorFit(Emulator(spec, w), history, time.perf_counter() - t0, steps)


def emulator_errors(emulator: Emulator, data: TrainData, idx=None, *, warmup: int = 0) -> dict:
    """Per output: RMSE of the emulator against the black box on runs ``idx`` after ``warmup``
    days, the standard deviation of that output over those runs and days, and their ratio
    (``nrmse``; 1 is the error of predicting the mean). Runs with NaN outputs are skipped."""
    idx = np.arange(len(data.x)) if idx is None else np.asarray(idx)
    spec = emulator.spec
    good = np.all([np.all(np.isfinite(data.y[k][idx]), axis=1) for k in spec.outputs], axis=0)
    idx = idx[good]
    if len(idx) == 0:
        return {"n_runs": 0}
    pred = emulator.predict(data.x[idx], {n: data.forcing[n][data.basin[idx]] for n in spec.forcing})
    out = {"n_runs": int(len(idx))}
    for k in spec.outputs:
        y, p = data.y[k][idx][:, warmup:], pred[k][:, warmup:]
        rmse = float(np.sqrt(np.mean((p - y) ** 2)))
        sd = float(np.std(y))
        out[k] = {"rmse": rmse, "std": sd, "nrmse": rmse / sd if sd > 0 else float("nan")}
    return out
