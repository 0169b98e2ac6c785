"""compare_runs / render on hand-made records: no MLflow store needed."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from registry.compare import MetricColumn, compare_runs, render
from registry.tracking import RunRecord

TSS = MetricColumn("TSS", "test/tss")
HSS = MetricColumn("HSS", "test/hss")


def record(run_id: str, start: int, *, tss: float | None = None, hss: float | None = None, status: str = "FINISHED",
           experiment: str = "cnn", group: str | None = None, **params: str) -> RunRecord:
    metrics = {k: v for k, v in {"test/tss": tss, "test/hss": hss}.items() if v is not None}
    tags = {"arflare.experiment": experiment} | ({"arflare.group": group} if group else {})
    return RunRecord(run_id=run_id * 4, run_name=f"run-{run_id}", status=status, start_time=start, end_time=None,
                     tags=tags, params={"model": "resnet18", **params}, metrics=metrics, artifact_uri="file:///x")


@pytest.fixture
def records() -> list[RunRecord]:
    return [
        record("aaaaaaaa", 1, tss=0.50, hss=0.30, lr="0.1"),
        record("bbbbbbbb", 2, tss=0.70, hss=0.40, lr="0.01", group="g", seed="1"),
        record("cccccccc", 3, status="FAILED", lr="0.001"),
        record("dddddddd", 4, tss=0.50, hss=0.35, lr="0.01", group="g", seed="2"),
        record("eeeeeeee", 5, tss=0.60, hss=float("nan"), lr="0.01", group="g", seed="3"),
    ]


def run_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["run_id"].notna()]


def test_ranks_best_first_ties_keep_start_order_and_lacking_runs_last(records):
    table = run_rows(compare_runs(records, metric=TSS, columns=[HSS, TSS]))
    assert [rid[:1] for rid in table["run_id"]] == ["b", "e", "a", "d", "c"]
    assert list(table["rank"]) == [1, 2, 3, 4, None]
    assert list(table.columns[:7]) == ["rank", "experiment", "run_id", "run_name", "TSS", "HSS", "status"]
    failed = table.iloc[-1]
    assert failed["status"] == "FAILED" and failed["TSS"] is None


def test_lower_is_better_and_top(records):
    table = compare_runs(records, metric=TSS, higher_is_better=False, top=2)
    assert [rid[:1] for rid in run_rows(table)["run_id"]] == ["a", "d"]


def test_top_counts_lacking_runs_in_rank_order(records):
    table = run_rows(compare_runs(records[2:4], metric=TSS, top=5))
    assert [rid[:1] for rid in table["run_id"]] == ["d", "c"]


def test_only_differing_params_are_columns(records):
    table = compare_runs(records, metric=TSS, ignore_params={"seed"})
    assert "lr" in table.columns
    assert "model" not in table.columns  # the same in every run
    assert "seed" not in table.columns  # ignored by the caller


def test_params_are_compared_among_listed_runs_only(records):
    table = compare_runs(records[1:2] + records[3:4], metric=TSS, ignore_params={"seed"})
    assert "lr" not in table.columns  # both listed runs used lr=0.01


def test_group_row_holds_mean_and_std_over_runs_with_the_metric(records):
    table = compare_runs(records, metric=TSS, columns=[HSS])
    groups = table[table["run_id"].isna()]
    assert len(groups) == 1
    row = groups.iloc[0]
    assert row["experiment"] == "g"
    assert row["run_name"] == "(mean ± std over 3 runs)"
    assert row["TSS"] == "0.6000 ± 0.1000"
    assert row["HSS"] == "0.3750 ± 0.0354"  # nan HSS of run e is left out
    assert row["lr"] == "0.01" and row["rank"] is None  # a param the group shares identifies it


def test_group_rows_summarise_all_runs_even_beyond_top(records):
    table = compare_runs(records, metric=TSS, top=1)
    assert len(run_rows(table)) == 1
    assert table[table["run_id"].isna()].iloc[0]["TSS"] == "0.6000 ± 0.1000"


def test_table_format_is_aligned_with_short_ids_and_four_decimals(records):
    text = render(compare_runs(records, metric=TSS), "table")
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["rank", "experiment", "run_id", "run_name", "TSS"]
    assert set(lines[1]) == {"-", " "}
    assert "bbbbbbbb " in lines[2] and "bbbbbbbbb" not in text
    assert "0.7000" in lines[2]
    assert lines[2].index("0.7000") + 6 == lines[3].index("0.6000") + 6  # right-aligned numbers


def test_markdown_format_is_a_pipe_table(records):
    lines = render(compare_runs(records, metric=TSS), "markdown").splitlines()
    assert lines[0].startswith("| rank | experiment |")
    assert lines[1].startswith("|---|")
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    assert len(lines) == 2 + 5 + 1


def test_csv_format_parses_back_with_full_ids(records):
    table = compare_runs(records, metric=TSS)
    parsed = pd.read_csv(io.StringIO(render(table, "csv")))
    assert list(parsed.columns) == list(table.columns)
    assert parsed["run_id"].iloc[0] == "bbbbbbbb" * 4
    assert float(parsed["TSS"].iloc[0]) == pytest.approx(0.7)  # group rows make the column text


def test_json_format_keeps_numbers_numeric(records):
    rows = json.loads(render(compare_runs(records, metric=TSS), "json"))
    assert rows[0]["run_id"] == "bbbbbbbb" * 4
    assert rows[0]["rank"] == 1 and rows[0]["TSS"] == pytest.approx(0.7)
    assert rows[4]["rank"] is None and rows[4]["TSS"] is None


def test_unknown_format_lists_the_choices(records):
    with pytest.raises(ValueError, match="available: table, csv, json, markdown"):
        render(compare_runs(records, metric=TSS), "html")  # type: ignore[arg-type]


def test_a_group_of_one_run_gets_no_summary_row():
    table = compare_runs([record("aaaaaaaa", 1, tss=0.5, group="solo"), record("bbbbbbbb", 2, tss=0.6)], metric=TSS)
    assert table["run_id"].notna().all() and len(table) == 2
