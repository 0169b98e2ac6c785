"""Figures of ``arflare report``: one curve per configuration overlaid, and the spread over seeds.

Each function returns the figure as SVG text (vector, so the page stays sharp and small).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from arflare.calibration import correct_probability, reliability_bins
from arflare.metrics import threshold_metrics
from arflare.plots import new_figure, styled


@dataclass(frozen=True)
class Curve:
    """The scored split of one run, as the report draws it."""

    label: str  # configuration (group) name
    labels: np.ndarray
    scores: np.ndarray
    threshold: float  # chosen on validation
    keep_rate: float | None  # negative keep rate of its training set, None if not rebalanced

    @property
    def counts(self) -> str:
        n_pos = int(self.labels.sum())
        return f"{n_pos}/{self.labels.size - n_pos}"


def _svg(fig, title: str) -> str:
    fig.suptitle(title, fontsize=8, x=0.02, ha="left")
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    fig.clear()
    return buffer.getvalue()


@styled
def roc_overlay(curves: Sequence[Curve], title: str) -> str:
    """ROC of each configuration on a linear and a log FPR axis."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = new_figure(3.6, 3.3, ncols=2)
    linear, logx = fig.subplots(1, 2)
    floor = 1.0
    for i, c in enumerate(curves):
        if c.labels.min() == c.labels.max():
            continue
        fpr, tpr, _ = roc_curve(c.labels, c.scores, drop_intermediate=False)
        floor = min(floor, 1.0 / int((c.labels == 0).sum()))
        label = f"{c.label}  auc {roc_auc_score(c.labels, c.scores):.3f}"
        linear.plot(fpr, tpr, color=f"C{i}", linewidth=1.2, label=label)
        logx.plot(np.maximum(fpr, floor / 2), tpr, color=f"C{i}", linewidth=1.2)
    linear.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    linear.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title="linear FPR")
    logx.set_xscale("log")
    logx.axvline(1e-3, color="0.5", linestyle="--", linewidth=0.8, label="FPR = 1e-3")
    logx.axvspan(min(1e-4, floor / 2), floor, facecolor="0.9", label="below 1/N non-flares")
    logx.set(xlabel="false positive rate (log)", xlim=(min(1e-4, floor / 2), 1), ylim=(0, 1.01), title="log FPR")
    for ax in (linear, logx):
        ax.grid(alpha=0.3, linewidth=0.5)
        ax.legend(loc="lower right", frameon=False)
    return _svg(fig, title)


@styled
def pr_overlay(curves: Sequence[Curve], title: str) -> str:
    """Precision-recall of each configuration with its ``pr_auc`` and the climatology line."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = new_figure(4.4, 3.5)
    ax = fig.subplots()
    for i, c in enumerate(curves):
        if c.labels.min() == c.labels.max():
            continue
        precision, recall, _ = precision_recall_curve(c.labels, c.scores)
        ax.step(recall, precision, where="post", color=f"C{i}", linewidth=1.2,
                label=f"{c.label}  pr_auc {average_precision_score(c.labels, c.scores):.3f}")
    rates = sorted({round(float(c.labels.mean()), 4) for c in curves})
    for rate in rates:
        ax.axhline(rate, color="grey", linestyle=":", linewidth=0.8)
    ax.plot([], [], color="grey", linestyle=":", label="climatology " + ", ".join(f"{r:.3f}" for r in rates))
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.legend(loc="upper right", frameon=False)
    return _svg(fig, title)


@styled
def reliability_overlay(curves: Sequence[Curve], title: str, bins: int = 10) -> str:
    """Observed frequency per probability bin (corrected to the true base rate where rebalanced)."""
    fig = new_figure(4.4, 3.8)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8, label="perfect reliability")
    for i, c in enumerate(curves):
        b = reliability_bins(c.labels, correct_probability(c.scores, c.keep_rate), bins=bins)
        note = f" (corrected, q={c.keep_rate:.3g})" if c.keep_rate is not None else ""
        ax.errorbar(b.forecast, b.observed, yerr=np.vstack([b.observed - b.lower, b.upper - b.observed]),
                    color=f"C{i}", marker="o", markersize=3, linewidth=1, elinewidth=0.6, capsize=1.5,
                    label=c.label + note)
    ax.set(xlabel="forecast probability", ylabel="observed flare frequency", xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.legend(loc="upper left", frameon=False)
    return _svg(fig, title)


@styled
def tss_vs_threshold(curves: Sequence[Curve], title: str) -> str:
    """TSS at every threshold, with the threshold each run chose on validation marked."""
    fig = new_figure(4.4, 3.4)
    ax = fig.subplots()
    grid = np.linspace(0, 1, 201)
    for i, c in enumerate(curves):
        tss = [threshold_metrics(c.labels, c.scores, t)["tss"] for t in grid]
        ax.plot(grid, tss, color=f"C{i}", linewidth=1.2, label=c.label)
        chosen = threshold_metrics(c.labels, c.scores, c.threshold)["tss"]
        ax.plot(c.threshold, chosen, "o", color=f"C{i}", markersize=5)
    ax.plot([], [], "o", color="0.3", label="threshold chosen on val")
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.set(xlabel="threshold on the model's score", ylabel="TSS", xlim=(0, 1))
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.legend(loc="upper right", frameon=False)
    return _svg(fig, title)


@styled
def seed_spread(values: Mapping[str, Sequence[float]], metric_label: str, title: str) -> str:
    """One dot per run (seed) of each configuration, with the mean and ± one standard deviation."""
    fig = new_figure(4.4, 0.6 + 0.45 * max(len(values), 2))
    ax = fig.subplots()
    for row, (name, points) in enumerate(values.items()):
        points = np.asarray(points, dtype=float)
        ax.plot(points, np.full(points.size, row), "o", color=f"C{row}", alpha=0.7, markersize=4)
        if points.size > 1:
            mean, std = points.mean(), points.std(ddof=1)
            ax.errorbar(mean, row, xerr=std, fmt="|", color="black", markersize=12, capsize=3, linewidth=1)
    ax.set_yticks(range(len(values)), [f"{name} (n={len(v)})" for name, v in values.items()])
    ax.set_ylim(-0.6, len(values) - 0.4)
    ax.invert_yaxis()
    ax.set(xlabel=f"{metric_label}: one dot per run, bar = mean ± 1 sd")
    ax.grid(alpha=0.3, linewidth=0.5, axis="x")
    return _svg(fig, title)
