"""Errors a user can fix; all derive from :class:`registry.errors.UserError`, which the CLI catches.

The root lives in ``registry`` because ``registry`` never imports ``arflare``; arflare's user
errors subclass it. Each is also a ``ValueError`` so library callers that catch bad values
keep working. This module imports nothing heavy, so the CLI can catch these without torch.

- :class:`registry.errors.RegistryError`: a registry file or ``--set`` is wrong (every problem listed).
- :class:`UsageError`: bad input found after parsing (unknown metric, data root in the wrong place).
- :class:`DataError`: the data on disk is unusable as given (names the shard and member).
"""

from __future__ import annotations

from registry.errors import UserError

__all__ = ["DataError", "UsageError", "UserError"]


class UsageError(UserError, ValueError):
    """Bad input found after parsing (unknown metric, data root in the wrong place); exit code 2."""


class DataError(UserError, ValueError):
    """The data on disk is unusable as given; the message names the shard and member."""
