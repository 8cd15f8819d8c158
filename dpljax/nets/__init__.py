"""Flax NNX parameter networks. Each is built as ``cls(n_dynamic, n_static, n_out, **options,
rngs=...)`` and called as ``net(x_dynamic, x_static, *, key=None)``; a sequence network
(``is_sequence = True``) also takes ``detach`` (``train.warmup_grad=false``). A network that
declares ``takes_layout = True`` is also told ``dynamic_columns``, the output columns the
parameter space reads at every step (:class:`LSTMMLP` runs its LSTM for those only). ``net.members > 1`` makes any of them an
ensemble trained in one program (:class:`Members`)."""
from .lstm import LSTM
from .lstm_mlp import LSTMMLP
from .members import Members, Stacked, raw_of
from .mlp import MLP
from .registry import NETS, register_net

__all__ = ["LSTM", "LSTMMLP", "MLP", "Members", "NETS", "Stacked", "raw_of", "register_net"]
