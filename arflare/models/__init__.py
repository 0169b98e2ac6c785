"""Networks: timm backbones alone or inside two-stream, temporal and difference-attention variants.

``build_model(backbone=..., variant=...)`` is the entry point; every model maps a dict
of batch-first tensors (``"image"``, and ``"flow"`` for two_stream) to logits.
"""

from __future__ import annotations

from arflare.models._backbone import check_backbone, create_backbone, load_backbone_weights
from arflare.models.factory import VARIANTS, build_model

__all__ = ["VARIANTS", "build_model", "check_backbone", "create_backbone", "load_backbone_weights"]
