"""``arflare run``: expand, check, prepare data once, pass the preflight gates, then skip, resume or start each run.

For each planned run the newest tracked run of the same spec hash decides what happens:
FINISHED -> skip (``--force`` trains again); KILLED or STALE -> resume it in place from its
last completed epoch (``--restart`` starts a fresh run instead); RUNNING with a live
heartbeat -> skip, it is training elsewhere (``--force`` starts another); FAILED -> a fresh
run, never a silent resume (a NaN loss would come back). This is a training command: torch
is imported at the top.

Under torchrun (``arflare run NAME --nproc N``) every process runs this; rank 0 alone prepares
the data first, opens the tracking store and decides, and the other ranks follow its decision
(:mod:`arflare.distributed`). A failed run then ends the command on every rank.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from arflare import record
from arflare.checking import gate_runs
from arflare.checkpoints import LAST_FILE, CheckpointOptions
from arflare.commands import headline, open_tracker
from arflare.ddp_checks import check_plans
from arflare.distributed import Ranks, start, stop
from arflare.errors import UsageError
from arflare.lifecycle import (
    Identity,
    RunPlan,
    identify,
    local_folder,
    open_run,
    preflight,
    prepare_data,
)
from arflare.lineage import check_sources, plan_hard_negatives, resolve_hard_negatives
from arflare.source_runs import SourceNotFound, pin_sources, pinned_source
from arflare.trainer import train
from registry.loader import Registry, Run
from registry.tracking import STALE, RunRecord, Tracker


@dataclass(frozen=True)
class RunOptions:
    """How ``arflare run`` treats existing runs and checkpoints."""

    force: bool = False
    restart: bool = False
    dry_run: bool = False
    allow_failed_gates: bool = False  # train even when a preflight gate FAILs (the run is tagged)
    checkpoints: CheckpointOptions = CheckpointOptions()
    only: str | None = None  # train just this expanded run (a scheduler job's share)
    takeover: bool = False  # a RUNNING run of the same spec is ours: a requeued job whose process was preempted
    tags: Mapping[str, str] = field(default_factory=dict)  # set on the run (arflare.job_id)


def run_experiments(registry: Registry, names: Sequence[str], *, profile: str | None, sets: Sequence[str],
                    options: RunOptions = RunOptions()) -> int:
    """Expand, prepare data, then skip, resume or train each run; exit code 1 if any run failed."""
    plans = [run for name in names for run in registry.expand(name, profile=profile, sets=sets)]
    if options.only is not None:
        plans = [run for run in plans if run.name == options.only]
        if not plans:
            raise UsageError(f"{', '.join(names)} has no run named {options.only!r} with these --set values")
    for spec in {run.spec for run in plans}:
        preflight(spec)
    if options.dry_run:
        check_sources(registry, plans, profile=profile)
        return _dry_run(plans, registry, profile=profile)
    ranks = start([run.spec.train.device for run in plans])
    try:
        return _run_all(registry, plans, profile=profile, options=options, ranks=ranks)
    finally:
        stop(ranks)


def _run_all(registry: Registry, plans: list[Run], *, profile: str | None, options: RunOptions, ranks: Ranks) -> int:
    check_plans(plans, ranks.world_size)
    if not ranks.is_main:
        return _follow(plans, options=options, ranks=ranks)
    check_sources(registry, plans, profile=profile)  # a missing source fails here with the command that creates it
    indexes = _prepare_all(plans)  # every data root is checked before the first run starts
    ranks.barrier()  # the data exists and its index is cached: the other ranks load it now
    tracker = open_tracker(registry)
    # A hybrid's source is resolved to a run id and fetched now: a missing one stops before any run starts.
    plans = [replace(run, spec=pin_sources(run.spec, tracker=tracker, profile=profile,
                                           data_fingerprint=indexes[_data_key(run.spec)].fingerprint))
             for run in plans]  # fmt: skip
    gates = gate_runs(tracker, registry, plans, lambda run: indexes[_data_key(run.spec)], profile=profile,
                      allow_failed=options.allow_failed_gates)  # a FAILed gate stops here, before any training run
    failed = 0
    for run in plans:
        index = indexes[_data_key(run.spec)]
        hard = resolve_hard_negatives(tracker, run.spec, registry_dir=registry.path.parent, profile=profile,
                                      known=list(registry.experiments))
        identity = identify(run.spec, index, extra=hard.fingerprint if hard else "")
        plan = RunPlan(kind="train", run_name=run.name, experiment=run.experiment, group=run.group, spec=run.spec,
                       description=registry.experiments[run.experiment].description, profile=profile,
                       registry_dir=registry.path.parent)
        action, run_id = _decide(tracker, plan, identity, options)
        ranks.share((action, hard))
        if action != "skip":
            ok = _train_one(tracker, plan, identity, index, run_id if action == "resume" else None, options,
                            hard=hard, ranks=ranks, gate_tags=gates[run.name].tags(allowed=options.allow_failed_gates))
            failed += not ok
            if not ok and ranks.active:  # the process group may be broken: stop every rank here
                say(f"stopping: a run failed under {ranks.world_size} processes; the runs after it were not started")
                break
    return 1 if failed else 0


def _follow(plans: Sequence[Run], *, options: RunOptions, ranks: Ranks) -> int:
    """A rank other than 0: train each run rank 0 decides to train, never touching the tracking store."""
    ranks.barrier()  # rank 0 has prepared (maybe generated) the data and cached its index
    indexes = _prepare_all(plans, progress=False)
    for run in plans:
        action, hard = ranks.share(None)
        if action == "skip":
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="arflare-rank") as folder, ranks.failures():
                train(run.spec, index=indexes[_data_key(run.spec)], reporter=_Silent(), out_dir=Path(folder),
                      resume=action == "resume", checkpoints=options.checkpoints, progress=False, hard=hard,
                      ranks=ranks)
        except Exception as exc:  # rank 0 records the run FAILED with this error; one line here is enough
            say(f"rank {ranks.rank}: {run.name} stopped: {type(exc).__name__}: {exc}")
            return 1
    return 0


class _Silent:
    """The reporter of ranks other than 0: rank 0 reports the same numbers."""

    def log_metrics(self, metrics, *, step=None) -> None:
        pass

    def log_artifact(self, local_path, artifact_path=None) -> None:
        pass

    def log_dict(self, obj, artifact_file) -> None:
        pass


Action = Literal["skip", "new", "resume"]


def _decide(tracker: Tracker, plan: RunPlan, identity: Identity, options: RunOptions) -> tuple[Action, str | None]:
    """What to do with a planned run, given the newest tracked run of the same spec (see the module doc)."""
    latest = tracker.find_latest(spec_hash=identity.spec_hash)
    if latest is None:
        return "new", None
    name, rid = plan.run_name, latest.run_id
    if latest.status == "FINISHED" and not options.force:
        say(f"skip {name}: identical spec and data already FINISHED as run {rid} ({headline(latest.metrics)}); "
            "use --force to run again")
        return "skip", rid
    if latest.status == "RUNNING" and options.takeover:  # its heartbeat may still look fresh
        say(f"note {name}: run {rid} is RUNNING, left so by this job's own preempted process; resuming it")
    elif latest.status == "RUNNING" and not options.force:
        say(f"skip {name}: an identical run {rid} is RUNNING (heartbeat {_age(latest)} ago); it is training "
            "elsewhere. Use --force to start another, or arflare runs to see it")
        return "skip", rid
    if latest.status == "FAILED":
        say(f"note {name}: the last identical run {rid} FAILED ({latest.tags.get(record.TAG_ERROR, 'see its traceback')}); "
            "starting a fresh run, not resuming it")
        return "new", None
    if latest.status not in ("KILLED", STALE, "RUNNING") or options.restart or options.force:
        return "new", None
    if not record.kind(latest.tags.get(record.TAG_KIND, "train")).resumable:
        return "new", None
    state = local_folder(tracker.tracking_uri, plan.registry_dir, rid) / record.CHECKPOINTS / LAST_FILE
    epochs = len(tracker.metric_steps(rid, "train/loss"))
    if not state.is_file() and epochs:
        say(f"note {name}: run {rid} ({latest.status}) cannot be resumed here: its state {state} is missing; "
            "starting a fresh run")
        return "new", None
    say(f"resume {name}: run {rid} was {latest.status} with {epochs} of {plan.spec.train.epochs} epochs logged; "
        "continuing it in place after its last saved epoch (--restart starts a fresh run)")
    return "resume", rid


def _train_one(tracker: Tracker, plan: RunPlan, identity: Identity, index, resume_id: str | None,
               options: RunOptions, *, hard=None, ranks: Ranks = Ranks(), gate_tags: dict[str, str] | None = None) -> bool:
    say(f"run {plan.run_name}" + (f" in {ranks.world_size} processes (DDP)" if ranks.active else ""))
    try:
        with open_run(tracker, plan, identity, resume_run_id=resume_id) as tracked, ranks.failures():
            tracked.handle.set_tags(gate_tags or {})
            if ranks.active:
                tracked.handle.set_tags({record.TAG_WORLD_SIZE: str(ranks.world_size)})
            if options.tags:
                tracked.handle.set_tags(options.tags)
            if hard is not None:
                tracked.handle.set_tags(hard.tags)
                if not tracked.resumed:
                    tracked.handle.log_params(hard.params)
            result = train(plan.spec, index=index, reporter=tracked.handle, out_dir=tracked.folder,
                           resume=tracked.resumed, checkpoints=options.checkpoints, run_name=plan.run_name, hard=hard,
                           ranks=ranks)
    except KeyboardInterrupt:
        say(f"run {plan.run_name} KILLED; its state is kept: arflare run {plan.experiment} resumes it")
        raise
    except Exception as exc:  # the tracker has marked the run FAILED and stored the traceback
        say(f"run {plan.run_name} FAILED: {type(exc).__name__}: {exc}\n  traceback: artifact "
            f"{record.ARTIFACT_TRACEBACK} of the run (arflare ui)")
        return False
    print(f"done {plan.run_name}: run {tracked.run_id}\n  {headline(result.metrics)}\n  threshold {result.threshold:.4f} "
          f"(chosen on val), best epoch {result.best_epoch}/{result.epochs_run}\n"
          "  look: arflare ui  |  arflare compare --metric tss")
    return True


def _age(run: RunRecord) -> str:
    return "unknown" if run.heartbeat is None else f"{time.time() - run.heartbeat:.0f} s"


def _data_key(spec) -> tuple:
    return spec.data.root, spec.data.flow_input, spec.data.strict


def _prepare_all(plans: Sequence[Run], *, progress: bool = True) -> dict:
    """One index per distinct data input, shared by the runs that read it."""
    indexes = {}
    for run in plans:
        if _data_key(run.spec) not in indexes:
            indexes[_data_key(run.spec)] = prepare_data(run.spec, progress=progress)
    return indexes


def _dry_run(plans: Sequence[Run], registry: Registry, *, profile: str | None) -> int:
    """List what would run with the spec hash a real run would get; index existing data, generate and mine nothing.

    A run with hard negatives resolves its sources and finds their mine runs as a real run does,
    so its hash includes the source runs and the table digest; a source not mined yet is named,
    and the hash is then said to be unknown (it depends on the table mining would produce). A
    hybrid's ``model.embedding_from`` is resolved to its source run id (nothing fetched), as a real
    run pins it; a source not trained yet leaves the hash unknown too.
    """
    missing = [run for run in plans if run.spec.data.generate_if_missing and not run.spec.data.root.exists()]
    indexes = _prepare_all([run for run in plans if run not in missing])
    tracker = functools.cache(lambda: open_tracker(registry))  # opened once, only for runs with sources
    for run in plans:
        if run in missing:
            print(f"would run {run.name}  data {run.spec.data.root} (missing: would be generated)")
            continue
        index = indexes[_data_key(run.spec)]
        extra, lines, spec = "", [], run.spec
        if spec.data.hard_negatives.enabled:
            extra, found = plan_hard_negatives(tracker(), spec, profile=profile, known=list(registry.experiments))
            lines = [f"hard negatives: {line}" for line in found]
        if spec.model.kind == "hybrid":
            try:
                spec, _ = pinned_source(spec, tracker=tracker(), data_fingerprint=index.fingerprint, profile=profile)
            except SourceNotFound as exc:
                lines.append(f"embedding source: {exc}")
                spec = None
        if extra is None:
            where = "spec hash not known yet: it includes the digest of the hard negatives still to be mined"
        elif spec is None:
            where = f"spec hash not known yet: it includes the run id of {run.spec.model.embedding_from}'s best run"
        else:
            where = f"spec {identify(spec, index, extra=extra).spec_hash}"
        print(f"would run {run.name}  {where}  data {index.root} ({len(index.table)} samples)")
        for line in lines:
            print(f"  {line}")
    return 0


def say(message: str) -> None:
    """A status line for the user (stderr: stdout stays for results)."""
    print(message, file=sys.stderr, flush=True)
