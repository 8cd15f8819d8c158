"""Flax NNX parameter networks. Each takes ``(x_dynamic, x_static, *, key=None)``."""
from .lstm import LSTM
from .mlp import MLP
from .registry import NETS, register_net

__all__ = ["LSTM", "MLP", "NETS", "register_net"]
