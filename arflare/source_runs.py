"""SOURCE: a trained run named by its id or by its experiment (then that experiment's best run).

Commands that build on a trained model (``arflare mine``, hard negatives in a spec, hybrid
models) name it as SOURCE: a 32-hex MLflow run id, or an experiment name, which stands for
the experiment's best FINISHED training run of the same profile, ranked on validation by the
run's own ``eval.monitor`` (loss lowest, every other monitor highest). Nothing here imports
torch; mlflow is imported by the tracker when it first reads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from arflare import record
from arflare.errors import UsageError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class SourceNotFound(UsageError):
    """A SOURCE names no usable run; the message says which command would create one."""


def is_run_id(source: str) -> bool:
    """Whether ``source`` is spelled like an MLflow run id (32 lowercase hex digits)."""
    return bool(RUN_ID.match(source))


def resolve_source(tracker, source: str, *, profile: str | None = None, known: Sequence[str] = ()):
    """The FINISHED training run that ``source`` names.

    Args:
        tracker: A ``registry.tracking.Tracker`` of the project's store.
        source: A run id, or an experiment name.
        profile: Runs of this profile only (None = runs without a profile).
        known: The registry's experiment names, for the "did you mean" in errors.

    Returns:
        A ``registry.tracking.RunRecord``.

    Raises:
        SourceNotFound: no such run, or the experiment has no FINISHED training run yet; the
            message gives the ``arflare run`` command that would create it.
    """
    if is_run_id(source):
        found = [r for r in tracker.search(filter_string=f"attributes.run_id = '{source}'") if r.run_id == source]
        if not found:
            raise SourceNotFound(f"source run {source} is not in the store {tracker.tracking_uri}")
        if found[0].status != "FINISHED":
            raise SourceNotFound(f"source run {source} is {found[0].status}, not FINISHED; use a finished run")
        return found[0]
    if known and source not in known:
        from registry.errors import did_you_mean

        raise SourceNotFound(f"source {source!r} is neither a run id nor an experiment of the registry"
                             f"{did_you_mean(source, list(known))}")
    runs = [r for r in tracker.search(experiments=[source]) if _is_training(r) and r.status == "FINISHED"
            and r.tags.get(record.TAG_PROFILE, "") == (profile or "")]
    best = best_run(runs)
    if best is None:
        command = " ".join(["arflare run", source, *([f"--profile {profile}"] if profile else [])])
        raise SourceNotFound(f"source {source!r} has no FINISHED run{f' with profile {profile}' if profile else ''} yet; "
                             f"create it with: {command}")
    return best


def best_run(runs: Sequence):
    """The run with the best validation score by its own ``eval.monitor``; None when none has one.

    Reads the best checkpoint's score: ``best/val_<monitor>`` when logged, else the last
    ``val/<monitor>`` (which the trainer sets to the best checkpoint's score). Ties go to the newest run.
    """
    scored = []
    for run in runs:
        monitor = run.params.get("eval.monitor", "tss")
        value = run.metrics.get(record.best_val_metric(monitor), run.metrics.get(f"val/{monitor}"))
        if value is None or math.isnan(value):
            continue
        scored.append((-value if monitor == "loss" else value, run.start_time or 0, run))
    return max(scored, key=lambda item: item[:2])[2] if scored else None


def _is_training(run) -> bool:
    return run.tags.get(record.TAG_KIND, "train") == "train"
