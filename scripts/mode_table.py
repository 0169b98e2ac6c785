"""The README's measured tables: input modes, physics and hybrid beside the oracles, with intervals.

Reads the tracking store of ``experiments.yaml`` (or ``$MLFLOW_TRACKING_URI``) and one synthetic
data set's ``ground_truth.parquet``, and prints a markdown table: for each oracle of the set
(``p_label_future``, ``p_label_present``, ``p_label_present_no_change``) and for each named
experiment's best FINISHED run of ``--profile`` (best by its own validation monitor, as a SOURCE
resolves), the test AUC and TSS with their AR-bootstrap 95 % intervals. Runs log their intervals
(``test/<m>_lo`` / ``_hi``); the oracles get the same bootstrap here, with the threshold chosen on
validation, as a run's. ``--figure DIR`` also copies the permutation-importance figure of the
hybrid (and the physics run) there.

Usage:
    python scripts/mode_table.py --root data/temporal --profile study
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from arflare import metrics as skill
from arflare import record
from arflare.bootstrap import bootstrap_intervals
from arflare.commands import open_tracker
from arflare.source_runs import best_run
from arflare.spec import RunSpec
from registry.loader import load_registry
from registry.search_spec import SearchSpec

ORACLES = {"p_label_future": "upper bound (knows the future)",
           "p_label_present": "present-information oracle (rate at t)",
           "p_label_present_no_change": "present oracle blind to change (rate at t without the emergence term)"}
EXPERIMENTS = ("exp2_basic_aug", "exp9_diff", "exp10_multiscale", "exp11_sequence", "exp4_flow_aug",
               "exp7_physics_gbm", "exp8_hybrid")
METRICS = ("auc", "tss")
FIGURE = f"{record.PLOTS}/permutation_importance_val.png"


def _cell(estimate: float, lo: float, hi: float) -> str:
    return f"{estimate:.3f} [{lo:.3f}, {hi:.3f}]"


def oracle_rows(root: Path) -> list[dict[str, str]]:
    """One row per oracle column of the set: test AUC and TSS (val threshold) with AR-bootstrap intervals."""
    truth = pd.read_parquet(root / "ground_truth.parquet")
    val, test = truth[truth["split"] == "val"], truth[truth["split"] == "test"]
    rows = []
    for column, name in ORACLES.items():
        if column not in truth:
            continue  # a set written before the column existed
        threshold = skill.choose_threshold(val["label"].to_numpy(), val[column].to_numpy(), metric="tss")
        found = bootstrap_intervals(test["label"], test[column], test["ar"], threshold=threshold)
        rows.append({"model": name, "input": "latent truth", "val TSS": "",
                     **{f"test {m.upper()} [95 % CI]": _cell(found[m].estimate, found[m].lo, found[m].hi) for m in METRICS}})
    return rows


def run_rows(tracker, experiments, profile: str | None) -> tuple[list[dict[str, str]], dict]:
    """One row per experiment with a FINISHED run of ``profile``: its best run's test scores and intervals."""
    rows, chosen = [], {}
    for name in experiments:
        runs = [r for r in tracker.search(experiments=[name]) if r.status == "FINISHED"
                and r.tags.get(record.TAG_KIND) == "train" and r.tags.get(record.TAG_PROFILE, "") == (profile or "")]
        run = best_run(runs)
        if run is None:
            rows.append({"model": name, "input": "(no FINISHED run)"})
            continue
        chosen[name] = run
        kind = run.params.get("model.kind", "cnn")
        cells = {}
        for m in METRICS:
            key = f"test/{m}"
            lo, hi = run.metrics.get(f"{key}_lo"), run.metrics.get(f"{key}_hi")
            value = run.metrics.get(key)
            cells[f"test {m.upper()} [95 % CI]"] = "n/a" if value is None else (
                _cell(value, lo, hi) if lo is not None and hi is not None else f"{value:.3f}")
        mode = run.params.get("data.input_mode", "frame") if kind == "cnn" else kind
        val = run.metrics.get(record.best_val_metric("tss"))
        rows.append({"model": f"{name} ({run.run_id[:8]})", "input": mode,
                     "val TSS": "" if val is None else f"{val:.3f}", **cells})
    return rows, chosen


def markdown(rows: list[dict[str, str]]) -> str:
    """A markdown table of ``rows`` (missing cells empty)."""
    columns = ["model", "input", "test AUC [95 % CI]", "test TSS [95 % CI]", "val TSS"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def copy_figures(tracker, chosen: dict, folder: Path) -> list[Path]:
    """Copy the permutation-importance figure of each physics/hybrid run to ``folder/importances_<exp>.png``."""
    written = []
    folder.mkdir(parents=True, exist_ok=True)
    for name, run in chosen.items():
        if run.params.get("model.kind", "cnn") == "cnn":
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = tracker.fetch_artifact(run.run_id, FIGURE, Path(tmp))
            target = folder / f"importances_{name}.png"
            shutil.copyfile(path, target)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 when the data set has no ground truth."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="the synthetic data set folder (arflare synth --out)")
    parser.add_argument("--profile", default="study", help="the profile the runs used (default study)")
    parser.add_argument("--file", type=Path, default=Path("experiments.yaml"), help="registry file")
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), help="experiments, in row order")
    parser.add_argument("--figure", type=Path, help="copy the physics/hybrid importance figures to this folder")
    args = parser.parse_args(argv)
    if not (args.root / "ground_truth.parquet").is_file():
        print(f"no ground_truth.parquet under {args.root}; write the set with `arflare synth --out {args.root}`",
              file=sys.stderr)
        return 1
    registry = load_registry(args.file, RunSpec, seed_key="train.seed", search_schema=SearchSpec)
    tracker = open_tracker(registry)
    truth = pd.read_parquet(args.root / "ground_truth.parquet", columns=["split", "ar", "label"])
    test = truth[truth["split"] == "test"]
    rows, chosen = run_rows(tracker, args.experiments, args.profile)
    print(f"test split of {args.root}: {test['ar'].nunique()} ARs, {len(test)} frames, {test['label'].mean():.1%} "
          "positive; intervals: AR-bootstrap 95 % (1000 resamples); thresholds chosen on validation\n")
    print(markdown(oracle_rows(args.root) + rows))
    if args.figure:
        for path in copy_figures(tracker, chosen, args.figure):
            print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
