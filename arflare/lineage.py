"""Lineage of runs built on other runs, and the hard negatives of a training spec, resolved.

Every run that builds on SOURCE runs (hard negatives, a hybrid's embedding) records them in one
tag, ``arflare.lineage`` (:func:`lineage_tags`): JSON with the spec field that named them, the
sources as written mapped to the run ids they resolved to, and the details of that use.

``data.hard_negatives.from`` names SOURCEs (see :mod:`arflare.source_runs`). Before a run
trains, :func:`resolve_hard_negatives` turns each into its FINISHED source run, mines the
training split of each one that has no mine run yet (tracked, ``arflare.kind=mine``, reused
next time), and merges the tables. The source run ids and the table digest enter the run's
spec hash, its params and its ``arflare.lineage`` tag. The val/test negatives each source
model got wrong (from its own predictions and threshold) define ``fpr_hard``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from arflare import hardneg, record

HARD_NEGATIVES_FIELD = "data.hard_negatives.from"
FPR_HARD = "fpr_hard"  # metric name: FPR on negatives the source models got wrong (val/fpr_hard, test/fpr_hard)


@dataclass(frozen=True)
class HardNegativeSet:
    """The resolved ``data.hard_negatives`` of one run.

    Attributes:
        table: Merged hard-negative table (:data:`arflare.hardneg.COLUMNS`).
        digest: Its content digest.
        weight: ``data.hard_negatives.weight``.
        sources: ``{name as written: source run id}``.
        mine_runs: ``{source run id: mine run id}``.
        wrong: ``{"val": keys, "test": keys}``: negatives of that split some source model scored
            at or above its own threshold (what ``fpr_hard`` is measured on).
    """

    table: pd.DataFrame
    digest: str
    weight: float
    sources: Mapping[str, str]
    mine_runs: Mapping[str, str]
    wrong: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """What enters the spec hash beside the data fingerprint: source runs and table digest."""
        return hard_fingerprint(self.sources.values(), self.digest)

    @property
    def tags(self) -> dict[str, str]:
        """``arflare.lineage``: sources (name -> run), mine runs and the table digest, as JSON."""
        return lineage_tags(HARD_NEGATIVES_FIELD, self.sources, mine_runs=dict(self.mine_runs), digest=self.digest,
                            rows=len(self.table))

    @property
    def params(self) -> dict[str, str]:
        """Params logged beside the spec's (``data.hard_negatives.*`` holds what was written)."""
        return {"hard_negatives.source_runs": ",".join(self.sources.values()),
                "hard_negatives.mine_runs": ",".join(self.mine_runs.values()),
                "hard_negatives.digest": self.digest, "hard_negatives.rows": str(len(self.table))}


    def split_metrics(self, split: str, dataset, scores, threshold: float) -> dict[str, float]:
        """``{"fpr_hard": ...}`` of one scored split (``scores``: labels, scores, dataset indices)."""
        keys = dataset.frame_table["key"].to_numpy()[scores.indices]
        return {FPR_HARD: fpr_on(keys, scores.labels, scores.scores, threshold, self.wrong.get(split, frozenset()))}

    def final_metrics(self, datasets, splits, threshold: float) -> dict[str, float]:
        """``best/val_fpr_hard`` and ``test/fpr_hard`` of the best checkpoint, at the val threshold."""
        val = self.split_metrics("val", datasets["val"], splits["val"], threshold)[FPR_HARD]
        test = self.split_metrics("test", datasets["test"], splits["test"], threshold)[FPR_HARD]
        return {record.best_val_metric(FPR_HARD): val, f"test/{FPR_HARD}": test}


def lineage_tags(field: str, sources: Mapping, **details) -> dict[str, str]:
    """The ``arflare.lineage`` tag of a run built on ``sources``.

    Args:
        field: The spec field that named them (``data.hard_negatives.from``, ``model.embedding_from``).
        sources: ``{name as written: run id or RunRecord}``.
        **details: What this use adds (mine runs, table digest and rows for hard negatives).

    Returns:
        ``{"arflare.lineage": JSON}`` with keys ``field``, ``sources`` (name -> run id) and the details.
    """
    ids = {name: getattr(run, "run_id", run) for name, run in sources.items()}
    return {record.TAG_LINEAGE: json.dumps({"field": field, "sources": ids, **details}, sort_keys=True)}


def check_sources(registry, plans, *, profile: str | None) -> None:
    """Fail before anything runs when a planned run's hard-negative source has no FINISHED run.

    Raises:
        arflare.source_runs.SourceNotFound: naming the source and the command that would create it.
    """
    from arflare.commands import open_tracker

    names = dict.fromkeys(name for run in plans for name in run.spec.data.hard_negatives.from_)
    if names:
        resolve_sources(open_tracker(registry), list(names), profile=profile, known=list(registry.experiments))


def resolve_hard_negatives(tracker, spec, *, registry_dir: Path, profile: str | None, known: Sequence[str] = (),
                           progress: bool = True) -> HardNegativeSet | None:
    """Resolve, mine what is missing, merge. None when the spec has no hard negatives.

    Raises:
        arflare.source_runs.SourceNotFound: a source has no FINISHED run (the message gives the command).
    """
    from arflare.mining import mine

    config = spec.data.hard_negatives
    if not config.enabled:
        return None
    records = resolve_sources(tracker, config.from_, profile=profile, known=known)
    rule = hardneg.MineRule(min_score=config.min_score, top_fraction=config.top_fraction)
    results = [mine(tracker, source, registry_dir=registry_dir, split="train", rule=rule, profile=profile,
                    progress=progress, sets=_data_sets(spec)) for source in _unique(records)]
    table = hardneg.merge_hard_negatives(r.table for r in results)
    wrong = {split: frozenset().union(*(_wrong_keys(tracker, source, split) for source in _unique(records)))
             for split in ("val", "test")}
    return HardNegativeSet(table=table, digest=hardneg.table_digest(table), weight=config.weight,
                           sources={name: source.run_id for name, source in records.items()},
                           mine_runs={r.source_run: r.run_id for r in results}, wrong=wrong)


