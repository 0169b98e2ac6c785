"""Benchmark toward the real data set's scale: index time and memory per 100k frames, loader rate per core.

Run on a 224-px synthetic set of 20k+ frames, outside the repository, at low priority. Either
generate one (``nice -n 15 arflare synth --out /tmp/scale224 --ars 90 --size 224 --quiet``: about
400 CPU seconds), or tile the 224-px frames of a few shards of any ``arflare synth`` set into one
(``--tile-from``: copy ``c`` gets AR numbers ``ar + 1000 c``; the PNG and JSON bytes are the synth's,
which is all that indexing and loading read):

    nice -n 15 python scripts/bench_scale.py --root /tmp/scale224 --tile-from /tmp/synth224/magnetograms/train --copies 14
    nice -n 15 python scripts/bench_scale.py --root /tmp/scale224/magnetograms [--gpu-rate 2000]

1. Index: ``build_index`` from scratch (empty cache) in a fresh child process; wall seconds and the
   peak resident memory it added on top of its imports, both per 100k frames.
2. Loader: samples/s of ``FlareDataset`` (frame mode at 224 px, plain and with exp2's
   augmentation) in one process with one thread, i.e. per CPU core, against a bare loop that
   reads and decodes the same PNGs (``bench_data.bare_loop``) in the same run.
3. Extrapolation to ``--frames`` (950k, the real set) and the loader cores one GPU needs at
   ``--gpu-rate`` images/s, which is an assumption the output labels as such, not a measurement.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_data import BATCH_SIZE, bare_loop, loader_rate  # scripts/ is on sys.path when run as a script

from arflare.data.augment import AugmentParams
from arflare.data.datasets import FlareDataset
from arflare.data.index import build_index
from arflare.data.shards import ShardWriter

_INDEX_CHILD = """
import json, os, sys, threading, time
from pathlib import Path
from arflare.data.index import build_index
import pandas, pyarrow.parquet  # imported by the first build anyway: not the index's memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

before, peak, done = rss(), [0], threading.Event()
def watch():
    while not done.wait(0.01):
        peak[0] = max(peak[0], rss())
threading.Thread(target=watch, daemon=True).start()
wall, cpu = time.perf_counter(), time.process_time()
index = build_index(Path(sys.argv[1]), cache_dir=Path(sys.argv[2]), progress=False)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
done.set()
peak = max(peak[0], rss())
print(json.dumps({"frames": len(index.table), "wall_s": wall, "cpu_s": cpu, "added_mib": (peak - before) / 2**20,
                  "peak_mib": peak / 2**20}))
