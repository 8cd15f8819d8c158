"""Flax NNX parameter networks. Each is built as ``cls(n_dynamic, n_static, n_out, **options,
rngs=...)`` and called as ``net(x_dynamic, x_static, *, key=None)``; a sequence network
(``is_sequence = True``) also takes ``detach`` (``train.warmup_grad=false``). A network that
declares ``takes_layout = True`` is also told ``dynamic_columns``, the output columns the
parameter space reads at every step (:class:`LSTMMLP` runs its LSTM for those only)."""
from .lstm import LSTM
from .lstm_mlp import LSTMMLP
from .mlp import MLP
from .registry import NETS, register_net

__all__ = ["LSTM", "LSTMMLP", "MLP", "NETS", "register_net"]
