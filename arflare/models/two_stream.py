"""The two-stream variant: a timm image backbone and a small optical-flow CNN, fused late."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from arflare.models._backbone import feature_dim

# Four stride-2 blocks: at 224 px the flow map is pooled from 14x14; enough capacity for
# a 2-channel motion field without rivalling the image backbone.
FLOW_WIDTHS = (16, 32, 64, 128)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.GELU(),
    )


class FlowEncoder(nn.Module):
    """Conv-BN-GELU stride-2 blocks then global average pooling: ``(B, C, S, S) -> (B, out_dim)``.

    Args:
        in_channels: Flow channels (2 for a dx, dy field).
        widths: Output channels of each block; the last is ``out_dim``.
    """

    def __init__(self, in_channels: int = 2, *, widths: tuple[int, ...] = FLOW_WIDTHS) -> None:
        super().__init__()
        chans = (in_channels, *widths)
        self.blocks = nn.Sequential(*(_conv_block(a, b) for a, b in zip(chans, chans[1:])))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = widths[-1]

    def forward(self, flow: Tensor) -> Tensor:
        """Pooled flow features ``(B, out_dim)``."""
        return self.pool(self.blocks(flow)).flatten(1)


class TwoStreamModel(nn.Module):
    """Image features and flow features concatenated, then dropout and one linear layer.

    Args:
        backbone: timm model built with ``num_classes=0`` (returns pooled features).
        num_outputs: Logits per sample.
        drop_rate: Dropout on the fused features.
        flow_channels: Channels of ``inputs["flow"]``.
    """

    def __init__(self, backbone: nn.Module, *, num_outputs: int, drop_rate: float = 0.0,
                 flow_channels: int = 2) -> None:
        super().__init__()
        self.backbone = backbone
        self.flow_encoder = FlowEncoder(flow_channels)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(feature_dim(backbone) + self.flow_encoder.out_dim, num_outputs)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """Logits ``(B, num_outputs)`` from ``image (B, C, S, S)`` and ``flow (B, F, S, S)``."""
        if "flow" not in inputs:
            raise KeyError(f"two_stream needs inputs['flow']; got keys {sorted(inputs)} (use data.input_mode 'flow')")
        fused = torch.cat([self.backbone(inputs["image"]), self.flow_encoder(inputs["flow"])], dim=1)
        return self.head(self.dropout(fused))


def build_two_stream(make_backbone: Callable[..., nn.Module], *, in_chans: int, num_outputs: int, drop_rate: float,
                     flow_channels: int = 2, **_: object) -> nn.Module:
    """The ``two_stream`` variant (registered in :mod:`arflare.models.variants`)."""
    return TwoStreamModel(make_backbone(in_chans, 0), num_outputs=num_outputs, drop_rate=drop_rate,
                          flow_channels=flow_channels)
