"""Evaluation plots: training curves, ROC, precision-recall, confusion matrix, reliability.

Each function writes one small PNG, returns its path and leaves no figure open.
matplotlib is imported lazily so that importing this module stays cheap, and
figures are built with ``matplotlib.figure.Figure`` on an Agg canvas rather than
through ``pyplot``: that never touches the global backend or pyplot's figure
registry, so it is safe in headless runs and nothing leaks between calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from arflare.metrics import threshold_metrics, validate_inputs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DPI = 100


def _new_figure(ncols: int = 1, *, width: float = 4.5, height: float = 4.0, **kwargs) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=_DPI, layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path | str, title: str) -> Path:
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    fig.clear()  # the figure was never registered with pyplot; clearing frees its artists
    return path


def plot_training_curves(
    history: Mapping[str, Sequence[float]], path: Path | str, *, title: str = ""
) -> Path:
    """Plot per-epoch curves: losses in the left panel, skill metrics in the right.

    Args:
        history: ``{"train/loss": [...], "val/loss": [...], "val/tss": [...], ...}``,
            one value per epoch (epoch 1 first). Keys ending in ``loss`` are losses.
        path: where to write the PNG.
        title: figure title.

    Returns:
        ``path``.
    """
    from matplotlib.ticker import MaxNLocator

    if not any(len(values) for values in history.values()):
        raise ValueError(f"history has no values to plot; got keys {sorted(history)}")
    losses = {k: v for k, v in history.items() if k.rsplit("/", 1)[-1].endswith("loss") and len(v)}
    skills = {k: v for k, v in history.items() if k not in losses and len(v)}
    panels = [(group, label) for group, label in ((losses, "loss"), (skills, "skill")) if group]
    fig = _new_figure(len(panels))
    for ax, (group, label) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for key, values in sorted(group.items()):
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path, title)


def plot_roc(
    y_true: ArrayLike,
    scores: ArrayLike,
    path: Path | str,
    *,
    threshold: float | None = None,
    title: str = "",
) -> Path:
    """Plot the ROC curve and, if a threshold is given, mark its operating point.

    Args:
        y_true: 0/1 labels.
        scores: scores, higher means flare.
        path: where to write the PNG.
        threshold: if given, mark the point ``score >= threshold`` with its TSS.
        title: figure title.

    Returns:
        ``path``. With a single class in ``y_true`` the ROC is undefined and the
        figure says so instead of raising.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y, s = validate_inputs(y_true, scores)
    fig = _new_figure()
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="no skill")
    if y.min() == y.max():
        ax.text(0.5, 0.5, "ROC undefined:\nonly one class in y_true", ha="center", va="center")
    else:
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(y, s):.3f}")
        if threshold is not None:
            m = threshold_metrics(y, s, threshold)
            point_fpr = m["fp"] / (m["fp"] + m["tn"])
            ax.plot(point_fpr, m["recall"], "o", color="C3",
                    label=f"threshold {threshold:.3g} (TSS {m['tss']:.3f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path, title)


def plot_pr(y_true: ArrayLike, scores: ArrayLike, path: Path | str, *, title: str = "") -> Path:
    """Plot the precision-recall curve with its average precision and the base-rate line.

    Returns:
        ``path``; with no positives the curve is undefined and the figure says so.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y, s = validate_inputs(y_true, scores)
    fig = _new_figure()
    ax = fig.subplots()
    base_rate = float(y.mean())
    ax.axhline(base_rate, color="grey", linestyle=":", label=f"base rate {base_rate:.3g}")
    if y.min() == y.max():
        ax.text(0.5, 0.5, "PR curve undefined:\nonly one class in y_true", ha="center", va="center")
    else:
        precision, recall, _ = precision_recall_curve(y, s)
        ax.step(recall, precision, where="post", label=f"AP = {average_precision_score(y, s):.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper right", fontsize="small")
    return _save(fig, path, title)


def plot_confusion(tp: int, tn: int, fp: int, fn: int, path: Path | str, *, title: str = "") -> Path:
    """Draw the 2x2 confusion matrix with counts (rows: actual, columns: predicted).

    Returns:
        ``path``.
    """
    cells = np.array([[tn, fp], [fn, tp]], dtype=float)
    fig = _new_figure(width=3.5, height=3.2)
    ax = fig.subplots()
    ax.imshow(cells, cmap="Blues")
    names = [["TN", "FP"], ["FN", "TP"]]
    dark = cells.max() / 2 if cells.max() > 0 else 1.0  # switch text colour on dark cells
    for (row, col), count in np.ndenumerate(cells):
        ax.text(col, row, f"{names[row][col]}\n{int(count)}", ha="center", va="center",
                color="white" if count > dark else "black")
    ax.set_xticks([0, 1], ["no flare", "flare"])
    ax.set_yticks([0, 1], ["no flare", "flare"])
    ax.set(xlabel="predicted", ylabel="actual")
    return _save(fig, path, title)


def plot_reliability(
    y_true: ArrayLike, scores: ArrayLike, path: Path | str, *, bins: int = 10, title: str = ""
) -> Path:
    """Reliability diagram: observed flare frequency against forecast probability.

    Bins are equal-width on [0, 1]; empty bins are skipped. A dotted line marks
    climatology (the base rate of this set) and a lower panel shows the counts per bin.

    Args:
        y_true: 0/1 labels.
        scores: forecast probabilities in [0, 1].
        path: where to write the PNG.
        bins: number of probability bins.
        title: figure title.

    Returns:
        ``path``.
    """
    y, s = validate_inputs(y_true, scores)
    if s.min() < 0 or s.max() > 1:
        raise ValueError(f"scores must be probabilities in [0, 1]; got [{s.min():.4g}, {s.max():.4g}]")
    if bins < 1:
        raise ValueError(f"bins must be >= 1; got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(s, edges[1:-1]), 0, bins - 1)  # score 1.0 goes in the last bin
    counts = np.bincount(idx, minlength=bins)
    filled = counts > 0
    mean_forecast = np.bincount(idx, weights=s, minlength=bins)[filled] / counts[filled]
    observed = np.bincount(idx, weights=y, minlength=bins)[filled] / counts[filled]

    fig = _new_figure(height=5.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect reliability")
    top.axhline(y.mean(), color="C2", linestyle="--", label=f"climatology {y.mean():.3g}")
    top.plot(mean_forecast, observed, marker="o", label="model")
    top.set(ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1.01))
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="C0", alpha=0.6)
    bottom.set_yscale("log" if counts.max() > 100 else "linear")
    bottom.set(xlabel="forecast probability", ylabel="count")
    return _save(fig, path, title)
