"""Sweeps on a real sqlite MLflow store and an Optuna journal file, with a toy trial function."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import optuna
import pydantic
import pytest
import yaml
from optuna.trial import TrialState

from registry.sweep import (
    ParamSpec,
    PrunerSpec,
    SearchSpec,
    TrialReporter,
    best_trial,
    default_storage,
    open_study,
    run_sweep,
)
from registry.tracking import Tracker

STUDY = "toy_sweep@fast"  # the CLI names studies <experiment>@<profile>
PREFIX = "toy/sweep"
INTERRUPT_AT = 0.5  # the toy raises KeyboardInterrupt for exactly this drop rate


def toy_trial(params: Mapping[str, object], reporter: TrialReporter) -> float:
    """A 3-"epoch" quadratic peaking at drop_rate 0.25; high drop rates misbehave on purpose.

    [0.85, 0.9): reports a NaN objective; [0.9, 0.95): returns NaN; >= 0.95: raises.
    """
    x = float(params["model.drop_rate"])
    if x == INTERRUPT_AT:
        raise KeyboardInterrupt
    score = 1.0 - (x - 0.25) ** 2
    for epoch in range(3):
        value = math.nan if 0.85 <= x < 0.9 and epoch == 1 else score * (epoch + 1) / 3
        reporter.log_metrics({"val/score": value, "train/loss": 1.0 - value}, step=epoch)
        reporter.report_objective(value, step=epoch)  # the trainer's validation hook
    if x >= 0.95:
        raise RuntimeError("toy training diverged")
    return math.nan if x >= 0.9 else score


def _search(**overrides: object) -> SearchSpec:
    block = {
        "objective": "val/score",
        "direction": "maximize",
        "n_trials": 4,
        "sampler": {"name": "random", "seed": 0},
        "params": {"model.drop_rate": {"type": "float", "low": 0.0, "high": 1.0}},
    }
    return SearchSpec.model_validate({**block, **overrides})


@pytest.fixture(scope="module")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite store with its schema in place (creating one takes seconds), no runs."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # opening the store builds its schema
    return path


@pytest.fixture
def store(tmp_path: Path, empty_mlflow_db: Path) -> dict:
    shutil.copyfile(empty_mlflow_db, tmp_path / "mlflow.db")
    return {
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "experiment": "sweeps",
        "artifact_location": (tmp_path / "artifacts").as_uri(),
    }


def _sweep(tmp_path: Path, store: dict, search: SearchSpec, **kwargs: object):
    return run_sweep(
        study_name=STUDY, storage=default_storage(tmp_path, STUDY), search=search, trial_fn=toy_trial,
        tracker_kwargs=store, run_prefix=PREFIX, tags={"arflare.experiment": "toy"}, **kwargs,
    )


def _study(tmp_path: Path, search: SearchSpec) -> optuna.Study:
    return open_study(study_name=STUDY, storage=default_storage(tmp_path, STUDY), search=search)


def _enqueue(tmp_path: Path, search: SearchSpec, *drop_rates: float) -> None:
    study = _study(tmp_path, search)
    for x in drop_rates:
        study.enqueue_trial({"model.drop_rate": x})


def _runs(store: dict) -> tuple[list, list]:
    """Return (parent runs, child runs) of the store, oldest first."""
    runs = Tracker(**store).search()
    parents = [r for r in runs if "mlflow.parentRunId" not in r.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.tags]
    return parents, sorted(children, key=lambda r: int(r.tags["optuna.trial_number"]))


def test_two_workers_share_one_study_and_nest_runs_under_one_parent(tmp_path: Path, store: dict) -> None:
    result = _sweep(tmp_path, store, _search(params={"model.drop_rate": {"type": "float", "low": 0.0, "high": 0.8}}), workers=2)

    trials = _study(tmp_path, _search()).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    (parent,), children = _runs(store)
    assert parent.run_name == PREFIX and parent.status == "FINISHED"
    assert parent.tags["arflare.study"] == STUDY and parent.tags["arflare.experiment"] == "toy"
    assert [c.run_name for c in children] == [f"{PREFIX}/trial={n}" for n in range(4)]
    assert {c.tags["mlflow.parentRunId"] for c in children} == {parent.run_id}
    assert all(c.status == "FINISHED" and c.tags["arflare.trial_state"] == "COMPLETE" for c in children)
    assert [t.user_attrs["mlflow_run_id"] for t in trials] == [c.run_id for c in children]
    assert [float(c.params["model.drop_rate"]) for c in children] == [t.params["model.drop_rate"] for t in trials]
    assert all(c.metrics["val/score"] == pytest.approx(t.value) for c, t in zip(children, trials))
    assert (result.n_complete, result.n_pruned, result.n_failed) == (4, 0, 0)
    assert result.parent_run_id == parent.run_id


def test_rerun_resumes_to_the_total_and_reuses_the_parent(tmp_path: Path, store: dict) -> None:
    search = _search()
    _sweep(tmp_path, store, search, n_trials=4, progress=False)
    _sweep(tmp_path, store, search, n_trials=4, progress=False)
    assert len(_study(tmp_path, search).trials) == 4

    result = _sweep(tmp_path, store, search, n_trials=6, progress=False)

    trials = _study(tmp_path, search).trials
    parents, children = _runs(store)
    assert len(trials) == 6 and len(children) == 6 and len(parents) == 1
    assert result.parent_run_id == parents[0].run_id and parents[0].status == "FINISHED"
    # The seeded sampler draws a fresh stream per run of the command instead of replaying its first draws.
    assert len({t.params["model.drop_rate"] for t in trials}) == 6


def test_workers_are_started_only_for_trials_left(tmp_path: Path, store: dict, monkeypatch) -> None:
    import registry.sweep

    search = _search(n_trials=2)
    _sweep(tmp_path, store, search, progress=False)
    started = []
    monkeypatch.setattr(registry.sweep, "run_workers", lambda job, *, workers: started.append(workers))
    _sweep(tmp_path, store, search, workers=2)  # the total is reached: no process to start
    assert started == [] and len(_study(tmp_path, search).trials) == 2
    _sweep(tmp_path, store, search, n_trials=3, workers=4)  # one trial left: one worker
    assert started == [1]


def test_failing_and_nan_trials_fail_and_the_sweep_goes_on(tmp_path: Path, store: dict, capsys) -> None:
    search = _search()
    _enqueue(tmp_path, search, 0.97, 0.92, 0.87, 0.3)

    result = _sweep(tmp_path, store, search, progress=False)

    trials = _study(tmp_path, search).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3 + [TrialState.COMPLETE]
    _, children = _runs(store)
    assert [c.status for c in children] == ["FAILED"] * 3 + ["FINISHED"]
    assert [c.tags["arflare.trial_state"] for c in children] == ["FAIL"] * 3 + ["COMPLETE"]
    assert "toy training diverged" in children[0].tags["arflare.error"]
    assert "NonFiniteObjectiveError" in children[1].tags["arflare.error"]  # returned NaN
    assert "is nan at step 1" in children[2].tags["arflare.error"]  # reported NaN mid-training
    assert (result.n_complete, result.n_failed, result.best_value) == (1, 3, pytest.approx(1 - 0.05**2))
    failure_lines = [line for line in capsys.readouterr().err.splitlines() if " FAIL " in line]
    assert len(failure_lines) == 3 and "toy training diverged" in failure_lines[0]


def test_lagging_trial_is_pruned_and_its_run_finishes(tmp_path: Path, store: dict) -> None:
    search = _search(n_trials=2, pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    _enqueue(tmp_path, search, 0.25, 0.8)  # 0.8 scores clearly worse than 0.25 from the first epoch

    result = _sweep(tmp_path, store, search)

    trials = _study(tmp_path, search).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    _, children = _runs(store)
    assert children[1].status == "FINISHED" and children[1].tags["arflare.trial_state"] == "PRUNED"
    assert (result.n_complete, result.n_pruned) == (1, 1)


def test_repeated_params_are_not_trained_again(tmp_path: Path, store: dict) -> None:
    search = _search(n_trials=2)
    _enqueue(tmp_path, search, 0.3, 0.3)

    _sweep(tmp_path, store, search)

    first, second = _study(tmp_path, search).trials
    assert second.state == TrialState.COMPLETE and second.value == first.value
    _, children = _runs(store)
    assert children[1].tags["arflare.duplicate_of"] == "0"
    assert "val/score" not in children[1].metrics  # the toy never ran for it


def test_best_trial_is_reported_and_recorded_on_the_parent(tmp_path: Path, store: dict) -> None:
    search = _search(n_trials=3)
    storage = default_storage(tmp_path, STUDY)
    assert best_trial(study_name=STUDY, storage=storage, search=search) is None
    _enqueue(tmp_path, search, 0.1, 0.25, 0.6)

    result = _sweep(tmp_path, store, search)

    assert best_trial(study_name=STUDY, storage=storage, search=search) == ({"model.drop_rate": 0.25}, 1.0, 1)
    (parent,), children = _runs(store)
    assert result.best_run_id == children[1].run_id
    assert result.best_params == {"model.drop_rate": 0.25} and result.best_value == 1.0
    assert parent.tags["arflare.best_trial"] == "1" and parent.tags["best.model.drop_rate"] == "0.25"
    assert parent.metrics["best_value"] == 1.0


def test_ctrl_c_kills_the_parent_and_the_interrupted_trial_is_redone(tmp_path: Path, store: dict) -> None:
    search = _search(n_trials=2)
    _enqueue(tmp_path, search, 0.2, INTERRUPT_AT)
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path, store, search)
    (parent,), children = _runs(store)
    assert parent.status == "KILLED" and children[1].status == "KILLED"

    _sweep(tmp_path, store, search)

    states = [t.state for t in _study(tmp_path, search).trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    (parent,), _ = _runs(store)
    assert parent.status == "FINISHED"


def test_the_documented_search_block_validates() -> None:
    block = yaml.safe_load("""
        objective: val/tss
        direction: maximize
        n_trials: 20
        sampler: {name: tpe, seed: 0}
        pruner: {name: median, n_startup_trials: 2, n_warmup_steps: 1}
        params:
          model.drop_rate: {type: float, low: 0.0, high: 0.5}
          train.weight_decay: {type: float, low: 1.0e-3, high: 0.3, log: true}
          train.mixup.cutmix_alpha: {type: categorical, choices: [0.0, 1.0]}
          train.epochs: {type: int, low: 1, high: 3}
    """)
    search = SearchSpec.model_validate(block)
    assert search.params["train.mixup.cutmix_alpha"].choices == (0.0, 1.0)
    assert search.pruner.n_warmup_steps == 1
    assert SearchSpec.model_validate(search.model_dump()) == search  # `arflare show` output reads back


@pytest.mark.parametrize(
    ("param", "hint"),
    [
        ({"type": "float", "low": 0.5, "high": 0.1}, "low < high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "needs low > 0"),
        ({"type": "categorical", "choices": []}, "non-empty 'choices'"),
        ({"type": "categorical", "choices": [1], "low": 0}, "remove ['low']"),
        ({"type": "int", "low": 0.5, "high": 3}, "whole low/high/step"),
        ({"type": "float", "low": 0, "high": 1, "scale": "log"}, "scale"),
    ],
)
def test_bad_param_specs_are_rejected_with_a_hint(param: dict, hint: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=hint.replace("[", r"\[").replace("]", r"\]")):
        ParamSpec.model_validate(param)


def test_a_pruner_option_the_pruner_does_not_read_is_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="does not read"):
        PrunerSpec(name="hyperband", n_warmup_steps=2)


@pytest.mark.parametrize("name", ["two words", "it's", "a/b"])
def test_study_names_that_cannot_name_a_file_or_tag_are_rejected(tmp_path: Path, store: dict, name: str) -> None:
    with pytest.raises(ValueError, match="drop spaces and the characters"):
        run_sweep(study_name=name, storage=default_storage(tmp_path, "s"), search=_search(), trial_fn=toy_trial,
                  tracker_kwargs=store, run_prefix=PREFIX, tags={})


def test_a_trial_function_workers_cannot_receive_is_rejected_before_any_run(tmp_path: Path, store: dict) -> None:
    with pytest.raises(ValueError, match="cannot be sent to worker processes"):
        run_sweep(study_name=STUDY, storage=default_storage(tmp_path, STUDY), search=_search(),
                  trial_fn=lambda params, reporter: 0.0, tracker_kwargs=store, run_prefix=PREFIX, tags={}, workers=2)
    assert _runs(store) == ([], [])


def test_reopening_a_study_with_the_other_direction_fails(tmp_path: Path) -> None:
    _study(tmp_path, _search())
    with pytest.raises(ValueError, match="exists with direction maximize"):
        _study(tmp_path, _search(direction="minimize"))


def test_sweep_module_imports_neither_torch_nor_arflare() -> None:
    code = "import sys, registry.sweep; print(sorted({'torch', 'arflare'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "[]"


def test_logging_never_prunes_only_the_validation_hook_does():
    class Run:
        run_id = "r"

        def log_metrics(self, metrics, *, step=None):
            self.logged = (metrics, step)

    class Trial:
        def __init__(self):
            self.reports = []

        def report(self, value, step):
            self.reports.append((value, step))

        def should_prune(self):
            return True

    trial = Trial()
    reporter = TrialReporter(run=Run(), trial=trial, objective="val/score")
    reporter.log_metrics({"val/score": 0.5}, step=1)  # a logger records, never stops training
    assert trial.reports == []
    with pytest.raises(optuna.TrialPruned):
        reporter.report_objective(0.5, step=1)
    assert trial.reports == [(0.5, 1)]
