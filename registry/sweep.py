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

import functools
import math
import multiprocessing
import pickle
import signal
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from registry.search_spec import ParamSpec, PrunerSpec, SearchSpec
from registry.study_storage import (
    Heartbeat,
    StudyLock,
    default_storage,  # noqa: F401 (re-exported: where the journal of a study goes)
    is_rdb,
    open_storage,
    retried_numbers,
)
from registry.tracking import (
    TAG_BEST_TRIAL as BEST_TRIAL_TAG,
    TAG_DUPLICATE_OF as DUPLICATE_TAG,
    TAG_RETRY_OF as RETRY_TAG,
    TAG_STUDY as STUDY_TAG,
    TAG_TRIAL_NUMBER as TRIAL_NUMBER_TAG,
    TAG_TRIAL_STATE as TRIAL_STATE_TAG,
    RunHandle,
    Tracker,
    heartbeat,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

RUN_ID_ATTR = "mlflow_run_id"  # optuna user attr: the child run of a trial
_INTERRUPTED_ATTR = "arflare.interrupted"  # Ctrl-C'd trials do not use up the budget
_SESSIONS_ATTR = "arflare.sessions"  # study attr: sweep commands started so far (seeds each one's sampler)
_FORBIDDEN_IN_STUDY_NAME = "/\\'\"`"  # path separators and quotes (MLflow filters cannot escape them)
_STOP_GRACE_S = 30.0  # how long Ctrl-C waits for workers to close their runs before killing them


class NonFiniteObjectiveError(ValueError):
    """The objective was NaN or infinite: the trial fails instead of steering the sampler."""


class TrialReporter:
    """What a trial function gets: its child run (logging only) and the pruning hook.

    Logging never steers: pruning happens only when the trial's training loop calls
    :meth:`report_objective` from its validation hook, once per epoch.

    Args:
        run: The trial's child run.
        trial: The running Optuna trial.
        objective: Metric name the study optimises (``SearchSpec.objective``).
    """

    def __init__(self, *, run: RunHandle, trial: optuna.Trial, objective: str) -> None:
        self._run = run
        self._trial = trial
        self.objective = objective

    @property
    def run_id(self) -> str:
        """The child run's MLflow id."""
        return self._run.run_id

    @property
    def trial_number(self) -> int:
        """The Optuna trial's number."""
        return self._trial.number

    def report_objective(self, value: float, *, step: int) -> None:
        """Tell Optuna the objective at ``step`` (an epoch); stop the trial when the pruner says so.

        Raises:
            optuna.TrialPruned: The pruner stopped the trial; let it propagate.
            NonFiniteObjectiveError: The objective is NaN or infinite.
        """
        value = _finite(self.objective, value, f"at step {step}")
        self._trial.report(value, step)
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"{self.objective}={value:.6g} at step {step}")

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        """Log metrics on the child run."""
        self._run.log_metrics(metrics, step=step)

    def log_params(self, params: Mapping[str, object]) -> None:
        """Log params on the child run (write-once: the sampled params are already there)."""
        self._run.log_params(params)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags on the child run."""
        self._run.set_tags(tags)

    def log_dataset(self, **dataset: object) -> None:
        """Record the data the child run reads (see ``Tracker.log_dataset_input``)."""
        self._run.log_dataset(**dataset)

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or directory to the child run."""
        self._run.log_artifact(local_path, artifact_path)

    def log_dict(self, obj: object, artifact_file: str) -> None:
        """Save ``obj`` as a JSON/YAML artifact of the child run."""
        self._run.log_dict(obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Save ``text`` as an artifact of the child run."""
        self._run.log_text(text, artifact_file)

    def logged_steps(self, key: str) -> set[int]:
        """Steps at which ``key`` is already logged on the child run."""
        return self._run.logged_steps(key)

    def beat(self) -> None:
        """Refresh the child run's heartbeat."""
        self._run.beat()


TrialFn = Callable[[Mapping[str, object], TrialReporter], float]


def _finite(name: str, value: object, where: str) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise NonFiniteObjectiveError(f"objective {name!r} is {number} {where}; the trial fails (diverged training?)")
    return number


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
        sampler=_sampler(search.sampler.name, search.sampler.seed), pruner=_pruner(search.pruner), load_if_exists=True,
    )
    if study.direction.name.lower() != search.direction:
        raise ValueError(
            f"study {study_name!r} in {storage} exists with direction {study.direction.name.lower()}, "
            f"but search.direction is {search.direction}; pick a new study name or fix the direction"
        )
    return study


def _sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    if spec.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps)
    if spec.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=spec.min_resource, reduction_factor=spec.reduction_factor)
    return optuna.pruners.NopPruner()


