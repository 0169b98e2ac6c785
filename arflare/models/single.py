"""The single-stream variant: one timm classifier on the image tensor."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


class SingleModel(nn.Module):
    """A timm classifier reading ``inputs["image"]`` (frame, multiscale or diff channels).

    Args:
        backbone: A timm model whose classifier already has ``num_outputs`` outputs.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """Logits ``(B, num_outputs)`` for ``inputs["image"]`` of shape ``(B, C, S, S)``."""
        return self.backbone(inputs["image"])


def build_single(make_backbone: Callable[..., nn.Module], *, in_chans: int, num_outputs: int, drop_rate: float,
                 **_: object) -> nn.Module:
    """The ``single`` variant (registered in :mod:`arflare.models.variants`)."""
    # timm's own classifier (and its drop_rate) is the head here.
    return SingleModel(make_backbone(in_chans, num_outputs, drop_rate=drop_rate))
