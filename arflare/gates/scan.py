"""One pass over every sample of a shard set: does it decode, and what do its pixels look like?

``scan(index)`` decodes every PNG (and reads every flow member) once, in parallel processes,
and returns one row per sample of the index: whether it decoded, its value range, mean and
standard deviation, the statistics of a thin ring at the image border, and whether its flow
is finite. The integrity gate reads the problems from it and the shortcut gate uses the
image and border statistics as nuisance features, so the images are decoded once for both.
The table is cached as parquet per data fingerprint (outside the data root). No torch here.
"""

from __future__ import annotations

import io
import os
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from arflare.data.index import DataIndex, cache_root
from arflare.data.synth import png_levels_to_gauss
from arflare.physics.fields import unsigned_flux

_SCAN_VERSION = 2  # bump when a column's definition changes, so old caches are recomputed
BORDER_FRACTION = 1 / 16  # ring width as a fraction of the side: 4 px at 64 px, 14 px at 224 px
STAT_COLUMNS = ("ok", "error", "min", "max", "mean", "std", "saturated", "border_mean", "border_std",
                "border_abs_mean", "unsigned_flux", "flow_ok")  # fmt: skip
_CHUNK = 512  # samples per task: large enough to amortise process overhead, small enough to balance


def scan(index: DataIndex, *, cache_dir: Path | None = None, workers: int | None = None,
         progress: bool = True) -> pd.DataFrame:
    """Decode every sample of ``index`` once and describe its pixels.

    Args:
        index: the indexed shard set.
        cache_dir: where the parquet cache goes (default ``$ARFLARE_CACHE`` or ``~/.cache/arflare``).
        workers: decoding processes; default: the CPU count, at most 8.
        progress: show a progress bar on stderr while decoding.

    Returns:
        The index's split, shard, key, ar, timestamp, label, reg_label, has_flow, flow_shard and
        meta, then ``ok`` (PNG decoded), ``error`` (why not, else ""), ``min``/``max``/``mean``/
        ``std`` of the 8-bit values, ``saturated`` (fraction of pixels at 0 or 255),
        ``border_mean``/``border_std``/``border_abs_mean`` (ring of width ``BORDER_FRACTION`` of
        the side, in values relative to 128 = 0 G), ``unsigned_flux`` (:mod:`arflare.physics`'s
        definition; the AR-size strata of every run's evaluation read it here) and ``flow_ok`` (flow decoded and finite;
        True without flow).
    """
    path = _cache_path(cache_dir, index.fingerprint)
    try:
        stats = pd.read_parquet(path)
        if len(stats) != len(index.table):
            stats = None
    except (OSError, ValueError):
        stats = None
    if stats is None:
        stats = _compute(index, workers=workers, progress=progress)
        _save(stats, path)
    base = index.table[["split", "shard", "key", "ar", "timestamp", "label", "reg_label", "has_flow",
                        "flow_shard", "meta"]].reset_index(drop=True)  # fmt: skip
    return pd.concat([base, stats.reset_index(drop=True)], axis=1)


def _cache_path(cache_dir: Path | None, fingerprint: str) -> Path:
    return cache_root(cache_dir) / f"scan-{fingerprint}-v{_SCAN_VERSION}.parquet"


def _save(stats: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stats.to_parquet(tmp, index=False)
        tmp.replace(path)  # atomic: parallel processes may scan at once
    except OSError as exc:
        print(f"arflare: could not cache the scan in {path.parent} ({exc}); set ARFLARE_CACHE", file=sys.stderr)


def _compute(index: DataIndex, *, workers: int | None, progress: bool) -> pd.DataFrame:
    table = index.table
    flow_root = str(index.flow_root) if index.flow_root else ""
    items = [(str(index.root / shard), int(off), int(size), bool(has), f"{flow_root}/{fshard}", int(foff), int(fsize))
             for shard, off, size, has, fshard, foff, fsize in zip(
                 table["shard"], table["png_offset"], table["png_size"], table["has_flow"], table["flow_shard"],
                 table["flow_offset"], table["flow_size"], strict=True)]  # fmt: skip
    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    workers = workers or min(os.cpu_count() or 1, 8)
    rows: list[dict] = []
    with tqdm(total=len(items), desc="scanning samples", unit="sample", file=sys.stderr, disable=not progress) as bar:
        if workers <= 1 or len(chunks) <= 4:  # starting processes costs more than a few chunks
            for part in map(_scan_chunk, chunks):
                rows.extend(part)
                bar.update(len(part))
        else:  # spawn, not fork: the caller may hold threads (torch, tqdm) that fork would copy mid-lock
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                for part in pool.map(_scan_chunk, chunks):
                    rows.extend(part)
                    bar.update(len(part))
    return pd.DataFrame(rows, columns=list(STAT_COLUMNS))


def _scan_chunk(items: list[tuple]) -> list[dict]:
    return [_scan_one(*item) for item in items]


def _scan_one(shard: str, offset: int, size: int, has_flow: bool, flow_shard: str, flow_offset: int,
              flow_size: int) -> dict:
    row = dict.fromkeys(STAT_COLUMNS, np.nan) | {"ok": False, "error": "", "flow_ok": True}
    try:
        with open(shard, "rb") as handle:
            data = os.pread(handle.fileno(), size, offset)
        with Image.open(io.BytesIO(data)) as img:
            pixels = np.asarray(img.convert("L") if img.mode not in ("L", "I;16", "I") else img, dtype=np.float64)
    except (OSError, ValueError, SyntaxError, EOFError, zlib.error) as exc:
        row["error"] = f"cannot decode PNG ({exc})"
        return row
    if not np.isfinite(pixels).all():
        row["error"] = "non-finite pixel values"
        return row
    ring = border_ring(pixels) - 128.0
    row.update(ok=True, min=pixels.min(), max=pixels.max(), mean=pixels.mean(), std=pixels.std(),
               saturated=float(np.mean((pixels <= 0) | (pixels >= 255))), border_mean=ring.mean(),
               border_std=ring.std(), border_abs_mean=np.abs(ring).mean(),
               unsigned_flux=float(unsigned_flux(png_levels_to_gauss(pixels))))  # fmt: skip
    if has_flow:
        row["flow_ok"] = _flow_finite(flow_shard, flow_offset, flow_size)
    return row


def border_ring(pixels: np.ndarray) -> np.ndarray:
    """The pixels of the ring of width ``BORDER_FRACTION`` of the side along the image's edge, flattened."""
    width = max(1, round(min(pixels.shape[-2:]) * BORDER_FRACTION))
    mask = np.ones(pixels.shape[-2:], dtype=bool)
    mask[width:-width, width:-width] = False
    return pixels[..., mask]


def _flow_finite(shard: str, offset: int, size: int) -> bool:
    try:
        with open(shard, "rb") as handle:
            data = os.pread(handle.fileno(), size, offset)
        with np.load(io.BytesIO(data)) as npz:
            u = npz["u8"].astype(np.float64) * float(npz["su"])
            v = npz["v8"].astype(np.float64) * float(npz["sv"])
    except (OSError, ValueError, KeyError, zlib.error):
        return False
    return bool(np.isfinite(u).all() and np.isfinite(v).all())
