"""Hard-negative tables: selection by rule, merging across sources, digest; chunked resumable scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from arflare.data.datasets import FlareDataset
from arflare.data.index import build_index
from arflare.hardneg import (
    COLUMNS,
    MineRule,
    hard_flags,
    merge_hard_negatives,
    read_table,
    select_hard_negatives,
    table_digest,
    write_table,
)
from arflare.scoring import score_dataset


def _predictions(scores, labels, prefix="k") -> pd.DataFrame:
    n = len(scores)
    return pd.DataFrame({"key": [f"{prefix}{i:03d}" for i in range(n)], "ar": [str(100 + i % 3) for i in range(n)],
                         "timestamp": pd.date_range("2012-01-01", periods=n, freq="12min"),
                         "label": labels, "score": scores})


PRED = _predictions([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.95], [0, 1, 0, 0, 0, 0, 0, 1])


def test_min_score_keeps_only_negatives_at_or_above_it():
    table = select_hard_negatives(PRED, MineRule(min_score=0.6), source_run="r1")
    assert list(table.columns) == list(COLUMNS)
    assert list(table["key"]) == ["k000", "k002", "k003"]  # k001 and k007 score high but are positives
    assert (table["score"] >= 0.6).all() and set(table["source_run"]) == {"r1"}


def test_top_fraction_keeps_the_highest_scoring_negatives():
    table = select_hard_negatives(PRED, MineRule(top_fraction=0.5), source_run="r1")
    assert list(table["key"]) == ["k000", "k002", "k003"]  # ceil(0.5 * 6 negatives)


def test_default_rule_is_the_source_threshold_and_rules_are_checked():
    assert MineRule().resolved(0.55) == MineRule(min_score=0.55)
    assert MineRule(top_fraction=0.1).resolved(0.55) == MineRule(top_fraction=0.1)
    with pytest.raises(ValueError, match="resolve"):
        select_hard_negatives(PRED, MineRule(), source_run="r1")
    with pytest.raises(ValueError, match="not both"):
        MineRule(min_score=0.5, top_fraction=0.1)
    with pytest.raises(ValueError, match="top_fraction"):
        MineRule(top_fraction=0.0)


def test_merge_is_a_union_deduplicated_by_key_keeping_the_highest_score():
    a = select_hard_negatives(PRED, MineRule(min_score=0.6), source_run="run_a")
    other = PRED.assign(score=[0.1, 0.9, 0.85, 0.2, 0.75, 0.1, 0.1, 0.1])
    b = select_hard_negatives(other, MineRule(min_score=0.6), source_run="run_b")
    merged = merge_hard_negatives([a, b])
    assert merged["key"].is_unique
    assert set(merged["key"]) == set(a["key"]) | set(b["key"]) == {"k000", "k002", "k003", "k004"}
    by_key = merged.set_index("key")
    assert by_key.loc["k002", "score"] == 0.85 and by_key.loc["k002", "source_run"] == "run_b"
    assert by_key.loc["k000", "score"] == 0.9 and by_key.loc["k000", "source_run"] == "run_a"
    assert merge_hard_negatives([b, a]).equals(merged)  # order of the sources does not matter


def test_digest_follows_content_not_order(tmp_path):
    table = select_hard_negatives(PRED, MineRule(min_score=0.5), source_run="r1")
    assert table_digest(table) == table_digest(table.iloc[::-1])
    assert table_digest(read_table(write_table(table, tmp_path / "t.parquet"))) == table_digest(table)
    assert table_digest(table.iloc[1:]) != table_digest(table)
    assert table_digest(table.assign(score=table["score"] + 0.01)) != table_digest(table)
    assert table_digest(table.assign(source_run="r2")) != table_digest(table)


def test_hard_flags_mark_only_negatives_in_the_table():
    table = select_hard_negatives(PRED, MineRule(min_score=0.6), source_run="r1")
    flags = hard_flags(PRED["key"], np.array([0, 1, 1, 0, 0, 0, 0, 1]), table)
    assert list(np.flatnonzero(flags)) == [0, 3]  # k002 is positive in this data set


class _MeanModel(torch.nn.Module):
    """Logit = mean pixel; counts the items it has scored."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, inputs):
        self.seen += len(inputs["image"])
        return inputs["image"].mean(dim=(1, 2, 3))[:, None]


def test_scoring_is_resumable_by_chunk(tiny_shards, tmp_path):
    index = build_index(tiny_shards.root, progress=False)
    dataset = FlareDataset(index, "train", image_size=16)
    model = _MeanModel()
    chunks = tmp_path / "chunks"
    first = score_dataset(model, dataset, device=torch.device("cpu"), batch_size=4, chunk_dir=chunks, chunk_size=6,
                          progress=False)
    assert model.seen == len(dataset) == 15 and len(list(chunks.glob("chunk-*.parquet"))) == 3
    assert first["score"].notna().all() and list(first["key"]) == list(dataset.frame_table["key"])
    (chunks / "chunk-000001.parquet").unlink()  # as if killed while scoring the second chunk
    again = score_dataset(model, dataset, device=torch.device("cpu"), batch_size=4, chunk_dir=chunks, chunk_size=6,
                          progress=False)
    assert model.seen == 15 + 6  # only the missing chunk was scored again
    pd.testing.assert_frame_equal(first, again)
    score_dataset(model, dataset, device=torch.device("cpu"), batch_size=4, chunk_dir=chunks, chunk_size=5, progress=False)
    assert model.seen == 21 + 15  # chunks cut another way are not reused
