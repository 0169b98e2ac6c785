"""Bodies of the inspection commands (list, show, compare, runs, index): registry in, text out.

Nothing here trains or imports torch at module level; ``arflare run`` lives in
``arflare.running`` and ``arflare sweep`` in ``arflare.sweeping``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from arflare import record
from arflare.errors import UsageError
from registry.errors import Problem, RegistryError
from registry.loader import Registry
from registry.tracking import (
    DEFAULT_STALE_AFTER_S,
    STALE,
    RunRecord,
    Tracker,
    count_runs,
    default_artifact_location,
    resolve_tracking_uri,
)

STALE_AFTER_ENV = "ARFLARE_STALE_AFTER"  # seconds without a heartbeat before a RUNNING run reads STALE


def stale_after_s(override: float | None = None) -> float:
    """Seconds of silence after which a RUNNING run reads STALE: ``override``, ``$ARFLARE_STALE_AFTER``, or 300."""
    if override is not None:
        return override
    text = os.environ.get(STALE_AFTER_ENV)
    if not text:
        return DEFAULT_STALE_AFTER_S
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"${STALE_AFTER_ENV}={text!r} is not a number of seconds; e.g. export {STALE_AFTER_ENV}=600") from None


def open_tracker(registry: Registry, *, stale_after: float | None = None) -> Tracker:
    """The tracking store beside the registry file (or $MLFLOW_TRACKING_URI)."""
    folder = registry.path.parent
    return Tracker(tracking_uri=resolve_tracking_uri(folder), experiment=registry.project,
                   artifact_location=default_artifact_location(folder), stale_after_s=stale_after_s(stale_after))


def open_registry(path: str | Path) -> Registry:
    """Load and check a registry file: the schema, every search block, every hybrid's embedding source."""
    from arflare.spec import RunSpec
    from registry.loader import load_registry
    from registry.search_spec import SearchSpec

    registry = load_registry(path, RunSpec, seed_key="train.seed", search_schema=SearchSpec)
    check_search_blocks(registry)
    check_embedding_sources(registry)
    return registry


