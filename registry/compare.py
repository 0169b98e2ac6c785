"""Rank tracked runs by a metric and render the table for a terminal, a notebook or a file.

Pure pandas over :class:`~registry.tracking.RunRecord`; the store is read elsewhere.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from registry.tracking import RunRecord

RANK, EXPERIMENT, RUN_ID, RUN_NAME, STATUS = "rank", "experiment", "run_id", "run_name", "status"
FORMATS = ("table", "csv", "json", "markdown")
_SHORT_ID = 8


@dataclass(frozen=True)
class MetricColumn:
    """A metric shown as a column: ``MetricColumn("TSS", "test/tss")``."""

    label: str
    key: str


def compare_runs(
    records: Sequence[RunRecord],
    *,
    metric: MetricColumn,
    higher_is_better: bool = True,
    columns: Sequence[MetricColumn] = (),
    top: int | None = None,
    experiment_tag: str = "arflare.experiment",
    group_tag: str = "arflare.group",
    ignore_params: Collection[str] = (),
) -> pd.DataFrame:
    """Build a leaderboard: one row per run, best first, then one summary row per group.

    Args:
        records: Runs to compare, in any order.
        metric: The metric that ranks the runs.
        higher_is_better: False for losses and error rates.
        columns: Further metrics to show; a repeat of ``metric`` is skipped.
        top: Keep only the first ``top`` runs in rank order (groups still summarise all runs).
        experiment_tag: Tag naming each run's experiment.
        group_tag: Tag shared by runs that repeat one config (e.g. over seeds).
        ignore_params: Params never shown, even when they differ (e.g. output paths).

    Returns:
        Columns rank, experiment, run_id, run_name, the metric labels, status, then only the
        params whose values differ among the listed runs. Runs lacking the metric (failed,
        running) come last with rank None. Group rows (groups of more than one run) have
        rank None, the group name as experiment and "mean ± std" (sample std) text per metric.
    """
    if top is not None and top < 0:
        raise ValueError(f"top must be a number of runs >= 0, got {top!r}; use None to keep every run")
    shown = _unique_columns([metric, *columns])
    ranked = _rank(records, key=metric.key, higher_is_better=higher_is_better)
    n_ranked = sum(_value(r, metric.key) is not None for r in ranked)
    runs = ranked[:top] if top is not None else ranked
    params = _differing_params(runs, ignore=set(ignore_params))
    rows = []
    for index, record in enumerate(runs):
        row = _run_row(record, rank=index + 1 if index < n_ranked else None, shown=shown,
                       experiment_tag=experiment_tag)
        rows.append(row | {column: record.params.get(key) for key, column in params.items()})
    rows += _group_rows(ranked, shown=shown, group_tag=group_tag, higher_is_better=higher_is_better,
                        params=params)
    fixed = [RANK, EXPERIMENT, RUN_ID, RUN_NAME, *(c.label for c in shown), STATUS]
    return pd.DataFrame(rows, columns=fixed + list(params.values()), dtype=object)


def _unique_columns(columns: Sequence[MetricColumn]) -> list[MetricColumn]:
    """Drop repeats (same key or same label), keeping the first, so the ranked metric stays first."""
    kept: list[MetricColumn] = []
    for column in columns:
        if all(column.key != k.key and column.label != k.label for k in kept):
            kept.append(column)
    return kept


def _value(record: RunRecord, key: str) -> float | None:
    value = record.metrics.get(key)
    return None if value is None or math.isnan(value) else float(value)


def _rank(records: Sequence[RunRecord], *, key: str, higher_is_better: bool) -> list[RunRecord]:
    # Stable sorts: start order first, so equal metrics keep it; lacking runs sink to the end.
    by_start = sorted(records, key=lambda r: (r.start_time is None, r.start_time or 0))
    have = [r for r in by_start if _value(r, key) is not None]
    lack = [r for r in by_start if _value(r, key) is None]
    return sorted(have, key=lambda r: _value(r, key), reverse=higher_is_better) + lack


def _run_row(record: RunRecord, *, rank: int | None, shown: Sequence[MetricColumn],
             experiment_tag: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        RANK: rank,
        EXPERIMENT: record.tags.get(experiment_tag, ""),
        RUN_ID: record.run_id,
        RUN_NAME: record.run_name,
    }
    row.update({c.label: _value(record, c.key) for c in shown})
    row[STATUS] = record.status
    return row


def _differing_params(runs: Sequence[RunRecord], *, ignore: set[str]) -> dict[str, str]:
    """Map each param key whose value is not the same in every run to its column name."""
    keys = sorted({key for r in runs for key in r.params} - ignore)
    taken = {RANK, EXPERIMENT, RUN_ID, RUN_NAME, STATUS}
    differing = [k for k in keys if len({r.params.get(k) for r in runs}) > 1]
    return {k: f"params.{k}" if k in taken else k for k in differing}


def _group_rows(ranked: Sequence[RunRecord], *, shown: Sequence[MetricColumn], group_tag: str,
                higher_is_better: bool, params: dict[str, str]) -> list[dict[str, Any]]:
    """One summary row per group of more than one run, the best mean first."""
    groups: dict[str, list[RunRecord]] = {}
    for record in ranked:
        if group_tag in record.tags:
            groups.setdefault(record.tags[group_tag], []).append(record)
    summaries = []
    for name, members in groups.items():
        if len(members) > 1:
            values = [v for r in members if (v := _value(r, shown[0].key)) is not None]
            order = -statistics.fmean(values) if values and higher_is_better else statistics.fmean(values or [0])
            summaries.append(((not values, order), _group_row(name, members, len(values), shown, params)))
    return [row for _, row in sorted(summaries, key=lambda item: item[0])]


def _group_row(name: str, members: Sequence[RunRecord], n_with_metric: int, shown: Sequence[MetricColumn],
               params: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {RANK: None, EXPERIMENT: name, RUN_ID: None,
                           RUN_NAME: f"(mean ± std over {n_with_metric} runs)", STATUS: None}
    row.update({c.label: _mean_std([_value(r, c.key) for r in members]) for c in shown})
    # A param the whole group shares identifies it; one that varies within it (a seed) does not.
    row.update({col: _common(r.params.get(key) for r in members) for key, col in params.items()})
    return row


def _mean_std(values: Sequence[float | None]) -> str | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if len(present) == 1:
        return f"{present[0]:.4f}"
    return f"{statistics.fmean(present):.4f} ± {statistics.stdev(present):.4f}"


def _common(values: Any) -> str | None:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def render(table: pd.DataFrame, fmt: Literal["table", "csv", "json", "markdown"]) -> str:
    """Render a :func:`compare_runs` table.

    Args:
        table: The table to render.
        fmt: ``"table"`` (aligned text, floats to 4 decimals, 8-character run ids),
            ``"markdown"`` (pipe table, same cells), ``"csv"`` or ``"json"`` (a list of row
            objects; full run ids, numbers stay numbers, missing cells are empty / null).

    Returns:
        The rendered text.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; available: {', '.join(FORMATS)}")
    records = [{col: _plain(value) for col, value in row.items()} for row in table.to_dict("records")]
    if fmt == "json":
        return json.dumps(records, ensure_ascii=False, indent=2)
    if fmt == "csv":
        return pd.DataFrame(records, columns=list(table.columns), dtype=object).to_csv(index=False)
    cells = [[_cell(col, row[col]) for col in table.columns] for row in records]
    header = [str(col) for col in table.columns]
    if fmt == "markdown":
        return _markdown(header, cells)
    return _aligned(header, cells, numeric=[_is_numeric_column(table[col]) for col in table.columns])


