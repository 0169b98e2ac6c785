"""``arflare submit``: an experiment's seeds x grid as a scheduler job array, or K sweep workers, via submitit.

Each job is a picklable callable that runs exactly what ``arflare run`` (one planned run, picked
by name) or ``arflare sweep`` (one worker on the shared study) would, on the node the scheduler
picks; the job id becomes the run's ``arflare.job_id`` tag. Preemption follows submitit's
checkpointing protocol: the scheduler's warning signal (SLURM ``--signal``, submitit's USR2 by
default) makes submitit call the job's :meth:`checkpoint`, which returns the job again marked
``requeued``; the run being trained ends KILLED with its resume state kept, and the requeued
job reopens *that* MLflow run through the lifecycle's resume (``arflare.running``).

With ``--nproc N`` a job is still one scheduler task (one node, N GPUs or CPU cores); the task
launches N DDP ranks of its run through torchrun exactly as ``arflare run --nproc N`` does
(:func:`arflare.distributed.launch`), each rank entering through :mod:`arflare._job_rank`. The
task alone answers the preemption signal: submitit requeues the job and exits, and torchrun's
agent stops the ranks with SIGTERM on the way out, which ends the run KILLED with its state kept.
Nothing here imports torch: the jobs import it when they train.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from arflare.ddp_checks import check_plans
from arflare.errors import UsageError
from registry.loader import Registry

TRACKING_ENV = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class Resources:
    """What each job asks the scheduler for.

    Attributes:
        partition: SLURM partition (None: the cluster's default).
        gpus: GPUs per job: 0, or one per process (``nproc``).
        time_min: Wall-clock limit in minutes; submitit sends the preemption signal before it.
        nproc: Processes per job (DDP ranks, all on the job's node).
        cpus: CPU cores per job (None: the cluster's default; :func:`settle_resources` fills it
            in for DDP jobs).
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
        nproc: DDP processes that train the run (1: the job's own process trains it).
        requeued: Set by :meth:`checkpoint`: a RUNNING run of the same spec is this job's own, preempted.
    """

    registry_file: str
    experiment: str
    run_name: str
    profile: str | None
    sets: tuple[str, ...]
    tracking_uri: str | None
    nproc: int = 1
    requeued: bool = False

    def __call__(self) -> str:
        if self.nproc > 1:
            from arflare._job_rank import launch_ranks

            code = launch_ranks(self, job_tags())
        else:
            code = self.train(job_tags())
        if code:
            raise RuntimeError(f"run {self.run_name} ended with exit code {code}"
                               + (f" in {self.nproc} DDP processes (each rank's error is in this job's log)"
                                  if self.nproc > 1 else "")
                               + "; a FAILED run keeps its traceback as an artifact (arflare ui)")
        return self.run_name

    def train(self, tags: Mapping[str, str]) -> int:
        """Train (skip, or resume) the run in this process, the job's only one or one of its DDP ranks.

        Args:
            tags: The job's scheduler tags; rank 0 sets them on the run.

        Returns:
            ``arflare run``'s exit code: 1 when the run FAILED.
        """
        from arflare.checkpoints import CheckpointOptions
        from arflare.running import RunOptions, run_experiments

        registry = _enter_job(self.registry_file, self.tracking_uri)
        options = RunOptions(only=self.run_name, takeover=self.requeued, tags=tags, checkpoints=CheckpointOptions())
        return run_experiments(registry, [self.experiment], profile=self.profile, sets=self.sets, options=options)

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
              heartbeat: Mapping[str, int] = {}, nproc: int = 1) -> list[RunJob | SweepJob]:
    """The jobs ``arflare submit`` sends: one per planned run (seeds x grid), or ``sweep_workers`` sweep workers.

    Args:
        nproc: DDP processes per run job (sweep workers train in one process).

    Raises:
        UsageError: A sweep across nodes without a shared ``--storage``, an experiment without
            search, or a run that cannot train in ``nproc`` processes.
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
    jobs, plans = [], []
    for items in variants:
        for run in registry.expand(name, profile=profile, sets=items):
            plans.append(run)
            jobs.append(RunJob(registry_file=registry_file, experiment=name, run_name=run.name, profile=profile,
                               sets=tuple(items), tracking_uri=tracking_uri, nproc=nproc))
    check_plans(plans, nproc)  # a batch that does not split fails now, not in every job
    return jobs


def settle_resources(resources: Resources, registry: Registry, name: str, *, profile: str | None,
                     sets: Sequence[str], sweep: bool) -> Resources:
    """What each job asks the scheduler for: ``resources`` checked, and CPU cores filled in for DDP jobs.

    Each DDP process trains on one GPU (or on CPU cores with gloo), so GPUs per job are 0 or
    ``nproc``; sweep workers train each trial in one process. A ``--nproc N`` job without
    ``--cpus`` asks for N x (1 + ``data.num_workers``) cores: each process and its loader workers.

    Raises:
        UsageError: saying which options clash and what to ask for instead.
    """
    n, gpus = resources.nproc, resources.gpus
    if sweep and n > 1:
        raise UsageError(f"--nproc {n} with --sweep is not supported: each sweep trial trains in one process; "
                         "scale a sweep out with --workers K (K jobs on one study), or drop --sweep to train "
                         "the experiment's runs with DDP")
    if gpus and gpus != n:
        fix = (f"add --nproc {gpus} to train each run on the {gpus} GPUs (DDP)" if n == 1 else
               f"ask for --gpus {n} (one per process), or --gpus 0 to train the {n} processes on CPU cores (gloo)")
        raise UsageError(f"--gpus {gpus} with --nproc {n}: each process trains on one GPU, so "
                         f"{'some would sit idle' if gpus > n else 'some processes would have none'}; {fix}")
    if n == 1 or resources.cpus is not None:
        return resources
    loaders = max(run.spec.data.num_workers for run in registry.expand(name, profile=profile, sets=sets))
    return replace(resources, cpus=n * (1 + loaders))


def make_executor(folder: Path, resources: Resources, *, local: bool):
    """submitit's LocalExecutor (``--local``) or its SLURM executor, with ``resources`` applied."""
    import submitit

    if local:
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=resources.time_min, gpus_per_node=resources.gpus, tasks_per_node=1)
        return executor
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise UsageError(f"no SLURM here: {' and '.join(missing)} not on PATH; submit from the cluster's login node, "
                         "or add --local to run the jobs on this machine")
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
    """What a job runs, for the lines ``arflare submit`` prints."""
    if isinstance(job, SweepJob):
        return f"sweep worker of {job.experiment}"
    return job.run_name + (f" in {job.nproc} DDP processes" if job.nproc > 1 else "")


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
    resources = settle_resources(resources, registry, name, profile=profile, sets=sets, sweep=sweep_workers is not None)
    jobs = plan_jobs(registry, name, profile=profile, sets=sets, seeds=seeds, sweep_workers=sweep_workers,
                     storage=storage, trials=trials, local=local, nproc=resources.nproc)
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

