"""The README's hard-negative table: a source experiment against its hard-negative retraining.

Reads the tracking store of ``experiments.yaml`` (or ``$MLFLOW_TRACKING_URI``) and the synthetic
set's ``ground_truth.parquet``, and prints a markdown table with one row per experiment (its best
FINISHED training run of ``--profile``, chosen on validation as a SOURCE is resolved):

* val TSS of the best checkpoint; test TSS and TPR@FPR=1e-2 with the AR-bootstrap intervals the
  run logged (TPR@FPR=1e-3 is shown only when the split has >= 1000 negatives; below that it is
  the TPR at zero false positives, see ``arflare compare``'s ``n/a``);
* FPR on the *source-defined* hard negatives of val and test: the negatives the source run
  (``data.hard_negatives.from`` of the retrained experiment, read from its ``arflare.lineage``
  tag) scored at or above its own threshold; this is ``val/fpr_hard`` / ``test/fpr_hard``. For the
  source run itself it is 1.0 by construction, so the column compares only the retrained runs;
* FPR on the *ground-truth* hard negatives of the synthetic set (``hard_negative`` frames of
  ``ground_truth.parquet``: active regions built to look like flaring ones that do not flare),
  which no model chose, so it compares source and retrained runs fairly;
* FPR on all negatives.

Every FPR is at the run's own threshold (chosen on validation), with a 95 % AR cluster bootstrap
interval computed here from the run's ``predictions/{val,test}.parquet`` (1000 resamples, seed 0).

Usage:
    python scripts/hardneg_table.py --root data/synth60 --profile ""   # runs launched without a profile
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from arflare import record
from arflare.bootstrap import cluster_index
from arflare.commands import open_tracker
from arflare.source_runs import best_run
from arflare.spec import RunSpec
from registry.loader import load_registry
from registry.search_spec import SearchSpec

RESAMPLES = 1000


def fpr_interval(hit: np.ndarray, ars: np.ndarray, *, seed: int = 0) -> tuple[float, float, float, int]:
    """``(FPR, lo, hi, n)`` of false-positive flags ``hit`` over negatives, ARs resampled with replacement."""
    if hit.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    cluster = cluster_index(ars)
    k = int(cluster.max()) + 1
    hits, counts = np.bincount(cluster, weights=hit, minlength=k), np.bincount(cluster, minlength=k)
    draws = np.random.default_rng(seed).integers(0, k, size=(RESAMPLES, k))
    weights = np.stack([np.bincount(row, minlength=k) for row in draws])
    resampled = (weights @ hits) / (weights @ counts)
    lo, hi = np.percentile(resampled, [2.5, 97.5])
    return float(hit.mean()), float(lo), float(hi), int(hit.size)


def _cell(estimate: float, lo: float | None, hi: float | None, n: int | None = None) -> str:
    if estimate is None or np.isnan(estimate):
        return "n/a"
    text = f"{estimate:.3f}" if lo is None or hi is None else f"{estimate:.3f} [{lo:.3f}, {hi:.3f}]"
    return text if n is None else f"{text} (n={n})"


def _predictions(tracker, run_id: str, split: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.fetch_artifact(run_id, f"{record.PREDICTIONS}/{split}.parquet", Path(tmp))
        return pd.read_parquet(path, columns=["key", "ar", "label", "score"])


def source_hard_keys(tracker, run) -> dict[str, set[str]]:
    """``{split: keys}``: negatives the retrained run's hard-negative sources scored >= their threshold."""
    lineage = json.loads(run.tags.get(record.TAG_LINEAGE, "{}"))
    keys: dict[str, set[str]] = {"val": set(), "test": set()}
    for source_id in set(lineage.get("sources", {}).values()):
        threshold = tracker.get_run(source_id).metrics["threshold"]
        for split in keys:
            frame = _predictions(tracker, source_id, split)
            keys[split] |= set(frame.loc[(frame["label"] == 0) & (frame["score"] >= threshold), "key"])
    return keys


def mined_keys(tracker, run) -> set[str]:
    """Keys of the merged hard-negative table the retrained run trained with (its mine runs' tables)."""
    from arflare.mining import read_mined_table

    keys: set[str] = set()
    for mine_run in json.loads(run.tags.get(record.TAG_LINEAGE, "{}")).get("mine_runs", {}).values():
        with tempfile.TemporaryDirectory() as tmp:
            keys |= set(read_mined_table(tracker, mine_run, Path(tmp))["key"])
    return keys


