"""The temporal variant: one frame encoder shared over T frames, pooled over time."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from arflare.models._backbone import feature_dim

TEMPORAL_POOLS = ("mean", "attention")


class AttentionPool(nn.Module):
    """Softmax over T scores ``<feature_t, query> / sqrt(D)`` with a learned query.

    The query starts at zero, so the pool starts as the mean and learns which frames matter.

    Args:
        dim: Feature width D.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, feats: Tensor) -> Tensor:
        """``(B, T, D) -> (B, D)``."""
        weights = torch.softmax(feats @ self.query * self.scale, dim=1)
        return (weights.unsqueeze(-1) * feats).sum(dim=1)


class MeanPool(nn.Module):
    """Average over time: ``(B, T, D) -> (B, D)``."""

    def forward(self, feats: Tensor) -> Tensor:
        """Mean over the T axis."""
        return feats.mean(dim=1)


class TemporalModel(nn.Module):
    """Encode each frame of ``(B, T, C, S, S)`` with one backbone, pool over T, classify.

    Args:
        backbone: timm model built with ``num_classes=0``; shared by all frames.
        num_outputs: Logits per sample.
        drop_rate: Dropout on the pooled features.
        pool: ``"mean"`` or ``"attention"`` (:class:`AttentionPool`).
    """

    def __init__(self, backbone: nn.Module, *, num_outputs: int, drop_rate: float = 0.0,
                 pool: Literal["mean", "attention"] = "mean") -> None:
        super().__init__()
        if pool not in TEMPORAL_POOLS:
            raise ValueError(f"Unknown temporal_pool {pool!r}; available: {', '.join(TEMPORAL_POOLS)}")
        dim = feature_dim(backbone)
        self.backbone = backbone
        self.pool = AttentionPool(dim) if pool == "attention" else MeanPool()
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(dim, num_outputs)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """Logits ``(B, num_outputs)`` for ``inputs["image"]`` of shape ``(B, T, C, S, S)``."""
        frames = inputs["image"]
        if frames.ndim != 5:
            raise ValueError(
                f"temporal expects inputs['image'] of shape (B, T, C, S, S); got {tuple(frames.shape)} "
                "(use data.input_mode 'sequence')"
            )
        batch, steps = frames.shape[:2]
        # reshape, not view: the trainer may hand over channels_last (non-contiguous) tensors.
        feats = self.backbone(frames.reshape(batch * steps, *frames.shape[2:]))
        pooled = self.pool(feats.reshape(batch, steps, -1))
        return self.head(self.dropout(pooled))
