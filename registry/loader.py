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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from registry._build import _Builder, _choices, _get, _merge, _note, _set_layer, _short, _unflatten
from registry._common import Entry, _Collector, _Ctx, _Layer, _Src, flatten, parse_set
from registry._schema import _path_fields, _spec_problems
from registry._yaml import _env_problem, _expand_tree, _line_for, _read_yaml
from registry.errors import NO_VALUE, Problem, RegistryError, did_you_mean

__all__ = [
    "Entry",
    "Registry",
    "Run",
    "deep_merge",
    "flatten",
    "load_registry",
    "parse_set",
]

S = TypeVar("S", bound=BaseModel)


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



# ----------------------------------------------------------------------------- public helpers


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
        elif ctx.seed_key in set_layer:  # a --set seed names the run too: seeds of one experiment stay apart
            axes.append((ctx.seed_key, [set_layer[ctx.seed_key]]))
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
    project, entries, bases, profiles = _Builder(ctx, out, search_schema).build(data)
    registry = Registry(ctx=ctx, project=project, entries=entries, bases=bases, profiles=profiles)
    registry._check(out)
    out.raise_if_any()
    return registry
