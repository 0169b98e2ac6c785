"""Losses for the binary flare / no-flare task, hard or Mixup soft targets.

Every loss takes ``(logits, target)`` where ``target`` is either hard labels ``(B,)``
(0/1, float or int) or soft targets ``(B, 2)`` from ``timm.data.Mixup(num_classes=2)``
(already mixed and label-smoothed; their column 1 is the positive-class probability).
``bce`` and ``focal`` read one logit per sample, ``ce`` two (:func:`num_outputs_for`).

Class weights ``(w_neg, w_pos)`` weight each sample by its class (a soft target by its
mix of classes) and the mean is taken over the total weight, as torch's weighted
cross-entropy does; so only the ratio matters, like ``BCEWithLogitsLoss(pos_weight=
w_pos / w_neg)`` up to a constant, and ``bce`` on logit ``z`` equals ``ce`` on ``(0, z)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup
from torch import Tensor, nn

_NUM_OUTPUTS = {"bce": 1, "ce": 2, "focal": 1}
LOSSES = tuple(_NUM_OUTPUTS)


def num_outputs_for(loss: str) -> int:
    """Logits per sample the model must produce for ``loss`` (bce/focal: 1, ce: 2)."""
    _check_name(loss)
    return _NUM_OUTPUTS[loss]


def build_loss(name: str, *, class_weights: tuple[float, float] | None = None, focal_alpha: float = 0.25,
               focal_gamma: float = 2.0, label_smoothing: float = 0.0) -> nn.Module:
    """Build a loss module ``forward(logits, target) -> scalar``.

    Args:
        name: One of :data:`LOSSES`.
        class_weights: ``(w_neg, w_pos)`` for bce/ce; None weighs classes equally.
            focal weighs classes through ``focal_alpha`` instead.
        focal_alpha: Weight of the positive class in the focal loss (negatives get 1 - alpha).
        focal_gamma: Focal exponent; 0 turns focal into alpha-weighted BCE.
        label_smoothing: Applied to hard targets only (y -> y(1-ls) + ls/2); soft targets
            from Mixup are already smoothed, so pass 0 here when Mixup is on.

    Raises:
        ValueError: Unknown name or invalid option, echoing the value.
    """
    _check_name(name)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
    if class_weights is not None and (len(class_weights) != 2 or min(class_weights) <= 0):
        raise ValueError(f"class_weights must be two positive numbers (w_neg, w_pos); got {class_weights}")
    if name == "focal":
        if class_weights is not None:
            raise ValueError(f"focal loss weighs classes by focal_alpha; got class_weights={class_weights}, "
                             "set it to None")
        return SigmoidFocalLoss(alpha=focal_alpha, gamma=focal_gamma, label_smoothing=label_smoothing)
    loss_cls = BinaryCrossEntropy if name == "bce" else CrossEntropy
    return loss_cls(class_weights=class_weights, label_smoothing=label_smoothing)


class BinaryCrossEntropy(nn.Module):
    """Class-weighted BCE on one logit against the positive-class probability.

    Args:
        class_weights: ``(w_neg, w_pos)`` or None.
        label_smoothing: Smoothing of hard targets.
    """

    def __init__(self, *, class_weights: tuple[float, float] | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("class_weights", torch.tensor(class_weights or (1.0, 1.0), dtype=torch.float32))
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Weighted mean BCE; ``logits`` (B, 1), ``target`` (B,) hard or (B, 2) soft."""
        z = _single_logit(logits, "bce")
        y = _positive_target(target, self.label_smoothing).to(z.dtype)
        w_neg, w_pos = self.class_weights
        # -log sigmoid(z) = softplus(-z): stable for large |z|.
        total = w_pos * y * F.softplus(-z) + w_neg * (1 - y) * F.softplus(z)
        return total.sum() / (w_pos * y + w_neg * (1 - y)).sum()


