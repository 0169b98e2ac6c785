"""compare_runs / render on hand-made records: no MLflow store needed."""

from __future__ import annotations

import csv
import io
import json

import pytest

from registry._compare_render import render
from registry.compare import Conventions, MetricColumn, compare_runs, short_value
from registry.tracking import RunRecord

VAL = MetricColumn("val_tss", "val TSS", "best/val_tss", fallback="val/tss")
TEST = MetricColumn("test_tss", "test TSS", "test/tss", interval=("test/tss_lo", "test/tss_hi"))
CONV = Conventions(ignore_params={"data.root"})


def record(run_id: str, start: int, *, val: float | None = None, test: float | None = None, status: str = "FINISHED",
           experiment: str = "exp", tags: dict | None = None, metrics: dict | None = None, **params: str) -> RunRecord:
    values = {"best/val_tss": val, "test/tss": test, "test/tss_lo": None if test is None else test - 0.2,
              "test/tss_hi": None if test is None else test + 0.1}
    return RunRecord(run_id=run_id * 4, run_name=f"{experiment}/{run_id}", status=status, start_time=start, end_time=None,
                     tags={"arflare.experiment": experiment, **(tags or {})},
                     params={"model": "resnet", "data.root": f"/data/{run_id}", **params},
                     metrics={k: v for k, v in {**values, **(metrics or {})}.items() if v is not None}, artifact_uri="x")


def grid_records() -> list[RunRecord]:
    """The README's example: seeds [0, 1] x grid train.lr [1e-4, 3e-4]; lr=1e-4 scores far better."""
    return [record(f"r{seed}{i}aaaa", 10 * seed + i, val=v + 0.01 * seed, test=v - 0.1 + 0.02 * seed,
                   **{"train.seed": str(seed), "train.lr": lr})
            for seed in (0, 1) for i, (lr, v) in enumerate((("0.0001", 0.6), ("0.0003", 0.2)))]


def ranked(comparison):
    return [row for row in comparison.rows if row["rank"] is not None]


def test_the_readme_grid_gives_two_groups_named_by_their_lr():
    comparison = compare_runs(grid_records(), rank_by=VAL, columns=[TEST], conventions=CONV)
    heads = ranked(comparison)
    assert [row["kind"] for row in heads] == ["group", "group"]
    assert [row["group"] for row in heads] == ["exp [train.lr=1e-4]", "exp [train.lr=3e-4]"]
    assert heads[0]["val_tss"] == pytest.approx(0.605) and heads[0]["val_tss_std"] == pytest.approx(0.00707, abs=1e-5)
    assert [row["n_runs"] for row in heads] == [2, 2] and comparison.n_ranked == 2
    members = [row for row in comparison.rows if row["rank"] is None]
    assert [row["seed"] for row in members] == ["1", "0", "1", "0"]  # best first within a group
    assert all(row["_member"] for row in members)


def test_ranking_uses_the_rank_column_not_the_shown_test_column():
    records = [record("aaaaaaaa", 1, val=0.7, test=0.1), record("bbbbbbbb", 2, val=0.5, test=0.9, model="other")]
    comparison = compare_runs(records, rank_by=VAL, columns=[TEST], conventions=CONV)
    assert [row["run_id"][:1] for row in ranked(comparison)] == ["a", "b"]
    by_test = compare_runs(records, rank_by=TEST, columns=[VAL], conventions=CONV)
    assert [row["run_id"][:1] for row in ranked(by_test)] == ["b", "a"]


