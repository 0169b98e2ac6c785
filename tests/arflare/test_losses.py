"""Losses agree with torch/torchvision references, accept Mixup targets and train."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torchvision.ops import sigmoid_focal_loss

from arflare.losses import LOSSES, build_loss, build_mixup, num_outputs_for, positive_probability

Z = torch.tensor([-2.0, -0.5, 0.3, 1.7, 3.0])
Y = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])
SOFT = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5], [0.05, 0.95], [0.6, 0.4]])


def two_logits(z: torch.Tensor) -> torch.Tensor:
    """The 2-logit form with the same positive probability: softmax(0, z)[1] = sigmoid(z)."""
    return torch.stack([torch.zeros_like(z), z], dim=1)


def test_num_outputs_and_unknown_name():
    assert [num_outputs_for(name) for name in LOSSES] == [1, 2, 1]
    with pytest.raises(ValueError, match="Unknown loss 'bse'.*bce, ce, focal"):
        build_loss("bse")


def test_bce_matches_torch_on_hard_labels():
    loss = build_loss("bce")(Z[:, None], Y)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(Z, Y))


def test_bce_class_weights_are_a_weighted_mean():
    per_sample = F.binary_cross_entropy_with_logits(Z, Y, reduction="none")
    w = torch.where(Y == 1, 3.0, 0.5)
    loss = build_loss("bce", class_weights=(0.5, 3.0))(Z[:, None], Y)
    torch.testing.assert_close(loss, (w * per_sample).sum() / w.sum())


def test_label_smoothing_moves_bce_targets_towards_half():
    ls = 0.2
    loss = build_loss("bce", label_smoothing=ls)(Z[:, None], Y)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(Z, Y * 0.8 + 0.1))
    # A confident, correct prediction is penalised once targets are smoothed.
    confident = torch.tensor([[8.0]]), torch.tensor([1.0])
    assert build_loss("bce", label_smoothing=ls)(*confident) > 10 * build_loss("bce")(*confident)


def test_bce_reads_soft_targets_as_is():
    expected = F.binary_cross_entropy_with_logits(Z, SOFT[:, 1])
    # Mixup already smoothed soft targets: label_smoothing must not apply twice.
    torch.testing.assert_close(build_loss("bce", label_smoothing=0.3)(Z[:, None], SOFT), expected)


def test_ce_matches_torch_on_hard_labels():
    logits = torch.stack([Z, -Z * 0.5 + 0.2], dim=1)
    loss = build_loss("ce", class_weights=(1.0, 4.0), label_smoothing=0.1)(logits, Y)
    expected = F.cross_entropy(logits, Y.long(), weight=torch.tensor([1.0, 4.0]), label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)


def test_ce_soft_targets_match_timm_soft_target_ce():
    logits = torch.stack([Z, -Z * 0.5 + 0.2], dim=1)
    torch.testing.assert_close(build_loss("ce")(logits, SOFT), SoftTargetCrossEntropy()(logits, SOFT))


@pytest.mark.parametrize("target", [Y, SOFT], ids=["hard", "soft"])
def test_bce_equals_ce_on_the_same_probabilities(target):
    weights = (0.7, 2.5)
    bce = build_loss("bce", class_weights=weights)(Z[:, None], target)
    ce = build_loss("ce", class_weights=weights)(two_logits(Z), target)
    torch.testing.assert_close(bce, ce)


@pytest.mark.parametrize(("target", "positive"), [(Y, Y), (SOFT, SOFT[:, 1])], ids=["hard", "soft"])
def test_focal_matches_torchvision(target, positive):
    loss = build_loss("focal", focal_alpha=0.3, focal_gamma=2.0)(Z[:, None], target)
    torch.testing.assert_close(loss, sigmoid_focal_loss(Z, positive, alpha=0.3, gamma=2.0, reduction="mean"))


def test_focal_rejects_class_weights():
    with pytest.raises(ValueError, match="focal_alpha"):
        build_loss("focal", class_weights=(1.0, 2.0))


def test_wrong_logit_width_says_how_to_fix():
    with pytest.raises(ValueError, match=r"num_outputs_for\('bce'\)"):
        build_loss("bce")(two_logits(Z), Y)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        build_loss("ce")(Z[:, None], Y)


def test_positive_probability_agrees_for_one_and_two_logits():
    one, two = positive_probability(Z[:, None]), positive_probability(two_logits(Z))
    assert one.shape == (5,)
    torch.testing.assert_close(one, torch.sigmoid(Z))
    torch.testing.assert_close(two, one)
    with pytest.raises(ValueError, match="got \\(5, 3\\)"):
        positive_probability(torch.zeros(5, 3))


def test_build_mixup_off_when_both_alphas_zero():
    assert build_mixup(mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1) is None


@pytest.mark.parametrize("name", LOSSES)
def test_mixup_soft_targets_feed_every_loss(name):
    torch.manual_seed(0)
    mixup = build_mixup(mixup_alpha=0.8, cutmix_alpha=0.0, prob=1.0, switch_prob=0.0, label_smoothing=0.0)
    images = torch.randn(4, 1, 8, 8)
    labels = torch.tensor([0, 0, 1, 1])  # timm pairs i with 3 - i: every pair mixes both classes
    mixed, target = mixup(images, labels)
    assert target.shape == (4, 2)
    torch.testing.assert_close(target.sum(dim=1), torch.ones(4))
    assert ((target > 0) & (target < 1)).all()
    logits = torch.randn(4, num_outputs_for(name), requires_grad=True)
    loss = build_loss(name)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSSES)
def test_loss_falls_on_a_separable_problem(name):
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    y = (x[:, 0] + x[:, 1] > 0).float()
    model = torch.nn.Linear(2, num_outputs_for(name))
    loss_fn = build_loss(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(60):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    accuracy = ((positive_probability(model(x)) > 0.5).float() == y).float().mean()
    assert accuracy > 0.85  # focal alpha=0.25 shifts the 0.5 threshold a little
