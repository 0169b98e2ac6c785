"""``arflare report NAME…``: one self-contained HTML page comparing experiments.

The page needs no network: styles are inline and figures are SVG embedded as data URIs. It
holds the compare table (with intervals where the runs logged ``{split}/{m}_lo`` / ``_hi``),
ROC / PR / reliability / TSS-vs-threshold curves of each configuration's best run overlaid,
and the spread of the ranking metric over seeds. Each configuration's best run is picked on
*validation* (``best/val_<m>`` when logged, else ``val/<m>``), never on test.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from arflare import _report_figures as figures
from arflare.errors import UsageError
from arflare.record import METRIC_KEEP_RATE
from arflare.reports import FORECAST_WINDOW_H

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
.note{color:#555;font-size:.9em} table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums} tr.group td{background:#f4f6fa;font-weight:600}
figure{margin:1em 0} figure img{width:100%;height:auto} .wide{overflow-x:auto} figcaption{font-size:.85em;color:#444}
"""


def write_report(registry, names: Sequence[str], *, out: Path, metric: str = "tss", split: str = "val") -> Path:
    """Write the report for the experiments ``names`` of ``registry`` to ``out``.

    ``split`` ranks the table and orders the spread plot, as ``arflare compare --split`` does:
    validation by default; ``test`` is allowed and the page then says the ranking used test.

    Raises:
        UsageError: an unknown experiment, an unknown metric, or no runs to report.
    """
    from arflare.commands import open_tracker
    from arflare.comparing import build_comparison, comparable
    from arflare.metrics import compare_metric_key

    unknown = [name for name in names if name not in registry.experiments]
    if unknown:
        raise UsageError(f"unknown experiment(s) {', '.join(unknown)}; available: {', '.join(registry.experiments)}")
    try:
        key, higher = compare_metric_key(metric, split)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    tracker = open_tracker(registry)
    records = comparable(tracker.search(experiments=names))
    if not records:
        raise UsageError(f"no runs of {', '.join(names)} yet; start one with: arflare run {names[0]}")
    comparison = build_comparison(records, metric=metric, split=split)
    label = comparison.rank_by.label
    best = _best_per_group(records, key.split("/", 1)[1], higher)
    with tempfile.TemporaryDirectory(prefix="arflare-report-") as tmp:
        curves = [c for c in (_curve(tracker, r, Path(tmp)) for r in best.values()) if c is not None]
    sections = [_table_html(comparison, split)]
    sections += _figures_html(curves, records, split, key.split("/", 1)[1], label, best, higher)
    page = _page(names, sections, tracker.tracking_uri)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _best_per_group(records, name: str, higher: bool) -> dict:
    """The FINISHED run of each group with the best validation score (never chosen on test)."""
    best: dict[str, tuple[float, object]] = {}
    for record in records:
        value = _value(record, "val", name)
        if record.status != "FINISHED" or value is None or math.isnan(value):
            continue
        group = record.tags.get("arflare.group", record.run_name)
        score = value if higher else -value
        if group not in best or score > best[group][0]:
            best[group] = (score, record)
    return {group: record for group, (_, record) in best.items()}


def _curve(tracker, record, folder: Path) -> figures.Curve | None:
    from arflare.calibration import negative_keep_rate

    path = tracker.download_artifact(record.run_id, "predictions/test.parquet", folder / record.run_id)
    if path is None:
        return None
    frame = pd.read_parquet(path)
    keep = record.metrics.get(METRIC_KEEP_RATE)  # what the run corrected its own calibration with
    if keep is None and METRIC_KEEP_RATE not in record.metrics and "best/val_brier_raw" not in record.metrics:
        params = record.params  # a run older than the logged keep rate: its balancing params
        try:
            keep = negative_keep_rate(params.get("data.balance", "none"), float(params.get("data.keep_negative_prob", 1)))
        except ValueError:
            keep = None  # 'weights' needs the training split's counts, which predictions do not hold
    threshold = record.metrics.get("test/threshold", record.metrics.get("val/threshold", 0.5))
    return figures.Curve(label=record.tags.get("arflare.group", record.run_name), labels=frame["label"].to_numpy(int),
                         scores=frame["score"].to_numpy(float), threshold=float(threshold), keep_rate=keep)


