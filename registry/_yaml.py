"""Reading the registry YAML with a line for every key, and ``${VAR}`` / ``${VAR:-default}`` expansion."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from registry._common import _Collector
from registry.errors import NO_VALUE, Problem, RegistryError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")


# ----------------------------------------------------------------------------- YAML and environment


def _read_yaml(path: Path, out: _Collector) -> tuple[Any, dict[str, int]]:
    """Parse the file and map every dotted key (and list item ``key.i``) to its 1-based line."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        message = f"registry file not found (looked for {path.resolve()}); pass --file or run from the folder holding experiments.yaml"
        raise RegistryError([Problem(file, None, "", NO_VALUE, message)], file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError([Problem(file, None, "", NO_VALUE, f"cannot read the registry file ({exc}); pass --file with a readable YAML file")], file) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise RegistryError([_syntax_problem(exc, file, text)], file) from None
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if node is not None:
        _map_lines(node, "", lines, lambda key, line: out.add(Problem(file, line, key, NO_VALUE, "duplicate key; YAML keeps only the last one, so remove or rename one")))
    return data, lines


def _syntax_problem(exc: yaml.YAMLError, file: str, text: str) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem, context = getattr(exc, "problem", None), getattr(exc, "context", None)
    message = f"invalid YAML: {problem or exc}" + (f" ({context})" if context else "")
    source_lines = text.splitlines()
    if line is not None and line <= len(source_lines) and "${" in source_lines[line - 1]:
        message += '; inside {...} quote values that hold ${...}, e.g. root: "${VAR:-data}/x"'
    return Problem(file, line, "", NO_VALUE, message)


def _map_lines(node: yaml.Node, key: str, lines: dict[str, int], on_duplicate: Callable[[str, int], None]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            name = str(key_node.value)
            full = f"{key}.{name}" if key else name
            lines[full] = key_node.start_mark.line + 1
            if name in seen and name != "<<":
                on_duplicate(full, lines[full])
            seen.add(name)
            _map_lines(value_node, full, lines, on_duplicate)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{key}.{i}"] = item.start_mark.line + 1
            _map_lines(item, f"{key}.{i}", lines, on_duplicate)


def _line_for(lines: Mapping[str, int], key: str) -> int | None:
    """The line of ``key``, or of its closest parent that has one."""
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None


def _expand_tree(value: Any, key: str, report: Callable[[str, str, str], None]) -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in every string; ``report(key, text, var)`` unset ones."""
    if isinstance(value, str):
        expanded, missing = _expand_vars(value)
        for var in missing:
            report(key, value, var)
        return expanded
    if isinstance(value, Mapping):
        return {name: _expand_tree(item, f"{key}.{name}" if key else str(name), report) for name, item in value.items()}
    if isinstance(value, list):
        return [_expand_tree(item, f"{key}.{i}", report) for i, item in enumerate(value)]
    return value


def _expand_vars(text: str) -> tuple[str, list[str]]:
    missing: list[str] = []

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(3)
        current = os.environ.get(name)
        if current:
            return current
        if default is not None:  # like the shell's ${VAR:-x}: an empty variable takes the default too
            return default
        if current is None:
            missing.append(name)
            return match.group(0)
        return current

    return _ENV_RE.sub(substitute, text), missing


def _env_problem(file: str, line: int | None, key: str, text: str, var: str) -> Problem:
    return Problem(file, line, key, text, f"environment variable {var} is not set; export it or give a default: ${{{var}:-default}}")
