"""The physics feature table of an indexed shard set, cached per data fingerprint.

``feature_table(index)`` decodes every PNG once, computes :data:`~arflare.physics.fields.FEATURES`
on batches of frames and caches the per-frame table as parquet beside the index cache (outside
the data root). The cache name holds the data fingerprint and a digest of the feature
definitions, so new data or a changed definition recomputes. Each feature's change over 1 h
and 6 h is then added from the same AR's history (cheap, never cached).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from arflare.data.index import DataIndex, cache_root
from arflare.data.synth import png_levels_to_gauss
from arflare.physics.fields import FEATURE_NAMES, FEATURES, frame_features

_CODE_VERSION = 1  # bump when the computation changes without its definition text changing
CHANGES = {"d1h": 60, "d6h": 360}  # column suffix -> look-back in minutes
HISTORY_TOLERANCE_MIN = 12  # the frame at t - lag, else the nearest earlier one within one cadence
CHANGE_COLUMNS = tuple(f"{name}_{suffix}" for suffix in CHANGES for name in FEATURE_NAMES)
FEATURE_COLUMNS = FEATURE_NAMES + CHANGE_COLUMNS
_CHUNK = 256  # frames per batch: ~50 MB of float32 temporaries at 224 px
_BASE_COLUMNS = ["split", "key", "ar", "timestamp", "label", "reg_label"]


def definitions_digest() -> str:
    """A short digest of every feature's definition (thresholds included) and the code version."""
    text = "\n".join(f"{f.name}|{f.unit}|{f.definition}" for f in FEATURES) + f"\n{_CODE_VERSION}\n{CHANGES}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def feature_table(
    index: DataIndex, *, cache_dir: Path | None = None, workers: int = 1, progress: bool = True
) -> pd.DataFrame:
    """Physics features of every sample of ``index``, with their 1 h and 6 h changes.

    Args:
        index: the indexed shard set.
        cache_dir: cache folder (default: the index cache's, see
            :func:`arflare.data.index.cache_root`).
        workers: processes that decode and compute when the cache is cold.
        progress: show a progress bar on stderr while computing.

    Returns:
        The index's split, key, ar, timestamp, label and reg_label, then
        :data:`FEATURE_COLUMNS` (float64; NaN where undefined, for an undecodable PNG, or
        for a change whose earlier frame is missing), in the index's row order.
    """
    path = cache_root(cache_dir) / f"features-{index.fingerprint}-{definitions_digest()}.parquet"
    try:
        frames = pd.read_parquet(path)
    except (OSError, ValueError):  # no cache yet, or a damaged one
        frames = _compute(index, workers=workers, progress=progress)
        _save(frames, path)
    table = index.table[_BASE_COLUMNS].merge(frames, on="key", how="left", validate="one_to_one")
    return add_changes(table)


def add_changes(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``<feature>_<suffix>`` = value now minus value ``CHANGES[suffix]`` minutes earlier.

    The earlier frame is the same AR's frame at exactly ``t - lag``, else its nearest earlier
    frame within :data:`HISTORY_TOLERANCE_MIN` minutes (the datasets' rule); without one the
    change is NaN rather than a guess.
    """
    table = table.reset_index(drop=True)
    history = table[["ar", "timestamp", *FEATURE_NAMES]].sort_values("timestamp", kind="stable")
    out = {}
    for suffix, minutes in CHANGES.items():
        wanted = pd.DataFrame({"ar": table["ar"], "at": table["timestamp"] - pd.Timedelta(minutes=minutes),
                               "row": np.arange(len(table))}).sort_values("at", kind="stable")  # fmt: skip
        past = pd.merge_asof(wanted, history, left_on="at", right_on="timestamp", by="ar", direction="backward",
                             tolerance=pd.Timedelta(minutes=HISTORY_TOLERANCE_MIN)).sort_values("row")  # fmt: skip
        for name in FEATURE_NAMES:
            out[f"{name}_{suffix}"] = table[name].to_numpy() - past[name].to_numpy()
    return pd.concat([table, pd.DataFrame(out, index=table.index)], axis=1)


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit grayscale magnetogram PNG as its uint8 levels (S, S)."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img if img.mode == "L" else img.convert("L"))


def chunk_features(items: list[tuple[str, int, int]]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Features of the PNG members ``(path, offset, size)``; NaN rows for undecodable ones.

    Returns:
        Feature name -> array over ``items``, and the positions that could not be decoded.
    """
    levels: list[np.ndarray | None] = []
    failed: list[int] = []
    for i, (path, offset, size) in enumerate(items):
        try:
            with open(path, "rb") as handle:
                levels.append(decode_png(os.pread(handle.fileno(), size, offset)))
        except (OSError, ValueError, SyntaxError, zlib.error):  # PIL's errors for a damaged PNG
            levels.append(None)
            failed.append(i)
    out = {name: np.full(len(items), np.nan) for name in FEATURE_NAMES}
    shapes = {lv.shape for lv in levels if lv is not None}
    for shape in shapes:  # frames of one batch are stacked by size
        rows = [i for i, lv in enumerate(levels) if lv is not None and lv.shape == shape]
        values = frame_features(png_levels_to_gauss(np.stack([levels[i] for i in rows])))
        for name, column in values.items():
            out[name][rows] = column
    return out, failed


def _compute(index: DataIndex, *, workers: int, progress: bool) -> pd.DataFrame:
    rows = index.table.sort_values(["shard", "png_offset"], kind="stable")  # sequential reads
    paths = (str(index.root) + os.sep + rows["shard"]).to_numpy()
    items = list(zip(paths, rows["png_offset"].tolist(), rows["png_size"].tolist(), strict=True))
    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    bar = tqdm(total=len(items), desc="physics features", unit="frame", file=sys.stderr, disable=not progress)
    # spawn, not fork: the caller may hold torch threads, which do not survive a fork
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 1 else nullcontext()
    parts, failed = [], []
    with bar, pool:
        results = pool.map(chunk_features, chunks) if workers > 1 else map(chunk_features, chunks)
        for start, (values, bad) in zip(range(0, len(items), _CHUNK), results, strict=True):
            parts.append(values)
            failed.extend(start + i for i in bad)
            bar.update(len(values["area"]))
    frames = pd.DataFrame({name: np.concatenate([p[name] for p in parts]) if parts else [] for name in FEATURE_NAMES})
    frames.insert(0, "key", rows["key"].to_numpy())
    if failed:
        warnings.warn(f"{len(failed)} PNGs could not be decoded (first: {rows['key'].iloc[failed[0]]}); "
                      f"their physics features are NaN", stacklevel=3)  # fmt: skip
    return frames


def _save(frames: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # parallel ranks may compute at once
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        frames.to_parquet(tmp, index=False)
        tmp.replace(path)
    except OSError as exc:
        warnings.warn(f"Could not cache physics features in {path.parent} ({exc}); "
                      f"set ARFLARE_CACHE to a writable folder", stacklevel=3)  # fmt: skip
