"""``arflare mine``: score a split with a source run's best checkpoint and keep its false positives.

A mine run is a tracked run (``arflare.kind=mine``) whose identity is (source run, split,
rule, data fingerprint): the same request finds the FINISHED mine run and reuses its table
instead of scoring again. It records the hard-negative table as an artifact
(``hard_negatives/hard_negatives.parquet``) and as an MLflow dataset input with the table's
content digest. Scoring is resumable by chunk: the chunks live under the index cache, keyed
by the mine run's identity, and are removed once the table is recorded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from arflare import hardneg, record
from arflare.errors import UsageError

log = logging.getLogger("arflare.mining")
KIND = "mine"  # a row of arflare.record.KINDS
TAG_SOURCE, TAG_SPLIT, TAG_RULE = record.TAG_MINE_SOURCE, record.TAG_MINE_SPLIT, record.TAG_MINE_RULE
TABLE_DIR = record.HARD_NEGATIVES
TABLE_ARTIFACT = f"{TABLE_DIR}/{hardneg.TABLE_FILE}"


@dataclass(frozen=True)
class MineResult:
    """A mine run's outcome: its id, the table, its digest, and whether an earlier run was reused."""

    run_id: str
    source_run: str
    table: pd.DataFrame
    digest: str
    reused: bool


def mine_key(source_run: str, split: str, rule: hardneg.MineRule, data_fingerprint: str) -> str:
    """Identity of a mine run (its ``arflare.spec_hash`` tag): what its table depends on."""
    payload = json.dumps({"source": source_run, "split": split, "rule": rule.text, "data": data_fingerprint})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def mine(tracker, source, *, registry_dir: Path, split: str = "train", rule: hardneg.MineRule = hardneg.MineRule(),
         sets: Sequence[str] = (), profile: str | None = None, progress: bool = True) -> MineResult:
    """Mine ``source``'s hard negatives on ``split``, or reuse the FINISHED mine run that did.

    The run goes through the lifecycle like every tracked run (kind ``mine``: tags, the
    scoring spec as params and ``spec.yaml``, ``log.txt``, heartbeat, final status).

    Args:
        tracker: The project's ``registry.tracking.Tracker``.
        source: The source's ``RunRecord`` (see :func:`arflare.source_runs.resolve_source`).
        registry_dir: Folder of ``experiments.yaml`` (git state, local folders).
        split: Which split to score (hard negatives for training come from ``train``).
        rule: Which negatives count as hard; the default is the source run's threshold.
        sets: ``key=value`` overrides of the source run's spec (e.g. ``data.root=/scratch/wds``).
        profile: Recorded on the mine run (``arflare.profile``).
        progress: Show progress bars.
    """
    from arflare.lifecycle import Identity, RunPlan, open_run

    with tempfile.TemporaryDirectory(prefix="arflare-mine-") as tmp:
        spec, index, key, found = find_mine(tracker, source, split=split, rule=rule, sets=sets, progress=progress)
        if found is not None:
            table = read_mined_table(tracker, found.run_id, Path(tmp))
            return MineResult(found.run_id, source.run_id, table, hardneg.table_digest(table), reused=True)
        checkpoint = tracker.fetch_artifact(source.run_id, record.ARTIFACT_BEST, Path(tmp))
        experiment = source.tags.get(record.TAG_EXPERIMENT, "")
        plan = RunPlan(kind=KIND, run_name=f"mine/{experiment or source.run_id[:8]}/{split}", experiment=experiment,
                       group=f"mine:{experiment}", spec=spec, profile=profile, registry_dir=Path(registry_dir),
                       description=f"hard negatives of run {source.run_id} on {split} ({rule.text})")
        identity = Identity(data_fingerprint=index.fingerprint, spec_hash=key, config_hash=key)
        with open_run(tracker, plan, identity) as tracked:
            handle = tracked.handle
            handle.set_tags({TAG_SOURCE: source.run_id, TAG_SPLIT: split, TAG_RULE: rule.text})
            table, metrics = _mine_body(spec, index, checkpoint, key, source.run_id, split, rule, progress=progress)
            handle.log_metrics(metrics)
            handle.log_artifact(hardneg.write_table(table, Path(tmp) / hardneg.TABLE_FILE), TABLE_DIR)
            digest = hardneg.table_digest(table)
            tracker.log_dataset_input(handle.run_id, name=hardneg.DATASET_NAME, digest=digest,
                                      source_uri=f"runs:/{handle.run_id}/{TABLE_ARTIFACT}", context="mined",
                                      profile={"rows": len(table), **metrics})
        shutil.rmtree(_chunk_dir(key), ignore_errors=True)
    print(f"mined {len(table)} hard negatives ({rule.text if rule.text != 'threshold' else 'score>=threshold'}) "
          f"from {int(metrics['mine/negatives'])} {split} negatives of run {source.run_id}: mine run {handle.run_id}",
          file=sys.stderr)
    return MineResult(handle.run_id, source.run_id, table, digest, reused=False)


