"""``arflare sweep``: an experiment's ``search:`` block run as an Optuna study.

The generic plumbing (study, storage, worker processes, parent/child MLflow runs) is in
``registry.sweep``; this module says what one trial is (the base spec with the trial's
typed values, through the run lifecycle as kind ``trial``) and which study a sweep belongs to.

A study is keyed by what it searches around: ``<experiment>[@profile]:<base hash>``, where
the base hash covers the base spec (searched keys and location fields left out), the data
fingerprint and the search block (``n_trials`` left out). A changed base starts a new study
and says so; trials of different bases never mix, and ``--best`` only ever answers for the
current base. The default journal sits beside the tracking store it belongs to.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import optuna

from arflare import record
from arflare.errors import UsageError
from arflare.lifecycle import RunPlan, adopt_run, identify, preflight, prepare_data
from arflare.running import say
from arflare.spec import RunSpec
from registry.loader import Registry, Run
from registry.search_spec import SearchSpec
from registry.study_storage import Heartbeat
from registry.sweep import TrialReporter, best_trial, default_storage, list_studies, run_sweep
from registry.tracking import default_artifact_location, resolve_tracking_uri


def sweep(registry: Registry, name: str, *, profile: str | None, sets: Sequence[str], trials: int | None,
          workers: int, storage: str | None, best: bool, heartbeat: Mapping[str, int] = {},
          tags: Mapping[str, str] = {}, allow_failed_gates: bool = False) -> int:
    """Run (or resume, or join) the study of experiment ``name`` for its current base, or print its best trial.

    The preflight gates of the base run first, as for ``arflare run`` (reused when an identical
    check exists): a FAILed gate stops the sweep before any trial (exit 2) unless
    ``allow_failed_gates``. ``heartbeat`` overrides fields of ``registry.study_storage.Heartbeat``
    (RDB storages only); ``tags`` go on every trial run this command starts (``arflare submit``'s job id).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own one line per trial is enough
    entry = registry.experiments.get(name)
    if entry is None or entry.search is None:
        with_search = [n for n, e in registry.experiments.items() if e.search is not None]
        raise UsageError(f"experiment {name!r} has no search: block; experiments with one: {', '.join(with_search) or 'none'}")
    runs = registry.expand(name, profile=profile, sets=sets)  # validates profile and sets before any compute
    if len(runs) != 1:
        raise UsageError(f"{name} expands to {len(runs)} runs (seeds/grid); a sweep needs exactly one base run")
    (base,) = runs
    preflight(base.spec)  # bad input (an unknown backbone) exits 2 before anything is tracked
    if base.spec.data.hard_negatives.enabled:
        raise UsageError(f"not supported yet: sweeping {name} with data.hard_negatives (trials would train without "
                         "them); sweep the experiment it extends, or remove data.hard_negatives.from")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    index = prepare_data(base.spec)  # generate/index once here, not in every worker
    if base.spec.model.kind == "hybrid":  # pin and fetch the source once, before any trial starts
        from arflare.commands import open_tracker
        from arflare.source_runs import pin_sources

        base = replace(base, spec=pin_sources(base.spec, tracker=open_tracker(registry), profile=profile,
                                              data_fingerprint=index.fingerprint))  # fmt: skip
    group = name if profile is None else f"{name}@{profile}"
    study_name = f"{group}:{base_hash(base.spec, entry.search, index)}"
    storage = storage or _default_storage(registry, group)
    _announce(group, study_name, storage)
    if best:
        return _print_best(best_trial(study_name=study_name, storage=storage, search=entry.search), name, profile, sets)
    gate_tags = _gates(registry, base, index, entry.search, profile=profile, allow_failed=allow_failed_gates)
    threads = max(1, (os.cpu_count() or 1) // workers)  # K workers on C cores: C/K threads each
    folder = registry.path.parent
    trial_fn = functools.partial(run_trial, base=base, description=entry.description, profile=profile,
                                 group=study_name, registry_dir=str(folder), objective=entry.search.objective,
                                 tracking_uri=resolve_tracking_uri(folder), threads=threads, tags=gate_tags)
    tracker_kwargs = {"tracking_uri": resolve_tracking_uri(folder), "experiment": registry.project,
                      "artifact_location": default_artifact_location(folder)}
    tags = {record.TAG_KIND: "sweep", record.TAG_EXPERIMENT: name, record.TAG_GROUP: study_name,
            record.TAG_PROFILE: profile or "", record.TAG_BASE_HASH: study_name.rsplit(":", 1)[1],
            record.TAG_DATA_FINGERPRINT: index.fingerprint, **gate_tags, **tags}
    try:
        beat = Heartbeat(**heartbeat)
    except ValueError as exc:
        raise UsageError(f"--heartbeat-interval/--grace-period: {exc}") from None
    result = run_sweep(study_name=study_name, storage=storage, search=entry.search, trial_fn=trial_fn,
                       tracker_kwargs=tracker_kwargs, run_prefix=group, tags=tags, n_trials=trials,
                       workers=workers, progress=True, heartbeat=beat)
    _remove_ended_trial_folders(registry, study_name)
    print(f"study {study_name}: {result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed; "
          f"parent run {result.parent_run_id}")
    if result.best_value is not None:
        print(f"best {entry.search.objective} = {result.best_value:.4f} with {dict(result.best_params)}")
        print("reproduce: " + reproduce_command(name, profile, sets, result.best_params))
    return 0


def _remove_ended_trial_folders(registry: Registry, study_name: str) -> None:
    """Delete the local folders (checkpoints, log) of the study's trials that have ended.

    A trial is never resumed (a dead worker's trial is retried as a new one), and a worker killed
    outright (SIGKILL, a node lost) leaves its trial's folder behind; once the sweep has marked that
    run ended, nothing will read the folder again. A run marked ended whose heartbeat is younger
    than the stale limit may still have a live process (a trial another sweep failed too early): its
    folder is left alone, as are those of running trials.
    """
    import shutil

    from arflare.commands import open_tracker
    from arflare.lifecycle import local_folder
    from registry.liveness import silent
    from registry.tracking import TERMINAL_STATUSES

    tracker = open_tracker(registry)
    for run in tracker.search(filter_string=f"tags.`{record.TAG_GROUP}` = '{study_name}'"):
        if run.tags.get(record.TAG_KIND) == "trial" and run.status in TERMINAL_STATUSES \
                and silent(run.heartbeat, stale_after_s=tracker.stale_after_s):
            shutil.rmtree(local_folder(tracker.tracking_uri, registry.path.parent, run.run_id), ignore_errors=True)


def _gates(registry: Registry, base: Run, index, search: SearchSpec, *, profile: str | None,
           allow_failed: bool) -> dict[str, str]:
    """The base's preflight check (run or reused; UsageError on a FAIL unless allowed) as the tags of the
    parent and every trial. Gates see the base's input pipeline; a search over it is said so."""
    from arflare.checking import gates_before_run
    from arflare.commands import open_tracker
    from arflare.gates import GATED_KEYS

    outcome = gates_before_run(open_tracker(registry), registry, base, index, profile=profile, allow_failed=allow_failed)
    searched = sorted(key for key in search.params if key in GATED_KEYS or key.startswith("gates."))
    if searched:
        say(f"note: the search varies {', '.join(searched)}, which the gates depend on; they were run at the base "
            f"values only (check every value with: arflare check {base.experiment} --set KEY=VALUE)")
    return outcome.tags(allowed=allow_failed)


def base_hash(spec: RunSpec, search: SearchSpec, index) -> str:
    """What a study searches around: the base spec with every searched key at one fixed value, plus the data and the search block."""
    canonical = apply_overrides(spec, {key: _anchor(param) for key, param in search.params.items()})
    block = search.model_dump(mode="json", exclude={"n_trials"})
    payload = json.dumps({"spec": canonical.spec_hash(identify(canonical, index).data_fingerprint), "search": block},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _anchor(param) -> object:
    return param.choices[0] if param.type == "categorical" else param.low


def apply_overrides(spec: RunSpec, values: Mapping[str, object]) -> RunSpec:
    """``spec`` with dotted keys set to typed ``values`` (validated again; no text round trip)."""
    dumped = spec.model_dump()
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = dumped
        for part in parents:
            node = node[part]
        node[leaf] = value
    return RunSpec.model_validate(dumped)


def _default_storage(registry: Registry, group: str) -> str:
    """The journal beside the tracking store: the sqlite database's folder, or announced for a server."""
    uri = resolve_tracking_uri(registry.path.parent)
    if uri.startswith("sqlite:///"):
        return default_storage(Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).parent, group)
    local = default_storage(registry.path.parent / "mlruns", group)
    say(f"note: runs go to {uri}, but the Optuna study stays in a journal on this machine ({local}); "
        "pass --storage URL (e.g. postgresql://...) to share one study between machines")
    return local


def _announce(group: str, study_name: str, storage: str) -> None:
    studies = [s for s in list_studies(storage) if s.startswith(f"{group}:")]
    if study_name in studies:
        return
    if studies:
        say(f"the base of {group} changed (spec, data or search block): starting study {study_name}; "
            f"earlier bases keep their own studies ({', '.join(studies)}) and are never mixed in")


def run_trial(params: Mapping[str, object], reporter: TrialReporter, *, base: Run, description: str,
              profile: str | None, group: str, registry_dir: str, objective: str, tracking_uri: str,
              threads: int | None = None, tags: Mapping[str, str] = {}) -> float:
    """One trial, run in a worker process: the base spec with ``params``, trained through the lifecycle.

    ``tags`` (the gates the sweep relied on) go on the trial's run.
    """
    from arflare.trainer import train

    with _torch_threads(threads):
        spec = apply_overrides(base.spec, params)
        index = prepare_data(spec, progress=False)
        run_name = f"{base.group}/trial={reporter.trial_number}"  # as registry.sweep names the child run
        plan = RunPlan(kind="trial", run_name=run_name, experiment=base.experiment, group=group, spec=spec,
                       description=description, profile=profile, registry_dir=Path(registry_dir))

        def prune(epoch: int, metrics: Mapping[str, float]) -> None:  # the validation hook
            reporter.report_objective(metrics[objective], step=epoch)

        reporter.set_tags(dict(tags))
        with adopt_run(reporter, plan, identify(spec, index), tracking_uri=tracking_uri, logged=params) as tracked:
            result = train(spec, index=index, reporter=reporter, out_dir=tracked.folder, progress=False, on_validation=prune,
                           run_name=run_name)
        return float(result.metrics[record.best_val_metric(objective.removeprefix("val/"))])


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """K workers on C cores train with C/K threads each; the caller's count comes back after (in-process trials)."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def reproduce_command(name: str, profile: str | None, sets: Sequence[str], params: Mapping[str, object]) -> str:
    """The ``arflare run`` command that trains a trial's configuration again."""
    parts = ["arflare", "run", name, *(["--profile", profile] if profile else [])]
    for item in [*sets, *(f"{key}={json.dumps(value)}" for key, value in params.items())]:
        parts += ["--set", item]
    return shlex.join(parts)


def _print_best(best, name: str, profile: str | None, sets: Sequence[str]) -> int:
    if best is None:
        say(f"no completed trial yet for {name} with this base; start with: arflare sweep {name}")
        return 1
    params, value, number = best
    print(f"best trial #{number}: value {value:.4f}")
    for key, val in params.items():
        print(f"  {key} = {val}")
    print("reproduce: " + reproduce_command(name, profile, sets, params))
    return 0
