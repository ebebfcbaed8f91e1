"""One registration mechanism, used for PASSES, TARGETS, FORMATS and DEVICES.

Keys are explicit kebab-case strings; order of anything lives elsewhere (a target's
pass tuple), never in registration order.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from edgeconv.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj
        return deco

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UserError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.items()))

    def __contains__(self, name: str) -> bool:
        return name in self._items


# Populated by the modules that define entries; `edgeconv.registrations.load()` imports them all.
PASSES: Registry = Registry("pass")
TARGETS: Registry = Registry("target")
DEVICES: Registry = Registry("device")
BACKENDS: Registry = Registry("device backend")  # keyed by DeviceKind value
FORMATS: Registry = Registry("artifact format")  # exporters/<format>/: one Format instance each
