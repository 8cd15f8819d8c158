"""Name -> network class, so configs can name a network instead of branching on it."""
from ..registry import Registry

NETS: Registry = Registry("net")


def register_net(name: str):
    """Class decorator: ``@register_net("mlp")`` adds a network to :data:`NETS`."""
    return NETS.register(name)
