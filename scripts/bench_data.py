"""Throughput of FlareDataset in every input mode, against a bare read+decode loop.

Run: ``python scripts/bench_data.py --root data/synthetic/magnetograms --flow-root
data/synthetic/flow --size 64 --batches 20``. The baseline reads and decodes the same
target PNGs with nothing else (no history, resize, tensors or DataLoader); each mode's
ratio says what the dataset costs on top of that. Multi-frame modes decode several PNGs
per item, so their ratio is expected to fall roughly by the number of frames.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from arflare.data.datasets import FlareDataset
from arflare.data.modes import INPUT_MODES
from arflare.data.index import DataIndex, build_index

BATCH_SIZE = 32


def bare_loop(index: DataIndex, *, split: str, items: int, clock=time.perf_counter) -> float:
    """Samples/s of reading and decoding ``items`` PNGs by offset, the cheapest possible loader.

    ``clock=time.process_time`` counts this process's CPU seconds instead (samples/s per core).
    """
    rows = index.table[index.table["split"] == split].head(items)
    start = clock()
    handles: dict[str, object] = {}
    for shard, offset, size in zip(rows["shard"], rows["png_offset"], rows["png_size"], strict=True):
        handle = handles.get(shard) or handles.setdefault(shard, open(index.root / shard, "rb"))
        handle.seek(offset)
        with Image.open(io.BytesIO(handle.read(size))) as img:
            np.asarray(img, dtype=np.float32)
    elapsed = clock() - start
    for handle in handles.values():
        handle.close()
    return len(rows) / elapsed


def loader_rate(dataset: FlareDataset, *, workers: int, batches: int, clock=time.perf_counter) -> float:
    """Samples/s over ``batches`` batches, not counting the first (worker start-up); ``clock`` as in :func:`bare_loop`."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, num_workers=workers, shuffle=False)
    count, start = 0, None
    for n, batch in enumerate(loader):
        if n == 0:
            start = clock()
            continue
        count += len(batch["label"])
        if n >= batches:
            break
    return count / (clock() - start)


def main(argv: list[str] | None = None) -> int:
    """Print a table of samples/s per input mode and worker count, with ratios to the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="magnetogram shard root")
    parser.add_argument("--flow-root", type=Path, default=None, help="flow shard root (enables mode 'flow')")
    parser.add_argument("--size", type=int, default=64, help="image_size of the dataset")
    parser.add_argument("--batches", type=int, default=20, help=f"batches of {BATCH_SIZE} timed per row")
    parser.add_argument("--split", default="train", help="split to read")
    args = parser.parse_args(argv)
    index = build_index(args.root, flow_root=args.flow_root, progress=False)
    items = BATCH_SIZE * (args.batches + 1)
    baseline = bare_loop(index, split=args.split, items=items)
    print(f"{'mode':<12}{'workers':>8}{'samples/s':>12}{'x baseline':>12}")
    print(f"{'bare loop':<12}{0:>8}{baseline:>12.0f}{1.0:>12.2f}")
    for mode in INPUT_MODES:
        if mode == "flow" and args.flow_root is None:
            continue
        dataset = FlareDataset(index, args.split, mode=mode, image_size=args.size)
        for workers in (0, 2):
            rate = loader_rate(dataset, workers=workers, batches=args.batches)
            print(f"{mode:<12}{workers:>8}{rate:>12.0f}{rate / baseline:>12.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
