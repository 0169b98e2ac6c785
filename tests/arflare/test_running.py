"""What `arflare run` does with an earlier run of the same spec: skip, resume or start fresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from arflare import record
from arflare.lifecycle import Identity, RunPlan, local_folder
from arflare.running import RunOptions, _decide
from arflare.spec import RunSpec
from registry.tracking import RunRecord

IDENTITY = Identity(data_fingerprint="data", spec_hash="spec", config_hash="config")


class FakeTracker:
    """The two reads `_decide` makes, answered from one canned run."""

    def __init__(self, tmp_path: Path, latest: RunRecord | None, epochs: int = 0) -> None:
        self.tracking_uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
        self.latest, self.epochs = latest, epochs

    def find_latest(self, *, spec_hash):
        return self.latest

    def metric_steps(self, run_id, key):
        return set(range(1, self.epochs + 1))


def _run(status: str, **tags: str) -> RunRecord:
    return RunRecord(run_id="r1", run_name="exp", status=status, start_time=0, end_time=None, tags=tags,
                     params={}, metrics={}, artifact_uri="", heartbeat=0.0)


def _plan(tmp_path: Path) -> RunPlan:
    return RunPlan(kind="train", run_name="exp", experiment="exp", group="exp", spec=RunSpec(), description="d",
                   profile=None, registry_dir=tmp_path)


def _with_state(tmp_path: Path) -> None:
    state = local_folder(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", tmp_path, "r1") / record.CHECKPOINTS
    state.mkdir(parents=True)
    (state / "last.pt").write_bytes(b"x")


@pytest.mark.parametrize(("status", "options", "state", "expected"), [
    (None, RunOptions(), False, ("new", None)),
    ("FINISHED", RunOptions(), False, ("skip", "r1")),
    ("FINISHED", RunOptions(force=True), False, ("new", None)),
    ("RUNNING", RunOptions(), False, ("skip", "r1")),  # alive elsewhere
    ("KILLED", RunOptions(), True, ("resume", "r1")),
    ("STALE", RunOptions(), True, ("resume", "r1")),
    ("KILLED", RunOptions(restart=True), True, ("new", None)),
    ("KILLED", RunOptions(), False, ("new", None)),  # epochs logged, but its state is on another machine
    ("FAILED", RunOptions(), True, ("new", None)),  # a NaN failure is never resumed silently
])
def test_decide(tmp_path, capsys, status, options, state, expected):
    if state:
        _with_state(tmp_path)
    tracker = FakeTracker(tmp_path, None if status is None else _run(status, **{record.TAG_KIND: "train"}), epochs=2)
    assert _decide(tracker, _plan(tmp_path), IDENTITY, options) == expected
    said = capsys.readouterr().err
    if expected[0] == "resume":
        assert f"resume exp: run r1 was {status} with 2 of 10 epochs logged" in said


def test_a_dead_trial_is_never_resumed_as_a_training_run(tmp_path):
    _with_state(tmp_path)
    tracker = FakeTracker(tmp_path, _run("KILLED", **{record.TAG_KIND: "trial"}), epochs=1)
    assert _decide(tracker, _plan(tmp_path), IDENTITY, RunOptions()) == ("new", None)


def test_record_and_lifecycle_import_neither_torch_nor_mlflow():
    import subprocess
    import sys

    code = ("import sys, arflare.record, arflare.lifecycle, arflare.commands; "
            "print(sorted({'torch', 'mlflow'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parents[2])
    assert done.stdout.strip() == "[]"


def test_kinds_are_one_table():
    assert set(record.KINDS) >= {"train", "trial", "sweep"} and record.kind("train").resumable
    with pytest.raises(ValueError, match="known: train"):
        record.kind("no_such_kind")


class _Handle:
    """What `living` calls on an open run, answering nothing."""

    def log_params(self, params): ...
    def log_dict(self, data, path): ...
    def log_artifact(self, path, artifact_path=None): ...
    def beat(self): ...


@pytest.mark.parametrize(("kind", "kept"), [("train", True), ("trial", False)])
def test_a_killed_run_keeps_its_local_folder_only_when_its_kind_resumes(tmp_path, kind, kept):
    from dataclasses import replace

    from arflare.lifecycle import living

    folder = tmp_path / "local" / "r1"
    with pytest.raises(KeyboardInterrupt):
        with living(_Handle(), replace(_plan(tmp_path), kind=kind), folder=folder, new=True):
            (folder / "last.pt").write_bytes(b"x")
            raise KeyboardInterrupt  # Ctrl-C, or the SIGTERM a sweep worker gets
    assert (folder / "last.pt").exists() == kept  # `arflare run` resumes a train run; nothing resumes a trial
