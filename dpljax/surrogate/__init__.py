"""Models that cannot be rewritten: black boxes, their neural emulators, and the emulators as
process models (Tsai et al. 2021 learned VIC's parameters through an LSTM surrogate of VIC).

- :class:`BlackBox`, :func:`run_blackbox`: any NumPy model with declared parameters, forcing
  and outputs, run over many parameter sets in parallel processes, cached, failures reported.
- :mod:`~dpljax.surrogate.vic`: a VIC-style soil-moisture model in NumPy (:data:`VIC`), the
  example black box.
- :func:`latin_hypercube`, :func:`make_design`: parameter sets x basins to run.
- :func:`train_emulator`, :func:`emulator_errors`, :class:`Emulator`, :func:`load_emulator`:
  an LSTM emulator of chosen outputs from forcing + parameters, its error, save/load.
- :class:`Surrogate`: a frozen emulator as a registered process model (``"surrogate"``).
- :mod:`~dpljax.surrogate.workflow`: the steps end to end (sample, run, train, report, save).
"""
from . import vic
from .blackbox import FAILURE_KINDS, BlackBox, BlackBoxError, Failure, Runs, run_blackbox
from .emulator import (Emulator, EmulatorLSTM, EmulatorSpec, TrainData, emulator_errors, load_emulator,
                       train_emulator)
from .model import Surrogate
from .sampling import Design, latin_hypercube, make_design
from .workflow import build_surrogate, error_report, fit_on_design, run_design

#: The VIC-style model of :mod:`dpljax.surrogate.vic` as a (vectorised) black box.
VIC = BlackBox(vic.vic, vic.BOUNDS, vic.OUTPUTS, vic.FORCING, name="dpljax.surrogate.vic", vectorized=True)

__all__ = ["FAILURE_KINDS", "BlackBox", "BlackBoxError", "Design", "Emulator", "EmulatorLSTM", "EmulatorSpec",
           "Failure", "Runs", "Surrogate", "TrainData", "VIC", "emulator_errors", "latin_hypercube", "load_emulator",
           "make_design", "run_blackbox", "train_emulator", "vic", "build_surrogate", "error_report", "fit_on_design",
           "run_design"]
