"""What a researcher opens after a run: predictions tables and evaluation plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from arflare import plots


def write_predictions(dataset, indices: np.ndarray, labels: np.ndarray, scores: np.ndarray, path: Path) -> Path:
    """Write ``key, ar, timestamp, label, reg_label, score`` for each scored sample.

    ``indices`` are the dataset positions the scores belong to (taken from the batches, so a
    corrupt sample skipped in favour of its neighbour can never shift keys against scores).
    """
    table = dataset.frame_table.reset_index(drop=True).iloc[indices][["key", "ar", "timestamp", "reg_label"]].copy()
    table["label"] = labels.astype(int)
    table["score"] = scores.astype(float)
    path.parent.mkdir(parents=True, exist_ok=True)
    table[["key", "ar", "timestamp", "label", "reg_label", "score"]].to_parquet(path, index=False)
    return path


def write_plots(history: Mapping[str, Sequence[float]], labels: np.ndarray, scores: np.ndarray,
                threshold: float, folder: Path) -> list[Path]:
    """Training curves plus test ROC, PR, confusion matrix and reliability diagram."""
    from arflare.metrics import confusion

    folder.mkdir(parents=True, exist_ok=True)
    tp, tn, fp, fn = confusion(labels, scores >= threshold)
    return [
        plots.plot_training_curves(history, folder / "training_curves.png", title="training curves"),
        plots.plot_roc(labels, scores, folder / "roc_test.png", threshold=threshold, title="ROC (test)"),
        plots.plot_pr(labels, scores, folder / "pr_test.png", title="precision-recall (test)"),
        plots.plot_confusion(tp, tn, fp, fn, folder / "confusion_test.png", title=f"test @ threshold {threshold:.3f}"),
        plots.plot_reliability(labels, scores, folder / "reliability_test.png", title="reliability (test)"),
    ]