class CrossEntropy(nn.Module):
    """Two-class cross-entropy: torch's for hard labels, soft-target CE for Mixup targets.

    Args:
        class_weights: ``(w_neg, w_pos)`` or None.
        label_smoothing: Smoothing of hard targets (torch's ``label_smoothing``).
    """

    def __init__(self, *, class_weights: tuple[float, float] | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("weight", weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean CE; ``logits`` (B, 2), ``target`` (B,) hard or (B, 2) soft."""
        if logits.ndim != 2 or logits.shape[1] != 2:
            raise ValueError(f"ce needs logits of shape (B, 2); got {tuple(logits.shape)}. "
                             "Build the model with num_outputs=num_outputs_for('ce')")
        logits = logits.float()  # float32 even under autocast
        if _is_soft(target):
            # Normalised by the weight mass so one-hot targets give exactly torch's weighted CE.
            weighted = target.to(logits.dtype) * (1.0 if self.weight is None else self.weight)
            return -(weighted * F.log_softmax(logits, dim=1)).sum() / weighted.sum()
        _check_hard(target)
        return F.cross_entropy(logits, target.long(), weight=self.weight, label_smoothing=self.label_smoothing)


class SigmoidFocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017) on one logit; soft targets allowed.

    ``alpha_t (1 - p_t)^gamma BCE``, with ``p_t = p y + (1 - p)(1 - y)``, as in
    ``torchvision.ops.sigmoid_focal_loss``, averaged over the batch.

    Args:
        alpha: Weight of the positive class (negatives: 1 - alpha).
        gamma: Focusing exponent; larger down-weights easy samples more.
        label_smoothing: Smoothing of hard targets.
    """

    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or gamma < 0:
            raise ValueError(f"focal needs 0 <= alpha <= 1 and gamma >= 0; got alpha={alpha}, gamma={gamma}")
        self.alpha, self.gamma, self.label_smoothing = alpha, gamma, label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean focal loss; ``logits`` (B, 1), ``target`` (B,) hard or (B, 2) soft."""
        z = _single_logit(logits, "focal")
        y = _positive_target(target, self.label_smoothing).to(z.dtype)
        p = torch.sigmoid(z)
        bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        p_t = p * y + (1 - p) * (1 - y)
        alpha_t = self.alpha * y + (1 - self.alpha) * (1 - y)
        return (alpha_t * (1 - p_t) ** self.gamma * bce).mean()


def positive_probability(logits: Tensor) -> Tensor:
    """Probability of the positive (flare) class, shape ``(B,)``.

    Args:
        logits: ``(B, 1)`` -> sigmoid; ``(B, 2)`` -> softmax column 1.
    """
    if logits.ndim == 2 and logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    if logits.ndim == 2 and logits.shape[1] == 2:
        return torch.softmax(logits, dim=1)[:, 1]
    raise ValueError(f"positive_probability needs logits of shape (B, 1) or (B, 2); got {tuple(logits.shape)}")


def build_mixup(*, mixup_alpha: float, cutmix_alpha: float, prob: float, switch_prob: float,
                label_smoothing: float) -> Mixup | None:
    """timm Mixup/CutMix for two classes, or None when both alphas are 0.

    Call it as ``images, soft_targets = mixup(images, labels.long())`` on an even-sized
    batch (timm pairs sample i with B-1-i); the soft targets ``(B, 2)`` go straight into
    any loss of :func:`build_loss`, built with ``label_smoothing=0``.

    Args:
        mixup_alpha: Beta(alpha, alpha) of Mixup; 0 disables Mixup.
        cutmix_alpha: Beta(alpha, alpha) of CutMix; 0 disables CutMix.
        prob: Probability that a batch is mixed at all.
        switch_prob: Probability of CutMix instead of Mixup when both are on.
        label_smoothing: Smoothing folded into the soft targets.
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
    return Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob, switch_prob=switch_prob,
                 mode="batch", label_smoothing=label_smoothing, num_classes=2)


def _check_name(name: str) -> None:
    if name not in _NUM_OUTPUTS:
        raise ValueError(f"Unknown loss {name!r}; available: {', '.join(LOSSES)}")


def _is_soft(target: Tensor) -> bool:
    return target.ndim == 2 and target.shape[1] == 2


def _check_hard(target: Tensor) -> None:
    if target.ndim != 1:
        raise ValueError(f"target must be hard labels (B,) or soft targets (B, 2); got shape {tuple(target.shape)}")


def _single_logit(logits: Tensor, loss: str) -> Tensor:
    if logits.ndim == 2 and logits.shape[1] == 1:
        return logits[:, 0].float()  # float32 even under autocast: log terms lose precision in bf16
    raise ValueError(f"{loss} needs logits of shape (B, 1); got {tuple(logits.shape)}. "
                     f"Build the model with num_outputs=num_outputs_for({loss!r})")


def _positive_target(target: Tensor, label_smoothing: float) -> Tensor:
    """Target probability of the positive class: soft column 1 as is, hard labels smoothed."""
    if _is_soft(target):
        return target[:, 1]
    _check_hard(target)
    return target.float() * (1 - label_smoothing) + label_smoothing / 2
