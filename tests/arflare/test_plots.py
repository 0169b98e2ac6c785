"""Tests for arflare.plots: every plot writes a real PNG, degenerate inputs don't crash."""

from __future__ import annotations

import numpy as np
import pytest

from arflare import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 100 and data[:8] == PNG_MAGIC


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random(60) < 0.3).astype(int)
    return y, np.clip(0.4 * y + 0.6 * rng.random(60), 0, 1)


def test_training_curves_png(tmp_path):
    history = {"train/loss": [0.9, 0.6, 0.5], "val/loss": [1.0, 0.7, 0.65],
               "val/tss": [0.1, 0.3, 0.4], "val/auc": [0.6, 0.7, 0.75]}
    out = plots.plot_training_curves(history, tmp_path / "sub" / "curves.png", title="run")
    assert out == tmp_path / "sub" / "curves.png" and _is_png(out)


def test_training_curves_rejects_empty_history(tmp_path):
    with pytest.raises(ValueError, match="no values"):
        plots.plot_training_curves({"val/loss": []}, tmp_path / "x.png")


def test_roc_pr_reliability_pngs(tmp_path, data):
    y, s = data
    assert _is_png(plots.plot_roc(y, s, tmp_path / "roc.png", threshold=0.5, title="ROC"))
    assert _is_png(plots.plot_pr(y, s, tmp_path / "pr.png"))
    assert _is_png(plots.plot_reliability(y, s, tmp_path / "rel.png", bins=5))


def test_confusion_png(tmp_path):
    assert _is_png(plots.plot_confusion(tp=8, tn=80, fp=10, fn=2, path=tmp_path / "cm.png"))


def test_single_class_plots_do_not_raise(tmp_path):
    y, s = np.zeros(5, dtype=int), np.linspace(0, 1, 5)
    assert _is_png(plots.plot_roc(y, s, tmp_path / "roc.png", threshold=0.5))
    assert _is_png(plots.plot_pr(y, s, tmp_path / "pr.png"))


def test_reliability_rejects_non_probabilities(tmp_path):
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        plots.plot_reliability([0, 1], [-2.0, 3.0], tmp_path / "rel.png")
