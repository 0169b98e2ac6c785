"""arflare: an experiment registry for solar-flare classifiers.

Importing the package stays cheap (no torch, no mlflow): versions are read from the installed
distributions' metadata, never by importing them.
"""

from __future__ import annotations

import platform
from importlib import metadata

try:
    __version__ = metadata.version("arflare")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# The components whose versions decide whether a run reproduces (printed by `arflare --version`).
_STACK = ("torch", "timm", "mlflow", "optuna", "pydantic", "numpy")


def versions() -> dict[str, str]:
    """arflare's version, python's, and that of each component of the stack ("not installed" if absent)."""
    found = {"arflare": __version__, "python": platform.python_version()}
    for name in _STACK:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
