"""Map-style torch dataset over an indexed shard set, in any input mode of :mod:`arflare.data.modes`.

Every item is read by byte offset from the shards (no tar parsing at train time), so
history frames of a sequence can live in other shards than the target frame. Files
are read with ``os.pread`` through a per-process cache of descriptors: ``pread`` has
no shared file position, and keying the cache by pid means DataLoader workers forked
from a process that already read never reuse its descriptors' state.
"""

from __future__ import annotations

import io
import os
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from arflare.data.augment import AugmentParams, augment as apply_augment
from arflare.data.index import DataIndex
from arflare.data.modes import CADENCE_MIN, INPUT_MODES
from arflare.errors import DataError
from arflare.tables import resolve

CADENCE_S = CADENCE_MIN * 60
_MAX_OPEN_FILES = 128  # 950k images in ~1000 shards: stay far below `ulimit -n`
_MAX_SUBSTITUTES = 16
_open_files: OrderedDict[tuple[int, str], int] = OrderedDict()
_warned: set[str] = set()


class FlareDataset(torch.utils.data.Dataset):
    """Items of one split: the input mode's tensors (``"image"``, and ``"flow"`` in flow mode), ``"label"``, ``"index"``.

    The mode's row (:data:`arflare.data.modes.INPUT_MODES`) says which frames an item reads
    and its compose function builds the tensors. Shipped shapes with ``S = image_size``:
    frame ``(1,S,S)``; flow ``(1,S,S)`` plus flow ``(2,S,S)`` (u, v in pixels per frame at
    size S); sequence ``(T,1,S,S)`` in the order of ``offsets_min``; multiscale ``(T,S,S)``,
    the same frames as channels; diff ``(2,S,S)`` = ``[I_t, I_t - I_(t-12 min)]``. Pixels are field values scaled to
    [-1, 1] (0 = 0 G). History frames come from the same AR: the frame at exactly
    ``t + offset``, else the nearest earlier one within 12 minutes.

    Args:
        index: the indexed shard set.
        split: ``"train"``, ``"val"`` or ``"test"``.
        mode: an input mode name, see above.
        image_size: side length S of the returned images.
        offsets_min: history offsets in minutes (<= 0) for sequence and multiscale.
        require_complete_history: drop items with a missing history frame; otherwise
            a missing frame is replaced by the AR's earliest frame.
        min_flare_class: ``"C"`` uses the json ``label``; ``"M"`` counts only M and X
            flares (``reg_label``) as positive.
        augment: random transforms, drawn per item from ``(seed, epoch, index)``.
        seed: augmentation seed.
        skip_corrupt: on an unreadable image, warn and return the next item instead
            of raising :class:`DataError`.
    """

    def __init__(
        self,
        index: DataIndex,
        split: str,
        *,
        mode: str = "frame",
        image_size: int = 112,
        offsets_min: Sequence[int] = (0, -60, -360),
        require_complete_history: bool = False,
        min_flare_class: Literal["C", "M"] = "C",
        augment: AugmentParams | None = None,
        seed: int = 0,
        skip_corrupt: bool = True,
    ) -> None:
        _check_args(index, split, image_size, offsets_min, min_flare_class)
        self.input_mode = INPUT_MODES[mode]  # an unknown name raises, listing the known ones
        self._compose = resolve(self.input_mode.compose)
        table = index.table[index.table["split"] == split].reset_index(drop=True)
        offsets = self.input_mode.history(offsets_min)
        rows, complete = resolve_history(table, offsets, fill=self.input_mode.fill)
        keep = complete if require_complete_history else np.ones(len(table), dtype=bool)
        if not keep.any():
            raise DataError(
                f"No {split} item has a complete history for offsets_min={list(offsets)}; "
                f"use shorter offsets or require_complete_history=False"
            )
        self.mode, self.image_size, self.augment = mode, image_size, augment
        self.seed, self.skip_corrupt = seed, skip_corrupt
        # In shared memory so that persistent DataLoader workers see set_epoch too.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._rows = rows[keep]
        self._table = table  # rows of the split; items point into it
        self._shards, self._shard_code = _paths(index.root, table["shard"])
        self._png = table[["png_offset", "png_size"]].to_numpy(np.int64)
        self._flow = table[["flow_offset", "flow_size"]].to_numpy(np.int64)
        if self.input_mode.reads_flow:
            _check_flow(index, table.iloc[self._rows[:, 0]])
            self._flow_shards, self._flow_code = _paths(index.flow_root, table["flow_shard"].fillna(""))
        labels = table["label"].to_numpy(np.int64)
        if min_flare_class == "M":
            labels = table["reg_label"].str.upper().str.startswith(("M", "X")).to_numpy(np.int64)
        self._labels = labels[self._rows[:, 0]]

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def labels(self) -> np.ndarray:
        """0/1 label of every item, aligned with the item indices."""
        return self._labels

    @property
    def frame_table(self) -> pd.DataFrame:
        """key, ar, timestamp, label, reg_label of every item's target frame."""
        cols = ["key", "ar", "timestamp", "reg_label"]
        out = self._table.loc[self._rows[:, 0], cols].reset_index(drop=True)
        out.insert(3, "label", self._labels)
        return out

    @property
    def epoch(self) -> int:
        """The epoch whose augmentation draws items use."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Reseed augmentation for ``epoch``; also reaches persistent DataLoader workers."""
        self._epoch.fill_(epoch)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        for attempt in range(min(len(self), _MAX_SUBSTITUTES)):
            j = (i + attempt) % len(self)
            try:
                return self._load(j)
            except DataError as exc:
                if not self.skip_corrupt:
                    raise
                _warn_once(f"{exc}; returning the next item instead (skip_corrupt=True)")
        raise DataError(f"Items {i}..{i + _MAX_SUBSTITUTES - 1} are all unreadable; check the shards")

    def _load(self, i: int) -> dict:
        rows = self._rows[i]
        frames = torch.stack([self._read_image(r) for r in rows])  # (T, 1, S, S)
        flow = self._read_flow(rows[0]) if self.input_mode.reads_flow else None
        if self.augment is not None:
            generator = torch.Generator().manual_seed(self._item_seed(i))
            frames, flow = apply_augment(frames, flow, self.augment, generator)
        inputs = self._compose(frames, flow)
        if set(inputs) != set(self.input_mode.keys):
            raise ValueError(f"input mode {self.mode!r} declares keys {list(self.input_mode.keys)} but its compose "
                             f"function returned {list(inputs)}; make them agree")
        return {**inputs, "label": torch.tensor(float(self._labels[i])), "index": i}

    def _item_seed(self, i: int) -> int:
        # shift the Python int: numpy 1.x refuses uint64 >> int64 (its promotion rules say float64)
        return int(np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1, np.uint64)[0]) >> 1

    def _read_image(self, row: int) -> torch.Tensor:
        path = self._shards[self._shard_code[row]]
        data = self._read_member(path, row, *self._png[row].tolist(), ext="png")
        try:
            with Image.open(io.BytesIO(data)) as img:
                pixels = _to_gray(img)
        except (OSError, ValueError, SyntaxError, EOFError, zlib.error) as exc:
            raise DataError(
                f"Shard {path}, member {self._member(row, 'png')}: cannot decode PNG ({exc}); "
                f"regenerate or remove that sample"
            ) from exc
        image = torch.from_numpy((pixels.astype(np.float32) - 128.0) / 128.0)[None]
        return _resize(image, self.image_size)

    def _read_flow(self, row: int) -> torch.Tensor:
        path = self._flow_shards[self._flow_code[row]]
        data = self._read_member(path, row, *self._flow[row].tolist(), ext="flow.npz")
        try:
            with np.load(io.BytesIO(data)) as npz:
                u = npz["u8"].astype(np.float32) * float(npz["su"])
                v = npz["v8"].astype(np.float32) * float(npz["sv"])
        except (OSError, ValueError, KeyError, zlib.error) as exc:
            raise DataError(
                f"Flow shard {path}, member {self._member(row, 'flow.npz')}: unreadable "
                f"({exc!r}); it needs arrays u8, v8 and scalars su, sv"
            ) from exc
        flow = _resize(torch.from_numpy(np.stack([u, v])), self.image_size)
        # Displacements are in pixels, so they shrink with the image.
        scale = torch.tensor([self.image_size / u.shape[1], self.image_size / u.shape[0]])
        return flow * scale[:, None, None]

    def _read_member(self, path: str, row: int, offset: int, size: int, *, ext: str) -> bytes:
        data = _pread(path, offset, size)
        if len(data) != size:
            raise DataError(
                f"Shard {path}, member {self._member(row, ext)}: truncated at byte {offset}; "
                f"fix the shard and rebuild the index"
            )
        return data

    def _member(self, row: int, ext: str) -> str:
        return f"{self._table.at[row, 'key']}.{ext}"


