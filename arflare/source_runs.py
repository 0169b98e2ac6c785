"""SOURCE: a trained run named by its id or by its experiment (then that experiment's best run).

The one place that resolves a SOURCE. Commands that build on a trained model (``arflare mine``,
``data.hard_negatives.from``, a hybrid's ``model.embedding_from``) name it as a 32-hex MLflow
run id, or an experiment name, which stands for the experiment's best FINISHED cnn training run
of the same profile (and, when the caller needs it, on the same data), ranked on validation by
the run's own ``eval.monitor`` (loss lowest, every other monitor highest). A hybrid's source is
then pinned (:func:`pin_sources`): its run id replaces the name, so the spec hash and hence
skip/resume follow the exact source, and its ``best.pt`` and ``spec.yaml`` are fetched into the
local cache. Lineage tags come from :func:`arflare.lineage.lineage_tags`. Nothing here imports
torch; mlflow is imported by the tracker when it first reads.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from arflare import record
from arflare.errors import UsageError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
EMBEDDING_FIELD = "model.embedding_from"
_LINEAGE = "lineage.json"  # beside a pinned source's cached files: the hybrid's lineage tags


class SourceNotFound(UsageError):
    """A SOURCE names no usable run; the message says which command would create one."""


def is_run_id(source: str | None) -> bool:
    """Whether ``source`` is spelled like an MLflow run id (32 lowercase hex digits)."""
    return bool(RUN_ID.match(source or ""))


def resolve_source(tracker, source: str, *, profile: str | None = None, known: Sequence[str] = (),
                   data_fingerprint: str | None = None, field: str = "source"):
    """The FINISHED cnn training run that ``source`` names.

    Args:
        tracker: A ``registry.tracking.Tracker`` of the project's store.
        source: A run id, or an experiment name.
        profile: Runs of this profile only (None = runs without a profile).
        known: The registry's experiment names, for the "did you mean" in errors.
        data_fingerprint: When given, the run must have been trained on this data (a hybrid's
            embedding is keyed by sample); None accepts any data (mining scores the caller's data).
        field: What named the source (``source``, ``model.embedding_from``), for the messages.

    Returns:
        A ``registry.tracking.RunRecord``.

    Raises:
        SourceNotFound: no such run, not a FINISHED cnn training run, other data, or the experiment
            has no such run yet; the message gives the ``arflare run`` command that would create it.
    """
    what = f"{field} {source!r}"
    if is_run_id(source):
        found = [r for r in tracker.search(filter_string=f"attributes.run_id = '{source}'") if r.run_id == source]
        if not found:
            raise SourceNotFound(f"{what}: run {source} is not in the store {tracker.tracking_uri}")
        run = found[0]
        if not _usable(run):
            raise SourceNotFound(f"{what}: the source must be a FINISHED cnn training run; this one is {run.status}, "
                                 f"kind {run.tags.get(record.TAG_KIND, 'train')}, model.kind {_model_kind(run)}")
        if data_fingerprint is not None and run.tags.get(record.TAG_DATA_FINGERPRINT) != data_fingerprint:
            raise SourceNotFound(f"{what}: run {source} was trained on other data (fingerprint "
                                 f"{run.tags.get(record.TAG_DATA_FINGERPRINT)}, this run's data is {data_fingerprint}); "
                                 "the embedding is keyed by sample, so train the source on this data")
        return run
    if known and source not in known:
        from registry.errors import did_you_mean

        raise SourceNotFound(f"{what} is neither a run id nor an experiment of the registry"
                             f"{did_you_mean(source, list(known))}")
    runs = [r for r in tracker.search(experiments=[source]) if _usable(r)
            and r.tags.get(record.TAG_PROFILE, "") == (profile or "")
            and (data_fingerprint is None or r.tags.get(record.TAG_DATA_FINGERPRINT) == data_fingerprint)]
    best = best_run(runs)
    if best is None:
        command = " ".join(["arflare run", source, *([f"--profile {profile}"] if profile else [])])
        where = f" with profile {profile}" if profile else ""
        data = f" on this data (fingerprint {data_fingerprint})" if data_fingerprint else ""
        raise SourceNotFound(f"{what} has no FINISHED run{where}{data} yet in {tracker.tracking_uri}; "
                             f"create it with: {command}")
    return best


def best_run(runs: Sequence):
    """The run with the best validation score by its own ``eval.monitor``; None when none has one.

    Reads the best checkpoint's score: ``best/val_<monitor>`` when logged, else the last
    ``val/<monitor>`` (which the trainer sets to the best checkpoint's score). Ties go to the newest run.
    """
    scored = []
    for run in runs:
        monitor = run.params.get("eval.monitor", "tss")
        value = run.metrics.get(record.best_val_metric(monitor), run.metrics.get(f"val/{monitor}"))
        if value is None or math.isnan(value):
            continue
        scored.append((-value if monitor == "loss" else value, run.start_time or 0, run))
    return max(scored, key=lambda item: item[:2])[2] if scored else None


@dataclass(frozen=True)
class SourceFiles:
    """A pinned source run's files in the local cache."""

    run_id: str
    spec: object  # the source's RunSpec
    weights: Path


def source_folder(spec, run_id: str) -> Path:
    """Where a source run's ``best.pt`` and ``spec.yaml`` are cached."""
    from arflare.data.index import cache_root

    return cache_root(spec.data.cache_dir) / "sources" / run_id


def pinned_source(spec, *, tracker, data_fingerprint: str, profile: str | None):
    """``(spec with model.embedding_from resolved to a run id, the source run)`` for a hybrid, fetching
    nothing (what ``arflare run --dry-run`` hashes); ``(spec, None)`` for other kinds.

    Raises:
        SourceNotFound: see :func:`resolve_source` (same data required).
    """
    name = spec.model.embedding_from
    if spec.model.kind != "hybrid" or name is None:
        return spec, None
    run = resolve_source(tracker, name, profile=profile, data_fingerprint=data_fingerprint, field=EMBEDDING_FIELD)
    return spec.model_copy(update={"model": spec.model.model_copy(update={"embedding_from": run.run_id})}), run


def pin_sources(spec, *, tracker, data_fingerprint: str, profile: str | None):
    """For a hybrid, resolve ``model.embedding_from`` to a run id and fetch its files; others pass through.

    Raises:
        SourceNotFound: see :func:`resolve_source` (same data required).
        UsageError: the source run has no ``best.pt`` or ``spec.yaml``.
    """
    from arflare.lineage import lineage_tags

    name = spec.model.embedding_from
    pinned, run = pinned_source(spec, tracker=tracker, data_fingerprint=data_fingerprint, profile=profile)
    if run is None:
        return spec
    folder = source_folder(spec, run.run_id)
    for artifact in (record.ARTIFACT_BEST, record.ARTIFACT_SPEC):
        target = folder / artifact
        if not target.is_file() and tracker.download_artifact(run.run_id, artifact, target.parent) is None:
            raise UsageError(f"{EMBEDDING_FIELD} {name!r}: run {run.run_id} has no artifact {artifact}; "
                             "train the source again with `arflare run` (it logs one)")
    (folder / _LINEAGE).write_text(json.dumps(lineage_tags(EMBEDDING_FIELD, {name: run})))
    return pinned


def source_files(spec) -> SourceFiles:
    """The pinned source of a hybrid spec, read from the local cache (after :func:`pin_sources`)."""
    import yaml

    from arflare.spec import RunSpec

    run_id = spec.model.embedding_from
    if not is_run_id(run_id) or not (source_folder(spec, run_id) / record.ARTIFACT_BEST).is_file():
        raise UsageError(f"{EMBEDDING_FIELD} {run_id!r} is not a fetched run id; run hybrids through "
                         "`arflare run` or `arflare sweep`, which fetch the source first")
    folder = source_folder(spec, run_id)
    source_spec = RunSpec.model_validate(yaml.safe_load((folder / record.ARTIFACT_SPEC).read_text()))
    return SourceFiles(run_id=run_id, spec=source_spec, weights=folder / record.ARTIFACT_BEST)


def pinned_lineage(spec) -> dict[str, str]:
    """The lineage tags of a pinned hybrid spec, as :func:`pin_sources` recorded them; {} for other kinds."""
    from arflare.lineage import lineage_tags

    run_id = spec.model.embedding_from
    if spec.model.kind != "hybrid" or not is_run_id(run_id):
        return {}
    path = source_folder(spec, run_id) / _LINEAGE
    return json.loads(path.read_text()) if path.is_file() else lineage_tags(EMBEDDING_FIELD, {run_id: run_id})


def _model_kind(run) -> str:
    return run.params.get("model.kind", "cnn")


def _usable(run) -> bool:
    # Only a FINISHED cnn training run has the best.pt that mining and embeddings read.
    return (run.status == "FINISHED" and run.tags.get(record.TAG_KIND, "train") == "train"
            and _model_kind(run) == "cnn")
