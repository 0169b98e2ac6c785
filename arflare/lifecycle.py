"""The one lifecycle every tracked run goes through, whatever its kind.

preflight (checks the schema cannot make) -> prepare data -> open the run (tags, params,
``spec.yaml``, data fingerprint, git state, description, version, heartbeat; MLflow's own
description, source and user fields; the data as an MLflow dataset input) -> body ->
artifacts (``log.txt``) -> final status. ``arflare run`` (kind ``train``) and sweep trials
(kind ``trial``) both use it; a new kind is a row in ``arflare.record.KINDS`` and a body.

Each run owns a local folder beside the tracking store (``<store>/local/<run_id>/``), not a
temporary one: the body keeps its resume state there, so it survives a SIGKILL. The folder
is removed when the run ends FINISHED or FAILED and kept when it ends KILLED (resumable).
This module imports neither torch nor mlflow; the body brings them.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from arflare import record
from arflare.errors import UsageError
from arflare.source_runs import pinned_lineage
from arflare.spec import RunSpec
from registry.loader import flatten
from registry.tracking import Tracker, git_state, heartbeat

log = logging.getLogger("arflare")


@dataclass(frozen=True)
class RunPlan:
    """What a tracked run is, before it starts.

    Attributes:
        kind: A name from ``arflare.record.KINDS``.
        run_name: Display name (``exp2/seed=1``, ``sweep@smoke/trial=3``).
        experiment: The registry experiment it comes from.
        group: ``experiment[@profile]``.
        spec: The resolved spec.
        description: The experiment's one-line description.
        profile: The profile applied, or None.
        registry_dir: Folder of ``experiments.yaml`` (git state, default store).
    """

    kind: str
    run_name: str
    experiment: str
    group: str
    spec: RunSpec
    description: str
    profile: str | None
    registry_dir: Path


@dataclass(frozen=True)
class Identity:
    """What a run reads and computes, by content: drives skip, resume and grouping."""

    data_fingerprint: str  # the shards' content fingerprint
    spec_hash: str  # spec (minus location/speed fields) + inputs
    config_hash: str  # spec_hash without train.seed: seeds of one configuration share it


@dataclass(frozen=True)
class TrackedRun:
    """What the body of a run gets: where to report, where to keep local files, whether it resumes."""

    handle: object  # a registry.tracking.RunHandle or a sweep's TrialReporter
    folder: Path
    resumed: bool

    @property
    def run_id(self) -> str:
        return self.handle.run_id


def preflight(spec: RunSpec) -> None:
    """Checks the schema cannot make (they need timm or the machine); run before anything is tracked.

    Raises:
        UsageError: naming every problem found.
    """
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


def prepare_data(spec: RunSpec, *, progress: bool = True):
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


def input_fingerprint(spec: RunSpec, index) -> str:
    """What a run reads, by content: the shards' fingerprint and the pretrained weights' digest."""
    if spec.model.pretrained_path is None:
        return index.fingerprint
    digest = hashlib.sha256()
    with open(spec.model.pretrained_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{index.fingerprint}+weights:{digest.hexdigest()[:16]}"


def identify(spec: RunSpec, index, *, extra: str = "") -> Identity:
    """The run's identity: data fingerprint, spec hash and config hash (the spec hash with seed 0).

    ``extra`` names further inputs by content (the hard negatives' source runs and table digest).
    """
    inputs = input_fingerprint(spec, index) + (f"+{extra}" if extra else "")
    unseeded = spec.model_copy(update={"train": spec.train.model_copy(update={"seed": 0})})
    return Identity(data_fingerprint=index.fingerprint, spec_hash=spec.spec_hash(inputs),
                    config_hash=unseeded.spec_hash(inputs))


def arflare_version() -> str:
    """The installed arflare version, or ``unknown`` when running from a bare checkout."""
    try:
        return metadata.version("arflare")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_tags(plan: RunPlan, identity: Identity, *, with_spec_hash: bool = True) -> dict[str, str]:
    """Every tag the lifecycle sets on a run of ``plan``."""
    kind = record.kind(plan.kind)  # unknown kinds fail here, before anything is tracked
    commit, dirty = git_state(plan.registry_dir)
    tags = {record.TAG_KIND: plan.kind, kind.experiment_tag: plan.experiment, record.TAG_GROUP: plan.group,
            record.TAG_CONFIG_HASH: identity.config_hash, record.TAG_DATA_FINGERPRINT: identity.data_fingerprint,
            record.TAG_PROFILE: plan.profile or "", record.TAG_GIT_COMMIT: commit or "unknown",
            record.TAG_GIT_DIRTY: str(dirty).lower(), record.TAG_DESCRIPTION: plan.description,
            record.TAG_VERSION: arflare_version(),
            # MLflow's own fields, so its UI's Description, Source and User columns are filled
            record.TAG_NOTE: plan.description, record.TAG_SOURCE_TYPE: "LOCAL", record.TAG_USER: _user(),
            record.TAG_SOURCE_NAME: f"arflare {kind.command} {plan.experiment}"}
    if with_spec_hash:
        tags[record.TAG_SPEC_HASH] = identity.spec_hash
    tags.update(pinned_lineage(plan.spec))  # a hybrid's source run; nothing for other kinds
    if commit:
        tags[record.TAG_SOURCE_COMMIT] = commit
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "unknown"


def log_data_input(handle, plan: RunPlan, identity: Identity) -> None:
    """Record the data root as the run's MLflow dataset input, digest = the data fingerprint."""
    root = Path(plan.spec.data.root)
    handle.log_dataset(name=root.name, digest=identity.data_fingerprint, source_uri=root.resolve().as_uri(),
                       context=record.DATASET_CONTEXT)


def local_folder(tracking_uri: str, registry_dir: Path, run_id: str) -> Path:
    """The run's local folder: beside a sqlite store, else under ``<registry_dir>/mlruns/local``."""
    uri = tracking_uri
    base = Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).parent if uri.startswith("sqlite:///") \
        else Path(registry_dir) / "mlruns"
    return base / "local" / run_id