def resolve_history(table: pd.DataFrame, offsets_min: Sequence[int], *,
                    fill: Literal["earliest", "self"] = "earliest") -> tuple[np.ndarray, np.ndarray]:
    """Row of each sample's frame at each offset, and whether all were found.

    ``table`` must hold one split sorted by (ar, timestamp). A frame counts as found
    at exactly ``t + offset`` or at the nearest earlier frame of the same AR within
    one cadence; a missing one is replaced by the AR's earliest frame (``fill="earliest"``)
    or by the sample's own frame (``fill="self"``).

    Returns:
        ``rows`` of shape ``(len(table), len(offsets_min))`` and ``complete`` ``(len(table),)``.
    """
    code = pd.factorize(table["ar"])[0].astype(np.int64)  # increasing: table is sorted by ar
    seconds = table["timestamp"].to_numpy("datetime64[s]").astype(np.int64)
    pad = max(abs(o) for o in offsets_min) * 60 + CADENCE_S
    seconds = seconds - (seconds.min() if len(seconds) else 0) + pad
    span = int(seconds.max(initial=0)) + 1
    combined = code * span + seconds  # sorted, and lookups never cross into another AR
    first = np.searchsorted(code, code, side="left")
    rows = np.empty((len(table), len(offsets_min)), dtype=np.int64)
    complete = np.ones(len(table), dtype=bool)
    for j, offset in enumerate(offsets_min):
        target = combined + offset * 60
        pos = np.searchsorted(combined, target, side="right") - 1
        found = (pos >= first) & (target - combined[np.maximum(pos, 0)] <= CADENCE_S)
        rows[:, j] = np.where(found, pos, first if fill == "earliest" else np.arange(len(table)))
        complete &= found
    return rows, complete


