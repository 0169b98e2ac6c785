"""Which tracked CNN run a hybrid takes its embedding from, fetched to this machine before it starts.

``model.embedding_from`` names a run id or an experiment. An experiment resolves to its best
FINISHED training run on the same data (by that run's own ``eval.monitor`` on validation).
:func:`pin_sources` replaces the name by the run id, so the hybrid's spec hash, and hence
skip/resume, follows the exact source; the source's ``best.pt`` and ``spec.yaml`` are copied
into the local cache, where the run body reads them. No torch here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from arflare import record
from arflare.data.index import cache_root
from arflare.errors import UsageError
from arflare.spec import RunSpec

RUN_ID = re.compile(r"[0-9a-f]{32}")
_LINEAGE = "lineage.json"  # beside the cached files: the source's tags, for the hybrid's lineage tags


@dataclass(frozen=True)
class SourceFiles:
    """A source run's files in the local cache."""

    run_id: str
    spec: RunSpec
    weights: Path


def source_folder(spec: RunSpec, run_id: str) -> Path:
    """Where a source run's ``best.pt`` and ``spec.yaml`` are cached."""
    return cache_root(spec.data.cache_dir) / "sources" / run_id


def pin_sources(spec: RunSpec, *, tracker, data_fingerprint: str, profile: str | None) -> RunSpec:
    """For a hybrid, resolve ``model.embedding_from`` to a run id and fetch its files; others pass through.

    Raises:
        UsageError: no such run, or it is not a FINISHED CNN run on the same data; the message
            says which command creates one.
    """
    name = spec.model.embedding_from
    if spec.model.kind != "hybrid" or name is None:
        return spec
    run = _by_id(name, tracker) if RUN_ID.fullmatch(name) else _best_of(name, tracker, data_fingerprint, profile)
    if run.tags.get(record.TAG_DATA_FINGERPRINT) != data_fingerprint:
        raise UsageError(f"model.embedding_from {name!r}: run {run.run_id} was trained on other data "
                         f"(fingerprint {run.tags.get(record.TAG_DATA_FINGERPRINT)}, this run's data is "
                         f"{data_fingerprint}); the embedding is keyed by sample, so train the source on this data")
    folder = source_folder(spec, run.run_id)
    for artifact in (record.ARTIFACT_BEST, record.ARTIFACT_SPEC):
        target = folder / artifact
        if not target.is_file() and tracker.download_artifact(run.run_id, artifact, target.parent) is None:
            raise UsageError(f"model.embedding_from {name!r}: run {run.run_id} has no artifact {artifact}; "
                             "train the source again with `arflare run` (it logs one)")
    lineage = {record.TAG_SOURCE_RUN: run.run_id, record.TAG_SOURCE_EXPERIMENT: run.tags.get(record.TAG_EXPERIMENT, ""),
               record.TAG_SOURCE_SPEC_HASH: run.tags.get(record.TAG_SPEC_HASH, "")}  # fmt: skip
    (folder / _LINEAGE).write_text(json.dumps(lineage))
    return spec.model_copy(update={"model": spec.model.model_copy(update={"embedding_from": run.run_id})})


def source_files(spec: RunSpec) -> SourceFiles:
    """The pinned source of a hybrid spec, read from the local cache (after :func:`pin_sources`)."""
    run_id = spec.model.embedding_from
    folder = source_folder(spec, run_id)
    if not RUN_ID.fullmatch(run_id or "") or not (folder / record.ARTIFACT_BEST).is_file():
        raise UsageError(f"model.embedding_from {run_id!r} is not a fetched run id; run hybrids through "
                         "`arflare run` or `arflare sweep`, which fetch the source first")
    source_spec = RunSpec.model_validate(yaml.safe_load((folder / record.ARTIFACT_SPEC).read_text()))
    return SourceFiles(run_id=run_id, spec=source_spec, weights=folder / record.ARTIFACT_BEST)


def lineage_tags(spec: RunSpec) -> dict[str, str]:
    """The lineage tags of a pinned hybrid spec (source run, its experiment and spec hash); {} for other kinds."""
    if spec.model.kind != "hybrid" or not RUN_ID.fullmatch(spec.model.embedding_from or ""):
        return {}
    path = source_folder(spec, spec.model.embedding_from) / _LINEAGE
    return json.loads(path.read_text()) if path.is_file() else {record.TAG_SOURCE_RUN: spec.model.embedding_from}


def _by_id(run_id: str, tracker):
    try:
        run = tracker.get_run(run_id)
    except Exception as exc:  # MLflow raises its own error type for an unknown id
        raise UsageError(f"model.embedding_from {run_id!r}: no such run in {tracker.tracking_uri} ({exc})") from None
    if run.status != "FINISHED" or run.params.get("model.kind", "cnn") != "cnn":
        raise UsageError(f"model.embedding_from {run_id!r}: the source must be a FINISHED cnn run; this one is "
                         f"{run.status}, model.kind {run.params.get('model.kind', 'cnn')}")
    return run


def _best_of(experiment: str, tracker, data_fingerprint: str, profile: str | None):
    runs = [run for run in tracker.search(experiments=[experiment])
            if run.status == "FINISHED" and run.tags.get(record.TAG_KIND) == "train"
            and run.params.get("model.kind", "cnn") == "cnn"
            and run.tags.get(record.TAG_DATA_FINGERPRINT) == data_fingerprint]  # fmt: skip
    if not runs:
        command = f"arflare run {experiment}" + (f" --profile {profile}" if profile else "")
        raise UsageError(f"model.embedding_from {experiment!r}: no FINISHED run of {experiment} on this data "
                         f"(fingerprint {data_fingerprint}) in {tracker.tracking_uri}; create it with `{command}`")
    return max(runs, key=_validation_score)


def _validation_score(run) -> float:
    monitor = run.params.get("eval.monitor", "tss")
    value = run.metrics.get(record.best_val_metric(monitor), math.nan)
    value = -value if monitor == "loss" else value
    return -math.inf if math.isnan(value) else value
