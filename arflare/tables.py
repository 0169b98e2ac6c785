"""Name -> entry tables (timm's registry idea) for arflare's concepts; torch-free.

Input modes (:data:`arflare.data.modes.INPUT_MODES`), model variants
(:data:`arflare.models.variants.VARIANTS`) and metrics (:data:`arflare.metrics.METRICS`) are
each one :class:`NamedTable` of frozen rows. Everything else (the spec's allowed values and
validators, CLI help, compare columns) reads the table when it needs it, so a row registered
at run time (a plugin, a test) is seen everywhere. A row may name its code as
``"package.module:function"``, imported only when first used, so the tables themselves stay
importable without torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

from arflare.errors import UsageError
from registry.errors import did_you_mean


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)


class NamedTable(Generic[T]):
    """Rows keyed by their ``name``, in registration order; an unknown name lists the known ones.

    Args:
        what: What a row is, for messages (``"input mode"``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._rows: dict[str, T] = {}

    def register(self, row: T) -> T:
        """Add ``row``; returns it, so a module can keep a reference.

        Raises:
            ValueError: a row of that name exists (unregister it first to replace it).
        """
        if row.name in self._rows:
            raise ValueError(f"{self.what} {row.name!r} is already registered; unregister it first to replace it")
        self._rows[row.name] = row
        return row

    def unregister(self, name: str) -> T:
        """Remove and return the row called ``name`` (a plugin unloading, a test cleaning up)."""
        return self._rows.pop(self[name].name)

    def __getitem__(self, name: str) -> T:
        try:
            return self._rows[name]
        except (KeyError, TypeError):
            raise UsageError(f"Unknown {self.what} {name!r}; available: {', '.join(self._rows)}"
                             f"{did_you_mean(str(name), self._rows)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> tuple[T, ...]:
        """Every row, in registration order."""
        return tuple(self._rows.values())


def resolve(ref: str | Callable) -> Callable:
    """The callable ``ref`` names: itself, or ``"package.module:attribute"`` imported now."""
    if callable(ref):
        return ref
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)
