"""The trainer on its own: reproducible for a seed, whatever the number of DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from arflare.commands import prepare_data
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
    assert {name for name, folder in recorder.artifacts if folder == "checkpoints"} == {"best.pt", "last.pt"}
    assert result.metrics["test/threshold"] == result.metrics["val/threshold"] == result.threshold
    assert [step for m, step in recorder.metrics if "val/tss" in m] == [1, 2, 2]  # per epoch, then the best checkpoint's
