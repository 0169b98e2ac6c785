"""Load ``experiments.yaml``: layered partial specs -> validated frozen specs -> runs.

Generic over the schema: the caller passes a pydantic model class (arflare passes its
``RunSpec``), so this package never imports arflare. A spec is built from layers, later
wins: schema defaults <- ``defaults`` <- extends chain (root first) <- the experiment <-
profile <- ``--set`` <- seed/grid values. Every value remembers where it was set, so a
validation error points at the file, line and dotted key to fix. :func:`load_registry`
checks every experiment with every profile and every seed/grid value up front and raises
one :class:`~registry.errors.RegistryError` listing all problems.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from registry._common import _Collector, _Ctx, _Layer, _Src
from registry._schema import _message, _path_fields, _resolve_path, _spec_problems
from registry._yaml import _env_problem, _expand_tree, _line_for, _read_yaml
from registry.errors import NO_VALUE, Problem, RegistryError, did_you_mean

S = TypeVar("S", bound=BaseModel)

RESERVED_KEYS = ("description", "extends", "seeds", "grid", "search")
TOP_LEVEL_KEYS = ("project", "defaults", "profiles", "experiments")
SET_SOURCE = "--set"  # the `file` of problems found in command-line overrides
DEFAULT_PROJECT = "arflare"
# Run names join parts with '/' and groups append '@profile', so names must not hold those.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Run(Generic[S]):
    """One training run of an experiment: a validated spec plus what sets it apart.

    Attributes:
        name: ``"exp2"`` or ``"exp2/seed=1/train.lr=0.0003"`` (seed first, then grid keys
            in declared order, values taken from the validated spec).
        experiment: The experiment it expands, e.g. ``"exp2"``.
        group: The experiment name, plus ``"@profile"`` when a profile was applied.
        spec: The validated, frozen schema instance.
        overrides: The seed/grid values of this run, by dotted key (validated values).

    Mappings here are plain dicts (so runs pickle into worker processes); treat them as read-only.
    """

    name: str
    experiment: str
    group: str
    spec: S
    overrides: Mapping[str, object] = field(default_factory=dict)


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



# ----------------------------------------------------------------------------- public helpers


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


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Merge ``override`` onto ``base``: mappings merge key by key, anything else (lists too) replaces.

    Neither input is modified.
    """
    merged = copy.deepcopy(dict(base))
    for name, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            merged[name] = deep_merge(merged[name], value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


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


# ----------------------------------------------------------------------------- registry


class Registry(Generic[S]):
    """A loaded and fully validated ``experiments.yaml``; build it with :func:`load_registry`.

    Attributes:
        path: Absolute path of the registry file.
        project: MLflow experiment name (top-level ``project``, default ``"arflare"``).
        experiments: Entries by name, in file order.
        profiles: Profile names, in file order.
        schema: The spec model every experiment validates against.
        seed_key: Dotted key that ``seeds:`` values go to.
    """

    def __init__(self, *, ctx: _Ctx, project: str, entries: dict[str, Entry], bases: dict[str, _Layer], profiles: dict[str, _Layer]) -> None:
        self.path = ctx.path
        self.project = project
        self.experiments: Mapping[str, Entry] = MappingProxyType(entries)
        self.profiles = tuple(profiles)
        self.schema = ctx.schema
        self.seed_key = ctx.seed_key
        self._ctx, self._bases, self._profiles = ctx, bases, profiles

    def __repr__(self) -> str:
        return f"Registry({str(self.path)!r}, experiments={list(self.experiments)}, profiles={list(self.profiles)})"

    def resolve(self, name: str, *, profile: str | None = None, sets: Sequence[str] = ()) -> S:
        """The experiment's spec without seed/grid values (what ``arflare show`` prints).

        Args:
            name: Experiment name.
            profile: Profile to apply on top, or None.
            sets: ``KEY=VALUE`` overrides, applied last.

        Raises:
            RegistryError: Unknown name or profile, or bad ``--set`` items.
        """
        out = _Collector(self._ctx.file)
        layer, set_layer = self._prepare(name, profile, sets, out)
        spec = self._validate(_merge(layer, set_layer), name, _note(profile, sets, {}), out)
        out.raise_if_any()
        return spec

    def resolved_dict(self, name: str, *, profile: str | None = None, sets: Sequence[str] = ()) -> dict:
        """``resolve(...)`` dumped to plain JSON-able data (paths become strings)."""
        return self.resolve(name, profile=profile, sets=sets).model_dump(mode="json")

    def expand(self, name: str, *, profile: str | None = None, sets: Sequence[str] = ()) -> list[Run[S]]:
        """One run per seed x grid combination (one run when the experiment sweeps nothing).

        A ``--set`` on a swept key collapses that axis to the set value.

        Raises:
            RegistryError: Unknown name or profile, or bad ``--set`` items.
        """
        out = _Collector(self._ctx.file)
        layer, set_layer = self._prepare(name, profile, sets, out)
        runs = self._runs(name, profile, layer, set_layer, sets, out)
        out.raise_if_any()
        return runs

    def lineage(self, name: str) -> list[str]:
        """``[name, parent, grandparent, ...]`` following ``extends``."""
        if name not in self.experiments:
            raise RegistryError([self._unknown("experiments", name, self.experiments)])
        chain = [name]
        while (parent := self.experiments[chain[-1]].extends) is not None:
            chain.append(parent)
        return chain

    # -- internals

    def _prepare(self, name: str, profile: str | None, sets: Sequence[str], out: _Collector) -> tuple[_Layer, _Layer]:
        if name not in self.experiments:
            out.add(self._unknown("experiments", name, self.experiments))
        if profile is not None and profile not in self._profiles:
            out.add(self._unknown("profiles", profile, self._profiles))
        out.raise_if_any()
        set_layer = _set_layer(sets, self._ctx, out)  # its problems are raised with the spec's
        layer = self._bases[name]
        return (_merge(layer, self._profiles[profile]) if profile else layer), set_layer

    def _unknown(self, kind: str, name: str, valid: Mapping) -> Problem:
        noun = "experiment" if kind == "experiments" else "profile"
        listing = ", ".join(valid) or "none defined"
        return Problem(self._ctx.file, None, kind, name, f"unknown {noun}{did_you_mean(name, valid)} (available: {listing})")

    def _runs(self, name: str, profile: str | None, layer: _Layer, set_layer: _Layer, sets: Sequence[str], out: _Collector) -> list[Run[S]]:
        entry = self.experiments[name]
        axes = self._axes(entry, set_layer)
        layer = _merge(layer, set_layer)
        group = f"{name}@{profile}" if profile else name
        runs: list[Run[S]] = []
        for combo in itertools.product(*(choices for _, choices in axes)):
            picked = {key: choice for (key, _), choice in zip(axes, combo)}
            spec = self._validate(_merge(layer, picked), name, _note(profile, sets, picked), out)
            if spec is None:
                continue
            overrides = {key: _get(spec, key) for key in picked}
            parts = [f"{self._label(key)}={_short(value)}" for key, value in overrides.items()]
            runs.append(Run("/".join([name, *parts]), name, group, spec, overrides))
        if len({run.name for run in runs}) < len(runs):
            out.add(Problem(self._ctx.file, entry.line, f"experiments.{name}", NO_VALUE, "two runs get the same name; remove the repeated seed or grid value"))
        return runs

    def _axes(self, entry: Entry, set_layer: _Layer) -> list[tuple[str, list[tuple[Any, _Src]]]]:
        ctx = self._ctx
        axes = []
        if entry.seeds is not None:
            axes.append((ctx.seed_key, _choices(entry.seeds, f"experiments.{entry.name}.seeds", ctx, resolve=False)))
        for key, values in entry.grid.items():
            axes.append((key, _choices(values, f"experiments.{entry.name}.grid.{key}", ctx, resolve=key in ctx.path_fields)))
        # A --set on a swept key means "just that one": the axis collapses to the set value.
        return [(key, [set_layer[key]] if key in set_layer else choices) for key, choices in axes]

    def _label(self, key: str) -> str:
        return key.rsplit(".", 1)[-1] if key == self._ctx.seed_key else key

    def _validate(self, layer: _Layer, name: str, note: str, out: _Collector) -> S | None:
        try:
            return self._ctx.schema.model_validate(_unflatten({key: value for key, (value, _) in layer.items()}))
        except ValidationError as exc:
            owner = _Src(self._ctx.file, f"experiments.{name}", self.experiments[name].line)
            for problem, owned in _spec_problems(exc, self._ctx, layer, owner):
                out.add(problem, note if owned else "")
            return None

    def _check(self, out: _Collector) -> None:
        """Validate every experiment alone, with every profile, and with every seed/grid value."""
        for name in self.experiments:
            if name not in self._bases:
                continue  # its extends chain is broken; already reported
            for profile in (None, *self._profiles):
                layer = _merge(self._bases[name], self._profiles[profile]) if profile else self._bases[name]
                self._validate(layer, name, _note(profile, (), {}), out)
                self._runs(name, profile, layer, {}, (), out)


def load_registry(path: str | Path, schema: type[S], *, seed_key: str = "train.seed", search_schema: type[BaseModel] | None = None) -> Registry[S]:
    """Read and fully validate a registry file (``arflare validate`` is exactly this).

    Args:
        path: The ``experiments.yaml`` file.
        schema: Pydantic model every experiment must validate against (frozen, ``extra="forbid"``).
        seed_key: Dotted key that each value of an experiment's ``seeds:`` goes to.
        search_schema: Model that validates each ``search:`` block; None keeps them raw.

    Returns:
        The registry; every experiment x profile x seed/grid value in it is known to validate.

    Raises:
        RegistryError: With every problem in the file (missing file and YAML syntax errors alone).
    """
    path = Path(path)
    out = _Collector(str(path))
    data, lines = _read_yaml(path, out)
    ctx = _Ctx(str(path), path.resolve(), MappingProxyType(lines), schema, seed_key, _path_fields(schema))
    data = _expand_tree(data, "", lambda key, text, var: out.add(_env_problem(ctx.file, _line_for(lines, key), key, text, var)))
    registry = _Builder(ctx, out, search_schema).build(data)
    registry._check(out)
    out.raise_if_any()
    return registry


# ----------------------------------------------------------------------------- building


class _Builder:
    """Turns the parsed YAML into entries and layers, reporting whatever is malformed."""

    def __init__(self, ctx: _Ctx, out: _Collector, search_schema: type[BaseModel] | None) -> None:
        self.ctx, self.out, self.search_schema = ctx, out, search_schema

    def build(self, data: Any) -> Registry:
        doc = self._document(data)
        if doc is None:  # nothing else can be checked
            return Registry(ctx=self.ctx, project=DEFAULT_PROJECT, entries={}, bases={}, profiles={})
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
        return Registry(ctx=self.ctx, project=project, entries=entries, bases=bases, profiles=profiles)

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
