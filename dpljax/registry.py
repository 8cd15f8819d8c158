"""One name -> object registry for models, networks, losses, schedules and methods.

Configs name an entry (``model.name: hbv``) and the code looks it up here instead of
branching on the name; adding a model is adding one file and one ``@MODELS.register``.
Plain Python, no dependencies: process models import it too.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """A name that is not registered (the message lists the registered names)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class Registry(Generic[T]):
    """A named mapping ``name -> object`` filled by a decorator.

    ``what`` names the kind of entry in error messages (``"model"``, ``"net"``, ...).
    """

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("hbv")``; sets ``obj.name = name`` on classes."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = obj
            if isinstance(obj, type):
                obj.name = name  # type: ignore[attr-defined]
            return obj

        return deco

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise RegistryError(f"{self.what}.name={name!r} is not registered "
                                f"(choose from {sorted(self._entries)})")
        return self._entries[name]

    def get(self, name: str, default=None):
        return self._entries.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self):
        return self._entries.items()

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {self.names()})"
