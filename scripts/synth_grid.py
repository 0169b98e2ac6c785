"""Draw a grid of flaring and quiet test-split magnetograms from a synthetic data set.

The top rows show frames followed by a flare (largest in the next 24 h in the title),
the bottom rows frames that are not; grey = 0 G, white = positive, black = negative.

Usage:
    python scripts/synth_grid.py --root data/synth --out docs/synth_grid.png
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from arflare.data.shards import iter_members, read_member  # noqa: E402

STRETCH_LEVELS = 32  # grey levels either side of 128 shown black..white (~1500 G)


def pick_frames(truth: pd.DataFrame, *, per_class: int, seed: int) -> pd.DataFrame:
    """Test frames: ``per_class`` flaring ones (largest flares first, one per AR when possible) and quiet ones."""
    test = truth[truth["split"] == "test"].sample(frac=1.0, random_state=seed)
    flaring = test[test["label"] == 1].sort_values("peak_flux", ascending=False)
    quiet = test[test["label"] == 0]
    picked = []
    for part in (flaring, quiet):
        one_per_ar = part.drop_duplicates("ar")
        rest = part.drop(one_per_ar.index)
        picked.append(pd.concat([one_per_ar, rest]).head(per_class))
    return pd.concat(picked)


def read_pngs(root: Path, keys: set[str]) -> dict[str, np.ndarray]:
    """Decode the PNGs of ``keys`` from the test magnetogram shards."""
    images = {}
    for shard in sorted((root / "magnetograms" / "test").glob("*.tar")):
        for member in iter_members(shard):
            if member.ext == "png" and member.key in keys:
                images[member.key] = np.asarray(Image.open(io.BytesIO(read_member(shard, member.offset, member.size))))
    return images


def draw(frames: pd.DataFrame, images: dict[str, np.ndarray], out: Path, *, columns: int) -> None:
    """Save the grid: one panel per frame, 128 = 0 G mid-grey, titles with AR, time and label."""
    rows = -(-len(frames) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, frames.itertuples()):
        # Display stretched to +-STRETCH_LEVELS grey levels (about +-1500 G) around 0 G; the PNGs span +-6000 G.
        ax.imshow(images[row.key], cmap="gray", vmin=128 - STRETCH_LEVELS, vmax=128 + STRETCH_LEVELS, interpolation="nearest")
        flare = row.reg_label if row.label else "no flare"
        ax.set_title(f"AR {row.ar} {row.timestamp:%m-%d %H:%M}\n{flare}", fontsize=8)
    fig.suptitle("Synthetic test magnetograms: flaring in the next 24 h (top), quiet (bottom); "
                 f"grey scale +-{STRETCH_LEVELS * 6000 / 127:.0f} G", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Pick frames, read them from the shards, save the grid."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="data set folder written by `arflare synth`")
    parser.add_argument("--out", type=Path, default=Path("docs/synth_grid.png"), help="PNG to write")
    parser.add_argument("--per-class", type=int, default=4, help="flaring and quiet frames to show (each)")
    parser.add_argument("--seed", type=int, default=0, help="which frames to pick")
    args = parser.parse_args(argv)
    truth = pd.read_parquet(args.root / "ground_truth.parquet")
    frames = pick_frames(truth, per_class=args.per_class, seed=args.seed)
    if frames.empty:
        print(f"No test frames in {args.root}; generate with `arflare synth --out {args.root}`", file=sys.stderr)
        return 1
    images = read_pngs(args.root, set(frames["key"]))
    draw(frames, images, args.out, columns=args.per_class)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB, {len(frames)} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