def _plain(value: Any) -> Any:
    """Turn pandas/numpy scalars and NaN into JSON-ready Python values."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    text = str(value)
    return text[:_SHORT_ID] if column == RUN_ID else text


def _is_numeric_column(series: pd.Series) -> bool:
    """Numbers, and the "mean ± std" text of group rows, align right like a spreadsheet."""
    present = [_plain(v) for v in series if _plain(v) is not None]
    return bool(present) and all(_looks_numeric(v) for v in present)


def _looks_numeric(value: Any) -> bool:
    if isinstance(value, str):
        try:
            [float(part) for part in value.split(" ± ")]
        except ValueError:
            return False
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _aligned(header: list[str], cells: list[list[str]], *, numeric: list[bool]) -> str:
    widths = [max(len(text) for text in column) for column in zip(header, *cells)]

    def line(texts: list[str]) -> str:
        parts = [t.rjust(w) if num else t.ljust(w) for t, w, num in zip(texts, widths, numeric)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in cells)]) + "\n"


def _markdown(header: list[str], cells: list[list[str]]) -> str:
    def line(texts: list[str]) -> str:
        return "| " + " | ".join(t.replace("|", "\\|") for t in texts) + " |"

    rule = "|" + "|".join("---" for _ in header) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in cells)]) + "\n"
