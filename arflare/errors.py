"""Errors a user can fix, and how the CLI turns known bad-input exceptions into one clear line."""

from __future__ import annotations

import sys


class UsageError(ValueError):
    """Bad input found after parsing (unknown metric, data root in the wrong place); exit code 2."""


def user_error_message(exc: BaseException) -> str | None:
    """The message to print for a bad-input exception, or None for a bug (which keeps its traceback).

    Only looks at modules already imported, so this never pulls in torch.
    """
    if isinstance(exc, UsageError | FileNotFoundError):
        return str(exc)
    for module, names in (("arflare.data.index", ("DataError",)), ("arflare.data.shards", ("ShardFormatError",))):
        loaded = sys.modules.get(module)
        if loaded is not None and any(isinstance(exc, getattr(loaded, name, ())) for name in names):
            return str(exc)
    return None
