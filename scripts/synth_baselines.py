"""Baselines on a synthetic AR-flares data set: how much do time and morphology matter?

Prints test-split TSS and ROC AUC for
  * the upper bound (knows the future): score = p_label_future, the true probability under the
    latent flare process over (t, t + 24 h], including bipoles that have not emerged yet;
  * the present-information oracle: score = p_label_present, the latent flare rate at t (R-value,
    6 h flux increase and the AR's hidden productivity, nothing after t) held for 24 h;
  * the same oracle blind to change: score = p_label_present_no_change, the rate at t without its
    emergence term (what the configuration at t implies); the gap to the present oracle is the
    skill within reach that needs time order;
  * logistic regression on one frame (total unsigned flux, max field gradient);
  * logistic regression that also sees the change of unsigned flux over the last 1 h and
    6 h of the same AR, computed from earlier frames (what emergence looks like).
The TSS threshold of every model is the one that maximises TSS on val.

Usage:
    python scripts/synth_baselines.py --root data/synth
    python scripts/synth_baselines.py --seeds 8                     # generate sets 0-7, mean and std
    python scripts/synth_baselines.py --seeds 4 --oracles-only --decaying-share 0.5 --emergence-gain 3
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from arflare import metrics as skill
from arflare.data.shards import SPLITS, iter_members, read_member
from arflare.data.synth import png_levels_to_gauss
from arflare.physics.fields import FLUX_THRESHOLD_G  # flux and max_gradient as arflare.physics defines them
from arflare.physics.fields import STRONG_FIELD_G as PIL_THRESHOLD_G  # Schrijver's 150 G

LAGS = {"flux_change_1h": 5, "flux_change_6h": 30}  # in 12-minute frames
SINGLE_FRAME = ["log_flux", "max_gradient", "log_r_value"]
TEMPORAL = SINGLE_FRAME + list(LAGS)
ORACLES = {"upper bound (knows the future)": "p_label_future", "present-information oracle (rate at t)": "p_label_present",
           "present oracle blind to change": "p_label_present_no_change"}
TRUTH_COLUMNS = ["key", "ar", "split", "timestamp", "label", *ORACLES.values()]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by ``radius`` pixels (square neighbourhood)."""
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    return out


def frame_features(levels: np.ndarray) -> dict[str, float]:
    """One-frame summaries of a magnetogram, in units that do not depend on the image size.

    ``flux``: unsigned flux (G * field of view^2); ``max_gradient``: G per field of view;
    ``r_value``: Schrijver's R, the unsigned flux near the polarity inversion line where
    strong fields of both signs meet.
    """
    gauss = png_levels_to_gauss(levels)
    size = gauss.shape[0]
    radius = max(1, round(size / 32))  # ~3% of the field of view, like R's kernel
    strong = np.abs(gauss) > PIL_THRESHOLD_G
    pil = _dilate(strong & (gauss > 0), radius) & _dilate(strong & (gauss < 0), radius)
    near_pil = _dilate(pil, radius)
    gy, gx = np.gradient(gauss)
    return {
        "flux": float((np.abs(gauss) * (np.abs(gauss) > FLUX_THRESHOLD_G)).sum() / size**2),
        "max_gradient": float(np.hypot(gx, gy).max() * size),
        "r_value": float((np.abs(gauss) * near_pil).sum() / size**2),
    }


def read_features(root: Path) -> pd.DataFrame:
    """One row of image features per magnetogram in ``root/magnetograms/{split}/*.tar``."""
    rows = []
    for split in SPLITS:
        for shard in sorted((root / "magnetograms" / split).glob("*.tar")):
            for member in iter_members(shard):
                if member.ext != "png":
                    continue
                png = read_member(shard, member.offset, member.size)
                rows.append({"key": member.key, **frame_features(np.asarray(Image.open(io.BytesIO(png))))})
    if not rows:
        raise SystemExit(f"No shards under {root}/magnetograms; generate with `arflare synth --out {root}`")
    return pd.DataFrame(rows)


def add_history(frame: pd.DataFrame) -> pd.DataFrame:
    """Add log flux and the flux change over each lag from earlier frames of the same AR.

    Frames with less history than a lag use the AR's first frame (a shorter look back).
    """
    frame = frame.sort_values(["ar", "timestamp"]).reset_index(drop=True)
    frame["log_flux"] = np.log1p(frame["flux"])
    frame["log_r_value"] = np.log1p(frame["r_value"])
    position = frame.groupby("ar").cumcount().to_numpy()
    for name, lag in LAGS.items():
        earlier = frame.index.to_numpy() - np.minimum(position, lag)
        frame[name] = frame["flux"].to_numpy() - frame["flux"].to_numpy()[earlier]
    return frame


