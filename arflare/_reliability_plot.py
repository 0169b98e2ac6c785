"""The reliability diagram (split from :mod:`arflare.plots` to keep each module of one concern)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from arflare.calibration import brier_skill, correct_probability, reliability_bins
from arflare.metrics import validate_inputs
from arflare.plots import Caption, new_figure, save_figure, styled

_MIN_SOLID = 10  # bins with fewer samples are drawn hollow: their frequency is too noisy to read


@styled
def plot_reliability(y_true: ArrayLike, scores: ArrayLike, path: Path | str, *, caption: Caption,
                     keep_rate: float | None = None, raw: bool = False, bins: int = 10) -> Path:
    """Reliability diagram: observed flare frequency against forecast probability.

    Drawn: the diagonal (perfect reliability), climatology (this split's flare rate), the
    no-skill line halfway between them (points below it add nothing to the Brier skill), one
    marker per bin with its Jeffreys 95 % interval (hollow under ``_MIN_SOLID`` samples), the
    per-bin counts on a log axis underneath, and Brier / BSS in the corner.

    Args:
        y_true: 0/1 labels.
        scores: the model's probabilities in [0, 1].
        path: where to write the PNG (the SVG goes beside it).
        caption: run, split and flare definition.
        keep_rate: the negative keep rate of a class-rebalanced training set (see
            :func:`arflare.calibration.negative_keep_rate`); None if training was not rebalanced.
        raw: with a ``keep_rate``, draw the uncorrected probabilities (and say so) instead of
            the corrected ones.
        bins: equal-width probability bins.
    """
    y, s = validate_inputs(y_true, scores)
    p = s if raw or keep_rate is None else correct_probability(s, keep_rate)
    binned = reliability_bins(y, p, bins=bins)
    brier, bss = brier_skill(y, p)
    clim = float(y.mean())
    fig = new_figure(4.2, 4.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.9, label="perfect reliability")
    top.axhline(clim, color="C2", linestyle="--", linewidth=0.9, label=f"climatology {clim:.3f}")
    top.plot([0, 1], [clim / 2, (1 + clim) / 2], color="C1", linestyle="-.", linewidth=0.9, label="no skill (BSS = 0)")
    solid = binned.count >= _MIN_SOLID
    yerr = np.vstack([binned.observed - binned.lower, binned.upper - binned.observed])
    top.errorbar(binned.forecast, binned.observed, yerr=yerr, fmt="none", ecolor="C0", elinewidth=0.9, capsize=2)
    top.plot(binned.forecast[solid], binned.observed[solid], "o", color="C0", markersize=4,
             label="model (95 % Jeffreys interval)")
    if (~solid).any():
        top.plot(binned.forecast[~solid], binned.observed[~solid], "o", markerfacecolor="white", color="C0",
                 markersize=4, label=f"bin with < {_MIN_SOLID} samples")
    top.text(0.97, 0.03, f"Brier {brier:.4f}\nBSS {bss:+.3f}", transform=top.transAxes, ha="right", va="bottom",
             bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"})
    top.set(ylabel="observed flare frequency", xlim=(0, 1), ylim=(0, 1.01))
    top.grid(alpha=0.3, linewidth=0.5)
    top.legend(loc="upper left", frameon=False)
    edges = binned.edges
    bottom.bar(edges[:-1], binned.counts_all, width=np.diff(edges), align="edge", color="C0", alpha=0.6)
    if binned.counts_all.max() > 100:
        from matplotlib.ticker import NullFormatter

        bottom.set_yscale("log")
        bottom.yaxis.set_minor_formatter(NullFormatter())  # "6×10^2" minor labels only clutter
    bottom.set(xlabel="forecast probability" + (" (corrected)" if p is not s else ""), ylabel="samples")
    lines = caption.lines("Reliability", y)
    if keep_rate is not None:
        lines.append(_rebalance_note(keep_rate, raw))
    return save_figure(fig, path, lines)


def _rebalance_note(keep_rate: float, raw: bool) -> str:
    # q < 1: negatives thinned (the usual case); q > 1: negatives over-drawn (hard negatives, no thinning).
    mix = (f"trained with negatives kept at q = {keep_rate:.3g}" if keep_rate <= 1
           else f"trained with negatives drawn q = {keep_rate:.3g}× as often as positives")
    if raw:
        way, factor = ("overstate", 1 / keep_rate) if keep_rate <= 1 else ("understate", keep_rate)
        return f"RAW model output: {mix}, so these probabilities {way} flare odds {factor:.3g}×"
    return f"Probabilities corrected to the true base rate: {mix}, odds × q"
