"""Process models as pure functions (no Flax, Optax or Hydra in here)."""
from . import hbv, routing
from .base import MODELS, Forcing, ProcessModel, register_model
from .hbv import HBV

__all__ = ["MODELS", "Forcing", "ProcessModel", "register_model", "HBV", "hbv", "routing"]
