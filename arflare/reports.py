"""What a researcher opens after a run: predictions tables and evaluation figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from arflare import plots
from arflare._reliability_plot import plot_reliability

# The label of the AR-flares shards (and of the synthetic stand-in): the largest flare in the
# 24 h after the frame. Not a spec field because the shards fix it; figures quote it.
FORECAST_WINDOW_H = 24


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


def write_plots(folder: Path, *, run_name: str, history: Mapping[str, Sequence[float]], best_epoch: int,
                monitor: str, val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                threshold: float, min_flare_class: str, keep_rate: float | None) -> list[Path]:
    """Write every figure of a finished run into ``folder``: PNG files, each with an SVG twin.

    Files: ``training_curves``, and for test ``roc_test``, ``pr_test``, ``confusion_test``,
    ``reliability_test`` (probabilities corrected to the true base rate when ``keep_rate`` is
    given, plus ``reliability_test_raw`` with the model's own output).

    Args:
        folder: output folder (created).
        run_name: shown in every caption, e.g. ``exp5_atto_mixup/seed=3``.
        history: per-epoch values ``{"train/loss": [...], "val/tss": [...], ...}``.
        best_epoch: epoch of the kept checkpoint.
        monitor: the validation metric that chose it (``eval.monitor``).
        val: ``(labels, scores)`` of the validation split (the curves' caption counts).
        test: ``(labels, scores)`` of the test split, scored once with the best checkpoint.
        threshold: the decision threshold chosen on validation.
        min_flare_class: ``data.min_flare_class``.
        keep_rate: :func:`arflare.calibration.negative_keep_rate` of the training set, or None.

    Returns:
        Every file written: each PNG followed by its SVG.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def caption(split: str) -> plots.Caption:
        return plots.Caption(run=run_name, split=split, flare_class=min_flare_class, window_h=FORECAST_WINDOW_H)

    y, s = test
    out = [
        plots.plot_training_curves(history, folder / "training_curves.png", caption=caption("val"), labels=val[0],
                                   best_epoch=best_epoch, monitor=monitor),
        plots.plot_roc(y, s, folder / "roc_test.png", caption=caption("test"), threshold=threshold),
        plots.plot_pr(y, s, folder / "pr_test.png", caption=caption("test"), threshold=threshold),
        plots.plot_confusion(y, s, threshold, folder / "confusion_test.png", caption=caption("test")),
        plot_reliability(y, s, folder / "reliability_test.png", caption=caption("test"), keep_rate=keep_rate),
    ]
    if keep_rate is not None:
        out.append(plot_reliability(y, s, folder / "reliability_test_raw.png", caption=caption("test"),
                                    keep_rate=keep_rate, raw=True))
    return [file for png in out for file in (png, vector_twin(png))]


def vector_twin(png: Path) -> Path:
    """The vector copy written beside a figure's PNG."""
    return Path(png).with_suffix(f".{plots.VECTOR_FORMAT}")