def _stream_seed(seed: int | None, *stream: int) -> int | None:
    """Derive a reproducible seed per (session, worker), so seeded samplers never replay draws."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1)[0])


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


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs; picklable, because spawned workers receive it."""

    study_name: str
    storage: str
    search: SearchSpec
    trial_fn: TrialFn
    tracker_kwargs: dict[str, object]
    run_prefix: str
    tags: dict[str, str]
    n_trials: int
    progress: bool
    session: int  # which sweep command of the study this is: seeds the sampler
    parent_run_id: str
    heartbeat: Heartbeat | None  # RDB storages: Optuna's heartbeat and retry of dead workers' trials


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
        job = _Job(
            study_name=study_name, storage=storage, search=search, trial_fn=trial_fn,
            tracker_kwargs=dict(tracker_kwargs), run_prefix=run_prefix, tags=dict(tags), n_trials=total,
            progress=progress, session=session, parent_run_id=parent_run_id, heartbeat=beat,
        )
        if workers == 1:
            _work(job, worker=0)
        else:
            _run_workers(job, workers=workers)
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
        optuna.trial.Trial(study, trial._trial_id).set_user_attr(_INTERRUPTED_ATTR, True)
        study.tell(trial.number, state=TrialState.FAIL)
        _mark_run_failed(tracker, trial)
    if orphans:
        _say(study_name, f"trials {[t.number for t in orphans]} were left RUNNING by a process that died: "
                         "marked FAIL (they do not count towards the total)")


def _mark_run_failed(tracker: Tracker, trial: FrozenTrial) -> None:
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if run_id:
        tracker.set_tags(run_id, {TRIAL_STATE_TAG: "FAIL"})
        tracker.set_terminated(run_id, "FAILED")


def _stale_trial_failed(study: optuna.Study, trial: FrozenTrial, *, tracker: Tracker) -> None:
    """Optuna's heartbeat declared ``trial`` dead (its worker went silent): its run ends FAILED too."""
    _mark_run_failed(tracker, trial)
    _say(study.study_name, f"trial {trial.number} went silent (its worker died): FAIL, queued again with the same params")


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