def _value(record, split: str, name: str) -> float | None:
    """A run's score of metric ``name`` on ``split``: for val its best checkpoint's (older runs: the last epoch's)."""
    if split == "val":
        return record.metrics.get(f"best/val_{name}", record.metrics.get(f"val/{name}"))
    return record.metrics.get(f"{split}/{name}")


def _table_html(comparison, split: str) -> str:
    """The compare table as ``arflare compare --wide`` shows it, as HTML."""
    from registry._compare_render import footer_lines, text_table

    header, cells, numeric = text_table(comparison, wide=True)
    head = "".join(f"<th>{html.escape(col)}</th>" for col in header)
    rows = []
    for row, line in zip(comparison.rows, cells):
        kind = "group" if row["kind"] in ("group", "study") else "run"
        tds = "".join(f'<td class="num">{html.escape(c)}</td>' if num else f"<td>{html.escape(c)}</td>"
                      for c, num in zip(line, numeric))
        rows.append(f'<tr class="{kind}">{tds}</tr>')
    note = ("One row per configuration (runs that differ only in their seed: mean ± sample std over them, then each "
            "run); sweep trials one row each under their study. Brackets: 95 % AR cluster bootstrap interval. "
            f"Ranked by {html.escape(comparison.rank_by.label)}; the threshold of the threshold metrics was chosen on "
            "validation and test was scored once, with the best checkpoint.")
    if split == "test":
        note += (" RANKED ON TEST (--split test): choosing among configurations by their test score makes the "
                 "top rows' test scores optimistic; the default ranks on validation.")
    notes = "".join(f'<p class="note">{html.escape(line)}</p>' for line in footer_lines(comparison))
    return (f'<h2>Compare</h2><p class="note">{note}</p><div class="wide"><table><tr>{head}</tr>{"".join(rows)}'
            f"</table></div>{notes}")


def _figures_html(curves, records, split: str, name: str, label: str, best: dict, higher: bool) -> list[str]:
    if not curves:
        return ['<h2>Curves</h2><p class="note">No finished run has predictions to draw.</p>']
    classes = sorted({r.params.get("data.min_flare_class", "?") for r in best.values()})
    what = (f"test split, flare = ≥{'/'.join(classes)} within {FORECAST_WINDOW_H} h; flares / non-flares per curve: "
            + ", ".join(f"{c.label} {c.counts}" for c in curves)
            + f". Each configuration's run is its best on validation {label}.")
    out = ["<h2>Curves of each configuration's best run</h2>"]
    for title, svg in (("ROC", figures.roc_overlay(curves, "ROC (test)")),
                       ("Precision-recall", figures.pr_overlay(curves, "Precision-recall (test)")),
                       ("Reliability", figures.reliability_overlay(curves, "Reliability (test)")),
                       ("TSS against threshold", figures.tss_vs_threshold(curves, "TSS against threshold (test)"))):
        out.append(_figure(svg, f"{title}: {what}"))
    key = f"best/val_{name}" if split == "val" else f"{split}/{name}"
    spread: dict[str, list[float]] = {}
    for r in records:
        value = _value(r, split, name)
        if r.status == "FINISHED" and value is not None and not math.isnan(value):
            spread.setdefault(r.tags.get("arflare.group", r.run_name), []).append(value)
    if spread:
        order = sorted(spread, key=lambda g: np.mean(spread[g]), reverse=higher)
        svg = figures.seed_spread({g: spread[g] for g in order}, f"{key}", f"Spread over runs: {key}")
        out.append("<h2>Spread over seeds</h2>" + _figure(svg, f"{key} of every finished run, per configuration."))
    return out


def _figure(svg: str, caption: str) -> str:
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    points = re.search(r'<svg[^>]*\swidth="([0-9.]+)pt"', svg)
    width = int(float(points.group(1)) * 2) if points else 800  # twice the print size reads well on screen
    return (f'<figure style="max-width:{width}px"><img alt="{html.escape(caption)}" src="data:image/svg+xml;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _page(names: Sequence[str], sections: list[str], store: str) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = "arflare report: " + ", ".join(names)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="note">Generated {when} from {html.escape(store)}.</p>{"".join(sections)}</body></html>\n')
