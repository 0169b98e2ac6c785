"""``arflare sweep``: an experiment's ``search:`` block run as an Optuna study.

The generic plumbing (study, storage, worker processes, parent/child MLflow runs, pruning)
is in ``registry.sweep``; this module only says what one trial is: resolve the experiment
with the trial's values as ``--set`` overrides, and train it.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from arflare.errors import UsageError


def sweep(registry, name: str, *, profile: str | None, sets: Sequence[str], trials: int | None, workers: int,
          storage: str | None, best: bool) -> int:
    """Run (or resume) the study of experiment ``name``, or print its best trial with ``best``."""
    from registry.sweep import best_trial, default_storage, run_sweep
    from registry.tracking import default_artifact_location, resolve_tracking_uri
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own one line per trial is enough

    entry = registry.experiments.get(name)
    if entry is None or entry.search is None:
        with_search = [n for n, e in registry.experiments.items() if e.search is not None]
        raise UsageError(f"experiment {name!r} has no search: block; experiments with one: {', '.join(with_search) or 'none'}")
    runs = registry.expand(name, profile=profile, sets=sets)  # validates profile and sets before any compute
    if len(runs) != 1:
        raise UsageError(f"{name} expands to {len(runs)} runs (seeds/grid); a sweep needs exactly one base run")
    study_name = name if profile is None else f"{name}@{profile}"
    folder = registry.path.parent
    storage = storage or default_storage(folder / "mlruns", study_name)
    if best:
        return _print_best(best_trial(study_name=study_name, storage=storage, search=entry.search), name, profile, sets)
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    from arflare.commands import prepare_data

    prepare_data(runs[0].spec)  # generate/index once here, not in every worker
    # K workers on C cores: each trains with C/K threads instead of all fighting for every core.
    threads = max(1, (os.cpu_count() or 1) // workers)
    trial_fn = functools.partial(run_trial, registry_path=str(registry.path), name=name, profile=profile,
                                 sets=tuple(sets), objective=entry.search.objective, threads=threads)
    tracker_kwargs = {"tracking_uri": resolve_tracking_uri(folder), "experiment": registry.project,
                      "artifact_location": default_artifact_location(folder)}
    tags = {"arflare.experiment": name, "arflare.group": study_name, "arflare.profile": profile or ""}
    result = run_sweep(study_name=study_name, storage=storage, search=entry.search, trial_fn=trial_fn,
                       tracker_kwargs=tracker_kwargs, run_prefix=study_name, tags=tags, n_trials=trials,
                       workers=workers, progress=True)
    print(f"study {study_name}: {result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed; "
          f"parent run {result.parent_run_id}")
    if result.best_value is not None:
        print(f"best {entry.search.objective} = {result.best_value:.4f} with {dict(result.best_params)}")
        print("reproduce: " + reproduce_command(name, profile, sets, result.best_params))
    return 0


def run_trial(params: Mapping[str, object], reporter, *, registry_path: str, name: str, profile: str | None,
              sets: Sequence[str], objective: str, threads: int | None = None) -> float:
    """One trial, run in a worker process: the experiment with ``params`` set, trained and scored."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    from arflare.commands import input_fingerprint, prepare_data
    from arflare.spec import RunSpec
    from arflare.trainer import train
    from registry.loader import flatten, load_registry

    registry = load_registry(registry_path, RunSpec, seed_key="train.seed")
    trial_sets = [*sets, *(f"{key}={json.dumps(value)}" for key, value in params.items())]
    (run,) = registry.expand(name, profile=profile, sets=trial_sets)
    index = prepare_data(run.spec, progress=False)
    from registry.tracking import git_state

    commit, dirty = git_state(Path(registry_path).parent)
    reporter.set_tags({"arflare.data_fingerprint": index.fingerprint, "arflare.git_commit": commit or "unknown",
                       "arflare.git_dirty": str(dirty).lower()})
    # the sampled values are already logged under their own keys; log the rest of the spec beside them
    reporter.log_params({k: v for k, v in flatten(run.spec.model_dump(mode="json")).items() if k not in params})
    reporter.log_dict(run.spec.model_dump(mode="json"), "spec.yaml")
    with tempfile.TemporaryDirectory(prefix="arflare-trial-") as tmp:
        result = train(run.spec, index=index, reporter=reporter, out_dir=Path(tmp), progress=False, run_name=run.name)
    # Tagged only now: a pruned or failed trial must not count as a finished run of this spec.
    reporter.set_tags({"arflare.spec_hash": run.spec.spec_hash(input_fingerprint(run.spec, index))})
    return float(result.metrics[objective])


def check_search_blocks(registry) -> None:
    """Check every ``search:`` block against the run spec, so ``validate`` catches what trials would hit.

    Each searched key must exist and accept the range's ends and every choice; the objective must
    be a per-epoch validation metric the trainer reports.

    Raises:
        RegistryError: listing every problem found.
    """
    from arflare.metrics import METRICS
    from registry.errors import Problem, RegistryError

    objectives = {"val/loss", *(f"val/{name}" for name in METRICS)}
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


def reproduce_command(name: str, profile: str | None, sets: Sequence[str], params: Mapping[str, object]) -> str:
    """The ``arflare run`` command that trains a trial's configuration again."""
    parts = ["arflare", "run", name, *(["--profile", profile] if profile else [])]
    for item in [*sets, *(f"{key}={json.dumps(value)}" for key, value in params.items())]:
        parts += ["--set", item]
    return shlex.join(parts)


def _print_best(best, name: str, profile: str | None, sets: Sequence[str]) -> int:
    if best is None:
        print(f"no completed trial yet for {name}; start with: arflare sweep {name}", file=sys.stderr)
        return 1
    params, value, number = best
    print(f"best trial #{number}: value {value:.4f}")
    for key, val in params.items():
        print(f"  {key} = {val}")
    print("reproduce: " + reproduce_command(name, profile, sets, params))
    return 0

