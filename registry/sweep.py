"""Hyper-parameter sweeps: one Optuna study whose trials are nested MLflow runs.

A sweep is an Optuna study (a journal file or an RDB) plus one parent MLflow run, found again
by its ``arflare.study`` tag, so running the same command twice resumes both. Each trial is a
child run. Trials run in this process (``workers=1``) or in spawned worker processes sharing
the study storage; a lock on the study (``registry.study_storage.StudyLock``) makes ``n_trials``
an exact total. With an RDB storage (PostgreSQL) sweep commands started independently on
several machines share one study and one parent run; Optuna's heartbeat fails and re-queues the
trials of workers that died. With a journal file, one sweep command per study at a time.

This module imports neither torch nor ``arflare``, so spawned workers start fast; the trial
function brings its own heavy imports.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from registry._sweep_worker import (  # noqa: F401 (TrialReporter, RUN_ID_ATTR, NonFiniteObjectiveError: re-exported)
    INTERRUPTED_ATTR,
    RUN_ID_ATTR,
    Job,
    NonFiniteObjectiveError,
    TrialFn,
    TrialReporter,
    make_pruner,
    make_sampler,
    mark_run_failed,
    run_workers,
    say,
    trials_left,
    work,
)
from registry.search_spec import ParamSpec, PrunerSpec, SearchSpec  # noqa: F401 (re-exported)
from registry.study_storage import (
    Heartbeat,
    StudyLock,
    default_storage,  # noqa: F401 (re-exported: where the journal of a study goes)
    is_rdb,
    open_storage,
)
from registry.tracking import (
    TAG_BEST_TRIAL as BEST_TRIAL_TAG,
    TAG_STUDY as STUDY_TAG,
    RunHandle,
    Tracker,
    heartbeat,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

_SESSIONS_ATTR = "arflare.sessions"  # study attr: sweep commands started so far (seeds each one's sampler)
_FORBIDDEN_IN_STUDY_NAME = "/\\'\"`"  # path separators and quotes (MLflow filters cannot escape them)


@dataclass(frozen=True)
class SweepResult:
    """Where a sweep stands after :func:`run_sweep`; counts cover every run of the study."""

    study_name: str
    parent_run_id: str
    n_complete: int
    n_pruned: int
    n_failed: int
    best_value: float | None
    best_params: Mapping[str, object]
    best_run_id: str | None


def list_studies(storage: str) -> list[str]:
    """Names of the studies a storage holds (none for a journal file that does not exist yet)."""
    if not is_rdb(storage) and not Path(storage.removeprefix("journal:")).exists():
        return []
    return sorted(optuna.get_all_study_names(storage=open_storage(storage)))


def open_study(*, study_name: str, storage: str, search: SearchSpec) -> optuna.Study:
    """Create the study, or load it when it exists.

    Args:
        study_name: Name of the study inside the storage.
        storage: A file path or ``journal:<path>`` (a journal file, safe across processes), or an
            RDB URL such as ``sqlite:///optuna.db`` or ``postgresql://...`` (see ``registry.study_storage``).
        search: Gives the direction, sampler and pruner.

    Raises:
        ValueError: The study exists with the other direction.
    """
    study = optuna.create_study(
        study_name=study_name, storage=open_storage(storage), direction=search.direction,
        sampler=make_sampler(search.sampler.name, search.sampler.seed), pruner=make_pruner(search.pruner), load_if_exists=True,
    )
    if study.direction.name.lower() != search.direction:
        raise ValueError(
            f"study {study_name!r} in {storage} exists with direction {study.direction.name.lower()}, "
            f"but search.direction is {search.direction}; pick a new study name or fix the direction"
        )
    return study


def best_trial(*, study_name: str, storage: str, search: SearchSpec) -> tuple[dict, float, int] | None:
    """Return ``(params, value, trial number)`` of the best COMPLETE trial, or None before the first.

    Args:
        study_name: Name of the study inside the storage.
        storage: As for :func:`open_study`.
        search: The study's search block (its direction decides what "best" means).
    """
    study = open_study(study_name=study_name, storage=storage, search=search)
    best = _best(study)
    return None if best is None else (dict(best.params), float(best.value), best.number)


def _best(study: optuna.Study) -> FrozenTrial | None:
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def run_sweep(
    *,
    study_name: str,
    storage: str,
    search: SearchSpec,
    trial_fn: TrialFn,
    tracker_kwargs: Mapping[str, object],
    run_prefix: str,
    tags: Mapping[str, str],
    n_trials: int | None = None,
    workers: int = 1,
    progress: bool = True,
    heartbeat: Heartbeat | None = None,
) -> SweepResult:
    """Run (or resume, or join) a sweep until the study holds ``n_trials`` finished trials.

    Each trial is a child run ``<run_prefix>/trial=<n>`` of one parent run tagged
    ``arflare.study=<study_name>``, which a rerun (or another machine's command on the same
    RDB storage) finds and reuses. A trial whose parameters equal an earlier COMPLETE trial is
    not trained again: its child run is tagged ``arflare.duplicate_of=<n>`` and the stored value
    is returned. A trial that raises or returns NaN/inf fails (FAIL trial, FAILED run) and the
    sweep goes on.

    Args:
        study_name: Study name; also finds the parent run. No spaces, quotes or slashes.
        storage: As for :func:`open_study`, e.g. from :func:`default_storage`.
        search: What to optimize over which params.
        trial_fn: ``(params, reporter) -> objective``; picklable (a top-level function or a
            ``functools.partial`` of one) when ``workers > 1``.
        tracker_kwargs: ``Tracker(**tracker_kwargs)`` is built in every worker.
        run_prefix: Name of the parent run and prefix of the child run names.
        tags: Set on the parent and every child run.
        n_trials: Total finished trials to reach; defaults to ``search.n_trials``. Trials
            interrupted by Ctrl-C, and trials of dead workers that were queued again, do not count.
        workers: Processes running trials at once; 1 runs them in this process.
        progress: Print one line per finished trial to stderr (failures are always printed).
        heartbeat: Heartbeat settings for an RDB storage (default :class:`Heartbeat`); ignored
            for a journal file, which has no heartbeat.

    Returns:
        Counts and the best trial over the whole study.
    """
    total = search.n_trials if n_trials is None else n_trials
    _check_args(study_name, total, workers)
    if workers > 1:
        _check_picklable(trial_fn)
    study = open_study(study_name=study_name, storage=storage, search=search)
    lock = StudyLock(storage, study_name)
    tracker = Tracker(**tracker_kwargs)
    beat = (heartbeat or Heartbeat()) if is_rdb(storage) else None
    with lock:
        if beat is None:  # no heartbeat: whatever is RUNNING now belongs to a process that died
            _fail_orphans(study, study.get_trials(deepcopy=False), tracker, study_name)
        session = _next_session(study, concurrent=beat is not None)
    with _parent_run(tracker, study, lock, study_name=study_name, run_prefix=run_prefix, tags=tags) as parent_run_id:
        job = Job(
            study_name=study_name, storage=storage, search=search, trial_fn=trial_fn,
            tracker_kwargs=dict(tracker_kwargs), run_prefix=run_prefix, tags=dict(tags), n_trials=total,
            progress=progress, session=session, parent_run_id=parent_run_id, heartbeat=beat,
        )
        left = trials_left(study.get_trials(deepcopy=False), total)
        if workers == 1 or left == 0:  # nothing to share out: spawned workers would only import and exit
            work(job, worker=0)
        else:
            run_workers(job, workers=min(workers, left))  # more workers than trials would sit idle
        best = _best(study)
        result = _summarize(study, parent_run_id, best)
        if best is not None:
            _log_best(tracker, parent_run_id, best, step=result.n_complete + result.n_pruned + result.n_failed)
    return result


def _next_session(study: optuna.Study, *, concurrent: bool) -> int:
    """This command's number in the study, which seeds its samplers: the trial count so far, made
    unique (under the study lock) when several commands may start at once on an RDB storage."""
    session = len(study.get_trials(deepcopy=False))
    if concurrent:
        session = max(session, int(study.user_attrs.get(_SESSIONS_ATTR, -1)) + 1)
        study.set_user_attr(_SESSIONS_ATTR, session)
    return session


def _fail_orphans(study: optuna.Study, trials: list[FrozenTrial], tracker: Tracker, study_name: str) -> None:
    """Trials left RUNNING by a process that died (SIGKILL, power loss) become FAIL, and so do their runs.

    Only for a journal file: one sweep command per study at a time, so at start every RUNNING
    trial is an orphan (an RDB storage has Optuna's heartbeat instead). Like a Ctrl-C'd trial
    it does not use up ``n_trials``: the sweep still ends with the requested number of finished trials.
    """
    orphans = [t for t in trials if t.state == TrialState.RUNNING]
    for trial in orphans:
        optuna.trial.Trial(study, trial._trial_id).set_user_attr(INTERRUPTED_ATTR, True)
        study.tell(trial.number, state=TrialState.FAIL)
        mark_run_failed(tracker, trial)
    if orphans:
        say(study_name, f"trials {[t.number for t in orphans]} were left RUNNING by a process that died: "
                         "marked FAIL (they do not count towards the total)")


def _check_args(study_name: str, total: int, workers: int) -> None:
    if not study_name or any(ch in _FORBIDDEN_IN_STUDY_NAME or ch.isspace() for ch in study_name):
        raise ValueError(f"study name {study_name!r} names a file and a tag value: drop spaces and the characters {_FORBIDDEN_IN_STUDY_NAME}")
    if total < 1:
        raise ValueError(f"n_trials must be >= 1; got {total}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")


def _check_picklable(trial_fn: TrialFn) -> None:
    try:
        pickle.dumps(trial_fn)
    except Exception as exc:  # pickle raises several types (PicklingError, AttributeError, TypeError)
        raise ValueError(
            f"trial_fn {trial_fn!r} cannot be sent to worker processes ({exc}); "
            "use a top-level function or a functools.partial of one, or workers=1"
        ) from exc


@contextmanager
def _parent_run(tracker: Tracker, study: optuna.Study, lock: StudyLock, *, study_name: str, run_prefix: str,
                tags: Mapping[str, str]) -> Iterator[str]:
    """Yield the study's one parent run id (found by tag, else created, under the study lock).

    Every sweep command on the study (other machines included) shares it and keeps it RUNNING;
    the command that leaves no trial RUNNING or WAITING behind ends it FINISHED, FAILED or KILLED.
    """
    query = f"tags.`{STUDY_TAG}` = '{study_name}'"  # _check_args keeps quotes out of study names
    with lock:
        found = tracker.search(filter_string=query)
        if found:
            run_id = found[0].run_id  # oldest first: the one every earlier command used
            tracker.set_running(run_id)  # true status while this command works on it
        else:
            run_id = tracker.create_run(run_name=run_prefix, tags={**tags, STUDY_TAG: study_name})
    status = "FINISHED"
    try:
        with heartbeat(RunHandle(tracker, run_id).beat):
            yield run_id
    except (KeyboardInterrupt, SystemExit):  # SystemExit: a preempted scheduler job requeueing itself
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        with lock:
            in_flight = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
            if not in_flight:  # else another command is still at work and ends it
                tracker.set_terminated(run_id, status)


def _summarize(study: optuna.Study, parent_run_id: str, best: FrozenTrial | None) -> SweepResult:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return SweepResult(
        study_name=study.study_name, parent_run_id=parent_run_id,
        n_complete=states.count(TrialState.COMPLETE), n_pruned=states.count(TrialState.PRUNED),
        n_failed=states.count(TrialState.FAIL),
        best_value=None if best is None else float(best.value),
        best_params={} if best is None else dict(best.params),
        best_run_id=None if best is None else best.user_attrs.get(RUN_ID_ATTR),
    )


def _log_best(tracker: Tracker, parent_run_id: str, best: FrozenTrial, *, step: int) -> None:
    """Record the best trial on the parent: metric ``best_value``, tags ``best.<param>``.

    The best params are tags, not params, because MLflow params are write-once and a resumed
    sweep that finds a better trial must be able to overwrite them.
    """
    tracker.log_metrics(parent_run_id, {"best_value": float(best.value)}, step=step)
    best_tags = {f"best.{key}": str(value) for key, value in best.params.items()}
    tracker.set_tags(parent_run_id, {BEST_TRIAL_TAG: str(best.number), **best_tags})


