"""The trainer on its own: reproducible for a seed, whatever the number of DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from arflare.checkpoints import BestCheckpoint, load
from arflare.lifecycle import prepare_data
from arflare.data.synth import generate
from arflare.spec import RunSpec
from arflare.trainer import train


class Recorder:
    """An in-memory reporter: what a tracked run would receive."""

    def __init__(self) -> None:
        self.metrics: list[tuple[dict, int | None]] = []
        self.artifacts: list[tuple[str, str | None]] = []

    def log_metrics(self, metrics, *, step=None):
        self.metrics.append((dict(metrics), step))

    def log_artifact(self, local_path, artifact_path=None):
        self.artifacts.append((Path(local_path).name, artifact_path))

    def log_dict(self, obj, artifact_file):
        self.artifacts.append((artifact_file, None))

    def logged_steps(self, key):
        return {step for metrics, step in self.metrics if key in metrics}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, ars=8, size=16, hours=10, seed=2, progress=False)
    return prepare_data(_spec(out, workers=0), progress=False)


def _spec(root: Path, *, workers: int) -> RunSpec:
    return RunSpec.model_validate({
        "data": {"root": str(root / "magnetograms"), "image_size": 16, "num_workers": workers, "balance": "prob",
                 "keep_negative_prob": 0.5, "augment": {"hflip": True, "rotate_deg": 10}},
        "model": {"backbone": "resnet10t", "drop_rate": 0.3},
        "train": {"epochs": 2, "batch_size": 8, "max_steps_per_epoch": 3, "warmup_epochs": 0},
        "eval": {"plots": False}})


def _losses(index, tmp_path, workers: int) -> list[float]:
    recorder = Recorder()
    train(_spec(index.root.parent, workers=workers), index=index, reporter=recorder, out_dir=tmp_path / f"w{workers}", progress=False)
    return [m["train/loss"] for m, _ in recorder.metrics if "train/loss" in m]


def test_same_seed_same_losses_with_or_without_workers(index, tmp_path):
    first = _losses(index, tmp_path / "a", workers=0)
    assert len(first) == 2
    assert _losses(index, tmp_path / "b", workers=0) == first
    assert _losses(index, tmp_path / "c", workers=1) == pytest.approx(first, rel=1e-6)


def test_reports_checkpoints_and_final_metrics(index, tmp_path):
    recorder = Recorder()
    result = train(_spec(index.root.parent, workers=0), index=index, reporter=recorder, out_dir=tmp_path, progress=False)
    assert {name for name, folder in recorder.artifacts if folder == "checkpoints"} == {"best.pt"}  # last.pt stays local
    assert result.metrics["test/threshold"] == result.metrics["best/val_threshold"] == result.threshold
    # the per-epoch history only; the best checkpoint's val scores go under their own name, once
    assert [step for m, step in recorder.metrics if "val/tss" in m] == [1, 2]
    assert [step for m, step in recorder.metrics if "best/val_tss" in m] == [result.best_epoch]


class Killed(KeyboardInterrupt):
    """Stands in for the process dying right after an epoch was saved and reported."""


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(index, tmp_path):
    spec = _spec(index.root.parent, workers=0).model_copy(deep=True)
    spec = spec.model_validate({**spec.model_dump(), "train": {**spec.train.model_dump(), "epochs": 3}})
    whole = Recorder()
    expected = train(spec, index=index, reporter=whole, out_dir=tmp_path / "whole", progress=False)

    def die_after_epoch_1(epoch, metrics):
        if epoch == 1:
            raise Killed

    pieces = Recorder()
    with pytest.raises(Killed):
        train(spec, index=index, reporter=pieces, out_dir=tmp_path / "pieces", progress=False, on_validation=die_after_epoch_1)
    assert load(tmp_path / "pieces" / "checkpoints" / "last.pt")["state"]["epoch"] == 1
    resumed = train(spec, index=index, reporter=pieces, out_dir=tmp_path / "pieces", progress=False, resume=True)
    assert resumed.resumed_from == 1
    assert resumed.metrics == expected.metrics  # bit-identical, not approximately equal
    assert resumed.history == expected.history | {"epoch_seconds": resumed.history["epoch_seconds"]}
    assert [step for m, step in pieces.metrics if "train/loss" in m] == [1, 2, 3]  # each epoch once


def test_an_epoch_saved_but_not_reported_is_reported_once_on_resume(index, tmp_path):
    spec = _spec(index.root.parent, workers=0)
    first = Recorder()

    def die_after_epoch_1(epoch, metrics):
        first.metrics.clear()  # as if the process died between saving last.pt and reporting
        raise Killed

    with pytest.raises(Killed):
        train(spec, index=index, reporter=first, out_dir=tmp_path, progress=False, on_validation=die_after_epoch_1)
    train(spec, index=index, reporter=first, out_dir=tmp_path, progress=False, resume=True)
    assert [step for m, step in first.metrics if "train/loss" in m] == [1, 2]


def test_best_checkpoint_tracker_round_trips_and_stops_early():
    best = BestCheckpoint(min_delta=0.01, patience=2, min_epochs=1)
    assert best.update(1, 0.5, threshold=0.3, constrained=True)
    assert not best.update(2, 0.505, threshold=0.4, constrained=True)  # within min_delta
    copy = BestCheckpoint(min_delta=0.01, patience=2)
    copy.load_state_dict(best.state_dict())
    assert not copy.update(3, float("nan"), threshold=0.5, constrained=True)
    assert copy.should_stop(3) and (copy.best_epoch, copy.threshold) == (1, 0.3)