def row(tracker, name: str, run, truth: pd.DataFrame, hard: dict[str, set[str]]) -> dict[str, str]:
    """One experiment's cells."""
    cells = {"experiment": f"{name} ({run.run_id[:8]})"}
    val_tss = run.metrics.get(record.best_val_metric("tss"))
    cells["val TSS"] = _cell(val_tss, None, None)
    for metric, label in (("tss", "test TSS"), ("tpr_at_fpr_1e-2", "test TPR@FPR=1e-2")):
        key = f"test/{metric}"
        cells[label] = _cell(run.metrics.get(key), run.metrics.get(f"{key}_lo"), run.metrics.get(f"{key}_hi"))
    threshold = run.metrics["threshold"]
    for split in ("val", "test"):
        frame = _predictions(tracker, run.run_id, split).merge(truth[["key", "hard_negative"]], on="key", how="left")
        negative = frame["label"] == 0
        hit = (frame["score"] >= threshold).to_numpy(float)
        ars = frame["ar"].to_numpy()
        for label, chosen in ((f"{split} FPR, source-hard", negative & frame["key"].isin(hard[split])),
                              (f"{split} FPR, true hard", negative & frame["hard_negative"].fillna(False).astype(bool)),
                              (f"{split} FPR, all", negative)):
            mask = chosen.to_numpy()
            cells[label] = _cell(*fpr_interval(hit[mask], ars[mask])) if mask.any() else "n/a"
    return cells


def markdown(rows: list[dict[str, str]]) -> str:
    """A markdown table of ``rows``."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r.get(c, "") for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 when a run or the ground truth is missing."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("data/synthetic"), help="the synthetic set (ground_truth.parquet)")
    parser.add_argument("--profile", default="demo", help="the profile the runs used (default demo)")
    parser.add_argument("--file", type=Path, default=Path("experiments.yaml"), help="registry file")
    parser.add_argument("--experiments", nargs=2, default=["exp1_basic_reg", "exp6_hardneg"], metavar=("SOURCE", "RETRAINED"))
    args = parser.parse_args(argv)
    if not (args.root / "ground_truth.parquet").is_file():
        print(f"no ground_truth.parquet under {args.root}; the synthetic set has it (arflare synth)", file=sys.stderr)
        return 1
    registry = load_registry(args.file, RunSpec, seed_key="train.seed", search_schema=SearchSpec)
    tracker = open_tracker(registry)
    chosen = {}
    for name in args.experiments:
        runs = [r for r in tracker.search(experiments=[name]) if r.status == "FINISHED"
                and r.tags.get(record.TAG_KIND) == "train" and r.tags.get(record.TAG_PROFILE, "") == (args.profile or "")]
        chosen[name] = best_run(runs)
        if chosen[name] is None:
            print(f"no FINISHED {name} run of profile {args.profile}; run: arflare run {name} --profile {args.profile}",
                  file=sys.stderr)
            return 1
    truth = pd.read_parquet(args.root / "ground_truth.parquet", columns=["key", "split", "ar", "label", "hard_negative"])
    hard = source_hard_keys(tracker, chosen[args.experiments[1]])
    for split in ("val", "test"):
        part = truth[truth["split"] == split]
        print(f"{split}: {part['ar'].nunique()} ARs, {len(part)} frames, {int(part['label'].sum())} flaring, "
              f"{int(part['hard_negative'].sum())} true hard negatives, {len(hard[split])} source-hard negatives")
    mined = mined_keys(tracker, chosen[args.experiments[1]])
    true_hard = set(truth.loc[(truth["split"] == "train") & truth["hard_negative"], "key"])
    print(f"train: {len(mined)} mined hard negatives, {len(mined & true_hard)} of them among the {len(true_hard)} "
          "true hard negatives")
    print("thresholds chosen on validation; [95 % CI]: AR cluster bootstrap; (n=): negatives the FPR is over\n")
    print(markdown([row(tracker, name, run, truth, hard) for name, run in chosen.items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
