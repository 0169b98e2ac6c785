"""The shipped registry validates, and the spec rejects combinations that cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from arflare.spec import RunSpec
from registry.loader import load_registry
from registry.search_spec import SearchSpec

REPO = Path(__file__).resolve().parents[2]
SEED_EXPERIMENTS = ("exp1_basic_reg", "exp2_basic_aug", "exp3_flow_reg", "exp4_flow_aug", "exp5_atto_mixup")


@pytest.fixture(scope="module")
def shipped():
    return load_registry(REPO / "experiments.yaml", RunSpec, seed_key="train.seed", search_schema=SearchSpec)


def test_every_shipped_experiment_and_profile_validates(shipped):
    assert set(SEED_EXPERIMENTS) <= set(shipped.experiments)
    for name in shipped.experiments:
        assert shipped.experiments[name].description.strip()
        for profile in (None, *shipped.profiles):
            for run in shipped.expand(name, profile=profile):
                assert isinstance(run.spec, RunSpec)


def test_seed_experiments_say_what_the_issue_says(shipped):
    exp1 = shipped.resolve("exp1_basic_reg")
    assert (exp1.model.backbone, exp1.data.image_size, exp1.model.drop_rate, exp1.model.drop_path_rate) == ("convnext_tiny", 112, 0.3, 0.2)
    assert (exp1.train.weight_decay, exp1.data.balance, exp1.data.keep_negative_prob, exp1.train.loss) == (0.05, "prob", 0.25, "bce")
    exp2 = shipped.resolve("exp2_basic_aug")
    assert exp2.data.augment.hflip and exp2.data.augment.rotate_deg > 0 and exp2.data.augment.scale > 0
    assert shipped.resolve("exp3_flow_reg").variant == "two_stream"
    exp4 = shipped.resolve("exp4_flow_aug")
    assert exp4.variant == "two_stream" and exp4.data.augment.hflip
    exp5 = shipped.resolve("exp5_atto_mixup")
    assert exp5.model.backbone == "convnext_atto" and exp5.train.mixup.mixup_alpha == 0.8 and exp5.train.mixup.cutmix_alpha > 0
    assert exp5.train.loss == "ce" and exp5.train.label_smoothing == 0.1
    assert shipped.experiments["sweep_reg_mixup"].search is not None


def test_relative_data_root_resolves_beside_the_registry(shipped):
    assert shipped.resolve("exp1_basic_reg").data.root == REPO / "data" / "synthetic" / "magnetograms"


@pytest.mark.parametrize(("patch", "message"), [
    ({"data": {"input_mode": "flow", "flow_root": "f"}, "train": {"mixup": {"mixup_alpha": 0.8}}}, "not supported yet"),
    ({"data": {"input_mode": "sequence"}, "model": {"variant": "two_stream"}}, "cannot read"),
    ({"data": {"input_mode": "flow"}}, "needs data.flow_root"),
    ({"data": {"offsets_min": [0, 60]}}, "future"),
    ({"model": {"pretrained": True}}, "pretrained_path"),
    ({"train": {"batch_size": 7, "mixup": {"cutmix_alpha": 1.0}}}, "even"),
])
def test_impossible_combinations_are_rejected_with_a_fix(patch, message):
    with pytest.raises(ValidationError, match=message):
        RunSpec.model_validate(patch)


def test_spec_is_frozen_and_strict():
    spec = RunSpec()
    with pytest.raises(ValidationError):
        spec.train.lr = 1.0
    with pytest.raises(ValidationError, match="extra"):
        RunSpec.model_validate({"train": {"learning_rate": 1e-3}})


def test_spec_hash_tracks_what_changes_results():
    base = RunSpec()
    assert base.spec_hash("fp") == RunSpec().spec_hash("fp")
    assert base.spec_hash("fp") != base.spec_hash("other-data")
    assert base.spec_hash("fp") != RunSpec.model_validate({"train": {"lr": 3e-4}}).spec_hash("fp")
    # worker count changes speed, not results; where the shards lie is not what they are
    assert base.spec_hash("fp") == RunSpec.model_validate({"data": {"num_workers": 2}}).spec_hash("fp")
    assert base.spec_hash("fp") == RunSpec.model_validate({"data": {"root": "/scratch/elsewhere"}}).spec_hash("fp")


def test_every_field_is_described():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation)
    walk(RunSpec)
