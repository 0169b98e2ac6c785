"""Networks: timm backbones alone or inside two-stream, temporal and difference-attention variants.

``build_model(backbone=..., variant=...)`` is the entry point; every model maps a dict
of batch-first tensors (``"image"``, and ``"flow"`` for two_stream) to logits. The variants
are the rows of :data:`VARIANTS` (:mod:`arflare.models.variants`, torch-free). Importing this
package does not import torch: the model functions below load on first use, so the spec can
read the variant table during ``arflare validate``.
"""

from __future__ import annotations

import importlib

from arflare.models.variants import VARIANTS, ModelVariant, register_variant

_LAZY = {"build_model": "arflare.models.factory", "check_backbone": "arflare.models._backbone",
         "create_backbone": "arflare.models._backbone", "load_backbone_weights": "arflare.models._backbone"}

__all__ = ["VARIANTS", "ModelVariant", "build_model", "check_backbone", "create_backbone", "load_backbone_weights",
           "register_variant"]


def __getattr__(name: str) -> object:
    # PEP 562: torch (through timm) is imported only when a model function is first used.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