def test_sweep_trials_are_listed_under_their_study_and_never_averaged():
    parent = record("pppppppp", 0, experiment="sweep", tags={"arflare.study": "sweep"})
    trials = [record(f"t{n}tttttt", n + 1, val=v, test=v, experiment="sweep", **{"model.drop_rate": str(v)},
                     tags={"mlflow.parentRunId": parent.run_id, "optuna.trial_number": str(n),
                           "arflare.trial_state": state})
              for n, (v, state) in enumerate(((0.3, "COMPLETE"), (0.5, "COMPLETE"), (0.9, "PRUNED")))]
    twins = [record(f"u{n}uuuuuu", 10 + n, val=0.4, experiment="sweep", tags={"mlflow.parentRunId": parent.run_id,
                    "optuna.trial_number": str(5 + n), "arflare.trial_state": "COMPLETE"}) for n in range(2)]
    comparison = compare_runs([parent, *trials, *twins], rank_by=VAL, columns=[TEST], conventions=CONV)
    kinds = [row["kind"] for row in comparison.rows]
    assert kinds == ["study", "trial", "trial", "trial", "trial"]  # no group row, even for identical configs
    assert "group" not in kinds and all(row["val_tss_std"] is None for row in comparison.rows)
    assert [row["trial"] for row in comparison.rows[1:]] == ["1", "5", "6", "0"]
    assert comparison.rows[0]["notes"] == "1 pruned" and comparison.hidden == {"PRUNED": 1}
    assert comparison.n_ranked == 4 and comparison.n_trials == 4


def test_only_finished_runs_are_ranked_and_the_rest_are_counted_or_listed():
    records = [record("aaaaaaaa", 1, val=0.3), record("bbbbbbbb", 2, val=0.9, status="FAILED"),
               record("cccccccc", 3, val=0.8, status="KILLED"), record("dddddddd", 4, status="FINISHED")]
    hidden = compare_runs(records, rank_by=VAL, conventions=CONV)
    assert [row["run_id"][:1] for row in hidden.rows] == ["a"]
    assert hidden.hidden == {"FAILED": 1, "KILLED": 1, "FINISHED without val TSS": 1}
    shown = compare_runs(records, rank_by=VAL, conventions=CONV, show_all=True)
    assert [(row["run_id"][:1], row["rank"], row["status"]) for row in shown.rows] == [
        ("a", 1, "FINISHED"), ("b", None, "FAILED"), ("c", None, "KILLED"), ("d", None, "FINISHED")]
    assert shown.hidden == {}


def test_a_failed_seed_does_not_enter_its_groups_mean():
    records = [record("aaaaaaaa", 1, val=0.4, **{"train.seed": "0"}), record("bbbbbbbb", 2, val=0.6, **{"train.seed": "1"}),
               record("cccccccc", 3, val=0.99, status="FAILED", **{"train.seed": "2"})]
    head = compare_runs(records, rank_by=VAL, conventions=CONV).rows[0]
    assert head["kind"] == "group" and head["n_runs"] == 2 and head["val_tss"] == pytest.approx(0.5)


def test_config_hash_tag_wins_over_params_and_location_params_never_split_groups():
    same = [record("aaaaaaaa", 1, val=0.4, **{"train.seed": "0"}), record("bbbbbbbb", 2, val=0.6, **{"train.seed": "1"})]
    assert len(ranked(compare_runs(same, rank_by=VAL, conventions=CONV))) == 1  # data.root differs, ignored
    tagged = [record("aaaaaaaa", 1, val=0.4, tags={"arflare.config_hash": "h1"}),
              record("bbbbbbbb", 2, val=0.6, tags={"arflare.config_hash": "h2"})]
    assert len(ranked(compare_runs(tagged, rank_by=VAL, conventions=CONV))) == 2


def test_fallback_key_is_used_and_said():
    old = record("aaaaaaaa", 1, metrics={"val/tss": 0.5})
    comparison = compare_runs([old], rank_by=VAL, conventions=CONV)
    assert comparison.rows[0]["val_tss"] == 0.5 and comparison.rows[0]["notes"] == "last-val"
    assert "last-val" in comparison.notes


def test_not_measurable_values_are_na_and_notes_are_collected():
    records = [record("aaaaaaaa", 1, val=0.5, test=0.4, tags={"dirty": "1"})]
    comparison = compare_runs(records, rank_by=VAL, columns=[TEST], conventions=CONV,
                              run_notes=lambda r: {"dirty": "tree was dirty"} if r.tags.get("dirty") else {},
                              not_measurable=lambda r, c: "too few negatives" if c.name == "test_tss" else None)
    row = comparison.rows[0]
    assert row["test_tss"] is None and row["_na"] == {"test_tss"} and row["notes"] == "dirty"
    text = render(comparison, "table")
    assert "n/a" in text and "dirty: tree was dirty" in text


