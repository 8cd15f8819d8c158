"""Process models as pure functions (no Flax, Optax or Hydra in here).

Every model follows the protocol of :mod:`dpljax.models.base` and registers itself in
:data:`MODELS`; importing this package registers the built-in ones.
"""
from . import base, gr4j, hbv, routing
from .base import ADJOINTS, MODELS, Output, ProcessModel, register_model, run, simulate
from .gr4j import GR4J
from .hbv import HBV
from .routing import GammaRouting

__all__ = ["ADJOINTS", "MODELS", "GR4J", "GammaRouting", "HBV", "Output", "ProcessModel", "base", "gr4j", "hbv",
           "register_model", "routing", "run", "simulate"]