@contextmanager
def open_run(tracker: Tracker, plan: RunPlan, identity: Identity, *,
             resume_run_id: str | None = None) -> Iterator[TrackedRun]:
    """Start a new tracked run of ``plan`` (or reopen ``resume_run_id``) and live through it.

    The tracker records the final status: FINISHED, FAILED (with traceback) or KILLED.
    """
    tags = run_tags(plan, identity)
    if resume_run_id is None:
        context = tracker.start_run(run_name=plan.run_name, tags=tags)
    else:
        previous = tracker.get_run(resume_run_id).tags.get(record.TAG_RESUMED, "0")
        context = tracker.resume_run(resume_run_id, tags={**tags, record.TAG_RESUMED: str(int(previous) + 1)})
    with context as handle:
        if resume_run_id is None:
            log_data_input(handle, plan, identity)
        folder = local_folder(tracker.tracking_uri, plan.registry_dir, handle.run_id)
        with living(handle, plan, folder=folder, new=resume_run_id is None) as run:
            yield run


@contextmanager
def adopt_run(handle, plan: RunPlan, identity: Identity, *, tracking_uri: str,
              logged: Mapping[str, object] = {}) -> Iterator[TrackedRun]:
    """Live through a run someone else opened and will end (a sweep's child run for a trial).

    The spec hash is tagged only when the body returns: a pruned or failed trial must not
    count as a finished run of its spec.
    """
    handle.set_tags(run_tags(plan, identity, with_spec_hash=False))
    log_data_input(handle, plan, identity)
    folder = local_folder(tracking_uri, plan.registry_dir, handle.run_id)
    with living(handle, plan, folder=folder, new=True, logged=logged) as run:
        yield run
    handle.set_tags({record.TAG_SPEC_HASH: identity.spec_hash})


@contextmanager
def living(handle, plan: RunPlan, *, folder: Path, new: bool, logged: Mapping[str, object] = {}) -> Iterator[TrackedRun]:
    """The part every kind shares once its run is open: record the spec, log, beat, clean up.

    Args:
        handle: The open run (a RunHandle, or a sweep's TrialReporter).
        plan: The run's plan.
        folder: The run's local folder (created; removed unless a run of a resumable kind is killed).
        new: Log params and ``spec.yaml`` (a resumed run has them already).
        logged: Params already logged under these keys (a trial's sampled values).
    """
    spec_json = plan.spec.model_dump(mode="json")
    if new:
        handle.log_params({k: v for k, v in flatten(spec_json).items() if k not in logged})
        handle.log_dict(spec_json, record.ARTIFACT_SPEC)
    folder.mkdir(parents=True, exist_ok=True)
    log_file = folder / record.ARTIFACT_LOG
    resumable = record.KINDS[plan.kind].resumable
    handlers = _attach_log_file(log_file, terminal=plan.kind == "train")
    killed = False
    try:
        with heartbeat(handle.beat):
            yield TrackedRun(handle=handle, folder=folder, resumed=not new)
    except (KeyboardInterrupt, SystemExit):
        killed = True
        raise
    finally:
        _detach(handlers)
        _try(lambda: handle.log_artifact(log_file), "upload log.txt")
        if not (killed and resumable):  # nothing will resume it: keep no checkpoints
            shutil.rmtree(folder, ignore_errors=True)


def _try(action, what: str) -> None:
    try:
        action()
    except Exception:  # a busy store must not end a run that is training fine
        log.warning("could not %s; the run goes on", what, exc_info=True)


def _attach_log_file(path: Path, *, terminal: bool) -> list[logging.Handler]:
    """Send the run's log to ``path`` (uploaded as log.txt; appended to on resume) and, for train runs, to the terminal."""
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers: list[logging.Handler] = [to_file]
    if terminal:
        to_terminal = logging.StreamHandler(sys.stderr)
        to_terminal.setFormatter(logging.Formatter("  %(message)s"))
        handlers.append(to_terminal)
    logger = logging.getLogger("arflare")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # libraries' root handlers must not print our lines twice
    for handler in handlers:
        logger.addHandler(handler)
    return handlers


def _detach(handlers: list[logging.Handler]) -> None:
    logger = logging.getLogger("arflare")
    for handler in handlers:
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True
