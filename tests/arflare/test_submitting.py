"""`arflare submit` through submitit's LocalExecutor: the job trains its run, tags its job id, and a
preempted job requeues itself and resumes the same MLflow run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from arflare import record
from arflare.cli import main
from arflare.commands import open_registry
from arflare.data.synth import generate
from arflare.errors import UsageError
from arflare.submitting import Resources, make_executor, plan_jobs, submit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submit")
    generate(folder / "synth", ars=8, size=24, hours=10, seed=2, progress=False, overwrite=True)
    shutil.copy(REPO / "experiments.yaml", folder / "experiments.yaml")
    with pytest.MonkeyPatch.context() as mp:  # the jobs inherit this environment
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("ARFLARE_CACHE", str(folder / "cache"))
        yield folder


def _sets(ws: Path, *extra: str) -> list[str]:
    return [f"data.root={ws / 'synth' / 'magnetograms'}", "data.generate_if_missing=false", "model.backbone=resnet10t",
            *extra]


def _train_runs(ws: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("arflare")
    if experiment is None:
        return client, []
    return client, client.search_runs([experiment.experiment_id], filter_string="tags.`arflare.kind` = 'train'")


def test_submit_local_trains_the_run_and_tags_its_job_id(ws, capsys):
    args = ["submit", "exp1_basic_reg", "--profile", "smoke", "--local", "--file", str(ws / "experiments.yaml")]
    for item in _sets(ws):
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    job_id = out.split("job ", 1)[1].split(":", 1)[0]
    _, runs = _train_runs(ws)
    (run,) = [r for r in runs if r.data.tags[record.TAG_EXPERIMENT] == "exp1_basic_reg"]
    assert run.info.status == "FINISHED"
    assert run.data.tags[record.TAG_JOB_ID] == job_id and run.data.tags[record.TAG_SCHEDULER] == "local"


def test_a_preempted_job_requeues_and_resumes_the_same_run(ws):
    from submitit.local.local import LocalJobEnvironment

    epochs = 4
    registry = open_registry(ws / "experiments.yaml")
    (job,) = plan_jobs(registry, "exp2_basic_aug", profile="smoke", sets=_sets(ws, f"train.epochs={epochs}"),
                       seeds=None, sweep_workers=None, storage=None, trials=None, local=True)
    (handle,) = submit([job], make_executor(ws / "mlruns" / "submitit" / "%j", Resources(time_min=10), local=True))
    task = _first_epoch_logged(ws, int(handle.job_id))
    os.kill(task, LocalJobEnvironment._usr_sig())  # what the scheduler sends before a preemption or the time limit
    os.kill(task, signal.SIGCONT)
    assert handle.result() == job.run_name
    log = handle.stdout() + (handle.stderr() or "")
    assert "Requeued job" in log, log[-3000:]

    client, runs = _train_runs(ws)
    (run,) = [r for r in runs if r.data.tags[record.TAG_EXPERIMENT] == "exp2_basic_aug"]  # resumed, not a second run
    assert run.info.status == "FINISHED"
    assert run.data.tags[record.TAG_RESUMED] == "1" and run.data.tags[record.TAG_JOB_ID] == handle.job_id
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, epochs + 1))  # every epoch exactly once (steps count from 1)


def _first_epoch_logged(ws: Path, controller: int, timeout_s: float = 300) -> int:
    """Pid of the job's task once its run has logged an epoch; the task is stopped (SIGSTOP) so it waits for the signal."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = Path(f"/proc/{controller}/task/{controller}/children")
        pids = [int(p) for p in children.read_text().split()] if children.exists() else []
        client, runs = _train_runs(ws) if (ws / "mlruns" / "mlflow.db").exists() else (None, [])
        mine = [r for r in runs if r.data.tags.get(record.TAG_EXPERIMENT) == "exp2_basic_aug"]
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
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    for words in ("--slurm-partition", "--local", "requeues", "arflare.job_id", "--storage postgresql://"):
        assert words in done.stdout


def test_submit_with_nproc_says_it_is_not_built(ws, capsys):
    assert main(["submit", "exp2_basic_aug", "--nproc", "2", "--local", "--file", str(ws / "experiments.yaml")]) == 2
    assert "not built yet" in capsys.readouterr().err
