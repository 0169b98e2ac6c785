"""Bodies of ``arflare compare`` and ``arflare compare --paired``: the flare domain's view of runs.

What is arflare's here and not the generic :mod:`registry.compare`'s: which metric keys a
split's scores live under (``best/val_<m>``, ``test/<m>``, ``test/<m>_lo``), when a
TPR@FPR value cannot be measured (fewer negatives than 1/FPR), which runs are degenerate (no
positive or no negative prediction), and what a paired comparison of two runs means. Never
imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from arflare.errors import UsageError
from registry.compare import Conventions, MetricColumn, compare_runs
from registry.tracking import RunRecord

SPLITS = ("val", "test")


def headline() -> tuple[str, ...]:
    """The headline metric names, from the metric table (TSS, HSS, AUC, TPR@FPR=1e-3)."""
    from arflare.metrics import headline_metrics

    return tuple(m.name for m in headline_metrics())


def display_name(metric: str) -> str:
    """``tss`` -> ``TSS``, ``tpr_at_fpr_1e-4`` -> ``TPR@FPR=1e-4``: how a header names a metric."""
    from arflare.metrics import find_metric

    row = find_metric(metric)
    if row.label is None and metric.startswith(("tpr_at_fpr_", "fpr_at_tpr_")):
        return f"{metric[:3].upper()}@{metric[7:10].upper()}={metric[11:]}"  # keep 1e-4, not 1E-4
    return row.column


def metric_key(split: str, metric: str) -> str:
    """The logged key of a split's final score: ``best/val_tss`` (best checkpoint) or ``test/tss``."""
    return f"best/val_{metric}" if split == "val" else f"{split}/{metric}"


def split_column(split: str, metric: str, *, higher_is_better: bool = True, narrow: bool = True) -> MetricColumn:
    """A compare column of one split's score; test columns carry the AR-bootstrap interval."""
    interval = (f"{split}/{metric}_lo", f"{split}/{metric}_hi") if split == "test" else None
    return MetricColumn(name=f"{split}_{metric}", label=f"{split} {display_name(metric)}", key=metric_key(split, metric),
                        fallback=f"val/{metric}" if split == "val" else None, interval=interval,
                        higher_is_better=higher_is_better, narrow=narrow)


def resolve_metric(name: str) -> tuple[str, bool]:
    """A ``--metric`` value (any case, CLI alias or logged name) -> ``(logged name, higher_is_better)``."""
    from arflare.metrics import find_metric

    row = find_metric(name)  # UsageError listing the names when unknown
    return row.name, row.higher_is_better


def conventions() -> Conventions:
    from arflare.spec import LOCATION_KEYS

    return Conventions(ignore_params=LOCATION_KEYS)


def _count(record: RunRecord, split: str, name: str) -> float | None:
    for key in (metric_key(split, name), f"{split}/{name}"):
        if key in record.metrics:
            return record.metrics[key]
    return None


def run_notes(record: RunRecord) -> dict[str, str]:
    """Flags a reader must see: a dirty git tree, a split with no positive or no negative prediction."""
    notes = {}
    if record.tags.get("arflare.git_dirty") == "true":
        notes["dirty"] = "launched from a git tree with uncommitted changes (the commit does not reproduce it)"
    for split in SPLITS:
        tp, fp, tn, fn = (_count(record, split, n) for n in ("tp", "fp", "tn", "fn"))
        if None in (tp, fp, tn, fn):
            continue
        if tp + fp == 0:
            notes[f"no-pos:{split}"] = f"predicts no flare at all on {split} at its threshold (degenerate)"
        if tn + fn == 0:
            notes[f"no-neg:{split}"] = f"predicts a flare for every {split} sample at its threshold (degenerate)"
    return notes


def not_measurable(record: RunRecord, column: MetricColumn) -> str | None:
    """TPR at a false-positive rate below 1/N_negatives cannot be measured on that split."""
    split, _, metric = column.name.partition("_")
    tn, fp = _count(record, split, "tn"), _count(record, split, "fp")
    return None if tn is None or fp is None else unmeasurable(metric, negatives=tn + fp, split=split)


def unmeasurable(metric: str, *, negatives: float, split: str) -> str | None:
    """Why ``metric`` cannot be measured on a split with ``negatives`` non-flares, or None if it can."""
    if not metric.startswith("tpr_at_fpr_"):
        return None
    target = float(metric.removeprefix("tpr_at_fpr_"))
    if negatives * target < 1:
        return f"{split} has {negatives:.0f} negatives; FPR={target:g} needs at least {1 / target:.0f}"
    return None


