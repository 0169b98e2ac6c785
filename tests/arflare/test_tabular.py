"""Physics and hybrid runs end to end through the CLI, in the smoke profile on tiny synthetic data."""

from __future__ import annotations

import json
import re

import joblib
import pandas as pd
import pytest

from arflare import metrics as skill
from arflare.data.synth import generate
from arflare.cli import main
from arflare.physics.table import FEATURE_COLUMNS
from tests.arflare.test_cli import Workspace


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    # Both classes in val and test. 8 h gives 240 train frames: at most 255 distinct values per column, so the trees'
    # binning takes scikit-learn's exact path; above that, with class weights, scikit-learn 1.9 computes 254 weighted
    # percentiles per column one call at a time, a minute per fit with the hybrid's 320 embedding columns.
    generate(out, ars=10, size=24, hours=8, seed=0, activity=5.0, progress=False, overwrite=True)
    return out


@pytest.fixture(scope="module")
def ws(tmp_path_factory, synth):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("ARFLARE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield Workspace(tmp_path_factory.mktemp("ws"), synth)


def _artifacts(ws, run, folder: str = "") -> set[str]:
    return {a.path for a in ws.client.list_artifacts(run.info.run_id, folder)}


def _download(ws, run, path: str, tmp_path):
    return ws.client.download_artifacts(run.info.run_id, path, str(tmp_path))


def test_hybrid_without_its_source_fails_before_tracking_and_names_the_command(ws, capsys):
    assert ws.run("exp8_hybrid") == 2
    err = capsys.readouterr().err
    assert "model.embedding_from 'exp2_basic_aug'" in err
    assert "arflare run exp2_basic_aug --profile smoke" in err
    assert ws.runs("exp8_hybrid") == []
    assert ws.run("exp8_hybrid", "--dry-run") == 0  # a dry run says the hash waits for the source
    assert "spec hash not known yet: it includes the run id of exp2_basic_aug's best run" in capsys.readouterr().out


def test_physics_run_records_the_same_results_as_a_cnn_run_plus_its_model(ws, tmp_path):
    assert ws.run("exp7_physics_gbm") == 0
    (run,) = ws.runs("exp7_physics_gbm")
    assert run.info.status == "FINISHED"
    assert run.data.params["model.kind"] == "physics"
    for name in ("test/tss", "test/auc", "best/val_tss", "val/tss", "train/loss", "threshold"):
        assert name in run.data.metrics, name
    assert {"predictions/val.parquet", "predictions/test.parquet"} <= _artifacts(ws, run, "predictions")
    assert "plots/permutation_importance_val.png" in _artifacts(ws, run, "plots")
    assert "model/gbm.joblib" in _artifacts(ws, run, "model")
    features = json.loads(open(_download(ws, run, "features.json", tmp_path)).read())
    assert features["columns"] == list(FEATURE_COLUMNS) and len(features["table_digest"]) == 16
    # The logged test TSS is the one the predictions and val's threshold give.
    test = pd.read_parquet(_download(ws, run, "predictions/test.parquet", tmp_path))
    tss = skill.tss(*skill.confusion(test["label"].to_numpy(), test["score"].to_numpy() >= run.data.metrics["threshold"]))
    assert tss == pytest.approx(run.data.metrics["test/tss"])
    model = joblib.load(_download(ws, run, "model/gbm.joblib", tmp_path))
    assert model.n_features_in_ == len(FEATURE_COLUMNS)


def test_hybrid_uses_the_best_source_run_and_tags_its_lineage(ws, tmp_path, capsys):
    atto = ("--set", "model.backbone=convnext_atto")  # the smallest ConvNeXt keeps the source run quick
    assert ws.run("exp2_basic_aug", *atto) == 0
    (source,) = ws.runs("exp2_basic_aug")
    capsys.readouterr()
    assert ws.run("exp8_hybrid", "--dry-run") == 0
    planned = re.search(r"spec ([0-9a-f]+)", capsys.readouterr().out).group(1)
    assert ws.run("exp8_hybrid") == 0
    (run,) = ws.runs("exp8_hybrid")
    assert run.data.tags["arflare.spec_hash"] == planned  # the dry run pins the source as the real run does
    assert run.info.status == "FINISHED"
    assert run.data.params["model.embedding_from"] == source.info.run_id  # pinned: the hash follows the source
    lineage = json.loads(run.data.tags["arflare.lineage"])  # the same tag scheme as hard negatives
    assert lineage == {"field": "model.embedding_from", "sources": {"exp2_basic_aug": source.info.run_id}}
    features = json.loads(open(_download(ws, run, "features.json", tmp_path)).read())
    embedding = [c for c in features["columns"] if c.startswith("cnn_")]
    assert embedding and features["columns"][: len(FEATURE_COLUMNS)] == list(FEATURE_COLUMNS)
    importances = pd.read_csv(_download(ws, run, "importances_val.csv", tmp_path))
    assert "cnn embedding (all columns)" in set(importances["feature"])
    assert "test/tss" in run.data.metrics
    # Re-running skips: the pinned source makes the spec hash stable.
    assert ws.run("exp8_hybrid") == 0
    assert len(ws.runs("exp8_hybrid")) == 1


def test_sweeps_search_the_trees(ws):
    import torch

    args = ["sweep", "sweep_physics_gbm", "--profile", "smoke", "--file", str(ws.file), *ws.data_sets, "--trials", "2"]
    threads = torch.get_num_threads()
    assert main(args) == 0
    assert torch.get_num_threads() == threads  # one worker trains in this process and puts the pool size back
    trials = [r for r in ws.runs("sweep_physics_gbm") if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 2
    assert all(r.data.tags.get("arflare.trial_state") == "COMPLETE" and "val/tss" in r.data.metrics for r in trials)
    assert all("model.boosting.learning_rate" in r.data.params for r in trials)


@pytest.mark.parametrize(("source", "reason"), [("exp2_basic_agu", "neither an experiment in this file nor a run id"),
                                                ("exp7_physics_gbm", "is a model.kind 'physics' experiment")])
def test_validate_checks_the_hybrid_source(tmp_path, capsys, source, reason):
    from pathlib import Path

    text = (Path(__file__).parents[2] / "experiments.yaml").read_text()
    bad = tmp_path / "experiments.yaml"
    bad.write_text(text.replace("embedding_from: exp2_basic_aug", f"embedding_from: {source}"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "experiments.exp8_hybrid.model.embedding_from" in err and reason in err
    good = tmp_path / "good.yaml"
    good.write_text(text.replace("embedding_from: exp2_basic_aug", f"embedding_from: {'a1' * 16}"))
    assert main(["validate", str(good)]) == 0