def evaluate(frame: pd.DataFrame) -> pd.DataFrame:
    """Fit the baselines on train, choose thresholds on val, score test; one row per model."""
    parts = {split: frame[frame["split"] == split] for split in SPLITS}
    scores = {name: {split: part[column].to_numpy() for split, part in parts.items()}
              for name, column in ORACLES.items() if column in frame}  # sets older than synth VERSION 3 lack one
    for name, columns in (("LR one frame", SINGLE_FRAME), ("LR + flux change 1h/6h", TEMPORAL)):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(parts["train"][columns], parts["train"]["label"])
        scores[name] = {split: model.predict_proba(part[columns])[:, 1] for split, part in parts.items()}
    rows = []
    for name, by_split in scores.items():
        # The trainer's own rules: threshold maximising TSS on val, applied unchanged to test.
        threshold = skill.choose_threshold(parts["val"]["label"].to_numpy(), by_split["val"], metric="tss")
        labels = parts["test"]["label"].to_numpy()
        rows.append({"model": name, "test AUC": roc_auc_score(labels, by_split["test"]),
                     "test TSS": skill.tss(*skill.confusion(labels, by_split["test"] >= threshold)),
                     "val threshold": threshold})
    return pd.DataFrame(rows)


def load(root: Path) -> pd.DataFrame:
    """Features of every frame plus what a forecaster may know (and both oracles' probabilities)."""
    truth = pd.read_parquet(root / "ground_truth.parquet")
    truth = truth[[c for c in TRUTH_COLUMNS if c in truth]]
    return add_history(truth.merge(read_features(root), on="key", validate="one_to_one"))


def over_seeds(seeds: int, ars: int, **physics: float) -> pd.DataFrame:
    """The baselines on ``seeds`` freshly generated sets (``physics``: generator options): mean and std per model."""
    import tempfile

    from arflare.data.synth import generate

    tables = []
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp) / "set", ars=ars, seed=seed, progress=False, **physics)
            frame = load(Path(tmp) / "set")
        if frame[frame["split"] == "test"]["label"].nunique() == 2:
            tables.append(evaluate(frame).assign(seed=seed))
    table = pd.concat(tables)
    summary = table.groupby("model", sort=False)[["test AUC", "test TSS"]].agg(["mean", "std"])
    summary.columns = [f"{metric} {stat}" for metric, stat in summary.columns]
    return summary.reset_index().assign(seeds=len(tables))


def oracle_gaps(seeds: int, ars: int, *, hours: float | None = None, **physics: float) -> pd.DataFrame:
    """The oracles' AUC and best TSS over every frame of ``seeds`` simulated sets (physics only, no images).

    Nothing is fitted, so no split is needed; the TSS is the best over thresholds (an oracle's
    property, not a forecast's). ``present - blind to change`` is the skill within reach that
    needs time order: the strength of the set's temporal signal.
    """
    from sklearn.metrics import roc_curve

    from arflare.data.synth import simulate

    rows = []
    for seed in range(seeds):
        regions = [simulate(i, seed=seed, hours=hours, **physics) for i in range(ars)]
        labels = np.concatenate([r.labels["largest"] >= 1e-6 for r in regions])
        for name, column in ORACLES.items():
            scores = np.concatenate([r.labels[column] for r in regions])
            fpr, tpr, _ = roc_curve(labels, scores)
            rows.append({"seed": seed, "model": name, "AUC": roc_auc_score(labels, scores), "best TSS": (tpr - fpr).max()})
    table = pd.DataFrame(rows)
    summary = table.groupby("model", sort=False)[["AUC", "best TSS"]].agg(["mean", "std"])
    summary.columns = [f"{metric} {stat}" for metric, stat in summary.columns]
    return summary.reset_index().assign(seeds=seeds, positive=f"{labels.mean():.1%} (last seed)")


def main(argv: list[str] | None = None) -> int:
    """Read a synthetic data set (or generate several), print the baseline table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="data set folder written by `arflare synth`")
    parser.add_argument("--seeds", type=int, help="instead of --root: generate this many sets (seeds 0..N-1) and average")
    parser.add_argument("--ars", type=int, default=None, help="with --seeds: active regions per set (default: synth's default)")
    parser.add_argument("--decaying-share", type=float, default=0.0, help="with --seeds: the generator option")
    parser.add_argument("--emergence-gain", type=float, default=1.0, help="with --seeds: the generator option")
    parser.add_argument("--hours", type=float, default=None, help="with --seeds: the generator option")
    parser.add_argument("--oracles-only", action="store_true",
                        help="with --seeds: only the oracles, from the simulated physics (no images; seconds)")
    args = parser.parse_args(argv)
    if args.seeds:
        from arflare.data.synth import DEFAULT_ARS

        if args.oracles_only:
            table = oracle_gaps(args.seeds, args.ars or DEFAULT_ARS, hours=args.hours,
                                decaying_share=args.decaying_share, emergence_gain=args.emergence_gain)
            print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            return 0

        table = over_seeds(args.seeds, args.ars or DEFAULT_ARS, decaying_share=args.decaying_share,
                           emergence_gain=args.emergence_gain, hours=args.hours)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        return 0
    if args.root is None:
        parser.error("give --root DIR or --seeds N")
    frame = load(args.root)
    for split in SPLITS:
        part = frame[frame["split"] == split]
        print(f"{split:<5}: {part['ar'].nunique():>4} ARs {len(part):>7} frames {part['label'].mean():6.1%} positive")
    if frame[frame["split"] == "test"]["label"].nunique() < 2:
        print("test split has a single class; generate more ARs (--ars)", file=sys.stderr)
        return 1
    print(evaluate(frame).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
