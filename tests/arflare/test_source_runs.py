"""SOURCE resolution and the hard-negative spec section."""

from __future__ import annotations

import pytest

from pydantic import ValidationError

from arflare.source_runs import SourceNotFound, resolve_source
from arflare.spec import HardNegativesSpec, RunSpec
from registry.tracking import Tracker


@pytest.fixture()
def tracker(tmp_path):
    return Tracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="p",
                   artifact_location=(tmp_path / "artifacts").as_uri())


def _run(tracker, experiment, metrics, *, monitor="tss", profile="", kind="train", fail=False, model="cnn", data="fp"):
    tags = {"arflare.experiment": experiment, "arflare.profile": profile, "arflare.kind": kind,
            "arflare.data_fingerprint": data}
    params = {"eval": {"monitor": monitor}, "model": {"kind": model}}
    try:
        with tracker.start_run(run_name=experiment, tags=tags, params=params) as handle:
            handle.log_metrics(metrics)
            if fail:
                raise RuntimeError("boom")
    except RuntimeError:
        pass
    return handle.run_id


def test_experiment_name_means_its_best_finished_training_run_of_the_profile(tracker):
    _run(tracker, "exp1", {"val/tss": 0.4})
    best = _run(tracker, "exp1", {"val/tss": 0.6})
    _run(tracker, "exp1", {"val/tss": 0.9}, fail=True)  # failed: never a source
    _run(tracker, "exp1", {"val/tss": 0.95}, profile="smoke")  # another profile
    _run(tracker, "exp1", {"val/tss": 0.99}, kind="mine")  # not a training run
    physics = _run(tracker, "exp1", {"val/tss": 0.98}, model="physics")  # no CNN checkpoint to mine or embed
    assert resolve_source(tracker, "exp1").run_id == best
    assert resolve_source(tracker, best).run_id == best
    loss_best = _run(tracker, "exp2", {"val/loss": 0.2}, monitor="loss")
    _run(tracker, "exp2", {"val/loss": 0.5}, monitor="loss")
    assert resolve_source(tracker, "exp2").run_id == loss_best  # loss is minimised
    with pytest.raises(SourceNotFound, match="model.kind physics"):
        resolve_source(tracker, physics)


def test_a_data_fingerprint_restricts_the_source_to_runs_on_that_data(tracker):
    other = _run(tracker, "exp1", {"val/tss": 0.9}, data="other")
    same = _run(tracker, "exp1", {"val/tss": 0.5}, data="fp")
    assert resolve_source(tracker, "exp1").run_id == other  # mining scores the caller's data: any source data
    assert resolve_source(tracker, "exp1", data_fingerprint="fp").run_id == same
    with pytest.raises(SourceNotFound, match="trained on other data"):
        resolve_source(tracker, other, data_fingerprint="fp", field="model.embedding_from")
    with pytest.raises(SourceNotFound, match=r"model.embedding_from 'exp1' has no FINISHED run on this data "
                                             r"\(fingerprint new\).*create it with: arflare run exp1"):
        resolve_source(tracker, "exp1", data_fingerprint="new", field="model.embedding_from")


def test_missing_source_says_which_command_creates_it(tracker):
    with pytest.raises(SourceNotFound, match="create it with: arflare run exp1 --profile smoke"):
        resolve_source(tracker, "exp1", profile="smoke")
    with pytest.raises(SourceNotFound, match="did you mean 'exp1_basic_reg'"):
        resolve_source(tracker, "exp1_basic", known=["exp1_basic_reg", "exp2_basic_aug"])
    with pytest.raises(SourceNotFound, match="not in the store"):
        resolve_source(tracker, "0" * 32)


def test_hard_negative_spec_reads_from_and_checks_the_rule():
    spec = RunSpec.model_validate({"data": {"hard_negatives": {"from": ["exp1_basic_reg"]}}})
    assert spec.data.hard_negatives.from_ == ("exp1_basic_reg",) and spec.data.hard_negatives.weight == 5.0
    assert spec.model_dump(mode="json")["data"]["hard_negatives"]["from"] == ["exp1_basic_reg"]
    with pytest.raises(ValidationError, match="not both"):
        HardNegativesSpec.model_validate({"from": ["a"], "min_score": 0.5, "top_fraction": 0.1})


def test_spec_hash_is_unchanged_without_hard_negatives_and_changes_with_them():
    plain = RunSpec()
    off = RunSpec.model_validate({"data": {"hard_negatives": {"weight": 3.0}}})
    assert off.spec_hash("fp") == plain.spec_hash("fp")  # off: the section does not enter the hash
    on = RunSpec.model_validate({"data": {"hard_negatives": {"from": ["exp1"]}}})
    assert on.spec_hash("fp") != plain.spec_hash("fp")
    assert on.spec_hash("fp+hardneg:aaaa") != on.spec_hash("fp+hardneg:bbbb")
