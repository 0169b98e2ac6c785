"""Is a tracked run alive? Heartbeats, the STALE status, and the plain run record.

A RUNNING run refreshes the heartbeat tag from a daemon thread; a RUNNING run whose last
sign of life is older than a limit is shown as ``STALE`` (its process died without telling
the store: SIGKILL, OOM, node failure). Nothing here imports mlflow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

log = logging.getLogger(__name__)

TAG_HEARTBEAT = "arflare.heartbeat"  # UTC ISO time, refreshed while a run trains
STALE = "STALE"  # a RUNNING run whose heartbeat is older than the stale limit (shown, never stored)
DEFAULT_STALE_AFTER_S = 300.0  # ten missed heartbeats
HEARTBEAT_EVERY_S = 30.0  # twice a minute: a live run is never silent for a whole minute


@dataclass(frozen=True)
class RunRecord:
    """A tracked run read back from the store, free of MLflow types.

    ``status`` is MLflow's (FINISHED / FAILED / KILLED / RUNNING), except that a RUNNING run
    whose heartbeat (or, without one, start) is older than the tracker's stale limit reads
    ``STALE``: its process most likely died without a word (SIGKILL, node failure).
    """

    run_id: str
    run_name: str
    status: str  # FINISHED / FAILED / KILLED / RUNNING / STALE
    start_time: int | None  # ms since epoch
    end_time: int | None
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metrics: Mapping[str, float]  # latest value of each metric
    artifact_uri: str
    heartbeat: float | None = None  # seconds since epoch of the last sign of life, if any


def heartbeat_now() -> str:
    """The value of the heartbeat tag for this moment (UTC, ISO 8601, whole seconds)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def last_sign_of_life(tags: Mapping[str, str], start_time_ms: int | None) -> float | None:
    """Seconds since epoch of the run's heartbeat tag, or of its start when it has none."""
    beat = tags.get(TAG_HEARTBEAT)
    if beat:
        try:
            return datetime.fromisoformat(beat).timestamp()
        except ValueError:
            pass
    return None if start_time_ms is None else start_time_ms / 1000


@contextmanager
def heartbeat(beat: Callable[[], None], *, every_s: float = HEARTBEAT_EVERY_S) -> Iterator[None]:
    """Call ``beat`` every ``every_s`` seconds from a daemon thread while the block runs.

    A failing beat (a busy store) is logged and skipped: it must never end a healthy run.
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                beat()
            except Exception:
                log.warning("Could not refresh the heartbeat; trying again in %.0f s", every_s, exc_info=True)

    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def silent(last_alive: float | None, *, stale_after_s: float, now: float | None = None) -> bool:
    """Whether a run's last sign of life is more than ``stale_after_s`` seconds old (False when unknown)."""
    now = time.time() if now is None else now
    return last_alive is not None and now - last_alive > stale_after_s


def shown_status(status: str, last_alive: float | None, *, stale_after_s: float, now: float | None = None) -> str:
    """``STALE`` for a RUNNING run silent for more than ``stale_after_s`` seconds, else ``status``."""
    if status == "RUNNING" and silent(last_alive, stale_after_s=stale_after_s, now=now):
        return STALE
    return status
