"""``arflare check``, and the gates in front of ``arflare run``: run, record and reuse preflight checks.

A check is a tracked run of kind ``check`` (a row of :data:`arflare.record.KINDS`) that goes
through the run lifecycle like every other kind. Its identity is the gates hash (data
fingerprint + ``gates:`` section + input pipeline; tag ``arflare.gates_hash``), and it holds the
gate report (``gates/report.json``, ``gates/report.md``) and figures (``gates/samples.png``).
``arflare run`` reuses the newest FINISHED check of the same identity, so a second run costs one
query, refuses to train (exit 2, no training run) when a gate FAILed unless
``--allow-failed-gates``, and tags every training run with the check it relied on.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from arflare import record
from arflare.errors import UsageError

KIND = "check"  # a row of arflare.record.KINDS


@dataclass(frozen=True)
class CheckOutcome:
    """The verdict a training run relies on: a check just run, or an earlier identical one.

    Attributes:
        run_id: the check run.
        status: PASS, WARN or FAIL (the worst gate).
        failed: names of the gates that FAILed.
        reused: True when an earlier FINISHED check was reused instead of running the gates.
        table: the PASS/WARN/FAIL table (a one-line verdict for a reused check).
    """

    run_id: str
    status: str
    failed: tuple[str, ...]
    reused: bool
    table: str

    def tags(self, *, allowed: bool) -> dict[str, str]:
        """Tags of a training run gated by this check: the check, its verdict, the failures let through."""
        tags = {record.TAG_CHECK_RUN: self.run_id, record.TAG_GATES_STATUS: self.status}
        if allowed and self.failed:
            tags[record.TAG_FAILED_GATES_ALLOWED] = ",".join(self.failed)
        return tags


def record_check(tracker, plan, index, *, progress: bool = True):
    """Run the gates of ``plan.spec`` on ``index`` inside a tracked ``check`` run; return the report.

    Args:
        tracker: The project's ``registry.tracking.Tracker``.
        plan: A :class:`arflare.lifecycle.RunPlan` of kind ``check`` (:func:`check_plan`).
        index: The indexed data (leakage has already been refused there).
        progress: Progress bars for the decoding passes.
    """
    from arflare.gates import gates_hash, run_gates
    from arflare.lifecycle import Identity, open_run

    key = gates_hash(plan.spec, index.fingerprint)
    identity = Identity(data_fingerprint=index.fingerprint, spec_hash=key, config_hash=key)
    with open_run(tracker, plan, identity) as tracked:
        handle = tracked.handle
        handle.set_tags({record.TAG_GATES_HASH: key})
        folder = tracked.folder / record.GATES
        report = replace(run_gates(plan.spec, index, folder, progress=progress), check_run_id=handle.run_id)
        report.write(folder)  # again, now that it knows its run
        for path in sorted(folder.iterdir()):
            handle.log_artifact(path, record.GATES)
        handle.log_metrics({f"gates/{g.name}_auc": g.details["auc"] for g in report.gates  # shortcut, physics_baseline
                            if not math.isnan(g.details.get("auc", math.nan))})
        handle.set_tags({record.TAG_GATES_STATUS: report.status, record.TAG_GATES_FAILED: ",".join(report.failed)})
    return report


def check_plan(registry, run, *, profile: str | None):
    """The lifecycle plan of a check of ``run`` (one planned run of an experiment)."""
    from arflare.lifecycle import RunPlan

    return RunPlan(kind=KIND, run_name=f"check/{run.experiment}", experiment=run.experiment,
                   group=f"check:{run.group}", spec=run.spec, profile=profile, registry_dir=registry.path.parent,
                   description=f"preflight gates of {run.experiment}'s data and input pipeline")


def check_experiment(registry, name: str, *, profile: str | None, sets) -> int:
    """``arflare check NAME``: run and record the gates of each distinct data input; 1 when a gate FAILs."""
    from arflare.commands import open_tracker
    from arflare.gates import gates_hash
    from arflare.lifecycle import prepare_data

    tracker = open_tracker(registry)
    seen, code = set(), 0
    for run in registry.expand(name, profile=profile, sets=sets):
        index = prepare_data(run.spec)
        key = gates_hash(run.spec, index.fingerprint)
        if key in seen:  # seeds and grid values that touch neither data nor gates share one check
            continue
        seen.add(key)
        report = record_check(tracker, check_plan(registry, run, profile=profile), index)
        print(report.table())
        print(f"report: {record.GATES}/report.md and {record.GATES}/report.json of check run {report.check_run_id} "
              f"(arflare ui)")
        code = max(code, report.exit_code)
    return code


def gate_runs(tracker, registry, plans, index_of, *, profile: str | None, allow_failed: bool) -> dict[str, CheckOutcome]:
    """The check of every planned run (one per distinct gates hash), all before any training starts.

    Args:
        plans: the planned runs (``registry.loader.Run``).
        index_of: run -> its indexed data.

    Returns:
        Run name -> the :class:`CheckOutcome` it relies on.

    Raises:
        UsageError: a gate FAILed and ``allow_failed`` is off.
    """
    from arflare.gates import gates_hash

    by_key: dict[str, CheckOutcome] = {}
    outcomes = {}
    for run in plans:
        index = index_of(run)
        key = gates_hash(run.spec, index.fingerprint)
        if key not in by_key:
            by_key[key] = gates_before_run(tracker, registry, run, index, profile=profile, allow_failed=allow_failed)
        outcomes[run.name] = by_key[key]
    return outcomes


def gates_before_run(tracker, registry, run, index, *, profile: str | None, allow_failed: bool) -> CheckOutcome:
    """The check a training run relies on: the newest FINISHED identical one, else a new one.

    Raises:
        UsageError: a gate FAILed and ``allow_failed`` is off (exit 2; no training run is created).
    """
    from arflare.gates import gates_hash

    key = gates_hash(run.spec, index.fingerprint)

    waited = []

    def say_waiting() -> None:
        waited.append(True)
        print(f"check {run.experiment}: another process is running these gates; waiting to reuse its check",
              file=sys.stderr, flush=True)

    # Runs started together (seeds, a job array) would each run the same gates; under the lock the
    # first records the check and the rest find it.
    with tracker.exclusive(f"gates-{key}", on_wait=say_waiting):
        found = tracker.search(filter_string=f"tags.`{record.TAG_GATES_HASH}` = '{key}' and attributes.status = 'FINISHED'")
        if found:
            latest = found[-1]
            failed = tuple(filter(None, latest.tags.get(record.TAG_GATES_FAILED, "").split(",")))
            status = latest.tags.get(record.TAG_GATES_STATUS, "FAIL" if failed else "PASS")
            outcome = CheckOutcome(latest.run_id, status, failed, reused=True,
                                   table=f"gates of {run.experiment}: {status}" + (f" ({', '.join(failed)} FAILed)" if failed else ""))
        else:
            if waited:
                print(f"check {run.experiment}: the other process ended without a finished check; running the gates here",
                      file=sys.stderr, flush=True)
            print(f"check {run.experiment}: preflight gates before training (arflare check {run.experiment})",
                  file=sys.stderr, flush=True)
            report = record_check(tracker, check_plan(registry, run, profile=profile), index)
            outcome = CheckOutcome(report.check_run_id, report.status, report.failed, reused=False, table=report.table())
            if not outcome.failed:
                print(outcome.table, file=sys.stderr)
    if outcome.failed and not allow_failed:
        raise UsageError(f"{run.name}: preflight gate(s) {', '.join(outcome.failed)} FAILed, so nothing was trained.\n"
                         f"{outcome.table}\nRead {record.GATES}/report.md of check run {outcome.run_id} (arflare ui), "
                         f"fix the data, or rerun with --allow-failed-gates (the run is then tagged "
                         f"{record.TAG_FAILED_GATES_ALLOWED})")
    print(f"gates {outcome.status} for {run.name}: check run {outcome.run_id}"
          f"{' (reused: same data, gates and inputs)' if outcome.reused else ''}", file=sys.stderr, flush=True)
    return outcome
