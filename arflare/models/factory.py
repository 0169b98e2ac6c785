"""``build_model``: a variant name and plain keyword arguments -> an ``nn.Module``.

Every model takes a dict of batch-first tensors and returns logits ``(B, num_outputs)``.
The variants are rows of :data:`arflare.models.variants.VARIANTS`, each naming a builder that
lives beside its model; each builder receives a ``make_backbone(in_chans, num_classes)``
callable so that the backbone rules (no downloads, drop-path support, local weights) live in
``_backbone`` only.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

from torch import nn

from arflare.models._backbone import check_backbone, create_backbone
from arflare.models.variants import VARIANTS
from arflare.tables import resolve


def build_model(
    *,
    backbone: str,
    variant: str = "single",
    in_chans: int = 1,
    num_outputs: int = 1,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    pretrained: bool = False,
    pretrained_path: Path | None = None,
    temporal_pool: Literal["mean", "attention"] = "mean",
    flow_channels: int = 2,
) -> nn.Module:
    """Build a classifier whose ``forward(inputs: dict[str, Tensor])`` returns ``(B, num_outputs)`` logits.

    Args:
        backbone: timm model name (``timm.list_models('convnext*')`` lists them).
        variant: A name in :data:`arflare.models.variants.VARIANTS`. ``single``: the timm classifier on
            ``image (B, C, S, S)``; ``two_stream``: plus a flow CNN on ``flow (B, F, S, S)``;
            ``temporal``: a shared encoder over ``image (B, T, C, S, S)``; ``diff_attention``:
            ``image (B, 2C, S, S)`` = frame then difference, the difference gating the frame.
        in_chans: Channels the backbone sees per frame (C above; 3 for multiscale).
        num_outputs: Logits per sample (``arflare.losses.num_outputs_for(loss)``).
        drop_rate: Dropout before the final linear layer.
        drop_path_rate: Stochastic depth of the backbone; ValueError if it has none.
        pretrained: Load weights; needs ``pretrained_path`` (nothing is downloaded).
        pretrained_path: Local state dict for the backbone; channels are adapted and
            tensors that do not fit (another classifier) are skipped with a warning.
        temporal_pool: ``mean`` or ``attention`` pooling over time (temporal only).
        flow_channels: Channels of ``inputs["flow"]`` (two_stream only).

    Raises:
        ValueError: Unknown variant or backbone (with close names), or bad options.
    """
    build = resolve(VARIANTS[variant].build)  # an unknown name raises, listing the known ones
    check_backbone(backbone)
    make_backbone = partial(_make_backbone, backbone, drop_path_rate=drop_path_rate,
                            pretrained=pretrained, pretrained_path=pretrained_path)
    return build(make_backbone, in_chans=in_chans, num_outputs=num_outputs, drop_rate=drop_rate,
                              temporal_pool=temporal_pool, flow_channels=flow_channels)


def _make_backbone(name: str, in_chans: int, num_classes: int, *, drop_rate: float = 0.0,
                   drop_path_rate: float, pretrained: bool, pretrained_path: Path | None) -> nn.Module:
    # Variants with their own head keep the backbone's drop_rate at 0 so dropout is applied once.
    return create_backbone(name, in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate,
                           drop_path_rate=drop_path_rate, pretrained=pretrained,
                           pretrained_path=pretrained_path)