def _to_gray(img: Image.Image) -> np.ndarray:
    if img.mode not in ("L", "P", "RGB", "RGBA", "LA"):
        raise ValueError(f"expected an 8-bit grayscale PNG, got mode {img.mode!r}")
    return np.asarray(img if img.mode == "L" else img.convert("L"))


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-2:] == (size, size):
        return image
    out = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0]


def _pread(path: str, offset: int, size: int) -> bytes:
    key = (os.getpid(), path)
    fd = _open_files.get(key)
    if fd is None:
        fd = _open_files[key] = os.open(path, os.O_RDONLY)
        if len(_open_files) > _MAX_OPEN_FILES:
            os.close(_open_files.popitem(last=False)[1])
    else:
        _open_files.move_to_end(key)
    return os.pread(fd, size, offset)


def _paths(root, shards: pd.Series) -> tuple[list[str], np.ndarray]:
    codes, names = pd.factorize(shards)
    return [str(root / name) for name in names], codes.astype(np.int32)


def _check_flow(index: DataIndex, rows: pd.DataFrame) -> None:
    if index.flow_root is None:
        raise DataError("this input mode reads optical flow: build the index with flow_root=<flow shard root>")
    missing = rows[~rows["has_flow"]]
    if len(missing):
        first = missing.iloc[0]
        raise DataError(
            f"{len(missing)} items lack optical flow, e.g. member {first['key']}.flow.npz for shard "
            f"{first['shard']} is not under {index.flow_root}/{first['split']}; generate the flow "
            f"shards or use another mode"
        )


def _check_args(index, split, image_size, offsets_min, min_flare_class) -> None:
    splits = sorted(index.table["split"].unique())
    if split not in splits:
        raise ValueError(f"Unknown split {split!r}; available: {', '.join(splits)}")
    if min_flare_class not in ("C", "M"):
        raise ValueError(f"min_flare_class={min_flare_class!r} must be 'C' or 'M'")
    if image_size < 1:
        raise ValueError(f"image_size={image_size!r} must be a positive number of pixels")
    if not offsets_min or any(int(o) != o or o > 0 for o in offsets_min):
        raise ValueError(f"offsets_min={list(offsets_min)!r} must be whole minutes <= 0 (no future frames)")


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)

