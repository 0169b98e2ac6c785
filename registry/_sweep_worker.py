"""One sweep worker: ask the study for a trial, train it as a child run, tell the study how it ended.

``registry.sweep`` opens the study and the parent run, then runs :func:`work` in its own process
or in spawned worker processes (:func:`run_workers`); every worker of every command on the study
takes turns through the study lock and, on an RDB storage, keeps Optuna's heartbeat of its trial.
This module imports neither torch nor ``arflare``.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
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
from registry.study_storage import Heartbeat, StudyLock, open_storage, retried_numbers
from registry.tracking import (
    TAG_DUPLICATE_OF as DUPLICATE_TAG,
    TAG_RETRY_OF as RETRY_TAG,
    TAG_TRIAL_NUMBER as TRIAL_NUMBER_TAG,
    TAG_TRIAL_STATE as TRIAL_STATE_TAG,
    RunHandle,
    Tracker,
    heartbeat,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

RUN_ID_ATTR = "mlflow_run_id"  # optuna user attr: the child run of a trial


INTERRUPTED_ATTR = "arflare.interrupted"  # Ctrl-C'd trials do not use up the budget


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


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
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


@dataclass(frozen=True)
class Job:
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


def mark_run_failed(tracker: Tracker, trial: FrozenTrial) -> None:
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if run_id:
        tracker.set_tags(run_id, {TRIAL_STATE_TAG: "FAIL"})
        tracker.set_terminated(run_id, "FAILED")


def _stale_trial_failed(study: optuna.Study, trial: FrozenTrial, *, tracker: Tracker) -> None:
    """Optuna's heartbeat declared ``trial`` dead (its worker went silent): its run ends FAILED too."""
    mark_run_failed(tracker, trial)
    say(study.study_name, f"trial {trial.number} went silent (its worker died): FAIL, queued again with the same params")


def run_workers(job: Job, *, workers: int) -> None:
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


def _worker_main(job: Job, worker: int) -> None:
    # Ctrl-C in a terminal reaches every process of the group. Workers ignore it and wait for
    # the parent's single SIGTERM instead, so a second signal cannot cut their cleanup short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        work(job, worker=worker)
    except KeyboardInterrupt:
        sys.exit(130)


def _raise_interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough
    raise KeyboardInterrupt


def work(job: Job, *, worker: int) -> None:
    """Run trials until the study holds ``job.n_trials`` counted trials and none is in flight elsewhere."""
    seed = _stream_seed(job.search.sampler.seed, job.session, worker)
    tracker = Tracker(**job.tracker_kwargs)
    on_stale = functools.partial(_stale_trial_failed, tracker=tracker)
    storage = open_storage(job.storage, heartbeat=job.heartbeat, on_stale=on_stale)
    study = optuna.load_study(  # run_sweep created it; each worker samples from its own seed stream
        study_name=job.study_name, storage=storage, sampler=make_sampler(job.search.sampler.name, seed),
        pruner=make_pruner(job.search.pruner),
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


def _next_trial(study: optuna.Study, job: Job, storage) -> tuple[optuna.Trial | None, bool]:
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


def trials_left(trials: list[FrozenTrial], n_trials: int) -> int:
    """Trials still to start to reach ``n_trials``: the unused budget plus queued retries (counted as used)."""
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return max(0, n_trials - _budget_used(trials)) + waiting


def _budget_used(trials: list[FrozenTrial]) -> int:
    retried = retried_numbers(trials)

    def counts(t: FrozenTrial) -> bool:
        if t.state in (TrialState.RUNNING, TrialState.WAITING):  # in flight, or a queued retry
            return True
        if t.state == TrialState.FAIL:  # a Ctrl-C'd trial or one queued again does not count
            return not t.user_attrs.get(INTERRUPTED_ATTR, False) and t.number not in retried
        return t.state in (TrialState.COMPLETE, TrialState.PRUNED)

    return sum(counts(t) for t in trials)


def _run_trial(job: Job, study: optuna.Study, trial: optuna.Trial, tracker: Tracker) -> None:
    """Run one trial and tell Optuna how it ended; only Ctrl-C (or a scheduler's exit) escapes."""
    value, state, error = None, TrialState.COMPLETE, None
    try:
        value = _objective(job, study, trial, tracker)
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except (KeyboardInterrupt, SystemExit):  # SystemExit: a preempted SLURM job requeueing itself
        trial.set_user_attr(INTERRUPTED_ATTR, True)
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:  # the trial failed, the sweep goes on; the run holds the traceback
        state, error = TrialState.FAIL, exc
    frozen = study.tell(trial, value, state=state)
    if job.progress or error is not None:
        shown = "" if frozen.value is None else f" value={frozen.value:.6g}"
        why = "" if error is None else f" ({type(error).__name__}: {error})"
        say(job.study_name, f"trial {frozen.number} {frozen.state.name}{shown} params={frozen.params}{why}")


def _objective(job: Job, study: optuna.Study, trial: optuna.Trial, tracker: Tracker) -> float:
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


def _train(job: Job, trial: optuna.Trial, run: RunHandle, params: dict, twin: FrozenTrial | None) -> tuple[str, float]:
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


def say(study_name: str, message: str) -> None:
    print(f"[sweep {study_name}] {message}", file=sys.stderr, flush=True)
