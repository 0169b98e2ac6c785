"""`arflare mine` end to end on tiny synthetic data: table, dataset input, reuse, missing source."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from arflare.data.index import build_index
from arflare.hardneg import table_digest
from arflare.mining import TABLE_ARTIFACT
from arflare.spec import RunSpec

from .test_cli import Workspace, synth  # noqa: F401  (the tiny synthetic data fixture)

FAST = ("--set", "model.backbone=convnext_atto")


@pytest.fixture(scope="module")
def ws(tmp_path_factory, synth):  # noqa: F811
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("ARFLARE_CACHE", str(tmp_path_factory.mktemp("cache")))
        workspace = Workspace(tmp_path_factory.mktemp("ws"), synth)
        assert workspace.run("exp1_basic_reg", *FAST) == 0
        yield workspace


def _mine_runs(ws):
    return [r for r in ws.runs() if r.data.tags.get("arflare.kind") == "mine"]


def test_mine_records_only_negatives_above_the_rule_and_a_rerun_reuses_it(ws, capsys, tmp_path):
    assert ws.arflare("mine", "exp1_basic_reg", "--profile", "smoke", "--top-fraction", "0.25") == 0
    (run,) = _mine_runs(ws)
    (source,) = [r for r in ws.runs("exp1_basic_reg") if r.data.tags.get("arflare.kind", "train") == "train"]
    assert run.info.status == "FINISHED" and run.data.tags["arflare.mine.source"] == source.info.run_id
    client: MlflowClient = ws.client
    table = pd.read_parquet(client.download_artifacts(run.info.run_id, TABLE_ARTIFACT, str(tmp_path)))
    assert list(table.columns) == ["key", "ar", "timestamp", "score", "source_run"]
    assert table["key"].is_unique and set(table["source_run"]) == {source.info.run_id}
    negatives = int(run.data.metrics["mine/negatives"])
    assert len(table) == -(-negatives // 4)  # ceil(0.25 * negatives)
    labels = build_index(ws.data / "magnetograms", progress=False).table.set_index("key")["label"]
    assert (labels.loc[table["key"]] == 0).all()  # negatives only
    inputs = client.get_run(run.info.run_id).inputs.dataset_inputs  # the data it read, and what it mined
    (dataset,) = [d for d in inputs if d.dataset.name == "hard_negatives"]
    assert {d.dataset.name for d in inputs} == {"hard_negatives", "magnetograms"}
    assert dataset.dataset.name == "hard_negatives" and dataset.dataset.digest == table_digest(table)
    capsys.readouterr()
    assert ws.arflare("mine", "exp1_basic_reg", "--profile", "smoke", "--top-fraction", "0.25") == 0
    assert "reused FINISHED mine run " + run.info.run_id in capsys.readouterr().out
    assert len(_mine_runs(ws)) == 1
    assert ws.arflare("mine", "exp1_basic_reg", "--profile", "smoke", "--top-fraction", "0.5") == 0
    assert len(_mine_runs(ws)) == 2  # another rule is another mine run
    capsys.readouterr()
    assert ws.arflare("list") == 0  # mine runs carry arflare.experiment but train nothing: not counted
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("exp1_basic_reg ")]
    assert row.split()[2] == "1"
    assert ws.arflare("compare", "-e", "exp1_basic_reg") == 0  # nor ranked (or counted as unranked) by compare
    shown = capsys.readouterr()
    assert "exp1_basic_reg" in shown.out and "not ranked" not in shown.out + shown.err


def test_mine_without_a_finished_source_says_which_command_creates_it(ws, capsys):
    assert ws.arflare("mine", "exp2_basic_aug", "--profile", "smoke") == 2
    assert "create it with: arflare run exp2_basic_aug --profile smoke" in capsys.readouterr().err
    assert ws.arflare("mine", "exp1_basic_reg", "--profile", "smoke", "--top-fraction", "2") == 2


def test_run_mines_what_is_missing_then_trains_with_lineage_and_fpr_hard(ws, capsys, tmp_path):
    capsys.readouterr()
    assert ws.run("exp6_hardneg", *FAST, "--dry-run") == 0  # the source exists, its mine with this rule not yet
    out = capsys.readouterr().out
    assert "spec hash not known yet" in out and "not mined yet (train split, threshold)" in out
    assert ws.run("exp6_hardneg", *FAST) == 0
    (run,) = ws.runs("exp6_hardneg")
    (source,) = [r for r in ws.runs("exp1_basic_reg") if r.data.tags.get("arflare.kind", "train") == "train"]
    mined = [r for r in _mine_runs(ws) if r.data.tags["arflare.mine.rule"] == "threshold"]
    assert len(mined) == 1  # mined through the lifecycle with the source run's own threshold
    lineage = json.loads(run.data.tags["arflare.lineage"])
    assert lineage["sources"] == {"exp1_basic_reg": source.info.run_id}
    assert lineage["mine_runs"] == {source.info.run_id: mined[0].info.run_id}
    table = pd.read_parquet(ws.client.download_artifacts(mined[0].info.run_id, TABLE_ARTIFACT, str(tmp_path)))
    assert lineage["digest"] == table_digest(table) == run.data.params["hard_negatives.digest"]
    assert run.data.params["data.hard_negatives.from"] == '["exp1_basic_reg"]'
    history = ws.client.get_metric_history(run.info.run_id, "val/fpr_hard")
    assert len(history) == 1 and "test/fpr_hard" in run.data.metrics  # one smoke epoch
    # Rerun: the same sources and table give the same spec hash: skipped, nothing mined again.
    capsys.readouterr()
    assert ws.run("exp6_hardneg", *FAST) == 0
    assert "skip exp6_hardneg" in capsys.readouterr().err
    assert len(ws.runs("exp6_hardneg")) == 1 and len(_mine_runs(ws)) == len(mined) + 2  # + the two earlier mine tests
    assert ws.arflare("show", "exp6_hardneg", "--profile", "smoke") == 0
    assert f"exp1_basic_reg -> run {source.info.run_id}" in capsys.readouterr().out
    # A dry run now resolves the same sources and table: the spec hash the real run got.
    assert ws.run("exp6_hardneg", *FAST, "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"spec {run.data.tags['arflare.spec_hash']}" in out
    assert f"mine run {mined[0].info.run_id}" in out and f"digest {lineage['digest']}" in out


def test_spec_hash_follows_the_hard_negative_table():
    from arflare.lineage import HardNegativeSet

    def fingerprint(scores):
        table = pd.DataFrame({"key": ["a", "b"], "ar": ["1", "1"], "timestamp": pd.to_datetime(["2012-01-01"] * 2),
                              "score": scores, "source_run": ["r", "r"]})
        return HardNegativeSet(table=table, digest=table_digest(table), weight=5.0, sources={"exp1": "r"},
                               mine_runs={"r": "m"}).fingerprint

    spec = RunSpec.model_validate({"data": {"hard_negatives": {"from": ["exp1"]}}})
    assert spec.spec_hash("fp+" + fingerprint([0.9, 0.8])) != spec.spec_hash("fp+" + fingerprint([0.9, 0.7]))
    assert spec.spec_hash("fp+" + fingerprint([0.9, 0.8])) == spec.spec_hash("fp+" + fingerprint([0.9, 0.8]))


def test_a_missing_source_fails_before_anything_runs(tmp_path, synth, capsys, monkeypatch):  # noqa: F811
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fresh = Workspace(tmp_path, synth)
    assert fresh.run("exp6_hardneg", *FAST) == 2
    assert "create it with: arflare run exp1_basic_reg --profile smoke" in capsys.readouterr().err
    assert fresh.runs() == []


@pytest.mark.parametrize(("source", "reason"), [("exp1_basic_rge", "neither an experiment in this file nor a run id"),
                                                ("exp7_physics_gbm", "is a model.kind 'physics' experiment")])
def test_validate_checks_the_hard_negative_sources(tmp_path, capsys, source, reason):
    from pathlib import Path

    from arflare.cli import main

    text = (Path(__file__).parents[2] / "experiments.yaml").read_text()
    shipped = "hard_negatives: {from: [exp1_basic_reg]"
    assert shipped in text
    bad = tmp_path / "experiments.yaml"
    bad.write_text(text.replace(shipped, f"hard_negatives: {{from: [exp1_basic_reg, {source}]"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "experiments.exp6_hardneg.data.hard_negatives.from" in err and reason in err
    good = tmp_path / "good.yaml"
    good.write_text(text.replace(shipped, f"hard_negatives: {{from: [{'a1' * 16}]"))
    assert main(["validate", str(good)]) == 0
