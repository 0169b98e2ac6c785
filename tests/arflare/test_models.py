"""Every variant trains end to end on tiny inputs; backbone names and local weights behave."""

from __future__ import annotations

import logging

import pytest
import timm
import torch

from arflare.models import VARIANTS, build_model, check_backbone
from arflare.models.temporal import AttentionPool

BACKBONE = "resnet10t"  # among the smallest timm CNNs; builds in ~0.1 s
S = 32


def first_conv_grad(model: torch.nn.Module) -> torch.Tensor:
    """Gradient of the backbone's first convolution (resnet10t: conv1.0)."""
    return model.backbone.get_submodule(model.backbone.pretrained_cfg["first_conv"]).weight.grad


def train_step(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(inputs)
    logits.sum().backward()
    return logits


@pytest.mark.parametrize(("in_chans", "num_outputs"), [(1, 1), (3, 2)])
def test_single_forward_backward(in_chans, num_outputs):
    model = build_model(backbone=BACKBONE, in_chans=in_chans, num_outputs=num_outputs, drop_rate=0.1)
    logits = train_step(model, {"image": torch.randn(2, in_chans, S, S)})
    assert logits.shape == (2, num_outputs)
    assert first_conv_grad(model).abs().sum() > 0


def test_single_accepts_a_second_backbone_family_with_drop_path():
    model = build_model(backbone="convnext_atto", in_chans=1, drop_path_rate=0.1)
    logits = train_step(model, {"image": torch.randn(2, 1, S, S)})
    assert logits.shape == (2, 1)
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("in_chans", [1, 2])
def test_two_stream_uses_image_and_flow(in_chans):
    model = build_model(backbone=BACKBONE, variant="two_stream", in_chans=in_chans, num_outputs=2,
                        flow_channels=2, drop_rate=0.2)
    logits = train_step(model, {"image": torch.randn(2, in_chans, S, S), "flow": torch.randn(2, 2, S, S)})
    assert logits.shape == (2, 2)
    assert first_conv_grad(model).abs().sum() > 0
    assert model.flow_encoder.blocks[0][0].weight.grad.abs().sum() > 0


def test_two_stream_without_flow_names_the_missing_key():
    model = build_model(backbone=BACKBONE, variant="two_stream")
    with pytest.raises(KeyError, match="flow"):
        model({"image": torch.randn(2, 1, S, S)})


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_temporal_encodes_every_frame(pool):
    model = build_model(backbone=BACKBONE, variant="temporal", temporal_pool=pool)
    frames = torch.randn(2, 3, 1, S, S)
    logits = train_step(model, {"image": frames})
    assert logits.shape == (2, 1)
    assert first_conv_grad(model).abs().sum() > 0
    model.eval()
    with torch.no_grad():
        changed = frames.clone()
        changed[:, 0] = torch.randn(2, 1, S, S)  # the oldest frame alone changes the answer
        assert not torch.allclose(model({"image": frames}), model({"image": changed}))


def test_attention_pool_starts_as_mean_and_learns_weights():
    pool = AttentionPool(4)
    feats = torch.randn(2, 3, 4)
    torch.testing.assert_close(pool(feats), feats.mean(dim=1))
    pool(feats).pow(2).sum().backward()
    assert pool.query.grad.abs().sum() > 0


def test_temporal_rejects_a_single_frame_with_advice():
    model = build_model(backbone=BACKBONE, variant="temporal")
    with pytest.raises(ValueError, match="sequence"):
        model({"image": torch.randn(2, 1, S, S)})


def test_diff_attention_gates_frame_features_by_the_difference():
    torch.manual_seed(0)
    model = build_model(backbone=BACKBONE, variant="diff_attention", in_chans=1, num_outputs=2)
    image = torch.randn(2, 2, 64, 64)  # 64 px: a 2x2 feature map for attention to act on
    logits = train_step(model, {"image": image})
    assert logits.shape == (2, 2)
    assert first_conv_grad(model).abs().sum() > 0
    assert model.attention.net[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        other_diff = image.clone()
        other_diff[:, 1] = torch.randn(2, 64, 64)
        assert not torch.allclose(model({"image": image}), model({"image": other_diff}))


def test_diff_attention_wants_frame_and_difference_channels():
    model = build_model(backbone=BACKBONE, variant="diff_attention", in_chans=1)
    with pytest.raises(ValueError, match=r"\(B, 2, S, S\)"):
        model({"image": torch.randn(2, 1, S, S)})


@pytest.mark.parametrize(("variant", "channels"), [("single", 1), ("diff_attention", 2)])
def test_channels_last_gives_the_same_logits(variant, channels):
    torch.manual_seed(0)
    model = build_model(backbone=BACKBONE, variant=variant).eval()
    image = torch.randn(2, channels, 64, 64)
    with torch.no_grad():
        expected = model({"image": image})
        model = model.to(memory_format=torch.channels_last)
        got = model({"image": image.to(memory_format=torch.channels_last)})
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_unknown_backbone_suggests_close_timm_names():
    with pytest.raises(ValueError, match=r"Unknown timm backbone 'convnext_tinny'; did you mean .*convnext_tiny"):
        check_backbone("convnext_tinny")
    with pytest.raises(ValueError, match="convnext_tiny"):
        build_model(backbone="convnext_tinny")
    check_backbone("resnet18.a1_in1k")  # pretrained tags are valid names


def test_unknown_variant_lists_variants():
    with pytest.raises(ValueError, match="Unknown model variant 'twostream'; available: " + ", ".join(VARIANTS)):
        build_model(backbone=BACKBONE, variant="twostream")


def test_drop_path_on_a_backbone_without_it_says_so():
    with pytest.raises(ValueError, match="'vgg11' does not support drop_path_rate=0.1"):
        build_model(backbone="vgg11", drop_path_rate=0.1)


def test_pretrained_without_a_path_refuses_to_download():
    with pytest.raises(ValueError, match="pretrained_path"):
        build_model(backbone=BACKBONE, pretrained=True)


def test_pretrained_path_round_trip(tmp_path):
    source = build_model(backbone=BACKBONE, in_chans=1, num_outputs=1)
    path = tmp_path / "weights.pth"
    torch.save(source.backbone.state_dict(), path)
    loaded = build_model(backbone=BACKBONE, in_chans=1, num_outputs=1, pretrained_path=path)
    for (name, want), (_, got) in zip(source.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(got, want, msg=name)


def test_pretrained_path_adapts_rgb_weights_and_skips_another_head(tmp_path, caplog):
    rgb = timm.create_model(BACKBONE, in_chans=3, num_classes=10)
    path = tmp_path / "rgb.pth"
    torch.save({"state_dict": rgb.state_dict()}, path)  # a training checkpoint wrapper
    with caplog.at_level(logging.WARNING):
        model = build_model(backbone=BACKBONE, variant="single", in_chans=1, num_outputs=1, pretrained_path=path)
    conv = model.backbone.conv1[0].weight
    torch.testing.assert_close(conv, rgb.conv1[0].weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.backbone.layer4[0].conv1.weight, rgb.layer4[0].conv1.weight)
    assert "fc.weight" in caplog.text  # the 10-class head did not fit and was reported


def test_pretrained_path_loads_a_whole_model_checkpoint_into_a_variant(tmp_path):
    source = build_model(backbone=BACKBONE, variant="temporal")
    path = tmp_path / "model.pth"
    torch.save(source.state_dict(), path)  # keys prefixed "backbone.", plus a head
    loaded = build_model(backbone=BACKBONE, variant="two_stream", pretrained_path=path)
    torch.testing.assert_close(loaded.backbone.conv1[0].weight, source.backbone.conv1[0].weight)


def test_pretrained_path_from_another_architecture_fails(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="No tensor"):
        build_model(backbone=BACKBONE, pretrained_path=path)


def _reversed_time(mode: str, frames: torch.Tensor, flow: torch.Tensor) -> tuple[dict, dict]:
    """Inputs of ``mode`` built from ``frames`` (B, T, 1, S, S), newest first, and from the same frames in reverse."""
    from arflare.data.modes import INPUT_MODES
    from arflare.tables import resolve

    compose = resolve(INPUT_MODES[mode].compose)

    if mode == "flow":  # one frame and the motion into it; reversed: the previous frame, moving back
        return {"image": frames[:, 0], "flow": flow}, {"image": frames[:, 1], "flow": -flow}
    steps = 2 if mode == "diff" else frames.shape[1]
    forward = torch.stack([compose(item[:steps], None)["image"] for item in frames])
    backward = torch.stack([compose(item[:steps].flip(0), None)["image"] for item in frames])
    return {"image": forward}, {"image": backward}


# Every input mode that sees more than the present frame, with every variant that can read it.
HISTORY_MODES = [("sequence", "temporal", 1, "mean"), ("sequence", "temporal", 1, "attention"),
                 ("multiscale", "single", 3, "mean"), ("diff", "diff_attention", 1, "mean"), ("diff", "single", 2, "mean"),
                 ("flow", "two_stream", 1, "mean")]


def test_the_history_modes_cover_every_input_mode_but_frame():
    from arflare.data.modes import INPUT_MODES

    assert {mode for mode, *_ in HISTORY_MODES} == set(INPUT_MODES) - {"frame"}


@pytest.mark.parametrize(("mode", "variant", "in_chans", "pool"), HISTORY_MODES)
def test_reversing_time_changes_the_output(mode, variant, in_chans, pool):
    """A model that cannot tell rising from falling flux cannot use what drives flares."""
    torch.manual_seed(0)
    model = build_model(backbone=BACKBONE, variant=variant, in_chans=in_chans, temporal_pool=pool).eval()
    frames = torch.randn(2, 3, 1, S, S)
    forward, backward = _reversed_time(mode, frames, torch.randn(2, 2, S, S))
    with torch.no_grad():
        difference = (model(forward) - model(backward)).abs().max()
    assert difference > 1e-4, f"{mode}/{variant}: reversed frames give the same logits (max diff {difference:.1e})"
