"""Small types the registry loader's modules share: where a value was set, the load context, problems.

Kept apart so :mod:`registry.loader`, :mod:`registry._yaml` and :mod:`registry._schema`
can all use them without importing each other in a circle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from registry.errors import Problem, RegistryError


@dataclass(frozen=True)
class _Src:
    """Where one value was set: a file (``--set`` for the command line), its dotted key there, a line."""

    file: str
    key: str
    line: int | None


_Layer = dict[str, tuple[Any, _Src]]  # flat dotted spec key -> (value, where it was set)


@dataclass(frozen=True)
class _Ctx:
    file: str  # the registry file as the user named it, for messages
    path: Path  # the same, absolute
    lines: Mapping[str, int]
    schema: type[BaseModel]
    seed_key: str
    path_fields: Mapping[str, Path | None]  # dotted key -> relative schema default to resolve


class _Collector:
    """Gathers problems, dropping repeats (a bad default is reported once, not per experiment)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self._found: dict[tuple, Problem] = {}

    def add(self, problem: Problem, note: str = "") -> None:
        ident = (problem.file, problem.line, problem.key, problem.message)
        if ident not in self._found:
            self._found[ident] = replace(problem, message=problem.message + note) if note else problem

    def raise_if_any(self) -> None:
        if self._found:
            ordered = sorted(self._found.values(), key=lambda p: (p.file != self.file, p.line or 0))
            raise RegistryError(ordered, self.file)
