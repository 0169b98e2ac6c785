"""Where a study lives and how processes that share it take turns.

Two kinds of storage:

- a journal file (the default, beside the tracking store): safe for several processes on one
  machine; a process that dies leaves its trial RUNNING until the next sweep command marks it.
- an RDB URL (``postgresql://…``, ``sqlite:///…``): Optuna's heartbeat runs on it, so a trial
  whose process died (SIGKILL, a lost node) turns FAIL after the grace period and is queued
  again with the same parameters (Optuna's retry callback). This is the storage for workers on
  several machines.

Either way, the few steps that must not interleave between processes (count the budget and ask
for a trial; find or create the shared parent run) run under :class:`StudyLock`: a PostgreSQL
advisory lock for a PostgreSQL storage (it works across machines and is released when its
connection dies), a file lock beside a journal or sqlite file otherwise.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

StaleTrialCallback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass(frozen=True)
class Heartbeat:
    """Optuna's RDB heartbeat: how often a running trial says it is alive, and when silence means dead.

    Attributes:
        interval_s: Seconds between heartbeats of a running trial (and between polls of an idle worker).
        grace_s: Seconds without a heartbeat after which a RUNNING trial is failed and retried.
        max_retry: How many times one trial is queued again after its process died.
    """

    interval_s: int = 60
    grace_s: int = 180
    max_retry: int = 2

    def __post_init__(self) -> None:
        if self.interval_s < 1 or self.grace_s <= self.interval_s:
            raise ValueError(f"heartbeat needs interval >= 1 s and grace > interval; got interval {self.interval_s} s, "
                             f"grace {self.grace_s} s (e.g. interval 60, grace 180)")


def default_storage(store_dir: Path, study_name: str) -> str:
    """Return the journal file that holds a study: ``<store_dir>/optuna/<study_name>.journal``."""
    return str(Path(store_dir) / "optuna" / f"{study_name}.journal")


def is_rdb(storage: str) -> bool:
    """True for a database URL (heartbeat, retries, several machines), False for a journal file."""
    return "://" in storage


def database_url(storage: str) -> str:
    """The SQLAlchemy URL of an RDB storage; ``postgresql://`` uses psycopg 3 when psycopg2 is absent.

    SQLAlchemy maps a bare ``postgresql://`` to psycopg2, while ``arflare[server]`` installs
    psycopg (version 3), whose dialect is ``postgresql+psycopg://``.
    """
    if storage.startswith("postgresql://"):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return "postgresql+psycopg://" + storage.removeprefix("postgresql://")
    return storage


def open_storage(storage: str, *, heartbeat: Heartbeat | None = None,
                 on_stale: StaleTrialCallback | None = None) -> str | optuna.storages.BaseStorage:
    """The Optuna storage object for ``storage`` (a journal path, ``journal:<path>``, or an RDB URL).

    Args:
        storage: Where the study lives.
        heartbeat: For an RDB: turn Optuna's heartbeat on (a journal has none).
        on_stale: Called with each trial the heartbeat declared dead, after it turned FAIL.
    """
    if not is_rdb(storage):
        path = Path(storage.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    if heartbeat is None:
        return optuna.storages.RDBStorage(database_url(storage))
    return optuna.storages.RDBStorage(database_url(storage), heartbeat_interval=heartbeat.interval_s,
                                      grace_period=heartbeat.grace_s,
                                      **{_STALE_CALLBACK_ARG: _retrying(on_stale, heartbeat.max_retry)})


# Optuna 4.9 renamed the argument and the class; both names work until 6.0.
_RETRY = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
_STALE_CALLBACK_ARG = "heartbeat_stale_trial_callback" if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback") \
    else "failed_trial_callback"


def _retrying(on_stale: StaleTrialCallback | None, max_retry: int) -> StaleTrialCallback:
    retry = _RETRY(max_retry=max_retry)

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if on_stale is not None:
            on_stale(study, trial)
        retry(study, trial)  # a WAITING copy with the same params; the next ask() takes it

    return callback


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the trials that were queued again (their retry stands in for them)."""
    return {number for t in trials for number in t.system_attrs.get("retry_history", [])}


class StudyLock:
    """A lock on one study shared by every process that opens the same storage, on any machine.

    Picklable (spawned workers get a copy); the connection or lock file is opened on entry.

    Args:
        storage: As for :func:`open_storage`.
        study_name: The study; different studies in one storage do not block each other.
    """

    def __init__(self, storage: str, study_name: str) -> None:
        self.storage = storage
        self.study_name = study_name
        self._held = None

    def __getstate__(self) -> dict:
        return {"storage": self.storage, "study_name": self.study_name, "_held": None}

    def __enter__(self) -> StudyLock:
        url = database_url(self.storage)
        if url.startswith("postgresql"):
            self._held = _advisory_lock(url, _lock_key(self.study_name))
        else:
            self._held = _file_lock(self._lock_file())
        self._held.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        held, self._held = self._held, None
        held.__exit__(*exc)

    def _lock_file(self) -> Path:
        if not is_rdb(self.storage):
            return Path(self.storage.removeprefix("journal:") + ".study-lock")  # not ".lock": the journal's own lock file
        if self.storage.startswith("sqlite:///"):
            return Path(self.storage.removeprefix("sqlite:///").split("?", 1)[0] + f".{self.study_name}.lock")
        # Another database (MySQL, ...): one machine only; exact totals across machines need PostgreSQL.
        digest = hashlib.sha256(f"{self.storage}\0{self.study_name}".encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"arflare-study-{digest}.lock"


def _lock_key(study_name: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock`` (its argument type), from the study name."""
    return int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)


def _file_lock(path: Path):
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


class _advisory_lock:
    """A session-level PostgreSQL advisory lock on its own connection (closed, hence released, on exit)."""

    def __init__(self, url: str, key: int) -> None:
        self.url, self.key, self.connection = url, key, None

    def __enter__(self) -> None:
        from sqlalchemy import text

        self.connection = _engine(self.url).connect()
        self.connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.key})

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import text

        try:
            self.connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        finally:
            self.connection.close()  # no pool: closing ends the session, which releases the lock anyway


@functools.cache
def _engine(url: str):
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(url, poolclass=NullPool)
