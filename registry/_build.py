"""Building a registry: parsed YAML -> entries and layers (:class:`_Builder`), and the layer helpers.

A layer maps flat dotted spec keys to ``(value, where it was set)``; :func:`_merge` stacks
them, later wins. :class:`registry.loader.Registry` uses the helpers to resolve and expand runs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from registry._common import (
    DEFAULT_PROJECT,
    RESERVED_KEYS,
    SET_SOURCE,
    TOP_LEVEL_KEYS,
    Entry,
    _Collector,
    _Ctx,
    _Layer,
    _Src,
    flatten,
    parse_set,
)
from registry._schema import _message, _resolve_path
from registry._yaml import _env_problem, _expand_tree, _line_for
from registry.errors import NO_VALUE, Problem, RegistryError, did_you_mean

# Run names join parts with '/' and groups append '@profile', so names must not hold those.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

# What _Builder.build hands to Registry: project, entries, base layers, profile layers.
_Parts = tuple[str, dict[str, Entry], dict[str, _Layer], dict[str, _Layer]]


# ----------------------------------------------------------------------------- building


class _Builder:
    """Turns the parsed YAML into entries and layers, reporting whatever is malformed."""

    def __init__(self, ctx: _Ctx, out: _Collector, search_schema: type[BaseModel] | None) -> None:
        self.ctx, self.out, self.search_schema = ctx, out, search_schema

    def build(self, data: Any) -> _Parts:
        """What :class:`registry.loader.Registry` is made of (it is not imported here, to avoid a cycle)."""
        doc = self._document(data)
        if doc is None:  # nothing else can be checked
            return DEFAULT_PROJECT, {}, {}, {}
        project = doc.get("project", DEFAULT_PROJECT)
        if not isinstance(project, str) or not project.strip():
            self._problem("project", project, "expected a non-empty name (the MLflow experiment)")
            project = DEFAULT_PROJECT
        experiments = self._mapping(doc.get("experiments"), "experiments", required=True)
        entries = {name: entry for name, body in experiments.items() if (entry := self._entry(name, body))}
        root = _merge(self._schema_defaults(), self._layer(self._mapping(doc.get("defaults"), "defaults"), "defaults"))
        profiles = {}
        for name, body in self._mapping(doc.get("profiles"), "profiles").items():
            self._check_name(name, f"profiles.{name}")
            profiles[name] = self._layer(self._mapping(body, f"profiles.{name}", required=True), f"profiles.{name}")
        own = {name: self._layer(experiments[name], f"experiments.{name}", RESERVED_KEYS) for name in entries}
        bases = {}
        for name, chain in self._chains(entries, list(experiments)).items():
            bases[name] = root
            for ancestor in reversed(chain):
                bases[name] = _merge(bases[name], own[ancestor])
        return project, entries, bases, profiles

    def _problem(self, key: str, value: object, message: str) -> None:
        self.out.add(Problem(self.ctx.file, _line_for(self.ctx.lines, key), key, value, message))

    def _document(self, data: Any) -> dict | None:
        if not isinstance(data, Mapping):
            shown = NO_VALUE if data is None else data
            self._problem("", shown, "expected a mapping with keys project, defaults, profiles, experiments (at least one experiment)")
            return None
        for name in data:
            if name not in TOP_LEVEL_KEYS:
                self._problem(str(name), data[name], "unknown key" + did_you_mean(str(name), TOP_LEVEL_KEYS))
        return dict(data)

    def _mapping(self, value: Any, key: str, *, required: bool = False) -> dict[str, Any]:
        if value is None and not required:
            return {}
        if not isinstance(value, Mapping) or (required and not value):
            self._problem(key, NO_VALUE if value is None else value, "expected a non-empty mapping" if required else "expected a mapping")
            return {}
        return {str(name): item for name, item in value.items()}

    def _check_name(self, name: str, key: str) -> None:
        if not _NAME_RE.match(name):
            self._problem(key, NO_VALUE, "names may hold only letters, digits, '_', '-' and '.' (runs are named NAME/seed=..., groups NAME@profile)")

    def _layer(self, tree: Mapping, prefix: str, reserved: tuple[str, ...] = ()) -> _Layer:
        """The spec sections of ``tree`` as a layer; unknown sections are reported and dropped."""
        fields = list(self.ctx.schema.model_fields)
        sections = {}
        for name, value in tree.items():
            if name in fields:
                sections[name] = value
            elif name not in reserved:
                self._problem(f"{prefix}.{name}", value, "unknown key" + did_you_mean(name, [*fields, *reserved]))
        layer: _Layer = {}
        for key, value in flatten(sections).items():
            source = f"{prefix}.{key}"
            if key in self.ctx.path_fields:
                value = _resolve_path(value, self.ctx.path.parent)
            layer[key] = (value, _Src(self.ctx.file, source, _line_for(self.ctx.lines, source)))
        return layer

    def _schema_defaults(self) -> _Layer:
        # Relative path defaults of the schema mean "next to experiments.yaml", like YAML values.
        base = self.ctx.path.parent
        return {key: (base / default, _Src(self.ctx.file, key, None)) for key, default in self.ctx.path_fields.items() if default is not None}

    def _entry(self, name: str, body: Any) -> Entry | None:
        key = f"experiments.{name}"
        self._check_name(name, key)
        if not isinstance(body, Mapping):
            self._problem(key, NO_VALUE if body is None else body, f"expected a mapping with a description and spec sections ({', '.join(self.ctx.schema.model_fields)})")
            return None
        description = body.get("description")
        if not isinstance(description, str) or not description.strip():
            shown = NO_VALUE if description is None else description
            self._problem(f"{key}.description" if "description" in body else key, shown, "missing description; add a one-line `description:` saying what this experiment tests")
        extends = body.get("extends")
        if extends is not None and not isinstance(extends, str):
            self._problem(f"{key}.extends", extends, "expected the name of another experiment")
            extends = None
        seeds = self._seeds(body.get("seeds"), f"{key}.seeds")
        grid = self._grid(body.get("grid"), f"{key}.grid", has_seeds=seeds is not None)
        search = self._search(body.get("search"), f"{key}.search")
        line = _line_for(self.ctx.lines, key)
        return Entry(name, description if isinstance(description, str) else "", extends, seeds, grid, search, line)

    def _seeds(self, value: Any, key: str) -> tuple[int, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
            self._problem(key, value, "expected a non-empty list of integer seeds, e.g. [0, 1, 2]")
            return None
        return tuple(value)

    def _grid(self, value: Any, key: str, *, has_seeds: bool) -> dict[str, tuple]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self._problem(key, value, "expected a mapping of dotted key -> list of values, e.g. {train.lr: [1e-4, 3e-4]}")
            return {}
        grid = {}
        for name, values in value.items():
            name = str(name)
            if not isinstance(values, list) or not values:
                self._problem(f"{key}.{name}", values, "expected a non-empty list of values to sweep")
            elif has_seeds and name == self.ctx.seed_key:
                self._problem(f"{key}.{name}", values, f"{name} is already swept by `seeds:`; drop it from the grid")
            else:
                grid[name] = tuple(values)
        return grid

    def _search(self, value: Any, key: str) -> object | None:
        if value is None or self.search_schema is None:
            return value
        try:
            return self.search_schema.model_validate(value)
        except ValidationError as exc:
            for err in exc.errors():
                parts = [str(part) for part in err["loc"]]
                full = ".".join([key, *parts])
                shown = NO_VALUE if err["type"] == "missing" or isinstance(err["input"], Mapping) else err["input"]
                self._problem(full, shown, _message(err, self.search_schema, parts, "missing required key"))
            return None

    def _chains(self, entries: dict[str, Entry], names: list[str]) -> dict[str, list[str]]:
        """Each experiment's extends chain ``[self, parent, ...]``; broken chains are reported and left out."""
        for name, entry in entries.items():
            if entry.extends is not None and entry.extends not in names:
                message = f"unknown experiment{did_you_mean(entry.extends, names)} (available: {', '.join(names)})"
                self._problem(f"experiments.{name}.extends", entry.extends, message)
        chains, cycles = {}, set()
        for name in entries:
            chain = [name]
            while (parent := entries[chain[-1]].extends) is not None and parent in entries and parent not in chain:
                chain.append(parent)
            if parent is None:
                chains[name] = chain
            elif parent in chain and frozenset(loop := chain[chain.index(parent):]) not in cycles:
                cycles.add(frozenset(loop))
                loop.append(parent)
                self._problem(f"experiments.{chain[-1]}.extends", parent, f"extends cycle: {' -> '.join(loop)}; remove one of these `extends`")
        return chains


