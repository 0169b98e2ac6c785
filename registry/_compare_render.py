"""Render a :class:`~registry.compare.Comparison`: terminal table, markdown, LaTeX, CSV, JSON.

Machine formats (CSV, JSON) carry every row with machine names and plain numbers; the text
formats are for reading: a configuration's runs indented under it, intervals as
``0.43 [0.21, 0.60]``, ``n/a`` where a value cannot be measured, and the terminal table
narrowed to fit ``width`` columns unless ``wide``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from registry.compare import GROUP, STUDY, TRIAL, Comparison, MetricColumn

FORMATS = ("table", "csv", "json", "markdown", "latex")
TERMINAL_WIDTH = 100
_SHORT_ID = 8
_MIN_LABEL = 16


def render(comparison: Comparison, fmt: str, *, wide: bool = False, width: int = TERMINAL_WIDTH,
           footer: Sequence[str] = ()) -> str:
    """Render a comparison.

    Args:
        comparison: What :func:`registry.compare.compare_runs` returned.
        fmt: One of FORMATS.
        wide: Terminal table: every column, labels never shortened (markdown and LaTeX always are).
        width: Terminal table: the width to fit when not ``wide``.
        footer: Lines printed under the text formats (the caller prints them apart for CSV/JSON).

    Returns:
        The rendered text, ending in a newline.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; available: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(machine_rows(comparison), ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        rows = machine_rows(comparison)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["rank"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    lines = footer_lines(comparison, footer)
    if fmt == "latex":
        return _latex(comparison, lines)
    header, cells, numeric = text_table(comparison, wide=wide or fmt == "markdown")
    if fmt == "markdown":
        return _markdown(header, cells) + "".join(f"\n{line}\n" for line in lines)
    if not wide:
        _fit(header, cells, width)
    return _aligned(header, cells, numeric) + "".join(f"{line}\n" for line in lines)


def machine_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """Rows for CSV/JSON: private keys dropped, n/a values null, numbers as numbers."""
    return [{key: _plain(value) for key, value in row.items() if not key.startswith("_")} for row in comparison.rows]


def footer_lines(comparison: Comparison, extra: Sequence[str] = ()) -> list[str]:
    """What the table leaves out (counts) and what its note codes mean."""
    lines = list(extra)
    if comparison.hidden:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(comparison.hidden.items()))
        lines.append(f"not ranked: {counts} (--all lists them)")
    lines += [f"{code}: {meaning}" for code, meaning in sorted(comparison.notes.items())]
    return lines


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def text_table(comparison: Comparison, *, wide: bool) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, text cells and which columns are numeric, as the text formats show them (HTML too)."""
    columns = [c for c in comparison.columns if wide or c.narrow]
    header = ["#", "configuration", "run", "n", *(_header(c) for c in columns), "notes"]
    numeric = [True, False, False, True, *(True for _ in columns), False]
    if wide:
        header += ["status", "run_name", "commit"]
        numeric += [False, False, False]
    cells = []
    for row in comparison.rows:
        line = [_text(row["rank"]), _config_cell(row), _run_cell(row), _n_cell(row),
                *(_metric_cell(row, c) for c in columns), _notes_cell(row, wide=wide)]
        if wide:
            commit = (row["git_commit"] or "")[:_SHORT_ID] + ("+dirty" if row["git_dirty"] else "")
            line += [_text(row["status"]), _text(row["run_name"]), commit]
        cells.append(line)
    return header, cells, numeric


def _header(column: MetricColumn) -> str:
    return f"{column.label} [95% CI]" if column.interval else column.label


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _config_cell(row: dict[str, Any]) -> str:
    if row["_member"]:
        return f"  trial={row['trial']}" if row["kind"] == TRIAL else f"  seed={row['seed']}"
    return row["group"] or ""


def _run_cell(row: dict[str, Any]) -> str:
    if row["kind"] in (GROUP,):
        return "mean±std"
    if row["kind"] == STUDY:
        return "sweep"
    return (row["run_id"] or "")[:_SHORT_ID]


def _n_cell(row: dict[str, Any]) -> str:
    return str(row["n_runs"]) if row["kind"] in (GROUP, STUDY) or row["rank"] is not None else ""


def _metric_cell(row: dict[str, Any], column: MetricColumn) -> str:
    name = column.name
    if name in row["_na"]:
        return "n/a"
    value = row.get(name)
    if value is None:
        return "" if row["kind"] == STUDY else "-"
    if row["kind"] == GROUP:
        std = row.get(f"{name}_std")
        return f"{value:.3f}" if std is None else f"{value:.3f} ± {std:.3f}"
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    if column.interval and lo is not None and hi is not None:
        return f"{value:.2f} [{lo:.2f}, {hi:.2f}]"
    return f"{value:.3f}"


def _notes_cell(row: dict[str, Any], *, wide: bool) -> str:
    parts = [] if wide or row["status"] in (None, "FINISHED") else [row["status"]]
    return ", ".join(parts + ([row["notes"]] if row["notes"] else []))


def _fit(header: list[str], cells: list[list[str]], width: int) -> None:
    """Shorten the configuration column (index 1) with an ellipsis until the table fits."""
    widths = [max(len(text) for text in column) for column in zip(header, *cells)]
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    if excess <= 0:
        return
    keep = max(_MIN_LABEL, widths[1] - excess)
    for line in cells:
        if len(line[1]) > keep:
            line[1] = line[1][: keep - 1] + "…"


def _aligned(header: list[str], cells: list[list[str]], numeric: list[bool]) -> str:
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


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _latex(comparison: Comparison, footer: list[str]) -> str:
    """A booktabs table of the ranked configurations (runs of a group are summarised, not listed)."""
    columns = comparison.columns
    lines = [r"% needs \usepackage{booktabs}", r"\begin{tabular}{rl" + "r" * (len(columns) + 1) + "}", r"\toprule",
             " & ".join(["", "configuration", "$n$", *(_tex(_header(c)) for c in columns)]) + r" \\", r"\midrule"]
    for row in comparison.rows:
        if row["rank"] is None and row["_member"] is False and row["status"] != "FINISHED":
            continue  # unranked runs do not belong in a paper's table
        label = _config_cell(row) if row["_member"] else row["group"]
        if row["_member"] and row["kind"] != TRIAL:
            continue
        cells = [_text(row["rank"]), _tex(label), _n_cell(row)]
        cells += [_metric_cell(row, c).replace("±", r"$\pm$") for c in columns]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {line}" for line in footer]
    return "\n".join(lines) + "\n"


def render_grid(header: Sequence[str], cells: Sequence[Sequence[str]], fmt: str, *,
                numeric: Sequence[bool] | None = None) -> str:
    """A plain grid of text cells in a text format (table, markdown or latex); CSV/JSON are the caller's."""
    header, cells = list(header), [list(row) for row in cells]
    numeric = list(numeric) if numeric is not None else [False] * len(header)
    if fmt == "markdown":
        return _markdown(header, cells)
    if fmt == "latex":
        lines = [r"% needs \usepackage{booktabs}", r"\begin{tabular}{" + "".join("r" if n else "l" for n in numeric) + "}",
                 r"\toprule", " & ".join(_tex(h) for h in header) + r" \\", r"\midrule",
                 *(" & ".join(_tex(c).replace("±", r"$\pm$") for c in row) + r" \\" for row in cells),
                 r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    return _aligned(header, cells, numeric)
