"""The penultimate embedding is what each variant's final linear layer reads."""

from __future__ import annotations

import pytest
import torch

from arflare.embedding import final_linear
from arflare.models import build_model


@pytest.mark.parametrize(("variant", "image"), [("single", (2, 1, 32, 32)), ("temporal", (2, 3, 1, 32, 32))])
def test_final_linear_reads_the_embedding_that_makes_the_logits(variant, image):
    torch.manual_seed(0)
    model = build_model(backbone="convnext_atto", variant=variant).eval()
    layer = final_linear(model)
    captured = []
    hook = layer.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    with torch.no_grad():
        logits = model({"image": torch.randn(image)})
    hook.remove()
    (embedding,) = captured
    assert embedding.shape == (2, layer.in_features)
    torch.testing.assert_close(layer(embedding), logits)


def test_unknown_model_shape_is_refused():
    with pytest.raises(ValueError, match="final linear layer"):
        final_linear(torch.nn.Sequential(torch.nn.Linear(3, 1)))