def _run_workers(job: _Job, *, workers: int) -> None:
    context = multiprocessing.get_context("spawn")  # fork would copy MLflow/sqlite connections and threads
    processes = [context.Process(target=_worker_main, args=(job, i), name=f"sweep-worker-{i}") for i in range(workers)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        _stop(processes)
        raise
    codes = [p.exitcode for p in processes if p.exitcode != 0]
    if codes:
        raise RuntimeError(f"{len(codes)} of {workers} sweep workers exited with codes {codes}; their errors are above on stderr")


def _stop(processes: list[multiprocessing.process.BaseProcess]) -> None:
    """Stop workers once each (SIGTERM: fail the trial, mark its run KILLED), then kill stragglers."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + _STOP_GRACE_S
    try:
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
    finally:  # also after a second Ctrl-C
        for process in processes:
            if process.is_alive():
                process.kill()


def _worker_main(job: _Job, worker: int) -> None:
    # Ctrl-C in a terminal reaches every process of the group. Workers ignore it and wait for
    # the parent's single SIGTERM instead, so a second signal cannot cut their cleanup short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        _work(job, worker=worker)
    except KeyboardInterrupt:
        sys.exit(130)


def _raise_interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough
    raise KeyboardInterrupt


def _work(job: _Job, *, worker: int) -> None:
    """Run trials until the study holds ``job.n_trials`` counted trials and none is in flight elsewhere."""
    seed = _stream_seed(job.search.sampler.seed, job.session, worker)
    tracker = Tracker(**job.tracker_kwargs)
    on_stale = functools.partial(_stale_trial_failed, tracker=tracker)
    storage = open_storage(job.storage, heartbeat=job.heartbeat, on_stale=on_stale)
    study = optuna.load_study(  # run_sweep created it; each worker samples from its own seed stream
        study_name=job.study_name, storage=storage, sampler=_sampler(job.search.sampler.name, seed),
        pruner=_pruner(job.search.pruner),
    )
    lock = StudyLock(job.storage, job.study_name)
    while True:
        with lock:  # count-then-ask must be atomic across workers (and machines), or the total overshoots
            trial, wait = _next_trial(study, job, storage)
        if trial is not None:
            with _trial_heartbeat(storage, trial, job.heartbeat):
                _run_trial(job, study, trial, tracker)
        elif wait:  # trials run elsewhere; if one's worker died, its retry comes back here
            time.sleep(job.heartbeat.interval_s)
        else:
            return


def _next_trial(study: optuna.Study, job: _Job, storage) -> tuple[optuna.Trial | None, bool]:
    """A trial to run (a queued retry first), or None and whether to wait for trials in flight elsewhere."""
    if job.heartbeat is not None:
        optuna.storages.fail_stale_trials(study)  # silent RUNNING trials -> FAIL + a WAITING retry
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    if TrialState.WAITING in states or _budget_used(trials) < job.n_trials:
        trial = study.ask()
        if job.heartbeat is not None:  # at once, under the lock: a trial never runs without a heartbeat row,
            storage.record_heartbeat(trial._trial_id)  # which Optuna needs to ever call it stale
        return trial, False
    return None, job.heartbeat is not None and TrialState.RUNNING in states


@contextmanager
def _trial_heartbeat(storage, trial: optuna.Trial, beat: Heartbeat | None) -> Iterator[None]:
    """Optuna's heartbeat of a running trial (``study.optimize`` does this itself; ask/tell does not)."""
    if beat is None:
        yield
        return
    with heartbeat(lambda: storage.record_heartbeat(trial._trial_id), every_s=beat.interval_s):
        yield


def _budget_used(trials: list[FrozenTrial]) -> int:
    retried = retried_numbers(trials)

    def counts(t: FrozenTrial) -> bool:
        if t.state in (TrialState.RUNNING, TrialState.WAITING):  # in flight, or a queued retry
            return True
        if t.state == TrialState.FAIL:  # a Ctrl-C'd trial or one queued again does not count
            return not t.user_attrs.get(_INTERRUPTED_ATTR, False) and t.number not in retried
        return t.state in (TrialState.COMPLETE, TrialState.PRUNED)

    return sum(counts(t) for t in trials)


def _run_trial(job: _Job, study: optuna.Study, trial: optuna.Trial, tracker: Tracker) -> None:
    """Run one trial and tell Optuna how it ended; only Ctrl-C (or a scheduler's exit) escapes."""
    value, state, error = None, TrialState.COMPLETE, None
    try:
        value = _objective(job, study, trial, tracker)
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except (KeyboardInterrupt, SystemExit):  # SystemExit: a preempted SLURM job requeueing itself
        trial.set_user_attr(_INTERRUPTED_ATTR, True)
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:  # the trial failed, the sweep goes on; the run holds the traceback
        state, error = TrialState.FAIL, exc
    frozen = study.tell(trial, value, state=state)
    if job.progress or error is not None:
        shown = "" if frozen.value is None else f" value={frozen.value:.6g}"
        why = "" if error is None else f" ({type(error).__name__}: {error})"
        _say(job.study_name, f"trial {frozen.number} {frozen.state.name}{shown} params={frozen.params}{why}")


def _objective(job: _Job, study: optuna.Study, trial: optuna.Trial, tracker: Tracker) -> float:
    params = {name: _suggest(trial, name, spec) for name, spec in job.search.params.items()}
    trials = study.get_trials(deepcopy=False)
    twin = next((t for t in trials if t.state == TrialState.COMPLETE and t.params == params), None)
    tags = {**job.tags, TRIAL_NUMBER_TAG: str(trial.number)}
    if twin is not None:
        tags[DUPLICATE_TAG] = str(twin.number)
    retry_of = next((t.system_attrs.get("failed_trial") for t in trials if t.number == trial.number), None)
    if retry_of is not None:
        tags[RETRY_TAG] = str(retry_of)
    run_name = f"{job.run_prefix}/trial={trial.number}"
    with tracker.start_run(run_name=run_name, tags=tags, params=params, parent_run_id=job.parent_run_id) as run:
        trial.set_user_attr(RUN_ID_ATTR, run.run_id)
        state, value = _train(job, trial, run, params, twin)
    if state == "PRUNED":  # raised only now, so that the child run ends FINISHED
        raise optuna.TrialPruned()
    return value


def _train(job: _Job, trial: optuna.Trial, run: RunHandle, params: dict, twin: FrozenTrial | None) -> tuple[str, float]:
    """Call the trial function (or reuse the twin's value) and tag the run with the outcome."""
    try:
        if twin is not None:
            value = float(twin.value)
        else:
            reporter = TrialReporter(run=run, trial=trial, objective=job.search.objective)
            value = _finite(job.search.objective, job.trial_fn(params, reporter), "as returned by the trial function")
    except optuna.TrialPruned:
        run.set_tags({TRIAL_STATE_TAG: "PRUNED"})
        return "PRUNED", math.nan
    except BaseException:
        run.set_tags({TRIAL_STATE_TAG: "FAIL"})
        raise
    run.set_tags({TRIAL_STATE_TAG: "COMPLETE"})
    return "COMPLETE", value


def _suggest(trial: optuna.Trial, name: str, spec: ParamSpec) -> object:
    if spec.type == "categorical":
        return trial.suggest_categorical(name, list(spec.choices))
    if spec.type == "int":
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)


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


def _say(study_name: str, message: str) -> None:
    print(f"[sweep {study_name}] {message}", file=sys.stderr, flush=True)
