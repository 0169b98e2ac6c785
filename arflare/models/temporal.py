"""The temporal variant: one frame encoder shared over T frames, mixed over time, pooled.

Pooling alone is blind to order: the mean (or a content-only attention) of the same frames
in reverse gives the same answer, so such a model cannot tell rising from falling flux. Each
frame's features therefore get a learned embedding of its step (its position in
``offsets_min``, which is the same for every sample of a run), and one pre-norm transformer
layer over the T steps lets every step see the others, so differences between steps
(emergence, decay) can be formed before pooling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from arflare.models._backbone import feature_dim

TEMPORAL_POOLS = ("mean", "attention")
MAX_STEPS = 64  # step embeddings allocated; far above any useful offsets_min (12.8 h at the 12-min cadence)


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


def build_temporal(make_backbone: Callable[..., nn.Module], *, in_chans: int, num_outputs: int, drop_rate: float,
                   temporal_pool: Literal["mean", "attention"] = "mean", **_: object) -> nn.Module:
    """The ``temporal`` variant (registered in :mod:`arflare.models.variants`); its model is defined below."""
    return TemporalModel(make_backbone(in_chans, 0), num_outputs=num_outputs, drop_rate=drop_rate, pool=temporal_pool)


class TemporalModel(nn.Module):
    """Encode each frame of ``(B, T, C, S, S)`` with one backbone, mix over T, pool, classify.

    The frames must come in a fixed order (the dataset's ``offsets_min`` order); step ``k``
    gets the learned embedding ``step_embed[k]`` (initialised like a ViT position embedding,
    so order matters from the first step on), then a transformer layer mixes the steps.

    Args:
        backbone: timm model built with ``num_classes=0``; shared by all frames.
        num_outputs: Logits per sample.
        drop_rate: Dropout on the pooled features.
        pool: ``"mean"`` or ``"attention"`` (:class:`AttentionPool`).
        max_steps: Most frames per sample.
    """

    def __init__(self, backbone: nn.Module, *, num_outputs: int, drop_rate: float = 0.0,
                 pool: Literal["mean", "attention"] = "mean", max_steps: int = MAX_STEPS) -> None:
        super().__init__()
        if pool not in TEMPORAL_POOLS:
            raise ValueError(f"Unknown temporal_pool {pool!r}; available: {', '.join(TEMPORAL_POOLS)}")
        dim = feature_dim(backbone)
        self.backbone = backbone
        self.step_embed = nn.Parameter(torch.zeros(max_steps, dim))
        nn.init.trunc_normal_(self.step_embed, std=0.02)
        # Few heads: T is tiny, and every timm feature width used here is divisible by 4.
        self.mixer = nn.TransformerEncoderLayer(dim, nhead=4 if dim % 4 == 0 else 1, dim_feedforward=2 * dim,
                                                dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
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
        if steps > len(self.step_embed):
            raise ValueError(f"temporal got {steps} frames per sample; at most {len(self.step_embed)} "
                             f"(shorten data.offsets_min)")
        # reshape, not view: the trainer may hand over channels_last (non-contiguous) tensors.
        feats = self.backbone(frames.reshape(batch * steps, *frames.shape[2:])).reshape(batch, steps, -1)
        mixed = self.mixer(feats + self.step_embed[:steps])
        return self.head(self.dropout(self.pool(mixed)))