def list_experiments(registry: Registry) -> str:
    """A table of declared experiments with their run counts (read without importing mlflow)."""
    uri = resolve_tracking_uri(registry.path.parent)
    trained = (record.TAG_KIND, record.training_kinds())  # mine runs and sweep parents train nothing
    counts = count_runs(uri, experiment=registry.project, tag_filter=trained)
    stale = count_runs(uri, experiment=registry.project, stale_after_s=stale_after_s(), tag_filter=trained)
    rows = [("NAME", "EXTENDS", "RUNS", "DESCRIPTION")]
    for name, entry in registry.experiments.items():
        expanded = len(registry.expand(name))
        planned = f" ({expanded} per launch)" if expanded > 1 else ""
        dead = f", {stale[name]} stale" if stale.get(name) else ""
        rows.append((name, entry.extends or "-", f"{counts.get(name, 0)}{planned}{dead}", entry.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    hint = "\nstale: RUNNING runs whose process went silent; see arflare runs" if stale else ""
    return "\n".join(lines) + f"\n\nprofiles: {', '.join(registry.profiles) or 'none'}    run one: arflare run NAME [--profile P]{hint}"


def show_experiment(registry: Registry, name: str, *, profile: str | None, sets: Sequence[str]) -> str:
    """The resolved spec as YAML, headed by the command that runs it and the runs it expands to."""
    entry = registry.experiments.get(name)
    resolved = registry.resolved_dict(name, profile=profile, sets=sets)
    runs = registry.expand(name, profile=profile, sets=sets)
    command = " ".join(["arflare run", name, *([f"--profile {profile}"] if profile else []), *(f"--set {s}" for s in sets)])
    header = [f"# {name}: {entry.description}" if entry else f"# {name}", f"# {command}"]
    if entry and entry.extends:
        header.append(f"# extends: {' -> '.join(registry.lineage(name)[1:])}")
    if len(runs) > 1:
        header.append(f"# expands to {len(runs)} runs: " + ", ".join(run.name for run in runs))
    if runs and runs[0].spec.data.hard_negatives.enabled:
        from arflare.lineage import describe_sources

        lines = describe_sources(open_tracker(registry), runs[0].spec, profile=profile, known=list(registry.experiments))
        header += ["# hard negatives from:"] + [f"#   {line}" for line in lines]
    return "\n".join(header) + "\n" + yaml.safe_dump(resolved, sort_keys=False)


def index_report(root: Path, *, flow_root: Path | None, fmt: str, strict: bool) -> str:
    """Build (or reuse) the index of a data root; describe each split and list every skipped sample."""
    from arflare.data.index import build_index  # pandas/pyarrow: only this command pays for them
    from arflare.data.index_report import format_report

    index = build_index(root, flow_root=flow_root, strict=strict, progress=True, report_skipped=False)
    return format_report(index, fmt=fmt)


def _headline_columns() -> list[tuple[str, str]]:
    """(column label, metric name) of the headline metrics, from the metric table."""
    from arflare.metrics import headline_metrics

    return [(metric.column, metric.name) for metric in headline_metrics()]


def headline(metrics: Mapping[str, float]) -> str:
    """The test scores a user reads first, on one line."""
    return "  ".join(f"test {label} {metrics[f'test/{name}']:.3f}" for label, name in _headline_columns()
                     if f"test/{name}" in metrics) or "no test metrics"


def list_runs(registry: Registry, *, experiments: Sequence[str] | None = None, stale_after: float | None = None,
              mark_stale_killed: bool = False, limit: int = 50) -> str:
    """Tracked runs, newest first: status (STALE for a silent RUNNING run), age and last heartbeat.

    With ``mark_stale_killed`` every STALE run is set KILLED first (``arflare run`` resumes KILLED runs).
    """
    tracker = open_tracker(registry, stale_after=stale_after)
    records = tracker.search(experiments=experiments)
    notes = []
    if mark_stale_killed:
        stale = [r for r in records if r.status == STALE]
        for run in stale:
            tracker.set_terminated(run.run_id, "KILLED")
        notes.append(f"marked {len(stale)} stale run(s) KILLED" + ("; arflare run NAME resumes them" if stale else ""))
        records = tracker.search(experiments=experiments)
    if not records:
        return "\n".join([*notes, "no runs yet; start one with: arflare run NAME"])
    now = time.time()
    rows = [("RUN", "NAME", "KIND", "STATUS", "STARTED", "HEARTBEAT")]
    for run in sorted(records, key=lambda r: r.start_time or 0, reverse=True)[:limit]:
        started = _ago(now, None if run.start_time is None else run.start_time / 1000)
        beat = _ago(now, run.heartbeat) if run.status in ("RUNNING", STALE) else "-"
        rows.append((run.run_id[:8], run.run_name, run.tags.get(record.TAG_KIND, "-"), run.status, started, beat))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    limit_s = tracker.stale_after_s
    footer = (f"STALE: RUNNING without a heartbeat for over {limit_s:.0f} s (its process died); "
              f"arflare runs --mark-stale-killed marks them KILLED")
    return "\n".join([*notes, *lines, "", footer])


def _ago(now: float, when: float | None) -> str:
    if when is None:
        return "-"
    seconds = max(0.0, now - when)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def check_embedding_sources(registry: Registry) -> None:
    """Check every SOURCE the file names: a hybrid's ``model.embedding_from`` and each entry of
    ``data.hard_negatives.from`` must be a run id or a CNN experiment of this file.

    Whether a run of it exists is only known to the tracking store; ``arflare run`` checks that
    (and names the command that creates a missing one).

    Raises:
        RegistryError: listing every problem found.
    """
    from arflare.source_runs import is_run_id

    problems: list[Problem] = []
    for name, entry in registry.experiments.items():
        try:
            spec = registry.expand(name)[0].spec
        except RegistryError:
            continue  # reported by the loader's own checks
        named = [(f"experiments.{name}.data.hard_negatives.from", s) for s in spec.data.hard_negatives.from_]
        if spec.model.kind == "hybrid" and spec.model.embedding_from is not None:
            named.append((f"experiments.{name}.model.embedding_from", spec.model.embedding_from))
        for key, source in named:
            if is_run_id(source):
                continue
            if source not in registry.experiments:
                problems.append(Problem(str(registry.path), entry.line, key, source,
                                        "neither an experiment in this file nor a run id (32 hex digits); "
                                        f"name a CNN experiment, e.g. one of {', '.join(sorted(registry.experiments)[:4])}"))
            elif (kind := registry.expand(source)[0].spec.model.kind) != "cnn":
                problems.append(Problem(str(registry.path), entry.line, key, source,
                                        f"{source} is a model.kind {kind!r} experiment; sources are cnn experiments"))
    if problems:
        raise RegistryError(problems)


def check_search_blocks(registry: Registry) -> None:
    """Check every ``search:`` block against the run spec, so ``validate`` catches what trials would hit.

    Each searched key must exist and accept the range's ends and every choice; the objective must
    be a per-epoch validation metric the trainer reports.

    Raises:
        RegistryError: listing every problem found.
    """
    from arflare.metrics import METRICS

    # per-epoch validation metrics only: the diagnostics rows are computed once, after training
    objectives = {"val/loss", *(f"val/{m.name}" for m in METRICS.rows() if m.needs != "diagnostics")}
    problems: list[Problem] = []
    for name, entry in registry.experiments.items():
        if entry.search is None:
            continue
        where = f"experiments.{name}.search"
        if entry.search.objective not in objectives:
            problems.append(Problem(str(registry.path), entry.line, f"{where}.objective", entry.search.objective,
                                    f"not a per-epoch metric; use one of {', '.join(sorted(objectives))}"))
        for key, param in entry.search.params.items():
            values = param.choices if param.type == "categorical" else (param.low, param.high)
            for value in values:
                try:
                    registry.expand(name, sets=[f"{key}={json.dumps(value)}"])
                except RegistryError as exc:
                    reason = exc.problems[0].message if exc.problems else str(exc)
                    problems.append(Problem(str(registry.path), entry.line, f"{where}.params.{key}", value, reason))
    if problems:
        raise RegistryError(problems)
