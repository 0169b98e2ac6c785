"""`arflare submit` through submitit's LocalExecutor: the job trains its run, tags its job id, and a
preempted job requeues itself and resumes the same MLflow run, in one process or in 2 DDP processes
(gloo on the CPU)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from arflare import record
from arflare.cli import main
from arflare.commands import open_registry
from arflare.data.synth import generate
from arflare.errors import UsageError
from arflare.submitting import Resources, make_executor, plan_jobs, settle_resources, submit
from tests.arflare.test_distributed import _descendants

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submit")
    generate(folder / "synth", ars=8, size=24, hours=10, seed=2, progress=False, overwrite=True)
    shutil.copy(REPO / "experiments.yaml", folder / "experiments.yaml")
    with pytest.MonkeyPatch.context() as mp:  # the jobs inherit this environment
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("ARFLARE_CACHE", str(folder / "cache"))
        _train_runs(folder)  # create the store now: the tests poll it while jobs write to it
        yield folder


def _sets(ws: Path, *extra: str) -> list[str]:
    return [f"data.root={ws / 'synth' / 'magnetograms'}", "data.generate_if_missing=false", "model.backbone=resnet10t",
            *extra]


def _train_runs(ws: Path, job_id: str | None = None):
    """The store's training runs (those of job ``job_id`` only, if given)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("arflare")
    if experiment is None:
        return client, []
    found = client.search_runs([experiment.experiment_id], filter_string="tags.`arflare.kind` = 'train'")
    return client, [r for r in found if job_id is None or r.data.tags.get(record.TAG_JOB_ID) == job_id]


def test_submit_local_trains_the_run_and_tags_its_job_id(ws, capsys):
    args = ["submit", "exp1_basic_reg", "--profile", "smoke", "--local", "--file", str(ws / "experiments.yaml")]
    for item in _sets(ws):
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    job_id = out.split("job ", 1)[1].split(":", 1)[0]
    _, (run,) = _train_runs(ws, job_id)
    assert run.info.status == "FINISHED" and run.data.tags[record.TAG_EXPERIMENT] == "exp1_basic_reg"
    assert run.data.tags[record.TAG_SCHEDULER] == "local" and record.TAG_WORLD_SIZE not in run.data.tags


def test_a_preempted_job_requeues_and_resumes_the_same_run(ws):
    epochs = 4
    registry = open_registry(ws / "experiments.yaml")
    (job,) = plan_jobs(registry, "exp2_basic_aug", profile="smoke", sets=_sets(ws, f"train.epochs={epochs}"),
                       seeds=None, sweep_workers=None, storage=None, trials=None, local=True)
    (handle,) = submit([job], make_executor(ws / "mlruns" / "submitit" / "%j", Resources(time_min=10), local=True))
    task = _first_epoch_logged(ws, int(handle.job_id))
    os.kill(task, submitit_signal())
    os.kill(task, signal.SIGCONT)
    assert handle.result() == job.run_name
    log = handle.stdout() + (handle.stderr() or "")
    assert "Requeued job" in log, log[-3000:]

    client, (run,) = _train_runs(ws, handle.job_id)  # resumed, not a second run
    assert run.info.status == "FINISHED"
    assert run.data.tags[record.TAG_RESUMED] == "1" and run.data.tags[record.TAG_EXPERIMENT] == "exp2_basic_aug"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, epochs + 1))  # every epoch exactly once (steps count from 1)


def test_a_ddp_job_preempted_resumes_its_run_in_2_processes_scoring_every_sample_once(ws):
    from arflare.builders import build_datasets
    from arflare.lifecycle import prepare_data

    epochs, sets = 3, _sets(ws, "train.epochs=3", "eval.plots=false")
    command = [sys.executable, "-u", "-m", "arflare", "submit", "exp2_basic_aug", "--profile", "smoke", "--local",
               "--nproc", "2", "--file", str(ws / "experiments.yaml"), *(a for item in sets for a in ("--set", item))]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = cli.stdout.readline() + cli.stdout.readline()  # "submitted 1 job(s) ..." then "  job ID: RUN in 2 DDP processes"
    assert "in 2 DDP processes" in line, line + cli.stderr.read()
    job_id = line.split("job ", 1)[1].split(":", 1)[0]
    launcher = _first_epoch_logged(ws, int(job_id))  # the job's task: torchrun's launcher of the 2 ranks
    ranks = _descendants(launcher)
    assert len([p for p in ranks if "arflare._job_rank" in Path(f"/proc/{p}/cmdline").read_text()]) == 2
    for pid in ranks:
        os.kill(pid, signal.SIGSTOP)  # freeze the whole job: the signal lands before the last epoch
    os.kill(launcher, submitit_signal())
    for pid in [launcher, *ranks]:
        os.kill(pid, signal.SIGCONT)
    out, err = cli.communicate(timeout=600)
    assert cli.returncode == 0, out + err
    assert f"job {job_id} exp2_basic_aug in 2 DDP processes: done" in out
    client, (run,) = _train_runs(ws, job_id)  # the requeued job resumed the run its first launch opened
    log = "".join((ws / "mlruns" / "submitit" / job_id / f"{job_id}_0_log.{end}").read_text() for end in ("out", "err"))
    assert "Requeued job" in log and f"resume exp2_basic_aug: run {run.info.run_id}" in log, log[-3000:]
    assert run.info.status == "FINISHED" and run.data.tags[record.TAG_RESUMED] == "1"
    assert run.data.tags[record.TAG_WORLD_SIZE] == "2" and run.data.tags[record.TAG_SCHEDULER] == "local"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(1, epochs + 1))
    (spec,) = [r.spec for r in open_registry(ws / "experiments.yaml").expand("exp2_basic_aug", profile="smoke", sets=sets)]
    datasets = build_datasets(spec, prepare_data(spec, progress=False))
    for split in ("val", "test"):
        logged = pd.read_parquet(client.download_artifacts(run.info.run_id, f"predictions/{split}.parquet"))
        assert list(logged["key"]) == list(datasets[split].frame_table["key"]), split  # each sample once, in order


