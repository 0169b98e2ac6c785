"""The difference-attention variant: where the field changed decides where the frame is looked at.

The input stacks the frame ``I_t`` and its difference ``I_t - I_{t-1}`` as channels
(``image[:, :C]`` and ``image[:, C:]``, C = ``in_chans``). The frame goes through the
backbone's feature map; a small conv net turns the difference into a sigmoid spatial
map, resized to the feature map, that gates the features as ``features * (1 + attn)``.
The residual ``1 +`` form is chosen over ``features * attn`` so that a flat difference
(no change, attn ~ 0) never erases the frame's evidence: attention can only emphasise
regions, and at initialisation the model is close to the plain backbone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from arflare.models._backbone import feature_dim


class DiffAttentionNet(nn.Module):
    """Two stride-2 conv-BN-GELU blocks and a 1x1 conv: difference image -> attention logits.

    Args:
        in_channels: Channels of the difference image.
        width: Channels of the hidden blocks.
    """

    def __init__(self, in_channels: int = 1, *, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.GELU(),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, diff: Tensor, size: tuple[int, int]) -> Tensor:
        """Attention in (0, 1) of shape ``(B, 1, *size)``."""
        # Pool the logits (not the probabilities) down to the coarse feature grid:
        # averaging is the anti-aliased resize for a stride-32 backbone.
        return F.adaptive_avg_pool2d(self.net(diff), size).sigmoid()


class DiffAttentionModel(nn.Module):
    """Frame features gated by difference attention, pooled by the backbone's own head.

    Args:
        backbone: timm CNN built with ``num_classes=0`` whose ``forward_features``
            returns ``(B, D, H, W)``.
        in_chans: Channels of the frame (the difference has as many).
        num_outputs: Logits per sample.
        drop_rate: Dropout on the pooled features.
    """

    def __init__(self, backbone: nn.Module, *, in_chans: int = 1, num_outputs: int,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        fmt = getattr(backbone, "output_fmt", "NCHW")
        if str(fmt) != "NCHW":
            raise ValueError(
                f"diff_attention needs a backbone with NCHW feature maps; {type(backbone).__name__} "
                f"gives {fmt}. Use a CNN backbone (convnext_*, resnet*, efficientnet_*)"
            )
        self.in_chans = in_chans
        self.backbone = backbone
        self.attention = DiffAttentionNet(in_chans)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(feature_dim(backbone), num_outputs)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """Logits ``(B, num_outputs)`` for ``inputs["image"]`` of shape ``(B, 2 * in_chans, S, S)``."""
        image = inputs["image"]
        if image.ndim != 4 or image.shape[1] != 2 * self.in_chans:
            raise ValueError(
                f"diff_attention expects inputs['image'] of shape (B, {2 * self.in_chans}, S, S) "
                f"(frame then difference); got {tuple(image.shape)} (use data.input_mode 'diff')"
            )
        feats = self.backbone.forward_features(image[:, : self.in_chans])
        if feats.ndim != 4:
            raise ValueError(
                f"diff_attention needs a (B, D, H, W) feature map; {type(self.backbone).__name__} "
                f"gives {tuple(feats.shape)}. Use a CNN backbone"
            )
        attn = self.attention(image[:, self.in_chans:], feats.shape[-2:])
        pooled = self.backbone.forward_head(feats * (1 + attn), pre_logits=True)
        return self.head(self.dropout(pooled))


def build_diff_attention(make_backbone: Callable[..., nn.Module], *, in_chans: int, num_outputs: int,
                         drop_rate: float, **_: object) -> nn.Module:
    """The ``diff_attention`` variant (registered in :mod:`arflare.models.variants`)."""
    return DiffAttentionModel(make_backbone(in_chans, 0), in_chans=in_chans, num_outputs=num_outputs,
                              drop_rate=drop_rate)
