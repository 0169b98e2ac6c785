"""What a user installing arflare relies on: version reporting, ranges not pins, CI's exact set."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [req for group in project.get("optional-dependencies", {}).values() for req in group]
    return [Requirement(text) for text in [*project["dependencies"], *extras]]


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_version_names_the_stack_without_importing_torch():
    code = ("import sys; from arflare.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "assert 'torch' not in sys.modules and 'mlflow' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    from importlib.metadata import version

    assert done.stdout.startswith(f"arflare {version('arflare')} (")
    assert f"torch {version('torch')}" in done.stdout and f"mlflow {version('mlflow')}" in done.stdout


def test_requirements_are_ranges_and_ci_pins_satisfy_them():
    pins = _constraints()
    for req in _requirements():
        assert not any(spec.operator in ("==", "===") for spec in req.specifier), f"{req} is an exact pin in pyproject.toml"
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} has no exact version in constraints.txt (make constraints)"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt {name}=={pins[name]} is outside {req}"