"""


def bench_index(root: Path, fraction: float = 1.0) -> dict:
    """Index ``root`` (or the first ``fraction`` of each split's shards) from an empty cache in a child process.

    Returns:
        frames, wall_s, cpu_s, added_mib (resident memory the build added at its peak), peak_mib.
    """
    import json

    with tempfile.TemporaryDirectory() as tmp:
        target = root if fraction == 1.0 else _subset(root, fraction, Path(tmp) / "subset")
        done = subprocess.run([sys.executable, "-c", _INDEX_CHILD, str(target), str(Path(tmp) / "cache")],
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _subset(root: Path, fraction: float, out: Path) -> Path:
    """A root of symlinks to the first ``fraction`` of each split's shards."""
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        shards = sorted(split_dir.glob("*.tar"))
        (out / split_dir.name).mkdir(parents=True)
        for shard in shards[: max(1, math.ceil(len(shards) * fraction))]:
            (out / split_dir.name / shard.name).symlink_to(shard.resolve())
    return out


def tile(source: Path, out: Path, *, copies: int) -> int:
    """Write ``copies`` re-keyed copies of the shards in ``source`` as a train/val/test set under ``out``.

    The last two copies (at least one each) become val and test, the rest train. Returns the frames written.
    """
    import json

    from arflare.data.shards import iter_members, make_key, parse_key, read_member

    shards = sorted(Path(source).glob("*.tar"))
    if not shards or copies < 3:
        raise SystemExit(f"--tile-from {source}: need .tar shards there and --copies >= 3")
    frames = 0
    for copy in range(copies):
        split = "val" if copy == copies - 2 else "test" if copy == copies - 1 else "train"
        for shard in shards:
            members: dict[str, dict[str, bytes]] = {}
            for m in iter_members(shard):
                members.setdefault(m.key, {})[m.ext] = read_member(shard, m.offset, m.size)
            with ShardWriter(out / split / f"copy{copy:03d}-{shard.name}") as sink:
                for key, parts in members.items():
                    ar, when = parse_key(key)
                    new_ar = str(int(ar) + 1000 * (copy + 1))
                    meta = {**json.loads(parts["json"]), "ar": new_ar}
                    size = int(key.rsplit("_", 1)[1])
                    sink.write(make_key(new_ar, when, size=size), {"png": parts["png"], "json": json.dumps(meta).encode()})
                    frames += 1
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="magnetogram shard root of a 224-px set")
    parser.add_argument("--tile-from", type=Path, help="write --root first by tiling the shards of this folder")
    parser.add_argument("--copies", type=int, default=14, help="--tile-from: copies (default 14)")
    parser.add_argument("--size", type=int, default=224, help="image_size of the dataset (default 224)")
    parser.add_argument("--batches", type=int, default=15, help=f"batches of {BATCH_SIZE} timed per loader row")
    parser.add_argument("--frames", type=int, default=950_000, help="frames to extrapolate to (default: the real 950k)")
    parser.add_argument("--gpu-rate", type=float, default=2000.0,
                        help="ASSUMED training images/s of one GPU (unmeasured here; default 2000)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core: the loader figures are per core
    if args.tile_from is not None:
        if args.root.exists():
            print(f"{args.root} exists; not tiling into it", file=sys.stderr)
            return 2
        print(f"tiled {tile(args.tile_from, args.root, copies=args.copies)} frames into {args.root}", flush=True)

    # Half the shards, then all: the difference is the cost per frame without the fixed start-up.
    half, idx = bench_index(args.root, 0.5), bench_index(args.root)
    print("index from an empty cache, in a fresh process:")
    for run in (half, idx):
        print(f"  {run['frames']:>8} frames: {run['cpu_s']:.1f} CPU s ({run['wall_s']:.1f} s wall), "
              f"+{run['added_mib']:.0f} MiB resident at peak (process peak {run['peak_mib']:.0f} MiB)")
    extra = idx["frames"] - half["frames"]
    if extra < idx["frames"] / 4:
        print(f"{args.root} has too few shards per split to separate the cost per frame from start-up; "
              "use a larger set (arflare synth --ars 90 --size 224)", file=sys.stderr)
        return 2
    cpu_slope, mib_slope = (idx["cpu_s"] - half["cpu_s"]) / extra, (idx["added_mib"] - half["added_mib"]) / extra
    print(f"  per 100k more frames: {cpu_slope * 1e5:.1f} CPU s, +{mib_slope * 1e5:.0f} MiB")

    index = build_index(args.root, progress=False)
    # CPU seconds of this process, not wall time: the rate per core, even on a busy machine.
    baseline = bare_loop(index, split="train", items=BATCH_SIZE * (args.batches + 1), clock=time.process_time)
    augment = AugmentParams(hflip=True, rotate_deg=15, scale=0.1)  # exp2_basic_aug's
    rates = {"bare read + PNG decode": baseline}
    for label, aug in (("frame", None), ("frame + exp2 augmentation", augment)):
        dataset = FlareDataset(index, "train", mode="frame", image_size=args.size, augment=aug)
        dataset.set_epoch(1)
        rates[label] = loader_rate(dataset, workers=0, batches=args.batches, clock=time.process_time)
    print(f"\nloader at {args.size} px, one process, one thread, samples per CPU second (= per core), "
          f"batches of {BATCH_SIZE}:")
    print(f"{'loop':<30}{'samples/s':>10}{'x bare':>8}")
    for label, rate in rates.items():
        print(f"{label:<30}{rate:>10.0f}{rate / baseline:>8.2f}")

    more = args.frames - idx["frames"]
    print(f"\nextrapolated to {args.frames} frames (the measured set plus the per-frame slope): index "
          f"{(idx['cpu_s'] + cpu_slope * more) / 60:.1f} CPU min, +{(idx['added_mib'] + mib_slope * more) / 1024:.2f} GiB "
          "resident at peak")
    for label in ("frame", "frame + exp2 augmentation"):
        cores = math.ceil(args.gpu_rate / rates[label])
        print(f"  {label}: {cores} loader cores to feed one GPU at an ASSUMED {args.gpu_rate:.0f} images/s "
              f"(data.num_workers={cores}); one epoch of {args.frames} frames reads in "
              f"{args.frames / rates[label] / 3600:.1f} core-hours")
    return 0


if __name__ == "__main__":
    sys.exit(main())