def compare(registry, *, metric: str, split: str, experiments: Sequence[str] | None, top: int | None, fmt: str,
            wide: bool = False, show_all: bool = False) -> tuple[str, list[str]]:
    """Rank configurations of the registry's project; returns (text for stdout, lines for stderr).

    Ranking is on ``split`` (val by default: selection on test would make the reported test score
    optimistic); the test score and its AR-bootstrap interval are always shown beside it.
    """
    from registry._compare_render import footer_lines, render
    from arflare.commands import open_tracker

    records = comparable(open_tracker(registry).search(experiments=experiments))
    if not records:
        scope = f" for {', '.join(experiments)}" if experiments else ""
        return f"no runs yet{scope}; start one with: arflare run NAME\n", []
    comparison = build_comparison(records, metric=metric, split=split, top=top, show_all=show_all)
    rank_by, columns = comparison.rank_by, comparison.columns
    footer = _ranking_lines(split, rank_by, comparison.n_ranked, comparison.n_trials)
    shown = {c.name for c in columns if c.narrow or wide or fmt != "table"}
    if any(row["_na"] & shown for row in comparison.rows):
        footer.append("n/a: a TPR@FPR target below 1/N_negatives of that split cannot be measured")
    if fmt in ("json", "csv"):
        return render(comparison, fmt), footer_lines(comparison, footer)
    return render(comparison, fmt, wide=wide, footer=footer), []