def find_mine(tracker, source, *, split: str, rule: hardneg.MineRule, sets: Sequence[str] = (),
              progress: bool = True) -> tuple[object, object, str, object | None]:
    """What mining ``source`` would read, its identity, and the FINISHED mine run that already did it.

    Scores nothing and fetches no checkpoint (the source's ``spec.yaml`` says what it read), so
    ``arflare run --dry-run`` can use it. The data must exist (it is indexed, never generated here
    unless the spec asks for generation).

    Returns:
        ``(spec, index, key, found)``: the scoring spec, the index of its data, the mine run's
        identity (:func:`mine_key`) and the FINISHED mine run with that identity, or None.
    """
    from arflare.lifecycle import prepare_data

    with tempfile.TemporaryDirectory(prefix="arflare-mine-") as tmp:
        spec = _with_sets(_run_spec(tracker, source.run_id, Path(tmp)), sets)
    index = prepare_data(spec, progress=progress)
    key = mine_key(source.run_id, split, rule, index.fingerprint)
    found = tracker.find_latest(spec_hash=key)
    return spec, index, key, found if found is not None and found.status == "FINISHED" else None


def read_mined_table(tracker, mine_run: str, folder: Path) -> pd.DataFrame:
    """The hard-negative table a mine run recorded."""
    return hardneg.read_table(tracker.fetch_artifact(mine_run, TABLE_ARTIFACT, folder))


def _run_spec(tracker, run_id: str, folder: Path):
    """The resolved spec a training run logged as ``spec.yaml`` (what its checkpoint was trained with)."""
    from arflare.spec import RunSpec

    path = tracker.fetch_artifact(run_id, record.ARTIFACT_SPEC, folder)
    return RunSpec.model_validate(yaml.safe_load(Path(path).read_text()))


def _mine_body(spec, index, checkpoint: Path, key: str, source_run: str, split: str, rule: hardneg.MineRule, *,
               progress: bool) -> tuple[pd.DataFrame, dict[str, float]]:
    from arflare.builders import build_datasets
    from arflare.scoring import load_checkpoint_model, score_dataset
    from arflare.trainer import pick_device

    device = pick_device(spec.train.device)
    model, _, threshold = load_checkpoint_model(checkpoint, device)
    dataset = build_datasets(spec, index)[split]
    scored = score_dataset(model, dataset, device=device, batch_size=spec.train.batch_size * 2,
                           chunk_dir=_chunk_dir(key), num_workers=spec.data.num_workers, progress=progress)
    resolved = rule.resolved(threshold)
    table = hardneg.select_hard_negatives(scored, resolved, source_run=source_run)
    negatives = int((scored["label"] == 0).sum())
    metrics = {"mine/scored": float(len(scored)), "mine/negatives": float(negatives), "mine/hard": float(len(table)),
               "mine/hard_share": len(table) / max(negatives, 1), "mine/source_threshold": threshold,
               "mine/min_score": float(table["score"].min()) if len(table) else float("nan")}
    log.info("mined %d of %d %s negatives with %s", len(table), negatives, split, resolved.text)
    return table, metrics


def _with_sets(spec, sets: Sequence[str]):
    """The source spec with ``key=value`` overrides (values parsed as YAML, checked by the schema)."""
    if not sets:
        return spec
    data = spec.model_dump(mode="json")
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set data.root=/scratch/wds")
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise UsageError(f"--set {item!r}: {part!r} is not a section of the spec (arflare show NAME lists them)")
            node = node[part]
        node[parts[-1]] = yaml.safe_load(text)
    return type(spec).model_validate(data)


def _chunk_dir(key: str) -> Path:
    base = os.environ.get("ARFLARE_CACHE") or Path.home() / ".cache" / "arflare"
    return Path(base) / "mine" / key


def mine_command(registry, source: str, *, split: str, min_score: float | None, top_fraction: float | None,
                 profile: str | None, sets: Sequence[str]) -> int:
    """``arflare mine``: resolve SOURCE, mine (or reuse), print where the table is."""
    from arflare.commands import open_tracker
    from arflare.source_runs import resolve_source

    try:
        rule = hardneg.MineRule(min_score=min_score, top_fraction=top_fraction)
    except ValueError as exc:
        raise UsageError(f"--min-score/--top-fraction: {exc}") from None
    tracker = open_tracker(registry)
    found = resolve_source(tracker, source, profile=profile, known=list(registry.experiments))
    result = mine(tracker, found, registry_dir=registry.path.parent, split=split, rule=rule, sets=sets, profile=profile)
    verb = "reused FINISHED mine run" if result.reused else "mine run"
    print(f"{verb} {result.run_id}: {len(result.table)} hard negatives of {split} from source run {result.source_run} "
          f"(digest {result.digest})\n  table: artifact {TABLE_ARTIFACT} of run {result.run_id}\n"
          f"  train with them: data.hard_negatives.from: [{source}] in experiments.yaml")
    return 0
