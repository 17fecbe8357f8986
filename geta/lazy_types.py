"""Registrations keyed by a type of an optional library (transformers, ...), made without
importing it: each waits until its module has been imported, as it is by any model that
holds an instance, and is then handed to the registry with the type itself."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LazyTypes"]

T = TypeVar("T")


class LazyTypes(Generic[T]):
    """Pending ``(module path, type name, payload)`` registrations.

    Example:
        >>> pending = LazyTypes()
        >>> pending.add("collections", "OrderedDict", "payload")
        >>> seen = []
        >>> pending.resolve(lambda t, payload: seen.append((t.__name__, payload)))
        >>> seen, bool(pending)
        ([('OrderedDict', 'payload')], False)
    """

    def __init__(self) -> None:
        self._pending: list[tuple[str, str, T]] = []

    def add(self, module_path: str, type_name: str, payload: T) -> None:
        self._pending.append((module_path, type_name, payload))

    def __bool__(self) -> bool:
        return bool(self._pending)

    def resolve(self, register: Callable[[type, T], None]) -> None:
        """``register(type, payload)`` for every entry whose module is imported now; those
        entries are done."""
        for entry in list(self._pending):
            module_path, type_name, payload = entry
            library = sys.modules.get(module_path)
            if library is not None and hasattr(library, type_name):
                register(getattr(library, type_name), payload)
                self._pending.remove(entry)
