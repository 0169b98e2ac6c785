"""Bodies of the CLI commands: registry in, text or runs out.

Every spec here is already validated; this module decides what to run, prepares data once
per data root, skips duplicates, and hands each run to the trainer inside a tracked run.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from arflare.errors import UsageError

log = logging.getLogger("arflare")


def open_tracker(registry):
    """The tracking store beside the registry file (or $MLFLOW_TRACKING_URI)."""
    from registry.tracking import Tracker, default_artifact_location, resolve_tracking_uri

    folder = registry.path.parent
    return Tracker(tracking_uri=resolve_tracking_uri(folder), experiment=registry.project,
                   artifact_location=default_artifact_location(folder))


def list_experiments(registry) -> str:
    """A table of declared experiments with their run counts (read without importing mlflow)."""
    from registry.tracking import count_runs, resolve_tracking_uri

    counts = count_runs(resolve_tracking_uri(registry.path.parent), experiment=registry.project)
    rows = [("NAME", "EXTENDS", "RUNS", "DESCRIPTION")]
    for name, entry in registry.experiments.items():
        expanded = len(registry.expand(name))
        planned = f" ({expanded} per launch)" if expanded > 1 else ""
        rows.append((name, entry.extends or "-", f"{counts.get(name, 0)}{planned}", entry.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    return "\n".join(lines) + f"\n\nprofiles: {', '.join(registry.profiles) or 'none'}    run one: arflare run NAME [--profile P]"


def show_experiment(registry, name: str, *, profile: str | None, sets: Sequence[str]) -> str:
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
    return "\n".join(header) + "\n" + yaml.safe_dump(resolved, sort_keys=False)


def index_report(root: Path, *, flow_root: Path | None, fmt: str, strict: bool) -> str:
    """Build (or reuse) the index of a data root; describe each split and list every skipped sample."""
    from arflare.data.index import build_index
    from arflare.data.index_report import format_report

    index = build_index(root, flow_root=flow_root, strict=strict, progress=True, report_skipped=False)
    return format_report(index, fmt=fmt)


def prepare_data(spec, *, progress: bool = True):
    """Generate the synthetic default when asked and missing, then index the data root."""
    from arflare.data.index import build_index

    data = spec.data
    if data.generate_if_missing and not data.root.exists():
        from arflare.data.synth import ensure_generated

        ensure_generated(data.root.parent, progress=progress)
        if not data.root.exists():
            raise UsageError(f"data.generate_if_missing wrote {data.root.parent}, but data.root {data.root} is not in it; "
                             f"point data.root at {data.root.parent / 'magnetograms'}")
    return build_index(data.root, flow_root=data.flow_input, cache_dir=data.cache_dir, strict=data.strict, progress=progress)


def preflight(spec) -> None:
    """Checks the schema cannot make (they need timm or the machine); run before anything is tracked."""
    from arflare.models import check_backbone

    problems = []
    try:
        check_backbone(spec.model.backbone)
    except ValueError as exc:
        problems.append(f"model.backbone: {exc}")
    if spec.model.pretrained_path is not None and not spec.model.pretrained_path.is_file():
        problems.append(f"model.pretrained_path: no file at {spec.model.pretrained_path}")
    if spec.train.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            problems.append("train.device: 'cuda' but no CUDA device is available here; use 'auto' or 'cpu'")
    if problems:
        raise UsageError("; ".join(problems))


def run_experiments(registry, names: Sequence[str], *, profile: str | None, sets: Sequence[str],
                    force: bool = False, dry_run: bool = False) -> int:
    """Expand, prepare data, skip finished duplicates, train the rest; exit code 1 if any run failed."""
    plans = [run for name in names for run in registry.expand(name, profile=profile, sets=sets)]
    for spec in {run.spec for run in plans}:
        preflight(spec)
    if dry_run:
        return _dry_run(plans)
    indexes = _prepare_all(plans)  # every data root is checked before the first run starts
    tracker = open_tracker(registry)
    failed = 0
    for run in plans:
        index = indexes[_data_key(run.spec)]
        spec_hash = run.spec.spec_hash(input_fingerprint(run.spec, index))
        existing = tracker.find_finished(spec_hash=spec_hash)
        if existing is not None and not force:
            print(f"skip {run.name}: identical spec and data already FINISHED as run {existing.run_id} "
                  f"({_headline(existing.metrics)}); use --force to run again", file=sys.stderr)
            continue
        failed += not _run_one(registry, tracker, run, index, spec_hash, profile=profile)
    return 1 if failed else 0


def input_fingerprint(spec, index) -> str:
    """What a run reads, by content: the shards' fingerprint and the pretrained weights' digest."""
    if spec.model.pretrained_path is None:
        return index.fingerprint
    import hashlib

    digest = hashlib.sha256()
    with open(spec.model.pretrained_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{index.fingerprint}+weights:{digest.hexdigest()[:16]}"


def _data_key(spec) -> tuple:
    return spec.data.root, spec.data.flow_input, spec.data.strict


def _prepare_all(plans) -> dict:
    """One index per distinct data input, shared by the runs that read it."""
    indexes = {}
    for run in plans:
        if _data_key(run.spec) not in indexes:
            indexes[_data_key(run.spec)] = prepare_data(run.spec)
    return indexes


def _dry_run(plans) -> int:
    """List what would run; index existing data, but generate nothing."""
    missing = [run for run in plans if run.spec.data.generate_if_missing and not run.spec.data.root.exists()]
    indexes = _prepare_all([run for run in plans if run not in missing])
    for run in plans:
        if run in missing:
            where = f"data {run.spec.data.root} (missing: would be generated)"
        else:
            index = indexes[_data_key(run.spec)]
            where = f"spec {run.spec.spec_hash(input_fingerprint(run.spec, index))}  data {index.root} ({len(index.table)} samples)"
        print(f"would run {run.name}  {where}")
    return 0


def _run_one(registry, tracker, run, index, spec_hash: str, *, profile: str | None) -> bool:
    from arflare.trainer import train
    from registry.tracking import git_state

    commit, dirty = git_state(registry.path.parent)
    tags = {"arflare.experiment": run.experiment, "arflare.group": run.group, "arflare.spec_hash": spec_hash,
            "arflare.data_fingerprint": index.fingerprint, "arflare.profile": profile or "",
            "arflare.git_commit": commit or "unknown", "arflare.git_dirty": str(dirty).lower(),
            "arflare.description": registry.experiments[run.experiment].description}
    if commit:
        tags["mlflow.source.git.commit"] = commit
    spec_dict = run.spec.model_dump(mode="json")
    print(f"run {run.name}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="arflare-") as tmp:
        log_file = Path(tmp) / "log.txt"
        handlers = _attach_log_file(log_file)
        try:
            with tracker.start_run(run_name=run.name, tags=tags, params=spec_dict, log_file=log_file) as handle:
                handle.log_dict(spec_dict, "spec.yaml")
                result = train(run.spec, index=index, reporter=handle, out_dir=Path(tmp) / "out", run_name=run.name)
        except KeyboardInterrupt:
            print(f"run {run.name} KILLED; its checkpoints so far are in the store", file=sys.stderr)
            raise
        except Exception as exc:  # the tracker has marked the run FAILED and stored the traceback
            print(f"run {run.name} FAILED: {type(exc).__name__}: {exc}\n  traceback: artifact traceback.txt of the run "
                  f"(arflare ui)", file=sys.stderr)
            return False
        finally:
            _detach(handlers)
    print(f"done {run.name}: run {handle.run_id}\n  {_headline(result.metrics)}\n  threshold {result.threshold:.4f} "
          f"(chosen on val), best epoch {result.best_epoch}/{result.epochs_run}\n  look: arflare ui  |  arflare compare --metric tss")
    return True


def compare(registry, *, metric: str, split: str, experiments: Sequence[str] | None, top: int | None, fmt: str) -> str:
    """Rank runs of the registry's project by ``metric`` on ``split``."""
    from arflare.metrics import compare_metric_key
    from registry.compare import MetricColumn, compare_runs, render

    try:
        key, higher = compare_metric_key(metric, split)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    headline = _headline_columns()
    columns = [MetricColumn(label, f"{split}/{name}") for label, name in headline]
    records = open_tracker(registry).search(experiments=experiments)
    if not records:
        scope = f" for {', '.join(experiments)}" if experiments else ""
        return f"no runs yet{scope}; start one with: arflare run NAME"
    label = next((lab for lab, name in headline if f"{split}/{name}" == key), metric)
    table = compare_runs(records, metric=MetricColumn(label, key), higher_is_better=higher, columns=columns, top=top)
    return render(table, fmt)


def _headline_columns() -> list[tuple[str, str]]:
    """(column label, metric name) of the headline metrics, from the metric table."""
    from arflare.metrics import headline_metrics

    return [(metric.column, metric.name) for metric in headline_metrics()]


def _headline(metrics) -> str:
    return "  ".join(f"test {label} {metrics[f'test/{name}']:.3f}" for label, name in _headline_columns()
                     if f"test/{name}" in metrics) or "no test metrics"


def _attach_log_file(path: Path) -> list[logging.Handler]:
    """Send the run's log to ``path`` (uploaded as log.txt) and its epoch summaries to the terminal."""
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.setFormatter(logging.Formatter("  %(message)s"))
    logger = logging.getLogger("arflare")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # libraries' root handlers must not print our lines twice
    for handler in (to_file, to_terminal):
        logger.addHandler(handler)
    return [to_file, to_terminal]


def _detach(handlers: list[logging.Handler]) -> None:
    logger = logging.getLogger("arflare")
    for handler in handlers:
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True