def hard_fingerprint(source_runs, digest: str) -> str:
    """The spec-hash input of a run's hard negatives: its source run ids and the merged table's digest."""
    return f"hardneg:{','.join(sorted(set(source_runs)))}:{digest}"


def plan_hard_negatives(tracker, spec, *, profile: str | None, known: Sequence[str] = ()) -> tuple[str | None, list[str]]:
    """What ``arflare run --dry-run`` can know of a spec's hard negatives, mining nothing.

    Returns:
        ``(fingerprint, lines)``: the spec-hash input a real run would use (None while a source
        still has to be mined: the table's digest is not known before) and one line per source.

    Raises:
        arflare.source_runs.SourceNotFound: a source has no FINISHED run.
    """
    import tempfile

    from arflare.mining import find_mine, read_mined_table

    config = spec.data.hard_negatives
    records = resolve_sources(tracker, config.from_, profile=profile, known=known)
    rule = hardneg.MineRule(min_score=config.min_score, top_fraction=config.top_fraction)
    names = {run_id: [n for n, r in records.items() if r.run_id == run_id] for run_id in {r.run_id for r in records.values()}}
    tables, lines = [], []
    for source in _unique(records):
        label = f"{', '.join(names[source.run_id])} -> run {source.run_id}"
        _, _, _, found = find_mine(tracker, source, split="train", rule=rule, sets=_data_sets(spec), progress=False)
        if found is None:
            lines.append(f"{label}: not mined yet (train split, {rule.text}); the run would mine it first")
            continue
        with tempfile.TemporaryDirectory(prefix="arflare-lineage-") as tmp:
            tables.append(read_mined_table(tracker, found.run_id, Path(tmp)))
        lines.append(f"{label}: mine run {found.run_id} ({len(tables[-1])} hard negatives, {rule.text})")
    if len(tables) < len(names):
        return None, lines
    digest = hardneg.table_digest(hardneg.merge_hard_negatives(tables))
    lines.append(f"merged table digest {digest}")
    return hard_fingerprint((r.run_id for r in records.values()), digest), lines


def resolve_sources(tracker, names: Sequence[str], *, profile: str | None, known: Sequence[str] = ()) -> dict:
    """``{name: RunRecord}`` for every source; raises on the first missing one."""
    from arflare.source_runs import resolve_source

    return {name: resolve_source(tracker, name, profile=profile, known=known) for name in names}


def describe_sources(tracker, spec, *, profile: str | None, known: Sequence[str] = ()) -> list[str]:
    """One line per source for ``arflare show``: the run it resolves to, or the command that creates it."""
    from arflare.source_runs import SourceNotFound, resolve_source

    lines = []
    for name in spec.data.hard_negatives.from_:
        try:
            found = resolve_source(tracker, name, profile=profile, known=known)
        except SourceNotFound as exc:
            lines.append(f"{name}: {exc}")
            continue
        monitor = found.params.get("eval.monitor", "tss")
        value = found.metrics.get(record.best_val_metric(monitor), found.metrics.get(f"val/{monitor}"))
        mined = [r for r in tracker.search(filter_string=f"tags.`{record.TAG_MINE_SOURCE}` = '{found.run_id}'")
                 if r.status == "FINISHED"]
        mine_text = ", ".join(f"mine run {r.run_id} ({r.tags.get(record.TAG_MINE_RULE)}: "
                              f"{int(r.metrics.get('mine/hard', 0))} hard negatives)" for r in mined) or "not mined yet"
        score = f" (val {monitor} {value:.4f})" if value is not None else ""
        lines.append(f"{name} -> run {found.run_id}{score}; {mine_text}")
    return lines


def fpr_on(keys: Sequence[str], labels: np.ndarray, scores: np.ndarray, threshold: float,
           wrong: frozenset[str]) -> float:
    """FPR among the negatives whose key is in ``wrong``; NaN when there are none."""
    chosen = np.fromiter((k in wrong for k in keys), dtype=bool, count=len(keys)) & (np.asarray(labels) == 0)
    if not chosen.any():
        return float("nan")
    return float((np.asarray(scores)[chosen] >= threshold).mean())


def _unique(records: Mapping) -> list:
    return list({source.run_id: source for source in records.values()}.values())


def _data_sets(spec) -> tuple[str, ...]:
    # Mine the data this run trains on (the source may have been trained elsewhere).
    return (f"data.root={spec.data.root}",)


def _wrong_keys(tracker, source, split: str) -> frozenset[str]:
    """Negatives of ``split`` the source run scored at or above its own threshold."""
    import tempfile

    threshold = source.metrics.get("threshold")
    if threshold is None:
        return frozenset()
    with tempfile.TemporaryDirectory(prefix="arflare-lineage-") as tmp:
        try:
            path = tracker.fetch_artifact(source.run_id, f"{record.PREDICTIONS}/{split}.parquet", Path(tmp))
        except FileNotFoundError:
            return frozenset()
        predictions = pd.read_parquet(path, columns=["key", "label", "score"])
    wrong = predictions[(predictions["label"] == 0) & (predictions["score"] >= threshold)]
    return frozenset(wrong["key"])
