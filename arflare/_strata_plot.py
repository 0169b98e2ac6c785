"""The strata figure: TPR and FPR of every stratum at the val threshold, with their counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from arflare.plots import DPI


def plot_strata(strata: pd.DataFrame, path: Path, *, title: str) -> Path:
    """Two panels of horizontal bars: TPR of strata with positives, FPR of strata with negatives.

    Each bar carries its 95 % AR-bootstrap interval as a whisker and is labelled with its count
    (``tp/positives`` or ``fp/negatives``) and ARs, so a rate from a handful of frames or ARs reads as such.
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
        lo, hi = part.get(f"{rate}_lo"), part.get(f"{rate}_hi")
        if lo is not None and hi is not None:  # the 95 % AR-bootstrap interval as a whisker
            ax.errorbar(part[rate], y, xerr=np.vstack([(part[rate] - lo).clip(lower=0), (hi - part[rate]).clip(lower=0)]),
                        fmt="none", ecolor="#333333", elinewidth=0.8, capsize=2)
        ends = part[rate] if hi is None else np.fmax(part[rate], hi)
        for yi, (end, k, n, ars) in enumerate(zip(ends, part[hits], part[total], part["ars"], strict=True)):
            ax.text(min(end, 1.0) + 0.01, yi, f"{k}/{n} ({ars} AR)", va="center", fontsize=6)
        ax.set_yticks(y, names, fontsize=6)
        ax.set_xlim(0, 1.5)  # room for the counts right of a whisker that reaches 1
        ax.set_xticks(np.linspace(0, 1, 6))
        ax.set_xlabel(f"{label}, 95 % AR-bootstrap interval", fontsize=8)
    fig.suptitle(title, fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
