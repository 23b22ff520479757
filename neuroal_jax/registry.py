"""One registry helper for every pluggable family: model families, scores, top-ups, alignment metrics, plots.

    METRICS = Registry("alignment metric")

    @METRICS.register("l1")
    def l1(a_dense, a_sparse): ...

    METRICS["l1"]        # the function; an unknown name is a ValueError that lists the valid ones
    "l1" in METRICS, list(METRICS)

Registering a name twice is an error unless `override=True`. Two registries `keep_apart` share no name (the
alignment metrics and the output metrics: one `--alignment` name space), whatever `override` says.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._apart: list[Registry] = []

    def keep_apart(self, other: "Registry") -> None:
        """No name may be in both this registry and `other`."""
        self._apart.append(other)
        other._apart.append(self)

    def register(self, name: str, entry: T | None = None, *, override: bool = False) -> Callable | T:
        """Add `entry` under `name`; without `entry`, a decorator that adds the decorated object."""
        def add(obj: T) -> T:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
            clash = next((r for r in self._apart if name in r), None)
            if clash is not None:
                raise ValueError(f"{self.kind} {name!r}: the name is already a registered {clash.kind} (a name "
                                 "belongs to one kind only)")
            if name in self._entries and not override:
                raise ValueError(f"{self.kind} {name!r} is already registered (pass override=True to replace it)")
            self._entries[name] = obj
            return obj
        return add(entry) if entry is not None else add

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UsageError(f"unknown {self.kind} {name!r}; valid: {', '.join(self._entries)}") from None

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self):
        return list(self._entries.items())
