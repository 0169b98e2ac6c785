"""``arflare submit``: an experiment's seeds x grid as a scheduler job array, or K sweep workers, via submitit.

Each job is a picklable callable that runs exactly what ``arflare run`` (one planned run, picked
by name) or ``arflare sweep`` (one worker on the shared study) would, on the node the scheduler
picks; the job id becomes the run's ``arflare.job_id`` tag. Preemption follows submitit's
checkpointing protocol: the scheduler's warning signal (SLURM ``--signal``, submitit's USR2 by
default) makes submitit call the job's :meth:`checkpoint`, which returns the job again marked
``requeued``; the run being trained ends KILLED with its resume state kept, and the requeued
job reopens *that* MLflow run through the lifecycle's resume (``arflare.running``). Nothing
here imports torch: the jobs import it when they train.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from arflare.errors import UsageError
from registry.loader import Registry

TRACKING_ENV = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class Resources:
    """What each job asks the scheduler for.

    Attributes:
        partition: SLURM partition (None: the cluster's default).
        gpus: GPUs per job.
        time_min: Wall-clock limit in minutes; submitit sends the preemption signal before it.
        nproc: Processes per job (DDP ranks).
        cpus: CPU cores per job (None: the cluster's default).
    """

    partition: str | None = None
    gpus: int = 0
    time_min: int = 240
    nproc: int = 1
    cpus: int | None = None


@dataclass(frozen=True)
class RunJob:
    """One planned run (``run_name`` of ``experiment``), trained in a job; a requeued job resumes it.

    Attributes:
        registry_file: Absolute path of experiments.yaml.
        experiment: The experiment.
        run_name: Which of its expanded runs (``exp/seed=1``).
        profile: Profile applied, or None.
        sets: ``--set`` items.
        tracking_uri: ``$MLFLOW_TRACKING_URI`` at submission (None: the store beside the registry).
        requeued: Set by :meth:`checkpoint`: a RUNNING run of the same spec is this job's own, preempted.
    """

    registry_file: str
    experiment: str
    run_name: str
    profile: str | None
    sets: tuple[str, ...]
    tracking_uri: str | None
    requeued: bool = False

    def __call__(self) -> str:
        from arflare.checkpoints import CheckpointOptions
        from arflare.running import RunOptions, run_experiments

        registry = _enter_job(self.registry_file, self.tracking_uri)
        options = RunOptions(only=self.run_name, takeover=self.requeued, tags=job_tags(),
                             checkpoints=CheckpointOptions())
        if run_experiments(registry, [self.experiment], profile=self.profile, sets=self.sets, options=options):
            raise RuntimeError(f"run {self.run_name} FAILED; its traceback is an artifact of the run (arflare ui)")
        return self.run_name

    def checkpoint(self):
        """submitit calls this on preemption/timeout: requeue this job, marked as resuming its own run."""
        import submitit

        return submitit.helpers.DelayedSubmission(replace(self, requeued=True))


@dataclass(frozen=True)
class SweepJob:
    """One sweep worker on the shared study; a requeued job simply joins the study again.

    Attributes are as for :class:`RunJob`, plus ``storage`` (the Optuna storage every worker
    shares), ``trials`` (the study's total) and ``heartbeat`` (overrides of
    ``registry.study_storage.Heartbeat``).
    """

    registry_file: str
    experiment: str
    profile: str | None
    sets: tuple[str, ...]
    tracking_uri: str | None
    storage: str | None
    trials: int | None
    heartbeat: tuple[tuple[str, int], ...] = ()

    def __call__(self) -> str:
        from arflare.sweeping import sweep

        registry = _enter_job(self.registry_file, self.tracking_uri)
        code = sweep(registry, self.experiment, profile=self.profile, sets=self.sets, trials=self.trials, workers=1,
                     storage=self.storage, best=False, heartbeat=dict(self.heartbeat), tags=job_tags())
        if code:
            raise RuntimeError(f"sweep worker of {self.experiment} exited with {code}")
        return self.experiment

    def checkpoint(self):
        """Requeue this worker: its interrupted trial does not count, the study goes on."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def job_tags() -> dict[str, str]:
    """``arflare.job_id`` (and the scheduler) of the job this process runs in; empty outside one."""
    import submitit

    from arflare import record

    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return {}
    return {record.TAG_JOB_ID: str(env.job_id), record.TAG_SCHEDULER: env.name()}


def _enter_job(registry_file: str, tracking_uri: str | None) -> Registry:
    from arflare.commands import open_registry

    if tracking_uri:
        os.environ[TRACKING_ENV] = tracking_uri
    return open_registry(registry_file)


def plan_jobs(registry: Registry, name: str, *, profile: str | None, sets: Sequence[str], seeds: Sequence[int] | None,
              sweep_workers: int | None, storage: str | None, trials: int | None, local: bool,
              heartbeat: Mapping[str, int] = {}) -> list[RunJob | SweepJob]:
    """The jobs ``arflare submit`` sends: one per planned run (seeds x grid), or ``sweep_workers`` sweep workers.

    Raises:
        UsageError: A sweep across nodes without a shared ``--storage``, or an experiment without search.
        RegistryError: Unknown experiment, profile or ``--set`` key.
    """
    registry_file = str(Path(registry.path).resolve())
    tracking_uri = os.environ.get(TRACKING_ENV)
    if sweep_workers is not None:
        if registry.experiments.get(name) is None or registry.experiments[name].search is None:
            raise UsageError(f"--sweep: experiment {name!r} has no search: block (arflare list shows the sweeps)")
        registry.expand(name, profile=profile, sets=sets)  # bad input fails now, not in K jobs
        if storage is None and not local:
            raise UsageError("--sweep on a cluster needs a study every node reaches: add --storage postgresql://USER@HOST/DB "
                             "(the default journal file is local to one machine; --local may use it)")
        job = SweepJob(registry_file=registry_file, experiment=name, profile=profile, sets=tuple(sets),
                       tracking_uri=tracking_uri, storage=storage, trials=trials, heartbeat=tuple(heartbeat.items()))
        return [job] * sweep_workers
    variants = [list(sets)] if not seeds else [[*sets, f"train.seed={seed}"] for seed in seeds]
    jobs = []
    for items in variants:
        for run in registry.expand(name, profile=profile, sets=items):
            jobs.append(RunJob(registry_file=registry_file, experiment=name, run_name=run.name, profile=profile,
                               sets=tuple(items), tracking_uri=tracking_uri))
    return jobs


def make_executor(folder: Path, resources: Resources, *, local: bool):
    """submitit's LocalExecutor (``--local``) or its SLURM executor, with ``resources`` applied."""
    import submitit

    if local:
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=resources.time_min, gpus_per_node=resources.gpus, tasks_per_node=1)
        return executor
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params: dict[str, object] = {"timeout_min": resources.time_min, "gpus_per_node": resources.gpus, "tasks_per_node": 1,
                                 "slurm_additional_parameters": {"requeue": True}}
    if resources.partition:
        params["slurm_partition"] = resources.partition
    if resources.cpus:
        params["cpus_per_task"] = resources.cpus
    executor.update_parameters(**params)
    return executor


def submit(jobs: Sequence[RunJob | SweepJob], executor) -> list:
    """Submit ``jobs`` as one array (SLURM) or one process each (local); return submitit's job handles."""
    with executor.batch():
        handles = [executor.submit(job) for job in jobs]
    return handles


def describe(job: RunJob | SweepJob) -> str:
    return job.run_name if isinstance(job, RunJob) else f"sweep worker of {job.experiment}"


def wait_all(handles: Sequence, jobs: Sequence[RunJob | SweepJob]) -> int:
    """Wait for local jobs, print how each ended; 1 if any failed."""
    failed = 0
    for handle, job in zip(handles, jobs):
        try:
            handle.result()
            print(f"job {handle.job_id} {describe(job)}: done")
        except Exception as exc:  # submitit re-raises the job's error with its traceback
            failed += 1
            print(f"job {handle.job_id} {describe(job)}: FAILED ({type(exc).__name__}); log: {handle.paths.stderr}",
                  file=sys.stderr)
    return 1 if failed else 0


def submit_command(registry: Registry, name: str, *, profile: str | None, sets: Sequence[str],
                   seeds: Sequence[int] | None, sweep_workers: int | None, storage: str | None, trials: int | None,
                   resources: Resources, local: bool) -> int:
    """``arflare submit``: plan, submit, and (``--local``) wait; print each job id and what it runs."""
    if resources.nproc > 1:
        raise UsageError("not built yet: arflare submit --nproc N (a DDP job per run: the job would have to pass its "
                         "run, job id and requeue state through torchrun to every rank); submit with --nproc 1, or "
                         "call `arflare run NAME --nproc N` from your own sbatch script")
    jobs = plan_jobs(registry, name, profile=profile, sets=sets, seeds=seeds, sweep_workers=sweep_workers,
                     storage=storage, trials=trials, local=local)
    folder = Path(registry.path).resolve().parent / "mlruns" / "submitit" / "%j"
    handles = submit(jobs, make_executor(folder, resources, local=local))
    where = "on this machine (submitit LocalExecutor)" if local else "to SLURM"
    print(f"submitted {len(jobs)} job(s) {where}; logs in {folder.parent}")
    for handle, job in zip(handles, jobs):
        print(f"  job {handle.job_id}: {describe(job)}")
    if not local:
        print("watch: squeue --me  |  arflare runs  |  arflare compare")
        return 0
    return wait_all(handles, jobs)

