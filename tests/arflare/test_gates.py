"""Preflight gates on tiny generated data: a border marker on the positives is caught, the same
set without it is not, and the report lists what it found."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from arflare import record
from arflare.cli import main

from arflare.data.index import build_index
from arflare.data.shards import ShardWriter
from arflare.data.synth import generate
from arflare.gates import GateReport, run_gates
from arflare.spec import RunSpec


def add_border_marker(root) -> None:
    """Rewrite every shard under ``root`` with a saturated 2x2 block in the corner of each positive."""
    for shard in sorted(root.glob("*/*.tar")):
        with tarfile.open(shard) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
        samples: dict[str, dict[str, bytes]] = {}
        for name, data in members:
            key, ext = name.rsplit(".", 1)
            samples.setdefault(key, {})[ext] = data
        for key, sample in samples.items():
            if json.loads(sample["json"])["label"] == 1:
                pixels = np.array(Image.open(io.BytesIO(sample["png"])))
                pixels[:2, :2] = 255
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="PNG")
                sample["png"] = buffer.getvalue()
        shard.unlink()
        with ShardWriter(shard) as sink:
            for key, sample in samples.items():
                sink.write(key, sample)


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    """A clean and a border-marked copy of a tiny synthetic set (15 ARs, 16 px, 12 h each)."""
    base = tmp_path_factory.mktemp("gates")
    generate(base / "clean", ars=15, size=16, seed=0, hours=12, activity=10, progress=False)
    shutil.copytree(base / "clean", base / "marked")
    add_border_marker(base / "marked" / "magnetograms")
    return base


def _spec(root, **gates) -> RunSpec:
    # 19 permutations resolve p down to 0.05, enough against alpha 0.1 and half the cost of the default
    settings = {"grid_per_class": 2, "normalisation_samples": 32, "shortcut_permutations": 19, "shortcut_alpha": 0.1}
    return RunSpec.model_validate({"data": {"root": str(root / "magnetograms"), "image_size": 16},
                                   "gates": {**settings, **gates}})


def _check(root, folder, **gates) -> GateReport:
    spec = _spec(root, **gates)
    index = build_index(spec.data.root, progress=False)
    return run_gates(spec, index, folder, progress=False)


def _gate(report: GateReport, name: str):
    return next(g for g in report.gates if g.name == name)


def test_border_marker_on_positives_fails_the_shortcut_gate(tiny_synth, tmp_path):
    report = _check(tiny_synth / "marked", tmp_path)
    gate = _gate(report, "shortcut")
    assert gate.status == "FAIL" and report.exit_code == 1 and report.failed == ("shortcut",)
    assert gate.details["auc"] > 0.9 and gate.details["p_value"] < 0.1
    assert any(name.startswith("border") for name in list(gate.details["coefficients"])[:4])  # names the shortcut


@pytest.fixture(scope="module")
def clean_report(tiny_synth, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean_report")
    return _check(tiny_synth / "clean", folder), folder


def test_same_set_without_the_marker_does_not_fail(clean_report):
    report, _ = clean_report
    assert _gate(report, "shortcut").details["auc"] < 0.9
    assert report.exit_code == 0 and not report.failed


def test_report_files_round_trip_and_name_every_gate(clean_report):
    report, tmp_path = clean_report
    assert [g.name for g in report.gates] == ["integrity", "balance", "split", "shortcut", "physics_baseline", "samples",
                                              "normalisation"]
    assert GateReport.from_dict(json.loads((tmp_path / "report.json").read_text())) == report
    markdown = (tmp_path / "report.md").read_text()
    assert all(f"| {g.name} | {g.status} |" in markdown for g in report.gates)
    assert (tmp_path / "samples.png").stat().st_size > 0
    norm = _gate(report, "normalisation").details
    assert norm["train"]["samples"] == 32 and len(norm["train"]["mean"]) == 1


def test_constant_image_is_an_integrity_problem_named_by_shard_and_member(tiny_synth, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_synth / "clean" / "magnetograms", root / "magnetograms")
    shard = sorted((root / "magnetograms" / "val").glob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        key = tar.getmembers()[0].name.rsplit(".", 1)[0]
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(buffer, format="PNG")
    with ShardWriter(root / "magnetograms" / "val" / "zz-extra.tar") as sink:
        sink.write(key.replace("_hmi", "9_hmi", 1), {"png": buffer.getvalue(), "json": b'{"label": 0}'})
    gate = _gate(_check(root, tmp_path / "report", max_bad_fraction=0.5), "integrity")
    assert gate.status == "WARN"
    assert gate.details["problems"] == [{"split": "val", "shard": "val/zz-extra.tar",
                                         "member": key.replace("_hmi", "9_hmi", 1) + ".png",
                                         "problem": "constant image"}]


class Store:
    """The shipped experiments.yaml in a temp folder, pointed at one of the tiny sets, with its own store."""

    def __init__(self, folder, data) -> None:
        self.folder, self.data = folder, data
        self.file = folder / "experiments.yaml"
        shutil.copy(Path(__file__).resolve().parents[2] / "experiments.yaml", self.file)

    def arflare(self, command: str, *extra: str, name: str = "exp1_basic_reg") -> int:
        sets = [f"data.root={self.data / 'magnetograms'}", "data.generate_if_missing=false", "data.flow_root=null",
                "gates.shortcut_permutations=19", "gates.shortcut_alpha=0.1", "gates.normalisation_samples=32",
                "gates.grid_per_class=2"]
        return main([command, name, "--profile", "smoke", *(a for s in sets for a in ("--set", s)), *extra,
                     "--file", str(self.file)])

    def runs(self, kind: str):
        client = MlflowClient(tracking_uri=f"sqlite:///{self.folder / 'mlruns' / 'mlflow.db'}")
        exp = client.get_experiment_by_name("arflare")
        runs = client.search_runs([exp.experiment_id], max_results=100) if exp else []
        return [r for r in runs if r.data.tags.get(record.TAG_KIND) == kind], client


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return lambda data: Store(tmp_path, data)


def test_marked_set_fails_check_and_run_refuses_with_exit_2_and_no_training_run(store, tiny_synth, capsys):
    ws = store(tiny_synth / "marked")
    assert ws.arflare("check") == 1
    out = capsys.readouterr().out
    assert re.search(r"^shortcut +FAIL", out, re.M) and re.search(r"^physics_baseline +PASS", out, re.M)
    (check,), client = ws.runs("check")
    assert check.info.status == "FINISHED" and check.data.tags[record.TAG_GATES_FAILED] == "shortcut"
    files = {f.path for f in client.list_artifacts(check.info.run_id, record.GATES)}
    assert {"gates/report.json", "gates/report.md", "gates/samples.png"} <= files
    assert ws.arflare("run") == 2
    err = capsys.readouterr().err
    assert "shortcut FAILed, so nothing was trained" in err and "--allow-failed-gates" in err
    assert ws.runs("train")[0] == [] and len(ws.runs("check")[0]) == 1  # the check was reused, nothing trained


def test_a_sweep_on_the_marked_set_is_refused_before_its_parent_run_or_any_trial(store, tiny_synth, capsys):
    ws = store(tiny_synth / "marked")
    assert ws.arflare("sweep", "--trials", "1", name="sweep_reg_mixup") == 2
    assert "shortcut FAILed, so nothing was trained" in capsys.readouterr().err
    assert ws.runs("sweep")[0] == [] and ws.runs("trial")[0] == [] and len(ws.runs("check")[0]) == 1


def test_clean_set_check_passes_and_run_reuses_it(store, tiny_synth, capsys):
    ws = store(tiny_synth / "clean")
    assert ws.arflare("check") == 0
    assert "overall" in capsys.readouterr().out
    (check,), _ = ws.runs("check")
    assert ws.arflare("run", "--dry-run") == 0  # a dry run passes no gates and records nothing
    assert len(ws.runs("check")[0]) == 1


def test_an_ar_copied_into_another_split_stops_check_with_exit_2_naming_it_and_both_shards(store, tiny_synth, tmp_path,
                                                                                         capsys):
    data = tmp_path / "leaked"
    shutil.copytree(tiny_synth / "clean" / "magnetograms", data / "magnetograms")
    val = sorted((data / "magnetograms" / "val").glob("*.tar"))[0]
    with tarfile.open(val) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    ar = members[0][0].split("_", 1)[0]
    with ShardWriter(data / "magnetograms" / "train" / "zz-copy.tar") as sink:
        for name, blob in members:
            if name.startswith(f"{ar}_") and name.endswith(".json"):
                key = name.rsplit(".", 1)[0]
                sink.write(key, {"json": blob, "png": dict(members)[f"{key}.png"]})
    assert store(data).arflare("check") == 2
    err = capsys.readouterr().err
    assert f"AR '{ar}' in train (train/zz-copy.tar), val (val/{val.name})" in err


def test_a_run_past_failed_gates_is_tagged_with_them():
    from arflare.checking import CheckOutcome

    outcome = CheckOutcome("c1", "FAIL", ("shortcut",), reused=True, table="")
    assert outcome.tags(allowed=True) == {record.TAG_CHECK_RUN: "c1", record.TAG_GATES_STATUS: "FAIL",
                                          record.TAG_FAILED_GATES_ALLOWED: "shortcut"}
    assert record.TAG_FAILED_GATES_ALLOWED not in CheckOutcome("c2", "PASS", (), False, "").tags(allowed=True)
