"""Shared fixtures: a tiny shard set built by hand in the real AR-flares layout."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from arflare.data.shards import ShardWriter, make_key

TINY_SIZE = 16  # pixels per side of every tiny magnetogram
FLOW_SU, FLOW_SV = 0.5, 0.25  # flow scales: u = u8 * su, v = v8 * sv

# (split, shard, ar, first frame time, frame count, skipped minute offsets, reg_labels by frame)
_PLAN = [
    ("train", "shard-000000", "1069", datetime(2010, 5, 5, 0, 0), 6, (), {2: "C3.4", 5: "M1.2"}),
    ("train", "shard-000001", "1069", datetime(2010, 5, 5, 1, 12), 4, (), {1: "X1.0"}),
    # 1070 overlaps 1069 in time and has a gap at 01:24 (tests "nearest earlier within 12 min").
    ("train", "shard-000001", "1070", datetime(2010, 5, 5, 1, 0), 5, (24,), {3: "C1.1"}),
    ("val", "shard-000000", "1100", datetime(2011, 2, 13, 6, 0), 3, (), {2: "M6.6"}),
    ("test", "shard-000000", "1200", datetime(2012, 3, 7, 0, 0), 3, (), {0: "C9.9"}),
]
_NO_FLOW = {("val", 1)}  # (split, frame number in its AR) written without a flow member


@dataclass(frozen=True)
class TinyShards:
    """A hand-built shard set.

    Attributes:
        root: magnetogram root with ``train/``, ``val/``, ``test/`` shards.
        flow_root: flow root; train flow lives in one shard of its own (names differ
            from the magnetogram shards), val lacks one sample's flow, test has none.
        samples: one row per sample: split, shard (relative to root), key, ar,
            timestamp, frame_id, label, reg_label, has_flow. Every pixel of a sample's
            PNG is ``128 + frame_id`` except a top-left 4x4 marker at 0 (-1.0 decoded),
            so ``image[..., -1, -1] * 128 == frame_id``. Its flow has ``u8 = frame_id``
            and ``v8 = -frame_id`` everywhere, with ``su = FLOW_SU`` and ``sv = FLOW_SV``.
    """

    root: Path
    flow_root: Path
    samples: pd.DataFrame


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode a uint8 array as a grayscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def frame_pixels(frame_id: int) -> np.ndarray:
    """The PNG content of a tiny sample (see :class:`TinyShards`)."""
    pixels = np.full((TINY_SIZE, TINY_SIZE), 128 + frame_id, dtype=np.uint8)
    pixels[:4, :4] = 0
    return pixels


def flow_bytes(frame_id: int) -> bytes:
    """The ``.flow.npz`` member of a tiny sample."""
    buffer = io.BytesIO()
    u8 = np.full((TINY_SIZE, TINY_SIZE), frame_id, dtype=np.int8)
    np.savez(buffer, u8=u8, v8=-u8, su=np.float32(FLOW_SU), sv=np.float32(FLOW_SV))
    return buffer.getvalue()


def _plan_samples() -> list[dict]:
    samples, frame_id = [], 0
    for split, shard, ar, start, count, gaps, reg_labels in _PLAN:
        minutes = [m for m in range(0, 12 * (count + len(gaps)), 12) if m not in gaps][:count]
        for n, minute in enumerate(minutes):
            frame_id += 1
            when = start + timedelta(minutes=minute)
            reg = reg_labels.get(n, "0")
            number = n + (6 if shard == "shard-000001" and ar == "1069" else 0)
            samples.append({
                "split": split, "shard": f"{split}/{shard}.tar", "key": make_key(ar, when, size=224),
                "ar": ar, "timestamp": when, "frame_id": frame_id, "label": int(reg != "0"),
                "reg_label": reg, "has_flow": split == "train" or (split == "val" and (split, number) not in _NO_FLOW),
            })  # fmt: skip
    return samples


def write_tiny_shards(base: Path) -> TinyShards:
    """Write the tiny shard set under ``base`` (``magnetograms/`` and ``flow/``)."""
    samples = _plan_samples()
    root, flow_root = base / "magnetograms", base / "flow"
    for shard in dict.fromkeys(s["shard"] for s in samples):
        with ShardWriter(root / shard) as sink:
            for s in (s for s in samples if s["shard"] == shard):
                meta = {"label": s["label"], "reg_label": s["reg_label"], "ar": s["ar"],
                        "instrument": "HMI", "lat_deg": 12.5}  # fmt: skip
                sink.write(s["key"], {"png": png_bytes(frame_pixels(s["frame_id"])),
                                      "json": json.dumps(meta).encode()})  # fmt: skip
    for split in ("train", "val"):
        with ShardWriter(flow_root / split / "flow-000000.tar") as sink:
            for s in (s for s in samples if s["split"] == split and s["has_flow"]):
                sink.write(s["key"], {"flow.npz": flow_bytes(s["frame_id"])})
    return TinyShards(root=root, flow_root=flow_root, samples=pd.DataFrame(samples))


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> TinyShards:
    """A read-only-by-convention tiny shard set; copy it before damaging it."""
    return write_tiny_shards(tmp_path_factory.mktemp("tiny_shards"))


@pytest.fixture(autouse=True)
def _isolated_index_cache(tmp_path, monkeypatch):
    # Tests must never write the index cache to the real ~/.cache/arflare.
    monkeypatch.setenv("ARFLARE_CACHE", str(tmp_path / "arflare-cache"))
