"""Name -> network class, so configs can name a network instead of branching on it."""
NETS: dict = {}


def register_net(name: str):
    def deco(cls):
        if name in NETS:
            raise ValueError(f"network {name!r} is registered twice")
        NETS[name] = cls
        return cls

    return deco
