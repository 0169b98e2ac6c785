"""What the registry loader's modules share: where a value was set, the load context, problems,
the file's reserved names, :class:`Entry`, and the public helpers the builder needs.

Kept apart so :mod:`registry.loader`, :mod:`registry._build`, :mod:`registry._yaml` and
:mod:`registry._schema` can all use them without importing each other in a circle;
:mod:`registry.loader` re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from registry.errors import NO_VALUE, Problem, RegistryError

RESERVED_KEYS = ("description", "extends", "seeds", "grid", "search")
TOP_LEVEL_KEYS = ("project", "defaults", "profiles", "experiments")
SET_SOURCE = "--set"  # the `file` of problems found in command-line overrides
DEFAULT_PROJECT = "arflare"


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


@dataclass(frozen=True)
class Entry:
    """An experiment as declared: its reserved keys (spec sections live in the layers)."""

    name: str
    description: str
    extends: str | None
    seeds: tuple[int, ...] | None
    grid: Mapping[str, tuple]
    search: object | None
    line: int | None


# ----------------------------------------------------------------------------- public helpers (re-exported by registry.loader)


def flatten(d: Mapping, prefix: str = "") -> dict[str, object]:
    """Turn nested mappings into dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``.

    Lists stay values; an empty mapping stays a value (``{}``) so nothing is lost.

    Args:
        d: The nested mapping.
        prefix: Dotted key prepended to every key.
    """
    flat: dict[str, object] = {}
    for name, value in d.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, key))
        else:
            flat[key] = value
    return flat


def parse_set(item: str) -> tuple[str, object]:
    """Split a ``--set KEY=VALUE`` item; the value is read as YAML (``true``, ``3``, ``[1, 2]``).

    The value is not typed here: the schema does that (PyYAML reads ``3e-4`` as a string,
    which the schema turns into a float).

    Raises:
        RegistryError: When the item has no ``=`` or the value is not valid YAML.
    """
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RegistryError([Problem(SET_SOURCE, None, item, NO_VALUE, "expected KEY=VALUE, e.g. --set train.lr=3e-4")])
    try:
        return key, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError([Problem(SET_SOURCE, None, key, text, f"value is not valid YAML ({getattr(exc, 'problem', exc)}); quote it")]) from None
