"""Tracker against a real sqlite MLflow store in a temporary directory (one store per module)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from registry.tracking import (
    TAG_ERROR,
    TAG_EXPERIMENT,
    TAG_PARENT,
    TAG_SPEC_HASH,
    Tracker,
    count_runs,
    default_artifact_location,
    flatten_params,
    git_state,
    resolve_tracking_uri,
    ui_environment,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="module")
def tracker(registry_dir: Path) -> Tracker:
    uri = f"sqlite:///{registry_dir / 'mlruns' / 'mlflow.db'}"  # explicit: ignores MLFLOW_TRACKING_URI
    return Tracker(tracking_uri=uri, experiment="arflare-test",
                   artifact_location=(registry_dir / "mlruns" / "artifacts").as_uri())


@pytest.fixture(scope="module")
def client(tracker: Tracker) -> MlflowClient:
    return MlflowClient(tracking_uri=tracker.tracking_uri)


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {item.path for item in client.list_artifacts(run_id, path)}


def read_artifact(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(tmp_path))).read_text()


def test_finished_run_round_trips_params_tags_metrics_and_artifacts(tracker, client, tmp_path):
    log_file = tmp_path / "train.log"
    log_file.write_text("epoch 1 done\n")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "roc.txt").write_text("roc")
    params = {"model": {"name": "resnet18", "drop": 0.1}, "tags": ["a", "b"]} | {f"p{i}": i for i in range(150)}
    tags = {TAG_EXPERIMENT: "cnn", TAG_SPEC_HASH: "hash-ok"}
    with tracker.start_run(run_name="cnn-0", tags=tags, params=params, log_file=log_file) as run:
        for step, loss in enumerate([0.9, 0.5, float("nan")]):
            run.log_metrics({"train/loss": loss, "lr": 1e-3}, step=step)
        run.set_tags({"note": "hello"})
        run.log_artifact(tmp_path / "plots")
        run.log_artifact(log_file, "raw")
        run.log_dict({"tss": 0.5}, "metrics.json")
        run.log_dict({"tss": 0.5}, "spec.yaml")
        run.log_text("# report", "report.md")
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "cnn-0"
    assert got.data.params["model.name"] == "resnet18" and got.data.params["model.drop"] == "0.1"
    assert got.data.params["tags"] == '["a", "b"]' and got.data.params["p149"] == "149"
    assert got.data.tags[TAG_EXPERIMENT] == "cnn" and got.data.tags["note"] == "hello"
    history = client.get_metric_history(run.run_id, "train/loss")
    assert [(m.step, m.value) for m in history][:2] == [(0, 0.9), (1, 0.5)] and len(history) == 3
    assert artifacts(client, run.run_id) >= {"plots", "raw", "metrics.json", "spec.yaml", "report.md", "log.txt"}
    assert artifacts(client, run.run_id, "plots") == {"plots/roc.txt"}
    assert read_artifact(client, run.run_id, "log.txt", tmp_path / "dl") == "epoch 1 done\n"
    assert json.loads(read_artifact(client, run.run_id, "metrics.json", tmp_path / "dl")) == {"tss": 0.5}
    assert yaml.safe_load(read_artifact(client, run.run_id, "spec.yaml", tmp_path / "dl")) == {"tss": 0.5}


def test_exception_marks_run_failed_with_traceback_and_error_tag(tracker, client, tmp_path):
    log_file = tmp_path / "train.log"
    log_file.write_text("about to fail\n")
    tags = {TAG_EXPERIMENT: "cnn", TAG_SPEC_HASH: "hash-bad"}
    with pytest.raises(ValueError, match="shards missing"):
        with tracker.start_run(run_name="cnn-1", tags=tags, log_file=log_file) as run:
            raise ValueError("shards missing in /data")
    got = client.get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags[TAG_ERROR] == "ValueError: shards missing in /data"
    assert "shards missing" in read_artifact(client, run.run_id, "traceback.txt", tmp_path / "dl")
    assert "log.txt" in artifacts(client, run.run_id)


def test_keyboard_interrupt_marks_run_killed(tracker, client):
    with pytest.raises(KeyboardInterrupt):
        with tracker.start_run(run_name="cnn-2", tags={TAG_EXPERIMENT: "vit"}) as run:
            raise KeyboardInterrupt
    assert client.get_run(run.run_id).info.status == "KILLED"


def test_status_is_recorded_even_when_artifact_upload_fails(tracker, client, tmp_path, monkeypatch):
    def broken_upload(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tracker._client, "log_artifact", broken_upload)
    monkeypatch.setattr(tracker._client, "log_text", broken_upload)
    log_file = tmp_path / "train.log"
    log_file.write_text("x")
    with pytest.raises(RuntimeError):
        with tracker.start_run(run_name="cnn-3", tags={TAG_EXPERIMENT: "vit"}, log_file=log_file) as run:
            raise RuntimeError("boom")
    got = client.get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.tags[TAG_ERROR] == "RuntimeError: boom"


def test_child_run_links_to_parent_and_parent_is_ended_explicitly(tracker, client):
    with tracker.start_run(run_name="sweep", tags={TAG_EXPERIMENT: "sweep"}) as parent:
        with tracker.start_run(run_name="trial-0", tags={TAG_EXPERIMENT: "sweep"},
                               parent_run_id=parent.run_id) as child:
            child.log_metrics({"val/tss": 0.4})
        tracker.log_metrics(parent.run_id, {"best/tss": 0.4}, step=0)
        tracker.set_tags(parent.run_id, {"best_trial": "0"})
        tracker.log_params(parent.run_id, {"n_trials": 1})
    assert client.get_run(child.run_id).data.tags[TAG_PARENT] == parent.run_id
    parent_run = client.get_run(parent.run_id)
    assert parent_run.data.metrics["best/tss"] == 0.4 and parent_run.data.params["n_trials"] == "1"
    # A run left open (e.g. by a crashed sweep driver) can be ended by id.
    open_run = client.create_run(parent_run.info.experiment_id, tags={TAG_EXPERIMENT: "sweep"})
    tracker.set_terminated(open_run.info.run_id, "KILLED")
    assert client.get_run(open_run.info.run_id).info.status == "KILLED"
    with pytest.raises(ValueError, match="FINISHED, FAILED, KILLED"):
        tracker.set_terminated(open_run.info.run_id, "DONE")


def test_find_latest_returns_the_newest_run_of_a_spec_with_its_status(tracker):
    # Depends on the runs above: hash-ok finished, hash-bad failed.
    found = tracker.find_latest(spec_hash="hash-ok")
    assert found is not None and found.run_name == "cnn-0" and found.metrics["lr"] == 1e-3
    assert found.status == "FINISHED" and tracker.find_latest(spec_hash="hash-bad").status == "FAILED"
    assert tracker.find_latest(spec_hash="never-run") is None


def test_search_and_count_by_experiment_tag(tracker):
    runs = tracker.search(experiments=["cnn"])
    assert [r.run_name for r in runs] == ["cnn-0", "cnn-1"]  # oldest first, every status
    assert {r.status for r in runs} == {"FINISHED", "FAILED"}
    assert [r.run_name for r in tracker.search(experiments=["cnn"], filter_string="attributes.status = 'FAILED'")] \
        == ["cnn-1"]
    assert tracker.count_runs() == {"cnn": 2, "vit": 2, "sweep": 3}
    # The fast path for `arflare list` reads the sqlite file directly and must agree.
    assert count_runs(tracker.tracking_uri, experiment=tracker.experiment) == tracker.count_runs()
    assert count_runs(tracker.tracking_uri, experiment="other") == {}
    # Only runs whose tag has one of the values (None: the tag is absent), on both paths.
    only = (TAG_PARENT, {None})  # e.g. leave out child runs: the sweep's trial
    assert count_runs(tracker.tracking_uri, experiment=tracker.experiment, tag_filter=only) == {"cnn": 2, "vit": 2, "sweep": 2}
    assert count_runs(tracker.tracking_uri, experiment=tracker.experiment, tag_filter=(TAG_PARENT, set())) == {}


def test_count_with_a_tag_filter_through_mlflow_agrees_with_the_sqlite_path(tracker, monkeypatch):
    import sqlite3

    import registry.tracking as tracking

    only = (TAG_PARENT, {None})
    fast = count_runs(tracker.tracking_uri, experiment=tracker.experiment, tag_filter=only)

    def unknown_schema(*args):
        raise sqlite3.OperationalError("no such table")

    monkeypatch.setattr(tracking, "_runs_in_sqlite", unknown_schema)
    assert count_runs(tracker.tracking_uri, experiment=tracker.experiment, tag_filter=only) == fast


def test_search_follows_every_page(tracker, monkeypatch):
    monkeypatch.setattr("registry.tracking._PAGE_SIZE", 2)
    runs = tracker.search()  # the 7 runs of the tests above, 2 per page
    assert len({r.run_id for r in runs}) == 7
    assert [r.start_time for r in runs] == sorted(r.start_time for r in runs)


def test_second_tracker_on_same_store_shares_the_experiment(tracker):
    again = Tracker(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment)
    assert again.count_runs() == tracker.count_runs()


def test_counting_a_missing_store_creates_nothing(tmp_path):
    assert count_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", experiment="x") == {}
    assert not (tmp_path / "mlruns").exists()


def test_reading_a_missing_experiment_creates_nothing(tmp_path):
    fresh = Tracker(tracking_uri=f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}", experiment="nope")
    assert fresh.search() == [] and fresh.count_runs() == {} and fresh.find_latest(spec_hash="x") is None
    assert MlflowClient(tracking_uri=fresh.tracking_uri).get_experiment_by_name("nope") is None


def test_default_store_lives_in_registry_mlruns_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert default_artifact_location(tmp_path) == (tmp_path / "mlruns" / "artifacts").resolve().as_uri()
    Tracker(tracking_uri=resolve_tracking_uri(tmp_path), experiment="x")
    assert not (tmp_path / "mlruns").exists()


def test_env_tracking_uri_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert resolve_tracking_uri(tmp_path) == "http://mlflow.example:5000"
    assert default_artifact_location(tmp_path) is None


def test_ui_command_points_at_the_store(tracker):
    command = tracker.ui_command(port=5001)
    assert command[1:4] == ["-m", "mlflow", "server"] and command[command.index("--port") + 1] == "5001"
    assert command[command.index("--backend-store-uri") + 1] == tracker.tracking_uri
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--workers") + 1] == "1"
    assert "--no-access-log" in command and "--no-access-log" not in tracker.ui_command(access_log=True)
    assert ui_environment() == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def test_experiment_is_marked_as_model_training(tmp_path):
    tracker = Tracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="fresh")
    assert tracker.mark_model_training() is False  # nothing tracked yet: nothing created either
    with tracker.start_run(run_name="r", tags={}):
        pass
    experiment = tracker._client.get_experiment(tracker.experiment_id())
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    tracker._client.set_experiment_tag(tracker.experiment_id(), "mlflow.experimentKind", "genai_development")
    assert tracker.mark_model_training() is True
    assert tracker._client.get_experiment(tracker.experiment_id()).tags["mlflow.experimentKind"] == "custom_model_development"


def test_flatten_params_dots_nested_keys_and_truncates():
    flat = flatten_params({"model": {"name": "vit", "head": {"drop": 0.1}}, "empty": {}, "x": None,
                           "long": "y" * 7000}, prefix="spec")
    assert flat["spec.model.name"] == "vit" and flat["spec.model.head.drop"] == "0.1"
    assert flat["spec.empty"] == "{}" and flat["spec.x"] == "None"
    assert len(flat["spec.long"]) == 6000


def test_metric_that_is_not_a_number_names_the_key(tracker):
    with pytest.raises(TypeError, match="'val/tss'"):
        tracker.log_metrics("unused-run-id", {"val/tss": "high"})


def test_log_dict_rejects_unknown_suffix(tracker):
    from registry.tracking import RunHandle

    with pytest.raises(ValueError, match=r"\.json, \.yaml"):
        RunHandle(tracker, "unused-run-id").log_dict({}, "metrics.txt")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git binary")
def test_git_state(tmp_path):
    assert git_state(tmp_path) == (None, None)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    sha, dirty = git_state(tmp_path / "a.py")
    assert len(sha) == 40 and dirty is False
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path) == (sha, True)


def test_import_and_fast_count_do_not_import_mlflow(tracker):
    # `arflare --help` and `arflare list` must not pay the ~1 s import of mlflow.
    code = ("import sys, registry.tracking as t, registry.compare\n"
            f"assert t.count_runs({tracker.tracking_uri!r}, experiment={tracker.experiment!r})['cnn'] == 2\n"
            "assert 'mlflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_experiment_creation_tolerates_a_racing_worker(tracker, monkeypatch):
    winner = Tracker(tracking_uri=tracker.tracking_uri, experiment="race")
    loser = Tracker(tracking_uri=tracker.tracking_uri, experiment="race")
    with winner.start_run(run_name="w", tags={}):
        pass
    real_get = loser._client.get_experiment_by_name
    calls = []

    def get_after_losing_the_race(name):
        calls.append(name)
        return None if len(calls) == 1 else real_get(name)  # looked before the winner created it

    monkeypatch.setattr(loser._client, "get_experiment_by_name", get_after_losing_the_race)
    with loser.start_run(run_name="l", tags={}) as run:
        pass
    assert len(calls) == 2
    assert loser.search()[-1].run_id == run.run_id and len(loser.search()) == 2

def test_two_runs_logging_one_dataset_at_once_both_record_it(tracker, monkeypatch):
    """Eight `arflare run`s on one data set failed in CI: MLflow checks for the dataset, then inserts it."""
    from mlflow.store.tracking.dbmodels.models import SqlDataset
    from sqlalchemy.orm import Query

    dataset = {"name": "magnetograms", "digest": "d1", "source_uri": "file:///data", "context": "training"}
    with tracker.start_run(run_name="winner", tags={}) as winner:
        winner.log_dataset(**dataset)
    real_all, staged = Query.all, []

    def all_before_the_winner_committed(query):
        if not staged and query.column_descriptions[0]["entity"] is SqlDataset:
            staged.append(query)
            return []  # this run looked before the winner's insert; its own insert hits the unique key
        return real_all(query)

    monkeypatch.setattr(Query, "all", all_before_the_winner_committed)
    with tracker.start_run(run_name="loser", tags={}) as loser:
        loser.log_dataset(**dataset)
    assert staged  # the lookup that missed the winner's row happened
    assert [d["digest"] for d in tracker.dataset_inputs(loser.run_id)] == ["d1"]
    assert tracker.get_run(loser.run_id).status == "FINISHED"


def test_exclusive_makes_a_second_process_wait_and_says_so(tracker):
    code = ("import sys; from registry.tracking import Tracker\n"
            f"t = Tracker(tracking_uri={tracker.tracking_uri!r}, experiment='x')\n"
            "with t.exclusive('gates-abc', on_wait=lambda: print('waiting', flush=True)):\n"
            "    print('got it', flush=True)\n")
    import select

    with tracker.exclusive("gates-abc"):
        other = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, bufsize=0)
        assert select.select([other.stdout], [], [], 60)[0]
        assert os.read(other.stdout.fileno(), 100) == b"waiting\n"  # it found the lock held
        assert not select.select([other.stdout], [], [], 1.0)[0]  # and does not get it while it is held
    assert other.communicate(timeout=60)[0] == b"got it\n" and other.returncode == 0


def test_a_silent_running_run_reads_stale_and_a_resumed_one_runs_again(tracker):
    with tracker.start_run(run_name="alive", tags={TAG_SPEC_HASH: "hash-alive"}) as run:
        assert tracker.get_run(run.run_id).status == "RUNNING"
        silent = Tracker(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment, stale_after_s=-1)
        assert silent.get_run(run.run_id).status == "STALE"
        assert count_runs(tracker.tracking_uri, experiment=tracker.experiment, stale_after_s=-1) == {}  # no experiment tag
    with pytest.raises(KeyboardInterrupt):
        with tracker.resume_run(run.run_id, tags={"resumed": "1"}):
            assert tracker.get_run(run.run_id).status == "RUNNING"
            raise KeyboardInterrupt
    assert tracker.get_run(run.run_id).status == "KILLED"
    with tracker.resume_run(run.run_id) as again:
        again.log_metrics({"m": 1.0}, step=3)
    assert tracker.get_run(run.run_id).status == "FINISHED" and tracker.metric_steps(run.run_id, "m") == {3}

