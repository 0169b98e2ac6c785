"""Evaluation figures fit for a paper: training curves, ROC, precision-recall, confusion matrix.

Every figure is written twice, as a PNG at ``DPI`` and as an SVG whose text stays text (editable,
searchable), and every caption says which run, split, how many flares and non-flares, and what
a flare is (GOES class and forecast window), so a figure copied out of context still says where
its numbers come from. The reliability diagram lives in :mod:`arflare._reliability_plot`.

matplotlib is imported lazily and figures are built with ``matplotlib.figure.Figure`` on an Agg
canvas rather than through ``pyplot``: that never touches the global backend or pyplot's figure
registry, so it is safe in headless runs and nothing leaks between calls.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from arflare.metrics import threshold_metrics, validate_inputs

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 200
VECTOR_FORMAT = "svg"
# The short list of skill scores worth a curve; counts, thresholds and timings are not skills.
CURVE_SKILLS = ("val/tss", "val/hss", "val/auc", "val/pr_auc")
_STYLE = {"font.size": 8, "axes.titlesize": 8, "legend.fontsize": 7, "axes.labelsize": 8,
          "xtick.labelsize": 7, "ytick.labelsize": 7, "svg.fonttype": "none", "axes.spines.top": False,
          "axes.spines.right": False}


@dataclass(frozen=True)
class Caption:
    """What every figure says about where its numbers come from.

    Args:
        run: Run name (``exp5_atto_mixup/seed=3``); empty when unknown.
        split: ``val`` or ``test``.
        flare_class: Minimum GOES class that counts as a flare (``data.min_flare_class``).
        window_h: Forecast window in hours (the label is the largest flare in the next ``window_h``).
    """

    run: str
    split: str
    flare_class: str
    window_h: int = 24

    def lines(self, what: str, labels: ArrayLike) -> list[str]:
        """``[what — run, "test: 23 flares / 312 non-flares (flare = ≥C within 24 h)"]``."""
        y = np.asarray(labels)
        n_pos = int((y == 1).sum())
        head = f"{what} — {self.run}" if self.run else what
        return [head, f"{self.split}: {n_pos} flares / {y.size - n_pos} non-flares "
                      f"(flare = ≥{self.flare_class} within {self.window_h} h)"]


def new_figure(width: float, height: float, *, ncols: int = 1) -> Figure:
    """An unregistered figure of ``width`` × ``height`` inches (per column) with constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path | str, caption_lines: Sequence[str]) -> Path:
    """Title the figure with its caption, write ``path`` (PNG) and its vector twin, free the figure.

    Returns:
        The PNG path; the vector copy sits beside it with the ``VECTOR_FORMAT`` suffix.
    """
    width = fig.get_figwidth()
    wrapped = [textwrap.fill(line, width=max(30, int(width * 16))) for line in caption_lines]  # ~16 chars/inch at 8 pt
    fig.suptitle("\n".join(wrapped), fontsize=8, x=0.02, ha="left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    fig.savefig(path.with_suffix(f".{VECTOR_FORMAT}"), format=VECTOR_FORMAT, metadata={"Date": None})
    fig.clear()  # the figure was never registered with pyplot; clearing frees its artists
    return path


def styled(func):
    """Run a plotting function under the house style (rcParams are read as artists are made)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from matplotlib import rc_context

        with rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper


@styled
def plot_training_curves(history: Mapping[str, Sequence[float]], path: Path | str, *, caption: Caption,
                         labels: ArrayLike, best_epoch: int | None = None, monitor: str = "",
                         skills: Sequence[str] = CURVE_SKILLS) -> Path:
    """Losses on the left, a short list of validation skill scores on the right, best epoch marked.

    Args:
        history: ``{"train/loss": [...], "val/loss": [...], "val/tss": [...], ...}``, one value
            per epoch (epoch 1 first). Keys ending in ``loss`` are losses; of the rest only
            ``skills`` are drawn (counts, thresholds and timings are not on a skill scale).
        path: where to write the PNG (the SVG goes beside it).
        caption: run, split (the validation split the curves are scored on), flare definition.
        labels: the validation labels, for the caption's counts.
        best_epoch: the epoch whose checkpoint was kept, drawn as a vertical line.
        monitor: the metric that chose it, named on that line.
        skills: history keys drawn in the right panel.
    """
    from matplotlib.ticker import MaxNLocator

    if not any(len(values) for values in history.values()):
        raise ValueError(f"history has no values to plot; got keys {sorted(history)}")
    losses = {k: v for k, v in history.items() if k.endswith("loss") and len(v)}
    chosen = {k: history[k] for k in skills if len(history.get(k, ()))}
    panels = [(group, name) for group, name in ((losses, "loss"), (chosen, "skill score")) if group]
    fig = new_figure(3.5, 3.0, ncols=len(panels))
    for ax, (group, name) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for key, values in group.items():
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=2.5, linewidth=1.2, label=key)
        if best_epoch:
            ax.axvline(best_epoch, color="0.4", linestyle="--", linewidth=0.9,
                       label=f"best epoch {best_epoch}" + (f" (val {monitor})" if monitor else ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel=name)
        ax.grid(alpha=0.3, linewidth=0.5)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, frameon=False)
    return save_figure(fig, path, caption.lines("Training curves", labels))


def _roc_panel(ax: Axes, fpr: np.ndarray, tpr: np.ndarray, auc: float, point: tuple[float, float, str] | None) -> None:
    ax.plot(fpr, tpr, color="C0", linewidth=1.3, label=f"auc = {auc:.3f}")
    if point is not None:
        ax.plot(point[0], point[1], "o", color="C3", markersize=5, label=point[2])
    ax.set(xlabel="false positive rate", ylabel="true positive rate", ylim=(0, 1.01))
    ax.grid(alpha=0.3, linewidth=0.5)


@styled
def plot_roc(y_true: ArrayLike, scores: ArrayLike, path: Path | str, *, caption: Caption,
             threshold: float | None = None) -> Path:
    """ROC on a linear and on a logarithmic FPR axis, with the operating point at ``threshold``.

    The log panel shows the low-FPR region where ``tpr_at_fpr_1e-3`` is read, and shades FPRs
    below 1/N non-flares, which this split cannot measure.

    Returns:
        ``path``. With a single class in ``y_true`` the ROC is undefined and the figure says so.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y, s = validate_inputs(y_true, scores)
    fig = new_figure(3.5, 3.2, ncols=2)
    linear, logx = fig.subplots(1, 2)
    if y.min() == y.max():
        for ax in (linear, logx):
            ax.text(0.5, 0.5, "ROC undefined:\nonly one class in this split", ha="center", va="center",
                    transform=ax.transAxes)
    else:
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        auc = float(roc_auc_score(y, s))
        point = None
        if threshold is not None:
            m = threshold_metrics(y, s, threshold)
            point = (m["fp"] / (m["fp"] + m["tn"]), m["recall"],
                     f"threshold {threshold:.3g} from val (TSS {m['tss']:.3f})")
        n_neg = int((y == 0).sum())
        floor = 1.0 / n_neg
        _roc_panel(linear, fpr, tpr, auc, point)
        linear.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.9, label="no skill")
        linear.set(xlim=(0, 1), title="linear FPR")
        linear.legend(loc="lower right", frameon=False)
        # Points at FPR 0 cannot sit on a log axis; draw them at half the resolvable floor.
        _roc_panel(logx, np.maximum(fpr, floor / 2), tpr, auc,
                   None if point is None else (max(point[0], floor / 2), point[1], point[2]))
        grid = np.logspace(np.log10(floor / 2), 0, 50)
        logx.plot(grid, grid, color="grey", linestyle=":", linewidth=0.9)
        logx.set_xscale("log")
        low = min(1e-4, floor / 2)
        logx.set(xlim=(low, 1), title="log FPR (low false-alarm region)")
        logx.axvspan(low, floor, facecolor="0.88", edgecolor="0.6", hatch="//", linewidth=0, label=f"FPR < 1/{n_neg} non-flares: not measurable")
        logx.axvline(1e-3, color="C2", linestyle="--", linewidth=0.8, label="FPR = 1e-3")
        logx.legend(loc="upper left", frameon=False)
    return save_figure(fig, path, caption.lines("ROC", y))


