"""dpljax: differentiable parameter learning (dPL) for hydrological process models in JAX.

A neural network learns the mapping from basin attributes (and optionally forcings) to the
parameters of a differentiable process model (HBV, GR4J, ...), trained through the model on many basins
at once (Tsai et al. 2021, Nature Communications 12, 5988).
"""
from . import data, losses, metrics, models, nets, surrogate
from .dpl import DPL
from .config import ConfigError
from .evaluate import evaluate_run
from .experiment import build, run_experiment
from .losses import LOSSES, NSEBatch, RMSECombined
from .dpl import Hydrology, NetworkSource, TableSource
from .models import HBV, MODELS, ProcessModel
from .models.hbv import run as run_hbv
from .nets import LSTM, LSTMMLP, MLP, NETS
from .params import ParameterSpace
from .train import TrainConfig, fit

__version__ = "0.1.0"

__all__ = ["DPL", "HBV", "Hydrology", "LOSSES", "LSTM", "LSTMMLP", "MLP", "MODELS", "NETS", "ConfigError",
           "NSEBatch", "NetworkSource", "ProcessModel", "TableSource", "ParameterSpace", "RMSECombined", "TrainConfig", "build", "data",
           "evaluate_run", "fit", "losses", "metrics", "models", "nets", "run_experiment", "run_hbv", "surrogate"]
