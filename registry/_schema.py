"""Pydantic errors -> located problems, and the schema facts the loader needs (path fields).

A validation error names a location in the merged spec; this module finds which layer value
(file, line, dotted key) set it, so the message points at what to edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from registry._common import _Ctx, _Layer, _Src
from registry._yaml import _line_for
from registry.errors import NO_VALUE, Problem, did_you_mean

_MISSING_SPEC = "missing required key; set it in `defaults` or in the experiment"


# ----------------------------------------------------------------------------- validation errors


def _spec_problems(exc: ValidationError, ctx: _Ctx, layer: _Layer, owner: _Src) -> list[tuple[Problem, bool]]:
    """Problems for a failed spec validation, each flagged True when attributed to the experiment."""
    problems = []
    for err in exc.errors():
        parts = [str(part) for part in err["loc"]]
        loc = ".".join(parts)
        message = _message(err, ctx.schema, parts, _MISSING_SPEC)
        # Missing keys and model validators have no single value: they belong to the experiment.
        owned = err["type"] == "missing" or (err["type"] in ("value_error", "assertion_error") and isinstance(err["input"], Mapping))
        found = None if owned else _origin(layer, loc)
        if found is None:
            key = f"{owner.key}.{loc}" if loc else owner.key
            value = NO_VALUE if owned or isinstance(err["input"], Mapping) else err["input"]
            problems.append((Problem(owner.file, owner.line, key, value, message), True))
        else:
            problems.append((_located(err, loc, *found, ctx, message), False))
    return problems


def _origin(layer: _Layer, loc: str) -> tuple[str, _Src] | None:
    """The layer key an error at ``loc`` comes from: itself, a key above it, or the last key below it."""
    if not loc:
        return None
    parts = loc.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in layer:
            return key, layer[key][1]
    below = [key for key in layer if key.startswith(loc + ".")]
    return (below[-1], layer[below[-1]][1]) if below else None


def _located(err: Mapping, loc: str, spec_key: str, src: _Src, ctx: _Ctx, message: str) -> Problem:
    if loc == spec_key or loc.startswith(spec_key + "."):
        key, line = src.key + loc[len(spec_key):], src.line
    else:  # loc is a section above the key that was set (an unknown section name)
        key = src.key[: len(src.key) - len(spec_key)] + loc if src.key.endswith(spec_key) else src.key
        line = _line_for(ctx.lines, key) if src.file == ctx.file else src.line
    if err["type"] == "extra_forbidden" and src.file == ctx.file:
        line = _line_for(ctx.lines, key)  # the key's line, so a misspelled grid key is reported once
    return Problem(src.file, line, key, err["input"], message)


def _message(err: Mapping, model: type[BaseModel], parts: list[str], missing: str) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key" + did_you_mean(parts[-1], _field_names(model, parts[:-1]))
    if kind == "missing":
        return missing
    error = err.get("ctx", {}).get("error")
    if kind in ("value_error", "assertion_error") and error is not None:
        return str(error)
    text = err["msg"]
    return text[:1].lower() + text[1:]


def _field_names(model: type[BaseModel], parts: list[str]) -> list[str]:
    for part in parts:
        info = model.model_fields.get(part)
        sub = _submodel(info.annotation) if info is not None else None
        if sub is None:
            return []
        model = sub
    return [info.alias or name for name, info in model.model_fields.items()]  # the key users write


# ----------------------------------------------------------------------------- schema introspection


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _submodel(annotation: Any) -> type[BaseModel] | None:
    inner, _ = _unwrap_optional(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def _path_fields(schema: type[BaseModel], prefix: str = "", injectable: bool = True) -> dict[str, Path | None]:
    """Dotted keys of fields typed ``Path`` or ``Path | None``, with their relative default (if any).

    A default is only kept when every section above it always exists (not Optional), so that
    filling it in cannot create a section the user left out.
    """
    found: dict[str, Path | None] = {}
    for name, info in schema.model_fields.items():
        key = f"{prefix}{name}"
        inner, optional = _unwrap_optional(info.annotation)
        if isinstance(inner, type) and issubclass(inner, Path):
            relative = isinstance(info.default, Path) and not info.default.is_absolute()
            found[key] = info.default if injectable and relative else None
        elif (sub := _submodel(info.annotation)) is not None:
            found.update(_path_fields(sub, f"{key}.", injectable and not optional))
    return found


def _resolve_path(value: Any, base: Path) -> Any:
    if not isinstance(value, (str, Path)) or value == "":
        return value  # not a path (None, a typo'd type): left for the schema to accept or reject
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