def comparable(records: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs a comparison ranks: training kinds (``record.KINDS``), plus the sweep parents that head
    their trials; mine runs carry their source's experiment tag but train nothing."""
    from arflare import record

    def trains(run: RunRecord) -> bool:
        kind = record.KINDS.get(run.tags.get(record.TAG_KIND, record.DEFAULT_KIND))
        return kind is None or kind.trains or bool(run.tags.get(record.TAG_STUDY))

    return [run for run in records if trains(run)]


def build_comparison(records: Sequence[RunRecord], *, metric: str = "tss", split: str = "val", top: int | None = None,
                     show_all: bool = False):
    """The :class:`~registry.compare.Comparison` behind ``arflare compare`` (also used by ``arflare report``).

    Columns: val and test ``metric`` (test with its interval), then the other headline test metrics.
    """
    name, higher = resolve_metric(metric)
    columns = [split_column("val", name, higher_is_better=higher), split_column("test", name, higher_is_better=higher)]
    columns += [split_column("test", h, narrow=False) for h in headline() if h != name]
    rank_by = columns[0] if split == "val" else columns[1]
    return compare_runs(records, rank_by=rank_by, columns=columns, conventions=conventions(), top=top,
                        show_all=show_all, run_notes=run_notes, not_measurable=not_measurable)


def _ranking_lines(split: str, rank_by: MetricColumn, n_ranked: int, n_trials: int) -> list[str]:
    trials = f" ({n_trials} of them sweep trials)" if n_trials else ""
    if split == "test":
        return [f"ranked on test: {n_ranked} configurations{trials} were compared on the test set,",
                "so the best test score above is a selection on test and optimistic; rank on val (the default)"]
    return [f"ranked by {rank_by.label} (best checkpoint) over {n_ranked} configurations{trials}; test never ranks",
            "[95% CI]: AR cluster bootstrap, threshold fixed; group rows: mean ± std over seeds, n runs"]


def resolve_run(records: Sequence[RunRecord], ref: str, *, metric: str = "tss") -> tuple[RunRecord, str]:
    """A run id (or a unique prefix of 6+ characters) or an experiment name -> (run, how it was chosen).

    An experiment name means its best FINISHED run by the val ``metric`` of the best checkpoint.

    Raises:
        UsageError: nothing or more than one run matches.
    """
    name, higher = resolve_metric(metric)
    column = split_column("val", name, higher_is_better=higher)
    conv = conventions()
    experiments = {r.tags.get(conv.experiment_tag) for r in records}
    if ref in experiments:
        comparison = compare_runs([r for r in records if r.tags.get(conv.experiment_tag) == ref], rank_by=column,
                                  conventions=conv)
        best = [row for row in comparison.rows if row["run_id"] and row["kind"] in ("run", "trial")]
        if not best:
            raise UsageError(f"experiment {ref!r} has no FINISHED run with {column.label}; run it first: arflare run {ref}")
        run = next(r for r in records if r.run_id == best[0]["run_id"])
        return run, f"best of {ref} by {column.label}"
    matches = [r for r in records if len(ref) >= 6 and r.run_id.startswith(ref)]
    if len(matches) == 1:
        return matches[0], "run id"
    if matches:
        raise UsageError(f"run id prefix {ref!r} matches {len(matches)} runs; give more characters")
    known = ", ".join(sorted(e for e in experiments if e)) or "none yet"
    raise UsageError(f"{ref!r} is neither a run id (6+ characters) nor an experiment with runs (experiments with runs: {known})")


def compare_paired(registry, a: str, b: str, *, metric: str = "tss", fmt: str = "table", resamples: int = 1000) -> str:
    """``arflare compare --paired A B``: A - B of each skill score on the same test frames.

    Refuses (exit 2) when their test prediction files hold different frames or labels: a paired
    test is only meaningful frame by frame. Runs whose data fingerprints differ (a flow run and a
    frame run on the same magnetograms) are paired when their test frames agree, with a note.
    """
    import json
    import tempfile

    from arflare.bootstrap import BOOTSTRAP_METRICS, paired_bootstrap
    from arflare.commands import open_tracker
    from arflare.record import METRIC_KEEP_RATE
    from registry._compare_render import render_grid

    tracker = open_tracker(registry)
    records = comparable(tracker.search())
    (run_a, how_a), (run_b, how_b) = resolve_run(records, a, metric=metric), resolve_run(records, b, metric=metric)
    # The pairing is frame by frame: what must agree is the test frames and their labels. The data
    # fingerprints may differ where that holds (one run also read flow shards); the header says so.
    fingerprints = [r.tags.get("arflare.data_fingerprint") for r in (run_a, run_b)]
    other_data = (f"the runs read different data (fingerprints {fingerprints[0]} and {fingerprints[1]}:\n"
                  "other shards, or flow shards beside the same frames)") if fingerprints[0] != fingerprints[1] else ""
    with tempfile.TemporaryDirectory(prefix="arflare-paired-") as tmp:
        frames = [_test_predictions(tracker, run, f"{tmp}/{side}") for side, run in (("a", run_a), ("b", run_b))]
    joined = frames[0].merge(frames[1], on="key", suffixes=("_a", "_b"), validate="one_to_one")
    if len(joined) != len(frames[0]) or len(joined) != len(frames[1]) or (joined["label_a"] != joined["label_b"]).any():
        raise UsageError(f"the test predictions of {run_a.run_id[:8]} and {run_b.run_id[:8]} do not hold the same frames "
                         f"with the same labels ({len(frames[0])} vs {len(frames[1])} frames, {len(joined)} shared)"
                         + (f"; {other_data.replace(chr(10), ' ')}" if other_data else "")
                         + "; a paired comparison needs the same test set")
    thresholds = [_threshold(run) for run in (run_a, run_b)]
    found = paired_bootstrap(joined["label_a"], joined["score_a"], joined["score_b"], joined["ar_a"],
                             threshold_a=thresholds[0], threshold_b=thresholds[1], n_resamples=resamples,
                             keep_rate_a=run_a.metrics.get(METRIC_KEEP_RATE),
                             keep_rate_b=run_b.metrics.get(METRIC_KEEP_RATE))  # BSS as each run logged it
    negatives = int((joined["label_a"] == 0).sum())
    found = {name: d for name, d in found.items() if not unmeasurable(name, negatives=negatives, split="test")}
    if fmt in ("json", "csv"):
        rows = [{"metric": f"test_{name}", "a": d.a, "b": d.b, "difference": d.difference, "lo": d.lo, "hi": d.hi,
                 "p_value": d.p_value, "n_valid": d.n_valid} for name, d in found.items()]
        if fmt == "json":
            return json.dumps({"a": run_a.run_id, "b": run_b.run_id, "n_frames": len(joined),
                               "n_ars": int(joined["ar_a"].nunique()), "n_resamples": resamples, "rows": rows}, indent=2) + "\n"
        import pandas as pd

        return pd.DataFrame(rows).to_csv(index=False)
    cells = [[f"test {display_name(name)}", f"{d.a:.3f}", f"{d.b:.3f}", f"{d.difference:+.3f}",
              f"[{d.lo:+.3f}, {d.hi:+.3f}]", f"{d.p_value:.3f}"] for name, d in found.items()]
    header = ["metric", "A", "B", "A - B", "95% CI", "p"]
    head = (f"A = {run_a.run_name} (run {run_a.run_id[:8]}, {how_a}, threshold {thresholds[0]:.3f})\n"
            f"B = {run_b.run_name} (run {run_b.run_id[:8]}, {how_b}, threshold {thresholds[1]:.3f})\n"
            f"test set: {len(joined)} frames, {joined['ar_a'].nunique()} ARs, {int(joined['label_a'].sum())} positive, "
            f"{negatives} negative\n"
            + (f"note: {other_data}; their test predictions hold the same frames\n"
               "with the same labels, so they are paired frame by frame\n" if other_data else "") + "\n")
    left_out = [display_name(n) for n in BOOTSTRAP_METRICS if n not in found]
    foot = (f"\n95% CI: paired AR cluster bootstrap ({resamples} resamples of the ARs, the same for A and B,\n"
            f"thresholds fixed); p: two-sided, the bootstrap of A - B shifted to no difference\n")
    if left_out:
        foot += f"not measurable with {negatives} negatives (FPR below 1/N): {', '.join(left_out)}\n"
    table = render_grid(header, cells, fmt, numeric=[False, True, True, True, True, True])
    return table if fmt == "latex" else head + table + foot


def _test_predictions(tracker, run: RunRecord, folder: str):
    import os

    import pandas as pd

    os.makedirs(folder, exist_ok=True)
    path = tracker.download_artifact(run.run_id, "predictions/test.parquet", folder)
    if path is None:
        raise UsageError(f"run {run.run_id[:8]} ({run.run_name}, {run.status}) has no predictions/test.parquet; "
                         "only runs that finished their test evaluation can be paired")
    return pd.read_parquet(path, columns=["key", "ar", "label", "score"])


def _threshold(run: RunRecord) -> float:
    for key in ("test/threshold", "threshold"):
        if key in run.metrics:
            return float(run.metrics[key])
    raise UsageError(f"run {run.run_id[:8]} logged no decision threshold (test/threshold); it cannot be re-scored")
