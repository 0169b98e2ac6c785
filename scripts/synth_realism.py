"""How the synthetic set compares with the real AR-flares data set: a markdown table for the README.

Reads a set written by ``arflare synth`` (its ground truth and every PNG) and prints its
statistics beside the real data set's where this project knows them (the real data is not
on this machine; values it cannot check are marked "unknown here", never guessed).

Usage:
    python scripts/synth_realism.py --root data/synthetic
    python scripts/synth_realism.py --seeds 8     # label shares of seeds 0-7, physics only (seconds)
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from arflare.data.shards import SPLITS, iter_members, read_member
from arflare.data.synth import png_levels_to_gauss

UNKNOWN = "unknown here"
# What the project knows of the real AR-flares set (HMI SHARP magnetograms, 24 h GOES labels).
REAL = {
    "frames": "~950k", "cadence": "12 min", "positive (>= C in 24 h)": "~20 %",
}
FIELD_BINS_G = (0, 100, 500, 1500, np.inf)  # quiet Sun and noise | plage | penumbra-like | umbra-like


def png_histogram(root: Path) -> tuple[np.ndarray, int, int]:
    """Pixel counts per |B| bin of :data:`FIELD_BINS_G` over every PNG, the saturated pixels and the total."""
    counts = np.zeros(len(FIELD_BINS_G) - 1, dtype=np.int64)
    saturated = total = 0
    for shard in sorted((root / "magnetograms").glob("*/*.tar")):
        for member in iter_members(shard):
            if member.ext != "png":
                continue
            levels = np.asarray(Image.open(io.BytesIO(read_member(shard, member.offset, member.size))))
            counts += np.histogram(np.abs(png_levels_to_gauss(levels)), bins=FIELD_BINS_G)[0]
            saturated += int(((levels == 0) | (levels == 255)).sum())
            total += levels.size
    return counts, saturated, total


def realism_rows(root: Path) -> list[tuple[str, str, str]]:
    """(statistic, synthetic value, real value) rows for the set at ``root``."""
    truth = pd.read_parquet(root / "ground_truth.parquet")
    params = json.loads((root / "synth.json").read_text())["params"]
    per_ar = truth.groupby("ar").size()
    steps = truth.sort_values(["ar", "timestamp"]).groupby("ar")["timestamp"].diff().dropna()
    m_share = (truth["peak_flux"] >= 1e-5).mean()
    rows = [
        ("frames", f"{len(truth):,} ({params['ars']} ARs, seed {params['seed']})", REAL["frames"]),
        ("cadence", f"{steps.median().total_seconds() / 60:.0f} min (no gaps)", REAL["cadence"]),
        ("positive (>= C in 24 h)", f"{truth['label'].mean():.1%}", REAL["positive (>= C in 24 h)"]),
        (">= M in 24 h", f"{m_share:.1%} realised, {truth['p_label_m_future'].mean():.1%} expected", UNKNOWN),
        ("frames per AR (median, range)", f"{per_ar.median():.0f} ({per_ar.min()}-{per_ar.max()})", UNKNOWN),
        ("ARs per split (train/val/test)",
         "/".join(str(truth.loc[truth["split"] == s, "ar"].nunique()) for s in SPLITS), UNKNOWN),
    ]
    counts, saturated, total = png_histogram(root)
    names = [f"{lo:.0f}-{hi:.0f} G" if np.isfinite(hi) else f">= {lo:.0f} G"
             for lo, hi in zip(FIELD_BINS_G[:-1], FIELD_BINS_G[1:])]
    shares = ", ".join(f"{name} {count / total:.2%}" for name, count in zip(names, counts))
    rows.append(("PNG pixels by abs(B)", shares, UNKNOWN))
    rows.append(("PNG pixels saturated (level 0 or 255)", f"{saturated / total:.3%}", UNKNOWN))
    return rows


def label_shares(seeds: int, ars: int) -> pd.DataFrame:
    """Per seed: frames, realised and expected shares of >= C and >= M labels (physics only, no images)."""
    from arflare.data.synth import simulate

    rows = []
    for seed in range(seeds):
        regions = [simulate(i, seed=seed, hours=None) for i in range(ars)]
        frames = sum(r.n_frames for r in regions)
        rows.append({"seed": seed, "frames": frames, **{
            name: sum(float(np.sum(values(r))) for r in regions) / frames for name, values in {
                ">=C realised": lambda r: r.labels["largest"] >= 1e-6, ">=C expected": lambda r: r.labels["p_label_future"],
                ">=M realised": lambda r: r.labels["largest"] >= 1e-5, ">=M expected": lambda r: r.labels["p_label_m_future"],
            }.items()}})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """Print the realism table of ``--root`` as markdown, or the label shares of ``--seeds`` sets."""
    from arflare.data.synth import DEFAULT_ARS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="data set folder written by `arflare synth`")
    parser.add_argument("--seeds", type=int, help="instead of --root: label shares of seeds 0..N-1 (physics only)")
    parser.add_argument("--ars", type=int, default=DEFAULT_ARS, help="with --seeds: ARs per set")
    args = parser.parse_args(argv)
    if args.seeds:
        print(label_shares(args.seeds, args.ars).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        return 0
    if args.root is None:
        parser.error("give --root DIR or --seeds N")
    if not (args.root / "ground_truth.parquet").is_file():
        print(f"No ground_truth.parquet under {args.root}; generate with `arflare synth --out {args.root}`",
              file=sys.stderr)
        return 2
    print("| statistic | synthetic | real AR-flares set |\n|---|---|---|")
    for name, synthetic, real in realism_rows(args.root):
        print(f"| {name} | {synthetic} | {real} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
