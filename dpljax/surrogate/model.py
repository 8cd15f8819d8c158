"""A frozen emulator as a process model: ``Surrogate`` registers as ``"surrogate"`` through the
same protocol as HBV and GR4J (:mod:`dpljax.models.base`), so dPL training, evaluation,
calibration and the command line use it with no special case, and gradients flow through it.

The protocol's ``step`` is one day, one basin, one component: here the state is the LSTM's
``(h, c)`` (``(hidden,)`` each, zero at the start), the parameters are the black box's
(physical units, within its bounds; static or time-varying alike), the forcing is the black
box's, and the fluxes are the emulated outputs, named as the black box names them. Which one
the chain returns as its prediction (what losses and evaluation compare with the data's
target) is ``output`` (default ``q`` when emulated, else the first output).

The weights are the model's PyTree leaves (``children``), so a compiled program takes them as
arguments. An emulator has no stores of its own whose water could be balanced:
``water_balance`` is False and ``storage``/``net_inflow`` raise.
"""
from __future__ import annotations

import functools
from pathlib import Path

import jax.numpy as jnp

from ..models.base import ProcessModel, float_dtype, record, register_model
from .emulator import WEIGHT_NAMES, Emulator, EmulatorSpec, cell, encode, init_weights, load_emulator, readout

SurrogateState = record("SurrogateState", ("h", "c"), "LSTM state of an emulator: h, c (hidden,) each.")


@functools.lru_cache(maxsize=64)
def _types(spec: EmulatorSpec):
    return (record("SurrogateParams", spec.param_names, "Parameters of the emulated black box (physical)."),
            record("SurrogateFluxes", spec.outputs, "Emulated outputs of the black box."),
            record("SurrogateForcing", spec.forcing, "Forcing of the emulated black box."))


@register_model("surrogate", static=("spec", "output", "adjoint"), children=WEIGHT_NAMES)
class Surrogate(ProcessModel):
    """A trained emulator (:class:`~dpljax.surrogate.Emulator`) as a process model.

    Args:
      path: a folder written by :meth:`Emulator.save` (``spec.json`` + ``weights.npz``); or
      emulator: an :class:`Emulator` in memory (one of the two).
      output: the emulated output the chain returns (``q`` if emulated, else the first).
      adjoint: ``"autodiff"`` or ``"checkpoint"`` (no hand-written adjoint).
    """

    State = SurrogateState
    default_routing = None
    water_balance = False

    def __init__(self, path: str | None = None, *, output: str = "", adjoint: str = "autodiff",
                 emulator: Emulator | None = None):
        if (path is None) == (emulator is None):
            raise ValueError("Surrogate needs exactly one of path (a saved emulator's folder) or emulator")
        emu = load_emulator(Path(path)) if path is not None else emulator
        self.spec = emu.spec
        out = output or ("q" if "q" in emu.spec.outputs else emu.spec.outputs[0])
        if out not in emu.spec.outputs:
            raise ValueError(f"output {out!r} is not emulated; the emulator's outputs are {list(emu.spec.outputs)}")
        self.output = out
        if adjoint not in ("autodiff", "checkpoint"):
            raise ValueError(f"a surrogate's adjoint is 'autodiff' or 'checkpoint', got {adjoint!r}")
        self.adjoint = adjoint
        for k in WEIGHT_NAMES:
            setattr(self, k, jnp.asarray(emu.weights[k]))

    @classmethod
    def random(cls, spec: EmulatorSpec, key, **kw) -> "Surrogate":
        """A surrogate with random weights (for tests and shapes; it emulates nothing)."""
        w = init_weights(spec, key)
        w["w_out"] = w["w_out"] * 10.0  # outputs that vary, not ~0
        return cls(emulator=Emulator(spec, w), **kw)

    @property
    def emulator(self) -> Emulator:
        return Emulator(self.spec, {k: getattr(self, k) for k in WEIGHT_NAMES})

    @property
    def Params(self):  # noqa: N802 - the protocol's name
        return _types(self.spec)[0]

    @property
    def Fluxes(self):  # noqa: N802
        return _types(self.spec)[1]

    @property
    def Forcing(self):  # noqa: N802
        return _types(self.spec)[2]

    @property
    def forcing(self) -> tuple[str, ...]:
        return self.spec.forcing

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return self.spec.bounds_dict

    def with_bounds(self, bounds) -> "Surrogate":
        """The emulator learned the black box only inside the bounds it was trained on: narrower
        bounds are fine, wider ones are refused (it would extrapolate unchecked)."""
        own = self.bounds
        wider = [f"{k} [{lo:g}, {hi:g}] (trained on [{own[k][0]:g}, {own[k][1]:g}])" for k, (lo, hi) in bounds.items()
                 if k in own and (lo < own[k][0] - 1e-9 * abs(own[k][0]) or hi > own[k][1] + 1e-9 * abs(own[k][1]))]
        if wider:
            raise ValueError(f"bounds wider than the surrogate's training range: {', '.join(wider)}")
        return self

    def initial_state(self, params):
        z = jnp.zeros((self.spec.hidden,), float_dtype(params[0]))
        return SurrogateState(z, z)

    def step(self, params, state, x):
        dtype = state.h.dtype
        p = jnp.stack([jnp.asarray(params[n], dtype) for n in self.spec.param_names])
        f = jnp.stack([jnp.asarray(x[n], dtype) for n in self.spec.forcing])
        w = {k: getattr(self, k).astype(dtype) for k in WEIGHT_NAMES}
        xin = encode(self.spec, p, f)
        h, c = cell(w["w_hh"], state.h, state.c, xin @ w["w_ih"] + w["b"])
        y = readout(self.spec, w["w_out"], w["w_x"], w["b_out"], h, xin).astype(dtype)
        return SurrogateState(h, c), self.Fluxes(*(y[j] for j in range(len(self.spec.outputs))))

    def storage(self, state):
        raise NotImplementedError("a surrogate has no stores of its own to balance (water_balance is False)")

    def net_inflow(self, x, fluxes):
        raise NotImplementedError("a surrogate has no stores of its own to balance (water_balance is False)")

    def __repr__(self) -> str:
        return (f"Surrogate(model={self.spec.model_name!r}, outputs={list(self.spec.outputs)}, "
                f"output={self.output!r}, hidden={self.spec.hidden})")
