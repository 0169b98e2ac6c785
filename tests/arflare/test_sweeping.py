"""`arflare sweep` end to end: real trials on tiny synthetic data, two worker processes, one study."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from arflare.cli import main
from arflare.data.synth import generate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    generate(folder / "synth", ars=10, size=24, hours=12, seed=1, progress=False, overwrite=True)
    shutil.copy(REPO / "experiments.yaml", folder / "experiments.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("ARFLARE_CACHE", str(folder / "cache"))
        yield folder


def _args(ws: Path, *extra: str) -> list[str]:
    return ["sweep", "sweep_reg_mixup", "--profile", "smoke", "--file", str(ws / "experiments.yaml"),
            "--set", f"data.root={ws / 'synth' / 'magnetograms'}", "--set", "data.generate_if_missing=false",
            "--set", "model.backbone=resnet10t", *_CHEAP_GATES, *extra]


# the gates every sweep runs first, at the cost the gates' own tests use
_CHEAP_GATES = [a for s in ("gates.shortcut_permutations=19", "gates.shortcut_alpha=0.1", "gates.normalisation_samples=32",
                            "gates.grid_per_class=2") for a in ("--set", s)]


def _runs(ws: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("arflare")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("arflare.kind") != "check"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_two_workers_run_four_trials_as_child_runs_and_resume(ws, capsys):
    assert main(_args(ws, "--trials", "4", "--workers", "2")) == 0
    parents, children = _runs(ws)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    finished = [c for c in children if c.data.tags.get("arflare.trial_state") == "COMPLETE"]
    assert finished and all("val/tss" in c.data.metrics for c in finished)
    assert all("model.drop_rate" in c.data.params for c in children)
    assert "best_value" in parent.data.metrics
    check = parent.data.tags["arflare.check_run"]  # the base's preflight gates ran before any trial
    assert all(c.data.tags["arflare.check_run"] == check for c in children)
    assert parent.data.tags["arflare.gates_status"] in ("PASS", "WARN")
    out = capsys.readouterr().out
    assert "reproduce: arflare run sweep_reg_mixup --profile smoke" in out

    # n_trials is a total: the same command again trains nothing new
    assert main(_args(ws, "--trials", "4", "--workers", "2")) == 0
    assert len(_runs(ws)[1]) == 4


def test_best_prints_a_command_that_validates(ws, capsys):
    assert main(_args(ws, "--best")) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("reproduce: "))
    command = shlex.split(line.removeprefix("reproduce: "))
    assert command[:3] == ["arflare", "run", "sweep_reg_mixup"]
    assert main([*command[1:], "--file", str(ws / "experiments.yaml"), "--dry-run"]) == 0


def test_a_bad_base_fails_before_anything_is_tracked(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(REPO / "experiments.yaml", tmp_path / "experiments.yaml")
    assert main(["sweep", "sweep_reg_mixup", "--file", str(tmp_path / "experiments.yaml"),
                 "--set", "model.backbone=convnext_atom"]) == 2
    assert "convnext_atto" in capsys.readouterr().err  # the did-you-mean of the unknown backbone
    assert not (tmp_path / "mlruns").exists()


def test_a_changed_base_starts_its_own_study_and_best_answers_for_it_only(ws, capsys):
    capsys.readouterr()
    changed = ("--set", "train.lr=0.0002")
    assert main(_args(ws, *changed, "--trials", "1")) == 0
    captured = capsys.readouterr()
    assert "base of sweep_reg_mixup@smoke changed" in captured.err
    parents, _ = _runs(ws)
    assert len(parents) == 2 and len({p.data.tags["arflare.base_hash"] for p in parents}) == 2
    assert main(_args(ws, *changed, "--best")) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("reproduce: "))
    assert "train.lr=0.0002" in line


def test_a_sigkilled_sweep_fails_its_trial_and_still_reaches_the_total(ws, capsys):
    import os
    import signal
    import subprocess
    import sys
    import time

    base = _args(ws, "--set", "train.lr=0.0003", "--set", "train.epochs=3", "--set", "train.max_steps_per_epoch=3")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "arflare.cli", *base, "--trials", "2"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    local = ws / "mlruns" / "local"
    before = {p.name for p in local.glob("*")} if local.exists() else set()
    deadline = time.monotonic() + 600
    while not (mid := [p for p in local.glob("*/checkpoints/last.pt") if p.parents[1].name not in before]):
        assert process.poll() is None and time.monotonic() < deadline  # wait until a trial is mid-training
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    dead_trial = mid[0].parents[1]
    client = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlruns' / 'mlflow.db'}")
    client.set_tag(dead_trial.name, "arflare.heartbeat", "2026-01-01T00:00:00+00:00")  # it died long ago
    capsys.readouterr()
    assert main([*base, "--trials", "2"]) == 0
    out = capsys.readouterr()
    assert "left RUNNING by a process that died" in out.err
    assert "2 complete, 0 pruned, 1 failed" in out.out or "1 pruned, 1 failed" in out.out
    _, children = _runs(ws)
    killed = [c for c in children if c.data.tags.get("arflare.trial_state") == "FAIL"]
    assert len(killed) == 1 and killed[0].info.status == "FAILED" and killed[0].info.run_id == dead_trial.name
    assert not dead_trial.exists()  # its checkpoints went with the run that will never resume
