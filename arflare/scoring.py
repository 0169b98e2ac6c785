"""Score a whole split with a trained checkpoint: batched, with a progress bar, resumable by chunk.

Mining scores every training frame (950k on the real data), which takes long enough to be
killed. The split is cut into chunks of consecutive items; each finished chunk is written to
``chunk_dir`` as parquet, and a re-run reads the chunks already there instead of scoring
them again. The caller keys ``chunk_dir`` by what the scores depend on (checkpoint, split,
data fingerprint, input spec) and removes it when done.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from arflare.data.modes import model_input_keys
from arflare.losses import positive_probability

log = logging.getLogger("arflare.scoring")
CHUNK_SIZE = 4096  # items per resumable chunk: a few minutes of CPU scoring at 112 px


def load_checkpoint_spec(path: Path):
    """The :class:`~arflare.spec.RunSpec` a checkpoint was trained with."""
    from arflare.spec import RunSpec

    return RunSpec.model_validate(torch.load(path, map_location="cpu", weights_only=False)["spec"])


def load_checkpoint_model(path: Path, device: torch.device):
    """The model of a ``best.pt`` checkpoint, in eval mode, with the spec and threshold it was saved with.

    Returns:
        ``(model, spec, threshold)``; ``spec`` is the source run's :class:`~arflare.spec.RunSpec`.
    """
    from arflare.builders import build_model_from_spec
    from arflare.spec import RunSpec

    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: full unpickling is safe
    spec = RunSpec.model_validate(state["spec"])
    model = build_model_from_spec(spec)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()})
    return model.to(device).eval(), spec, float(state["threshold"])


@torch.no_grad()
def score_dataset(model: torch.nn.Module, dataset, *, device: torch.device, batch_size: int,
                  chunk_dir: Path | None = None, chunk_size: int = CHUNK_SIZE, num_workers: int = 0,
                  progress: bool = True) -> pd.DataFrame:
    """Score every item of ``dataset`` (a :class:`~arflare.data.datasets.FlareDataset`).

    Args:
        model: The network, in eval mode, on ``device``.
        dataset: Items to score; its ``frame_table`` names them.
        device: Where to run the model.
        batch_size: Items per forward pass.
        chunk_dir: Folder for finished chunks (resume); None keeps nothing.
        chunk_size: Items per chunk.
        num_workers: DataLoader worker processes.
        progress: Show a progress bar over items.

    Returns:
        ``frame_table`` (key, ar, timestamp, label, reg_label) plus ``score``, one row per item.
    """
    n_chunks = -(-len(dataset) // chunk_size)
    if chunk_dir is not None:
        _check_chunking(Path(chunk_dir), len(dataset), chunk_size)
    scores = np.full(len(dataset), np.nan)
    bar = tqdm(total=len(dataset), desc="scoring", unit="item", disable=not progress)
    for chunk in range(n_chunks):
        start, stop = chunk * chunk_size, min((chunk + 1) * chunk_size, len(dataset))
        path = None if chunk_dir is None else Path(chunk_dir) / f"chunk-{chunk:06d}.parquet"
        if path is not None and path.is_file():
            done = pd.read_parquet(path)
        else:
            done = _score_range(model, dataset, range(start, stop), device=device, batch_size=batch_size,
                                num_workers=num_workers)
            if path is not None:
                tmp = path.with_suffix(".tmp")
                done.to_parquet(tmp, index=False)
                tmp.replace(path)  # a killed run never leaves a half-written chunk under the real name
        scores[done["index"].to_numpy()] = done["score"].to_numpy()
        bar.update(stop - start)
    bar.close()
    table = dataset.frame_table.reset_index(drop=True)
    table["score"] = scores
    return table


def _score_range(model, dataset, items: range, *, device, batch_size: int, num_workers: int) -> pd.DataFrame:
    loader = DataLoader(Subset(dataset, list(items)), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    indices, scores = [], []
    for batch in loader:
        inputs = {k: v.to(device) for k, v in batch.items() if k in model_input_keys()}
        if device.type == "cuda" and "image" in inputs:
            inputs["image"] = inputs["image"].contiguous(memory_format=torch.channels_last) \
                if inputs["image"].dim() == 4 else inputs["image"]
        logits = model(inputs).float()  # fp32: bf16 would tie the scores a threshold separates
        scores.append(positive_probability(logits).cpu().numpy())
        # A corrupt item is replaced by its neighbour: keep the dataset's own index, never assume order.
        indices.append(np.asarray(batch["index"]))
    return pd.DataFrame({"index": np.concatenate(indices).astype(np.int64),
                         "score": np.concatenate(scores).astype(float)})


def _check_chunking(chunk_dir: Path, n_items: int, chunk_size: int) -> None:
    """Chunks written for another item count or chunk size cannot be reused: start over."""
    chunk_dir.mkdir(parents=True, exist_ok=True)
    meta_path = chunk_dir / "chunking.json"
    meta = {"items": n_items, "chunk_size": chunk_size}
    if meta_path.is_file() and json.loads(meta_path.read_text()) != meta:
        log.warning("discarding scored chunks in %s: they were cut for %s, not %s", chunk_dir,
                    meta_path.read_text(), meta)
        for old in chunk_dir.glob("chunk-*.parquet"):
            old.unlink()
    meta_path.write_text(json.dumps(meta))
