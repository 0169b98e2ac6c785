"""Failure analysis: the most confident false positives and the most missed flares of a split.

``top_failures`` ranks the errors at the validation-chosen threshold (false positives by
highest score, false negatives by lowest), ``write_failure_grid`` shows their frames with key,
AR, time, score, label and flare class, read straight from the shards through the index.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from arflare._image_grid import flare_class, write_image_grid
from arflare.data.shards import read_member


def top_failures(predictions: pd.DataFrame, threshold: float, *, k: int) -> pd.DataFrame:
    """The ``k`` highest-scored false positives and ``k`` lowest-scored false negatives.

    Returns:
        Columns kind (``FP``/``FN``), rank (1 = most confident error), key, ar, timestamp, score,
        label, reg_label; FPs first.
    """
    frame = predictions.reset_index(drop=True)
    forecast = frame["score"] >= threshold
    fp = frame[forecast & (frame["label"] == 0)].sort_values("score", ascending=False, kind="stable").head(k)
    fn = frame[~forecast & (frame["label"] == 1)].sort_values("score", ascending=True, kind="stable").head(k)
    parts = [part.assign(kind=kind, rank=np.arange(1, len(part) + 1)) for kind, part in (("FP", fp), ("FN", fn))]
    cols = ["kind", "rank", "key", "ar", "timestamp", "score", "label", "reg_label"]
    return pd.concat(parts, ignore_index=True)[cols] if len(fp) + len(fn) else pd.DataFrame(columns=cols)


def read_frame(index, key: str) -> np.ndarray:
    """The magnetogram of ``key`` from the indexed shards, scaled to [-1, 1] (0 = 0 G)."""
    row = index.table.loc[index.table["key"] == key].iloc[0]
    data = read_member(index.root / row["shard"], int(row["png_offset"]), int(row["png_size"]))
    with Image.open(io.BytesIO(data)) as img:
        return (np.asarray(img.convert("L"), dtype=np.float32) - 128.0) / 128.0


def write_failure_grid(failures: pd.DataFrame, index, path: Path, *, split: str, threshold: float, k: int) -> Path:
    """A grid with one row of false positives and one of false negatives of ``split``."""
    images, captions = [], []
    for kind in ("FP", "FN"):
        part = failures[failures["kind"] == kind]
        for i in range(k):
            if i < len(part):
                r = part.iloc[i]
                images.append(read_frame(index, r["key"]))
                captions.append(f"AR {r['ar']} {pd.Timestamp(r['timestamp']):%Y-%m-%d %H:%M}\n"
                                f"score {r['score']:.3f} label {int(r['label'])} {flare_class(r['reg_label'])}")
            else:
                images.append(None)
                captions.append("")
    title = (f"{split}: the {k} most confident false positives (top) and most missed flares (bottom) "
             f"at the val threshold {threshold:.3f}")
    return write_image_grid(images, captions, path, title=title, columns=k, rows=2,
                            row_labels=["false positives", "false negatives"])
