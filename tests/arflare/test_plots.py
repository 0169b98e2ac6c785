"""Tests for the evaluation figures, on constructed predictions: files, captions, panels, calibration."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from arflare import calibration, plots
from arflare._reliability_plot import plot_reliability
from arflare.reports import vector_twin, write_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CAPTION = plots.Caption(run="exp5_atto_mixup/seed=3", split="test", flare_class="M")


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 100 and data[:8] == PNG_MAGIC


def _png_dpi(path) -> float:
    """Pixels per inch from the PNG's pHYs chunk (matplotlib writes it from savefig's dpi)."""
    data = path.read_bytes()
    at = data.index(b"pHYs")
    per_metre = int.from_bytes(data[at + 4:at + 8], "big")
    return per_metre * 0.0254


def _svg_text(path) -> str:
    """All text of an SVG (its text stays text: svg.fonttype is 'none')."""
    root = ET.parse(path).getroot()
    return " ".join("".join(node.itertext()) for node in root.iter() if node.tag.endswith("text"))


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(int)
    return y, np.clip(0.4 * y + 0.6 * rng.random(400), 0, 1)


def test_every_figure_writes_png_at_print_dpi_and_a_vector_twin(tmp_path, data):
    y, s = data
    history = {"train/loss": [0.9, 0.6, 0.5], "val/loss": [1.0, 0.7, 0.65], "val/tss": [0.1, 0.3, 0.4],
               "val/auc": [0.6, 0.7, 0.75], "val/tp": [3, 5, 8], "epoch_seconds": [10, 11, 10]}
    written = write_plots(tmp_path / "plots", run_name=CAPTION.run, history=history, best_epoch=2, monitor="tss",
                          val=(y, s), test=(y, s), threshold=0.5, min_flare_class="M", keep_rate=0.25)
    pngs = [p for p in written if p.suffix == ".png"]
    assert {p.stem for p in pngs} == {"training_curves", "roc_test", "pr_test", "confusion_test", "reliability_test",
                                      "reliability_test_raw"}
    for png in pngs:
        assert _is_png(png) and _png_dpi(png) >= 150, png
        svg = vector_twin(png)
        assert svg in written and svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()


def test_captions_name_run_split_counts_flare_class_and_window(tmp_path, data):
    y, s = data
    n_pos = int(y.sum())
    png = plots.plot_pr(y, s, tmp_path / "pr.png", caption=CAPTION, threshold=0.5)
    text = _svg_text(vector_twin(png))
    assert "exp5_atto_mixup/seed=3" in text
    assert f"test: {n_pos} flares / {y.size - n_pos} non-flares" in text
    assert "≥M within 24 h" in text
    assert "pr_auc = " in text and "AP =" not in text  # the metric's own name
    assert "climatology" in text


def test_roc_has_a_log_fpr_panel_with_the_operating_point(tmp_path, data):
    y, s = data
    png = plots.plot_roc(y, s, tmp_path / "roc.png", caption=CAPTION, threshold=0.5)
    svg = vector_twin(png).read_text()
    text = _svg_text(vector_twin(png))
    assert "log FPR" in text and "linear FPR" in text
    assert re.search(r"10\^\{?-[0-9]|10<tspan|\$\\mathdefault\{10\^\{-", svg) or "10^{-" in svg or "−3" in text
    assert "threshold 0.5 from val" in text
    n_neg = int((y == 0).sum())
    assert f"1/{n_neg} non-flares" in text  # the unmeasurable low-FPR region is named


def test_training_curves_plot_losses_and_short_skill_list_with_best_epoch(tmp_path):
    history = {"train/loss": [0.9, 0.6, 0.5], "val/loss": [1.0, 0.7, 0.65], "val/tss": [0.1, 0.3, 0.4],
               "val/tp": [3, 5, 8], "val/threshold": [0.2, 0.4, 0.5], "epoch_seconds": [10, 11, 10]}
    png = plots.plot_training_curves(history, tmp_path / "curves.png", caption=CAPTION, labels=[0, 1, 1],
                                     best_epoch=3, monitor="tss")
    text = _svg_text(vector_twin(png))
    assert "val/tss" in text and "train/loss" in text and "best epoch 3 (val tss)" in text
    assert "val/tp" not in text and "epoch_seconds" not in text and "val/threshold" not in text


def test_training_curves_reject_empty_history(tmp_path):
    with pytest.raises(ValueError, match="no values"):
        plots.plot_training_curves({"val/loss": []}, tmp_path / "x.png", caption=CAPTION, labels=[0, 1])


def test_single_class_plots_do_not_raise(tmp_path):
    y, s = np.zeros(5, dtype=int), np.linspace(0, 1, 5)
    assert _is_png(plots.plot_roc(y, s, tmp_path / "roc.png", caption=CAPTION, threshold=0.5))
    assert _is_png(plots.plot_pr(y, s, tmp_path / "pr.png", caption=CAPTION))
    assert _is_png(plots.plot_confusion(y, s, 0.5, tmp_path / "cm.png", caption=CAPTION))


def test_reliability_rejects_non_probabilities(tmp_path):
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        plot_reliability([0, 1], [-2.0, 3.0], tmp_path / "rel.png", caption=CAPTION)


def test_reliability_says_when_probabilities_are_corrected_and_shows_brier(tmp_path, data):
    y, s = data
    corrected = _svg_text(vector_twin(plot_reliability(y, s, tmp_path / "rel.png", caption=CAPTION, keep_rate=0.25)))
    raw = _svg_text(vector_twin(plot_reliability(y, s, tmp_path / "raw.png", caption=CAPTION, keep_rate=0.25, raw=True)))
    brier, bss = calibration.brier_skill(y, calibration.correct_probability(s, 0.25))
    assert "corrected to the true base rate" in corrected and "q = 0.25" in corrected
    assert f"Brier {brier:.4f}" in corrected and f"BSS {bss:+.3f}".replace("-", "−") in corrected.replace("-", "−")
    assert "RAW model output" in raw and "4×" in raw
    assert "no skill" in corrected and "climatology" in corrected and "Jeffreys" in corrected


def test_corrected_calibration_equals_the_analytic_value_for_a_known_keep_rate():
    # A perfectly calibrated model of the thinned training mix: true P(flare) = 0.1 everywhere,
    # negatives kept with q = 0.25, so the model learnt odds (0.1/0.9)/0.25 = 4/9, i.e. p = 4/13.
    q, p_true = 0.25, 0.1
    p_model = (p_true / (1 - p_true) / q) / (1 + p_true / (1 - p_true) / q)
    assert p_model == pytest.approx(4 / 13)
    assert calibration.correct_probability([p_model], q)[0] == pytest.approx(p_true)
    # 1000 samples at that score with exactly 100 flares: Brier of the corrected forecast is
    # E[(0.1 - y)^2] = 0.1 * 0.81 + 0.9 * 0.01 = 0.09, which equals climatology, so BSS = 0.
    y = np.r_[np.ones(100, dtype=int), np.zeros(900, dtype=int)]
    got = calibration.calibration_metrics(y, np.full(1000, p_model), q)
    assert got["brier"] == pytest.approx(0.09)
    assert got["bss"] == pytest.approx(0.0, abs=1e-12)
    raw_brier = 0.1 * (1 - 4 / 13) ** 2 + 0.9 * (4 / 13) ** 2
    assert got["brier_raw"] == pytest.approx(raw_brier)
    assert got["bss_raw"] == pytest.approx(1 - raw_brier / 0.09)


def test_logged_brier_and_bss_use_the_corrected_probabilities_and_keep_the_raw_ones():
    # The same analytic case through the metric table, i.e. what a run logs as {split}/brier etc.
    from arflare import metrics as skill

    q, p_model = 0.25, 4 / 13
    y = np.r_[np.ones(100, dtype=int), np.zeros(900, dtype=int)]
    logged = skill.evaluate(y, np.full(1000, p_model), threshold=0.5, keep_rate=q)
    assert logged["brier"] == pytest.approx(0.09) and logged["bss"] == pytest.approx(0.0, abs=1e-12)
    assert logged["brier_raw"] == pytest.approx(0.1 * (9 / 13) ** 2 + 0.9 * (4 / 13) ** 2)
    plain = skill.evaluate(y, np.full(1000, p_model), threshold=0.5)
    assert plain["brier"] == plain["brier_raw"] == logged["brier_raw"]
    assert logged["tss"] == plain["tss"] and logged["auc"] == plain["auc"]  # a monotone map: ranking unchanged


def test_training_keep_rate_combines_sampling_and_loss_weights():
    assert calibration.training_keep_rate(None) is None
    assert calibration.training_keep_rate(1.0) is None
    assert calibration.training_keep_rate(0.25) == 0.25
    # weighted BCE (w_neg=1, w_pos=4) learns odds x 4: true odds = model odds x 1/4
    assert calibration.training_keep_rate(None, (1.0, 4.0)) == pytest.approx(0.25)
    assert calibration.training_keep_rate(0.5, (1.0, 2.0)) == pytest.approx(0.25)
    # over-drawn hard negatives without thinning: the learnt odds are too low, q > 1
    assert calibration.correct_probability([0.5], 2.0)[0] == pytest.approx(2 / 3)


def test_negative_keep_rate_follows_the_balance_mode():
    assert calibration.negative_keep_rate("none", 1.0) is None
    assert calibration.negative_keep_rate("prob", 1.0) is None
    assert calibration.negative_keep_rate("prob", 0.3) == 0.3
    assert calibration.negative_keep_rate("fixed", 0.5) == 0.5
    assert calibration.negative_keep_rate("weights", 1.0, n_pos=20, n_neg=80) == 0.25
    with pytest.raises(ValueError, match="n_pos and n_neg"):
        calibration.negative_keep_rate("weights", 1.0)


def test_jeffreys_intervals_cover_the_observed_rate_and_widen_for_small_bins():
    y = np.r_[np.ones(5), np.zeros(5), np.ones(50), np.zeros(950)].astype(int)
    s = np.r_[np.full(10, 0.55), np.full(1000, 0.05)]
    bins = calibration.reliability_bins(y, s, bins=10)
    assert list(bins.count) == [1000, 10]
    assert np.all(bins.lower <= bins.observed) and np.all(bins.observed <= bins.upper)
    widths = bins.upper - bins.lower
    assert widths[1] > 3 * widths[0]
    # Jeffreys for 5/10: Beta(5.5, 5.5) quantiles, symmetric about 0.5.
    assert bins.lower[1] == pytest.approx(1 - bins.upper[1]) and 0.2 < bins.lower[1] < 0.25