@styled
def plot_pr(y_true: ArrayLike, scores: ArrayLike, path: Path | str, *, caption: Caption,
            threshold: float | None = None) -> Path:
    """Precision-recall curve labelled with ``pr_auc`` (average precision) and the climatology line.

    Returns:
        ``path``; with no positives the curve is undefined and the figure says so.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y, s = validate_inputs(y_true, scores)
    fig = new_figure(4.2, 3.6)
    ax = fig.subplots()
    base_rate = float(y.mean())
    ax.axhline(base_rate, color="grey", linestyle=":", linewidth=0.9,
               label=f"climatology (flare rate) = {base_rate:.3f}")
    if y.min() == y.max():
        ax.text(0.5, 0.5, "PR curve undefined:\nonly one class in this split", ha="center", va="center")
    else:
        precision, recall, _ = precision_recall_curve(y, s)
        ax.step(recall, precision, where="post", color="C0", linewidth=1.3,
                label=f"pr_auc = {average_precision_score(y, s):.3f}")
        if threshold is not None:
            m = threshold_metrics(y, s, threshold)
            ax.plot(m["recall"], m["precision"], "o", color="C3", markersize=5,
                    label=f"threshold {threshold:.3g} from val")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.legend(loc="upper right", frameon=False)
    return save_figure(fig, path, caption.lines("Precision-recall", y))


@styled
def plot_confusion(y_true: ArrayLike, scores: ArrayLike, threshold: float, path: Path | str, *,
                   caption: Caption) -> Path:
    """The 2x2 confusion matrix at ``threshold``: counts and row percentages, TSS and HSS."""
    y, s = validate_inputs(y_true, scores)
    m = threshold_metrics(y, s, threshold)
    cells = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]], dtype=float)
    rows = cells.sum(axis=1, keepdims=True)
    share = np.divide(cells, rows, out=np.zeros_like(cells), where=rows > 0)
    fig = new_figure(4.2, 3.5)
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = [["TN", "FP"], ["FN", "TP"]]
    for (row, col), count in np.ndenumerate(cells):
        ax.text(col, row, f"{names[row][col]} {int(count)}\n{share[row, col]:.1%} of row", ha="center",
                va="center", color="white" if share[row, col] > 0.5 else "black")
    ax.set_xticks([0, 1], ["no flare", "flare"])
    ax.set_yticks([0, 1], ["no flare", "flare"])
    ax.set(xlabel=f"predicted (score ≥ {threshold:.3g}, threshold from val)", ylabel="actual",
           title=f"TSS {m['tss']:.3f}   HSS {m['hss']:.3f}")
    ax.spines[:].set_visible(False)
    return save_figure(fig, path, caption.lines("Confusion matrix", y))


@styled
def plot_importances(names: Sequence[str], importances: ArrayLike, stds: ArrayLike, path: Path | str, *,
                     caption: Caption, labels: ArrayLike, xlabel: str = "drop of val ROC AUC when shuffled") -> Path:
    """Permutation importances as horizontal bars, largest on top, with ±1 std over the shuffles.

    Args:
        names: Feature (or feature group) names.
        importances: Mean score drop per name.
        stds: Standard deviation of the drop over the shuffles.
        path: where to write the PNG (the SVG goes beside it).
        caption: run, split the importances are measured on, flare definition.
        labels: that split's labels, for the caption's counts.
        xlabel: what the bars measure.
    """
    values = np.asarray(importances, dtype=float)
    order = np.argsort(values)
    fig = new_figure(4.5, 1.0 + 0.18 * len(order))
    ax = fig.subplots()
    ax.barh(np.arange(len(order)), values[order], xerr=np.asarray(stds, dtype=float)[order], color="C0",
            ecolor="0.3", error_kw={"linewidth": 0.8})  # fmt: skip
    ax.set_yticks(np.arange(len(order)), [names[i] for i in order])
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    ax.set_xlabel(xlabel)
    return save_figure(fig, path, caption.lines("Permutation importance", labels))
