"""Problems found in a registry file or on a command line, and the one error that lists them all.

Validation never stops at the first mistake: every :class:`Problem` found is collected and
raised together in a single :class:`RegistryError`, so one ``arflare validate`` shows the
whole list, each with the file, line and dotted key to fix.

:class:`UserError` is the root of every error a user can fix by changing their input. It lives
here, not in the application, because ``registry`` never imports the application: the
application's own user errors (``arflare.errors``) subclass it, and a CLI catches this one class.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

_MAX_VALUE_CHARS = 80  # long values (whole sections) are cut so one problem stays one line


class _NoValue:
    """Marks a problem without one offending value (a missing key, a whole experiment)."""

    _instance: _NoValue | None = None

    def __new__(cls) -> _NoValue:
        # A singleton, so `value is NO_VALUE` holds even after copying or pickling.
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE = _NoValue()


@dataclass(frozen=True)
class Problem:
    """One thing wrong, located as precisely as possible.

    Attributes:
        file: The registry file as the user named it, ``"--set"`` for a command-line
            override, or None when no file is involved.
        line: 1-based line in ``file`` where the bad value was set, or None.
        key: Dotted key in ``file``, e.g. ``experiments.exp2.model.drop_rate``; for a
            ``--set`` problem the overridden key; empty when the problem is the whole file.
        value: The offending value, or ``NO_VALUE`` when there is none to show.
        message: What is wrong and, where possible, how to fix it.
    """

    file: str | None
    line: int | None
    key: str
    value: object
    message: str

    def __str__(self) -> str:
        where = self.file or ""
        if where and self.line is not None:
            where = f"{where}:{self.line}"
        what = self.key
        if self.value is not NO_VALUE:
            what = f"{what} = {_show(self.value)}" if what else _show(self.value)
        return ": ".join(part for part in (where, what, self.message) if part)


class UserError(Exception):
    """Bad input the user can fix: a CLI prints the message (no traceback) and exits with code 2.

    Subclasses: :class:`RegistryError` here; the application adds its own (usage, data).
    A bug is never a ``UserError``: it keeps its traceback.
    """


class RegistryError(UserError):
    """Every problem found in one registry file (or one command line), raised together.

    Attributes:
        problems: The problems, in file order.
        source: The file the header names (the registry file), or None.
    """

    def __init__(self, problems: Iterable[Problem], source: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.source = source or next((p.file for p in self.problems if p.file and p.file != "--set"), None)
        # Positional args only, so the exception survives pickling (multiprocessing, Optuna workers).
        super().__init__(self.problems, self.source)

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"{count} problem{'' if count == 1 else 's'}"
        head = f"{head} in {self.source}:" if self.source else f"{head}:"
        return "\n".join([head, *(str(problem) for problem in self.problems)])


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Suggest the closest valid name for a misspelled one.

    Args:
        name: The name the user wrote.
        choices: The valid names.

    Returns:
        ``"; did you mean 'x'?"`` for the closest match, or ``""`` when nothing is close.
    """
    matches = difflib.get_close_matches(name, [str(choice) for choice in choices], n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


def _show(value: object) -> str:
    text = repr(str(value)) if hasattr(value, "__fspath__") else repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."
