"""The penultimate embedding of a trained CNN run, for every sample of every split.

A hybrid run (``model.kind: hybrid``) concatenates this embedding with the physics features.
The embedding is the input of the network's final linear layer (after pooling, norm and, in
eval mode, no dropout): what the classifier head sees. The source run's own spec decides how
samples are built (input mode, image size, history); augmentation is off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from arflare.data.index import DataIndex
from arflare.spec import AugmentSpec, RunSpec

EMBEDDING_PREFIX = "cnn_"  # columns cnn_0 ... cnn_{D-1}


def final_linear(model: nn.Module) -> nn.Linear:
    """The layer that turns the embedding into logits: a variant's ``head`` or timm's classifier.

    Raises:
        ValueError: the model has neither (a variant this function does not know).
    """
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head
    backbone = getattr(model, "backbone", None)
    classifier = backbone.get_classifier() if hasattr(backbone, "get_classifier") else None
    if isinstance(classifier, nn.Linear):
        return classifier
    raise ValueError(f"cannot find the final linear layer of {type(model).__name__}; "
                     "expected a `head` or a timm backbone's classifier")  # fmt: skip


@torch.no_grad()
def embed(spec: RunSpec, weights: Path, index: DataIndex, *, device: str = "cpu", batch_size: int = 256,
          progress: bool = True) -> pd.DataFrame:  # fmt: skip
    """Embed every sample of ``index`` with the source run's best weights.

    Args:
        spec: The source run's resolved spec (its ``spec.yaml``).
        weights: Its ``best.pt`` (a dict with the state dict under ``"model"``).
        index: The shard index (the same data the source was trained on).
        device: Where to run the network.
        batch_size: Samples per forward pass.
        progress: Show a progress bar per split.

    Returns:
        ``key`` and ``cnn_0`` ... ``cnn_{D-1}`` (float32), one row per sample of each split.
    """
    from arflare.builders import build_datasets, build_model_from_spec

    plain = spec.model_copy(update={"data": spec.data.model_copy(update={"augment": AugmentSpec()})})
    model = build_model_from_spec(plain)
    state = torch.load(weights, map_location="cpu", weights_only=False)
    model.load_state_dict({k: v.float() for k, v in state["model"].items()})
    model.to(device).eval()
    captured: list[torch.Tensor] = []
    hook = final_linear(model).register_forward_pre_hook(lambda _m, args: captured.append(args[0].float().cpu()))
    frames = []
    try:
        for split, dataset in build_datasets(plain, index).items():
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=spec.data.num_workers)
            keys = dataset.frame_table.reset_index(drop=True)["key"].to_numpy()
            for batch in tqdm(loader, desc=f"embedding {split}", unit="batch", leave=False, disable=not progress):
                inputs = {k: v.to(device) for k, v in batch.items() if k in ("image", "flow")}
                model(inputs)
                rows = captured.pop().numpy()
                frame = pd.DataFrame(rows, columns=[f"{EMBEDDING_PREFIX}{i}" for i in range(rows.shape[1])])
                frame.insert(0, "key", keys[np.asarray(batch["index"])])
                frames.append(frame)
    finally:
        hook.remove()
    return pd.concat(frames, ignore_index=True).drop_duplicates("key")
