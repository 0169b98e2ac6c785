"""`arflare mine` end to end on tiny synthetic data: table, dataset input, reuse, missing source."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from arflare.data.index import build_index
from arflare.hardneg import table_digest
from arflare.mining import TABLE_ARTIFACT

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
    (dataset,) = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert dataset.dataset.name == "hard_negatives" and dataset.dataset.digest == table_digest(table)
    capsys.readouterr()
    assert ws.arflare("mine", "exp1_basic_reg", "--profile", "smoke", "--top-fraction", "0.25") == 0
    assert "reused FINISHED mine run " + run.info.run_id in capsys.readouterr().out
    assert len(_mine_runs(ws)) == 1
    assert ws.arflare("mine", "exp1_basic_reg", "--profile", "smoke", "--top-fraction", "0.5") == 0
    assert len(_mine_runs(ws)) == 2  # another rule is another mine run


def test_mine_without_a_finished_source_says_which_command_creates_it(ws, capsys):
    assert ws.arflare("mine", "exp2_basic_aug", "--profile", "smoke") == 2
    assert "create it with: arflare run exp2_basic_aug --profile smoke" in capsys.readouterr().err
    assert ws.arflare("mine", "exp1_basic_reg", "--profile", "smoke", "--top-fraction", "2") == 2
