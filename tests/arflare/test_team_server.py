"""A team server, for real: PostgreSQL + ``mlflow server`` (artifact proxying) on loopback, then a
smoke ``arflare run``, a sweep whose workers start independently (as on several nodes, one of them
SIGKILLed mid-trial) on one PostgreSQL study, and ``arflare compare`` against it.

Marked ``server`` (skipped by ``make test``); ``make test-server`` installs PostgreSQL and psycopg
when missing and runs it. Each step's wall time is printed (the README quotes them).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from arflare import record
from arflare.data.synth import generate
from registry.sweep import RUN_ID_ATTR
from tests.arflare._team_server import stop_group, team_server

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
TRIALS = 4
SWEEP = "sweep_reg_mixup"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    folder = tmp_path_factory.mktemp("team")
    generate(folder / "synth", ars=10, size=24, hours=12, seed=1, progress=False, overwrite=True)
    shutil.copy(REPO / "experiments.yaml", folder / "experiments.yaml")
    return folder


def _cli(ws: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "arflare.cli", *args, "--file", str(ws / "experiments.yaml")]


def _smoke(ws: Path) -> list[str]:
    return ["--profile", "smoke", "--set", f"data.root={ws / 'synth' / 'magnetograms'}",
            "--set", "data.generate_if_missing=false", "--set", "model.backbone=resnet10t"]


def _sweep_cmd(ws: Path, storage: str) -> list[str]:
    return _cli(ws, "sweep", SWEEP, *_smoke(ws), "--trials", str(TRIALS), "--storage", storage,
                "--heartbeat-interval", "1", "--grace-period", "5")


def _run(command: list[str], env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-6000:]}"
    return done


def _timed(timings: dict, step: str, action):
    started = time.perf_counter()
    result = action()
    timings[step] = time.perf_counter() - started
    return result


def test_run_sweep_and_compare_against_a_postgres_backed_mlflow_server(ws: Path) -> None:
    timings: dict[str, float] = {}
    total = time.perf_counter()
    with team_server(ws, timings) as server:
        env = {**os.environ, "MLFLOW_TRACKING_URI": server.mlflow_uri, "ARFLARE_CACHE": str(ws / "cache")}
        client = MlflowClient(server.mlflow_uri)

        # 1. a smoke run: tracked on the server, its artifacts proxied into the server's folder
        _timed(timings, "arflare run (smoke)", lambda: _run(_cli(ws, "run", "exp2_basic_aug", *_smoke(ws)), env))
        (run,) = client.search_runs([client.get_experiment_by_name("arflare").experiment_id],
                                    filter_string="tags.`arflare.kind` = 'train'")
        assert run.info.status == "FINISHED" and "test/tss" in run.data.metrics
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert list(server.artifacts.rglob(record.ARTIFACT_SPEC)), "artifacts were not proxied to the server's folder"
        assert not (ws / "mlruns" / "artifacts").exists()

        # 2. a sweep on one PostgreSQL study: a worker dies mid-trial, two others start on their own
        storage = server.database_url("optuna").replace("postgresql+psycopg://", "postgresql://")  # as users type it
        started = time.perf_counter()
        doomed = subprocess.Popen(_sweep_cmd(ws, storage), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            victim = _wait_for_a_tracked_running_trial(storage, doomed)
            timings["sweep: first worker up to a running trial"] = time.perf_counter() - started
        finally:
            os.killpg(doomed.pid, signal.SIGKILL)  # the whole worker, as when a node dies
            doomed.wait()
        started = time.perf_counter()
        workers = [subprocess.Popen(_sweep_cmd(ws, storage), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True) for _ in range(2)]
        try:
            outputs = [w.communicate(timeout=900) for w in workers]
        finally:
            for worker in workers:
                stop_group(worker)
        timings[f"sweep: 2 workers, {TRIALS} trials incl. the retry"] = time.perf_counter() - started
        for worker, (out, err) in zip(workers, outputs):
            assert worker.returncode == 0, f"sweep worker exited {worker.returncode}:\n{out}\n{err[-6000:]}"
        _check_study(storage, victim)
        _check_runs(client, victim)

        # 3. compare reads everything back through the server
        done = _timed(timings, "arflare compare", lambda: _run(_cli(ws, "compare", "--metric", "tss", "--all"), env))
        assert "exp2_basic_aug" in done.stdout and SWEEP in done.stdout
    timings["total (with the checks)"] = time.perf_counter() - total
    print("\nteam server test, wall seconds per step:")
    for step, seconds in timings.items():
        print(f"  {step:<48} {seconds:7.1f}")


def _study(storage: str) -> optuna.Study:
    from registry.study_storage import database_url

    (name,) = optuna.get_all_study_names(database_url(storage))
    return optuna.load_study(study_name=name, storage=database_url(storage))


def _wait_for_a_tracked_running_trial(storage: str, worker: subprocess.Popen, timeout_s: float = 600) -> int:
    """The number of the first RUNNING trial whose child run exists (so the worker is mid-trial)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.poll() is None, f"the first sweep worker exited early with {worker.returncode}"
        try:
            running = [t for t in _study(storage).get_trials(states=(TrialState.RUNNING,)) if RUN_ID_ATTR in t.user_attrs]
        except (ValueError, KeyError):  # no study yet
            running = []
        if running:
            return running[0].number
        time.sleep(0.2)
    pytest.fail("the first sweep worker never started a trial")


def _check_study(storage: str, victim: int) -> None:
    trials = _study(storage).get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))  # no duplicate trial numbers
    by_number = {t.number: t for t in trials}
    assert by_number[victim].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED) and retry.params == by_number[victim].params
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.number != victim)]
    assert len(counted) == TRIALS  # exact total across independent workers; the retried trial replaces the dead one
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def _check_runs(client: MlflowClient, victim: int) -> None:
    experiment = client.get_experiment_by_name("arflare").experiment_id
    parents = client.search_runs([experiment], filter_string="tags.`arflare.kind` = 'sweep'")
    assert len(parents) == 1, "every worker must share one parent run"
    (parent,) = parents
    assert parent.info.status == "FINISHED" and "best_value" in parent.data.metrics
    children = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    numbers = [int(c.data.tags[record.TAG_TRIAL_NUMBER]) for c in children]
    assert sorted(numbers) == list(range(len(numbers)))  # one child run per trial, none twice
    dead = next(c for c in children if int(c.data.tags[record.TAG_TRIAL_NUMBER]) == victim)
    assert dead.info.status == "FAILED" and dead.data.tags[record.TAG_TRIAL_STATE] == "FAIL"
    (retry,) = [c for c in children if c.data.tags.get(record.TAG_RETRY_OF) == str(victim)]
    assert retry.info.status == "FINISHED"