def test_table_fits_100_columns_shows_intervals_and_split_headers():
    records = [record(f"{c}" * 8, i, val=0.5 + i / 10, test=0.43, experiment="exp2_basic_aug_with_a_very_long_name_indeed",
                      **{"train.lr": lr, "model.drop_path_rate": dp, "train.seed": "0"})
               for i, (c, lr, dp) in enumerate((("a", "0.0001", "0.1"), ("b", "0.0003", "0.2")))]
    comparison = compare_runs(records, rank_by=VAL, columns=[TEST], conventions=CONV)
    text = render(comparison, "table", footer=[])
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "val TSS" in lines[0] and "test TSS [95% CI]" in lines[0]
    assert "0.43 [0.23, 0.53]" in text and "…" in text
    wide = render(comparison, "table", wide=True)
    assert "exp2_basic_aug_with_a_very_long_name_indeed [model.drop_path_rate=0.1, train.lr=1e-4]" in wide


def test_group_rows_show_mean_std_and_n():
    text = render(compare_runs(grid_records(), rank_by=VAL, columns=[TEST], conventions=CONV), "table")
    first = text.splitlines()[2]
    assert "exp [train.lr=1e-4]" in first and "0.605 ± 0.007" in first and " 2 " in first
    assert "  seed=1" in text.splitlines()[3]


def test_json_and_csv_rows_carry_machine_names():
    comparison = compare_runs(grid_records(), rank_by=VAL, columns=[TEST], conventions=CONV)
    rows = json.loads(render(comparison, "json"))
    for key in ("val_tss", "test_tss", "test_tss_lo", "test_tss_hi", "group", "config_hash", "status", "n_runs"):
        assert key in rows[0]
    assert not any(key.startswith("_") for key in rows[0])
    assert rows[1]["test_tss_lo"] == pytest.approx(rows[1]["test_tss"] - 0.2)
    parsed = list(csv.DictReader(io.StringIO(render(comparison, "csv"))))
    assert len(parsed) == len(rows) and parsed[0]["group"] == "exp [train.lr=1e-4]"


def test_markdown_and_latex():
    comparison = compare_runs(grid_records(), rank_by=VAL, columns=[TEST], conventions=CONV)
    lines = render(comparison, "markdown").splitlines()
    assert lines[0].startswith("| # | configuration |") and lines[1].startswith("|---|")
    latex = render(comparison, "latex")
    assert r"\toprule" in latex and r"\bottomrule" in latex and r"exp [train.lr=1e-4]" in latex
    assert r"$\pm$" in latex and "seed=" not in latex  # groups summarised, their runs not listed


def test_top_keeps_the_best_configurations():
    comparison = compare_runs(grid_records(), rank_by=VAL, conventions=CONV, top=1)
    assert len(ranked(comparison)) == 1 and len(comparison.rows) == 3


def test_unknown_format_lists_the_choices():
    with pytest.raises(ValueError, match="available: table, csv, json, markdown, latex"):
        render(compare_runs(grid_records(), rank_by=VAL, conventions=CONV), "html")


@pytest.mark.parametrize(("text", "short"), [("0.0003", "3e-4"), ("0.0001", "1e-4"), ("0.05", "0.05"), ("64", "64"),
                                             ("true", "true"), ("1.5e-05", "1.5e-5"), ("0.25", "0.25")])
def test_short_value(text, short):
    assert short_value(text) == short


def test_a_sweep_parent_is_a_heading_even_before_its_first_trial():
    parent = record("pppppppp", 0, experiment="sweep", tags={"arflare.study": "sweep"})
    comparison = compare_runs([parent], rank_by=VAL, conventions=CONV)
    assert comparison.rows == [] and not comparison.hidden