def submitit_signal() -> signal.Signals:
    from submitit.local.local import LocalJobEnvironment

    return LocalJobEnvironment._usr_sig()  # what the scheduler sends before a preemption or the time limit


def _first_epoch_logged(ws: Path, controller: int, timeout_s: float = 300) -> int:
    """Pid of the job's task once its run has logged an epoch; the task is stopped (SIGSTOP) so it waits for the signal."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = Path(f"/proc/{controller}/task/{controller}/children")
        pids = [int(p) for p in children.read_text().split()] if children.exists() else []
        client, mine = _train_runs(ws, str(controller)) if (ws / "mlruns" / "mlflow.db").exists() else (None, [])
        if pids and mine and client.get_metric_history(mine[0].info.run_id, "train/loss"):
            os.kill(pids[0], signal.SIGSTOP)  # freeze it mid-run: the signal then lands before the last epoch
            assert mine[0].info.status == "RUNNING" or client.get_run(mine[0].info.run_id).info.status == "RUNNING"
            return pids[0]
        time.sleep(0.2)
    pytest.fail("the submitted job never logged an epoch")


def test_plan_is_seeds_times_grid_and_a_cluster_sweep_needs_a_shared_storage(ws):
    registry = open_registry(ws / "experiments.yaml")
    jobs = plan_jobs(registry, "exp2_basic_aug", profile="smoke", sets=[], seeds=[0, 1, 2], sweep_workers=None,
                     storage=None, trials=None, local=False)
    assert [j.run_name for j in jobs] == [f"exp2_basic_aug/seed={s}" for s in (0, 1, 2)]
    with pytest.raises(UsageError, match="--storage postgresql://"):
        plan_jobs(registry, "sweep_reg_mixup", profile=None, sets=[], seeds=None, sweep_workers=3, storage=None,
                  trials=None, local=False)
    workers = plan_jobs(registry, "sweep_reg_mixup", profile=None, sets=[], seeds=None, sweep_workers=3,
                        storage="postgresql://u@db/optuna", trials=6, local=False)
    assert len(workers) == 3 and workers[0].storage == "postgresql://u@db/optuna"


def test_submit_help_explains_itself_without_importing_torch():
    code = ("import sys; from arflare.cli import main\n"
            "try:\n    main(['submit', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert main(['submit', 'exp2_basic_aug', '--profile', 'smoke', '--nproc', '3']) == 2\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "must split evenly over 3 processes" in done.stderr  # the DDP checks need no torch either
    for words in ("--slurm-partition", "--local", "requeues", "arflare.job_id", "--storage postgresql://",
                  "--nproc", "--gpus N", "arflare.world_size=N"):
        assert words in done.stdout


@pytest.mark.parametrize(("args", "says"), [
    (["sweep_reg_mixup", "--sweep", "--nproc", "2"], "--nproc 2 with --sweep is not supported"),
    (["exp2_basic_aug", "--nproc", "2", "--gpus", "1"], "ask for --gpus 2 (one per process)"),
    (["exp2_basic_aug", "--nproc", "2", "--gpus", "4"], "some would sit idle"),
    (["exp2_basic_aug", "--gpus", "2"], "add --nproc 2 to train each run on the 2 GPUs (DDP)"),
    (["exp2_basic_aug", "--nproc", "3"], "train.batch_size=8 is the global batch and must split evenly over 3"),
])
def test_submit_refuses_contradictory_requests_before_submitting(ws, capsys, args, says):
    jobs = set((ws / "mlruns").glob("submitit/*"))
    assert main(["submit", *args, "--profile", "smoke", "--local", "--file", str(ws / "experiments.yaml")]) == 2
    assert says in capsys.readouterr().err
    assert set((ws / "mlruns").glob("submitit/*")) == jobs  # nothing was submitted


def test_without_slurm_submit_says_so_and_suggests_local(ws, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    assert main(["submit", "exp2_basic_aug", "--profile", "smoke", "--file", str(ws / "experiments.yaml")]) == 2
    assert "no SLURM here: sbatch and srun not on PATH" in capsys.readouterr().err


def test_a_ddp_job_asks_slurm_for_one_task_with_a_gpu_per_process(ws, tmp_path, monkeypatch):
    for tool in ("sbatch", "srun"):  # stand-ins: only the script the job would send is checked, nothing is submitted
        (tmp_path / tool).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    registry = open_registry(ws / "experiments.yaml")
    asked = Resources(partition="gpu", gpus=4, nproc=4)
    settled = settle_resources(asked, registry, "exp2_basic_aug", profile=None, sets=["data.num_workers=2"], sweep=False)
    assert settled.cpus == 4 * (1 + 2)  # each process and its 2 loader workers
    assert settle_resources(Resources(), registry, "exp2_basic_aug", profile=None, sets=[], sweep=False).cpus is None
    script = make_executor(tmp_path / "%j", settled, local=False)._executor._make_submission_file_text("python -m x", "u")
    for line in ("--ntasks-per-node=1", "--gpus-per-node=4", "--cpus-per-task=12", "--requeue", "--signal=USR2@"):
        assert f"#SBATCH {line}" in script, script