# ----------------------------------------------------------------------------- layers


def _merge(acc: _Layer, layer: _Layer) -> _Layer:
    """Flat deep merge: a key replaces itself, everything under it and any scalar above it."""
    merged = dict(acc)
    for key, item in layer.items():
        below = [k for k in merged if k.startswith(key + ".")]
        if isinstance(item[0], Mapping) and not item[0] and below:
            continue  # merging an empty mapping changes nothing
        for k in [*below, *(k for k in merged if k == key or key.startswith(k + "."))]:
            del merged[k]
        merged[key] = item  # re-inserted last, so later layers come later in iteration order
    return merged


def _unflatten(flat: Mapping[str, Any]) -> dict:
    root: dict = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = root
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
    return root


def _choices(values: Sequence, key: str, ctx: _Ctx, *, resolve: bool) -> list[tuple[Any, _Src]]:
    """Seed or grid values, each with the line of its own list item."""
    return [
        (_resolve_path(value, ctx.path.parent) if resolve else value, _Src(ctx.file, key, _line_for(ctx.lines, f"{key}.{i}")))
        for i, value in enumerate(values)
    ]


def _set_layer(sets: Sequence[str], ctx: _Ctx, out: _Collector) -> _Layer:
    layer: _Layer = {}
    for item in sets:
        try:
            key, value = parse_set(item)
        except RegistryError as exc:
            for problem in exc.problems:
                out.add(problem)
            continue
        value = _expand_tree(value, key, lambda k, text, var: out.add(_env_problem(SET_SOURCE, None, k, text, var)))
        tree = flatten(value, key) if isinstance(value, Mapping) and value else {key: value}
        for flat_key, flat_value in tree.items():
            if flat_key in ctx.path_fields:
                flat_value = _resolve_path(flat_value, Path.cwd())  # typed by the user, so relative to where they are
            layer = _merge(layer, {flat_key: (flat_value, _Src(SET_SOURCE, flat_key, None))})
    return layer


def _note(profile: str | None, sets: Sequence[str], picked: Mapping[str, tuple[Any, _Src]]) -> str:
    """Context for problems that belong to the whole experiment rather than one value."""
    parts = [f"profile {profile!r}"] if profile else []
    parts += [f"--set {item}" for item in sets]
    parts += [f"{key}={_short(value)}" for key, (value, _) in picked.items()]
    return f" (with {', '.join(parts)})" if parts else ""



# ----------------------------------------------------------------------------- run names


def _get(spec: BaseModel, key: str) -> Any:
    value: Any = spec
    for part in key.split("."):
        value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    return value


def _short(value: Any) -> str:
    """Run-name form of a value: 0.0003, True, adamw."""
    return str(value.value if isinstance(value, Enum) else value)
