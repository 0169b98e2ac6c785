"""A grid of magnetograms with a caption under each: the samples gate and the failure grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

_DPI = 150


def flare_class(reg_label) -> str:
    """A caption's flare: the GOES class of ``reg_label``, or ``no flare`` (json ``"0"`` or empty)."""
    return str(reg_label) if str(reg_label).strip() not in ("", "0", "nan", "None") else "no flare"


def write_image_grid(images: Sequence[np.ndarray], captions: Sequence[str], path: Path, *, title: str,
                     columns: int = 8, row_labels: Sequence[str] | None = None, rows: int | None = None) -> Path:
    """Write ``images`` (2-D arrays, field scaled to [-1, 1]) as a grey grid with captions, on one
    symmetric grey scale stretched to the grid's 99.5th percentile of ``|value|`` (said in the title).

    Args:
        images: one 2-D array per cell, in row-major order; ``None`` leaves a cell empty.
        captions: one short text per cell (key, AR, time, label, ...).
        path: PNG to write (folder created).
        title: the figure's title (what, which split, how chosen).
        columns: cells per row.
        row_labels: optional label at the left of each row.
        rows: number of rows (default: enough for every image).

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = rows or max(1, -(-len(images) // columns))
    shown = [np.abs(image).ravel() for image in images if image is not None]
    # one symmetric grey scale for the whole grid (0 G stays mid-grey, cells stay comparable), stretched
    # to the 99.5th percentile of |B|: magnetograms at +-6000 G full scale are otherwise nearly flat grey
    limit = float(np.percentile(np.concatenate(shown), 99.5)) if shown else 1.0
    limit = limit if limit > 0 else 1.0
    # constrained layout keeps each caption under its cell and the title above the grid
    fig = Figure(figsize=(1.4 * columns + (0.6 if row_labels else 0), 1.75 * rows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    for n, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if n < len(images) and images[n] is not None:
            # 0 G is mid-grey and both polarities saturate symmetrically, as in HMI quick-looks
            ax.imshow(images[n], cmap="gray", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_xlabel(captions[n], fontsize=5, labelpad=1.5)
    for r, label in enumerate(row_labels or ()):
        axes[r, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(f"{title}\ngrey scale ±{limit:.3g} of full scale (shared by every cell; 0 G mid-grey)", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path
