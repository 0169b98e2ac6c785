"""The strata figure: TPR and FPR of every stratum at the val threshold, with their counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from arflare.plots import DPI


def plot_strata(strata: pd.DataFrame, path: Path, *, title: str) -> Path:
    """Two panels of horizontal bars: TPR of strata with positives, FPR of strata with negatives.

    Each bar is labelled with its count (``tp/positives`` or ``fp/negatives``) and ARs, so a rate
    from a handful of frames reads as such.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = (("tpr", "tp", "positives", "TPR (flares forecast)"), ("fpr", "fp", "negatives", "FPR (false alarms)"))
    height = max(2.5, 0.22 * max(int((strata[p[2]] > 0).sum()) for p in panels) + 1.0)
    fig = Figure(figsize=(9, height), layout="constrained")  # long stratum names stay inside the figure
    FigureCanvasAgg(fig)
    for ax, (rate, hits, total, label) in zip(fig.subplots(1, 2), panels, strict=True):
        part = strata[strata[total] > 0].iloc[::-1]
        names = [f"{f}: {s}" for f, s in zip(part["family"], part["stratum"], strict=True)]
        y = np.arange(len(part))
        ax.barh(y, part[rate], color="#4477aa" if rate == "tpr" else "#cc6677")
        for yi, (value, k, n, ars) in enumerate(zip(part[rate], part[hits], part[total], part["ars"], strict=True)):
            ax.text(min(value, 1.0) + 0.01, yi, f"{k}/{n} ({ars} AR)", va="center", fontsize=6)
        ax.set_yticks(y, names, fontsize=6)
        ax.set_xlim(0, 1.25)
        ax.set_xlabel(label, fontsize=8)
    fig.suptitle(title, fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
