"""Tests for arflare.metrics: hand-computed cases plus agreement with scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from arflare import metrics as M


def _random_set(seed: int, n: int = 400, base_rate: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < base_rate).astype(int)
    # Informative but noisy scores, rounded so that ties occur.
    scores = np.clip(np.round(0.3 * y + rng.random(n) * 0.7, 2), 0, 1)
    return y, scores


# --- hand-computed confusion matrix: tp=8, tn=80, fp=10, fn=2 (n=100) -------------
# TPR = 8/10 = 0.8, FPR = 10/90; TSS = 0.8 - 1/9 = 0.688888...
# HSS = 2(8*80 - 2*10) / ((8+2)(2+80) + (8+10)(10+80)) = 1240 / (820 + 1620) = 1240/2440
# precision = 8/18, recall = 0.8, F1 = 16/(16+10+2) = 16/28, accuracy = 88/100
HAND = {"tp": 8, "tn": 80, "fp": 10, "fn": 2}


def _hand_arrays() -> tuple[np.ndarray, np.ndarray]:
    y = np.r_[np.ones(8), np.ones(2), np.zeros(10), np.zeros(80)]
    pred = np.r_[np.ones(8), np.zeros(2), np.ones(10), np.zeros(80)]
    return y, pred


def test_hand_computed_confusion_and_scores():
    y, pred = _hand_arrays()
    assert M.confusion(y, pred) == (8, 80, 10, 2)
    assert M.tss(**HAND) == pytest.approx(0.8 - 1 / 9)
    assert M.hss(**HAND) == pytest.approx(1240 / 2440)
    out = M.threshold_metrics(y, pred, threshold=0.5)
    assert out["precision"] == pytest.approx(8 / 18)
    assert out["recall"] == pytest.approx(0.8)
    assert out["f1"] == pytest.approx(16 / 28)
    assert out["accuracy"] == pytest.approx(0.88)
    assert (out["tp"], out["tn"], out["fp"], out["fn"]) == (8, 80, 10, 2)
    assert out["threshold"] == 0.5


def test_perfect_and_inverted_forecasts():
    assert M.tss(tp=5, tn=5, fp=0, fn=0) == 1.0
    assert M.hss(tp=5, tn=5, fp=0, fn=0) == 1.0
    assert M.tss(tp=0, tn=0, fp=5, fn=5) == -1.0
    assert M.hss(tp=0, tn=0, fp=5, fn=5) == -1.0


def test_zero_denominators_give_documented_values():
    # One class only and all forecasts right: HSS denominator is 0 -> 0.0.
    assert M.hss(tp=4, tn=0, fp=0, fn=0) == 0.0
    # No positives: TPR counts as 0, so TSS = -FPR.
    assert M.tss(tp=0, tn=3, fp=1, fn=0) == pytest.approx(-0.25)
    out = M.threshold_metrics([0, 0, 0], [0.1, 0.2, 0.3], threshold=0.9)
    assert out["precision"] == 0.0 and out["recall"] == 0.0 and out["f1"] == 0.0
    assert out["accuracy"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn_on_random_data(seed):
    y, s = _random_set(seed)
    out = M.evaluate(y, s, threshold=0.5)
    assert list(out) == [m.name for m in M.METRICS.rows() if m.needs != "diagnostics"]
    pred = (s >= 0.5).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (out["tp"], out["tn"], out["fp"], out["fn"]) == (tp, tn, fp, fn)
    assert out["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert out["pr_auc"] == pytest.approx(skm.average_precision_score(y, s))
    assert out["brier"] == pytest.approx(skm.brier_score_loss(y, s))
    clim = np.full_like(s, y.mean())
    assert out["bss"] == pytest.approx(1 - skm.brier_score_loss(y, s) / skm.brier_score_loss(y, clim))
    assert out["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert out["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert out["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert out["tss"] == pytest.approx(tp / (tp + fn) - fp / (fp + tn))


def _tie_case() -> tuple[np.ndarray, np.ndarray]:
    # 4 positives, 100 negatives; two negatives tie with a positive at 0.9.
    # Operating points (tp, fp): inf->(0,0), 0.95->(1,0), 0.9->(2,2), 0.85->(3,2),
    # 0.1->(3,100), 0.05->(4,100).
    pos = [0.95, 0.9, 0.85, 0.05]
    neg = [0.9, 0.9] + [0.1] * 98
    return np.r_[np.ones(4), np.zeros(100)], np.r_[pos, neg]


def test_tpr_at_fpr_takes_tie_groups_whole():
    y, s = _tie_case()
    # FPR 1e-2 allows 1 false positive, but the 0.9 group brings 2: stay at (1, 0).
    assert M.tpr_at_fpr(y, s, 1e-2) == 0.25
    assert M.tpr_at_fpr(y, s, 2e-2) == 0.75
    assert M.tpr_at_fpr(y, s, 1.0) == 1.0


def test_tpr_at_fpr_with_fewer_negatives_than_one_over_fpr_is_tpr_at_zero_fp():
    # 2 negatives, fpr 1e-3: only zero-FP points qualify -> positives strictly above 0.6.
    y = np.array([1, 1, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.6, 0.6, 0.1])
    assert M.tpr_at_fpr(y, s, 1e-3) == pytest.approx(2 / 3)
    y_tie, s_tie = _tie_case()  # 100 negatives, 1e-3 * 100 < 1
    assert M.tpr_at_fpr(y_tie, s_tie, 1e-3) == 0.25


def test_fpr_at_tpr_is_lowest_fpr_reaching_target():
    y, s = _tie_case()
    assert M.fpr_at_tpr(y, s, 0.5) == pytest.approx(0.02)  # (2, 2) reaches TPR 0.5
    assert M.fpr_at_tpr(y, s, 0.9) == 1.0  # needs the last positive at 0.05
    assert M.fpr_at_tpr(y, s, 0.25) == 0.0


def test_single_class_gives_nan_not_exception():
    y, s = np.zeros(5), np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    out = M.evaluate(y, s, threshold=0.5)
    for name in ("auc", "pr_auc", "bss", "tpr_at_fpr_1e-3", "fpr_at_tpr_0.9"):
        assert math.isnan(out[name]), name
    assert out["brier"] == pytest.approx(np.mean(s**2))
    assert (out["tp"], out["tn"], out["fp"], out["fn"]) == (0, 4, 1, 0)


def _brute_force_best(y, s, metric):
    best = -np.inf
    for t in np.r_[np.unique(s), s.max() + 1]:
        value = M.threshold_metrics(y, s, t)[metric]
        best = max(best, value)
    return best


@pytest.mark.parametrize("metric", ["tss", "hss", "f1"])
def test_choose_threshold_maximises_metric(metric):
    y, s = _random_set(7, n=60)
    t = M.choose_threshold(y, s, metric=metric)
    assert M.threshold_metrics(y, s, t)[metric] == pytest.approx(_brute_force_best(y, s, metric))


def test_choose_threshold_prefers_largest_threshold_on_ties():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    # TSS by threshold: 0.9 -> 1/2 - 0, 0.8 -> 1/2 - 1/2, 0.7 -> 1 - 1/2, 0.1 -> 0.
    # 0.9 and 0.7 tie at 0.5; the documented rule picks the larger.
    assert M.choose_threshold(y, s) == 0.9


def test_choose_threshold_respects_min_recall():
    y, s = _random_set(3, n=80)
    free = M.choose_threshold(y, s)
    assert M.threshold_metrics(y, s, free)["recall"] < 0.99  # the constraint binds here
    t = M.choose_threshold(y, s, min_recall=0.99)
    assert M.threshold_metrics(y, s, t)["recall"] >= 0.99


def test_choose_threshold_reports_unmeetable_constraint():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.2, 0.1])
    with pytest.raises(ValueError, match="min_precision"):
        M.choose_threshold(y, s, min_recall=1.0, min_precision=0.9)
    with pytest.raises(ValueError, match="Unknown metric 'auc'"):
        M.choose_threshold(y, s, metric="auc")


def test_input_validation_echoes_bad_values():
    with pytest.raises(ValueError, match=r"0/1 labels; found \[2\]"):
        M.threshold_metrics([0, 2], [0.1, 0.2], threshold=0.5)
    with pytest.raises(ValueError, match="same non-zero length"):
        M.probability_metrics([0, 1], [0.1])
    with pytest.raises(ValueError, match="probabilities"):
        M.probability_metrics([0, 1], [-3.0, 2.0])


def test_the_table_says_each_metric_direction_and_use():
    assert not M.METRICS["brier"].higher_is_better and not M.METRICS["fpr_at_tpr_0.9"].higher_is_better
    assert M.METRICS["tss"].higher_is_better and M.METRICS["tpr_at_fpr_1e-3"].higher_is_better
    assert M.threshold_choices() == ("tss", "hss", "f1")
    assert set(M.monitor_choices()) == {"tss", "hss", "auc", "pr_auc", "bss", "f1", "loss"}
    assert [(m.column, m.name) for m in M.headline_metrics()] == [
        ("TSS", "tss"), ("HSS", "hss"), ("AUC", "auc"), ("TPR@FPR=1e-3", "tpr_at_fpr_1e-3")]
    assert M.compare_choices() == ("auc", "pr_auc", "brier", "bss", "tss", "hss", "f1", "tpr@fpr=1e-4",
                                   "tpr@fpr=1e-3", "tpr@fpr=1e-2", "fpr@tpr=0.9", "tpr_C", "tpr_M", "tpr_X",
                                   "fpr_noflare", "fpr_subC", "fpr_hard_ar", "ece")


def test_compare_metric_key_mapping_and_error():
    assert M.compare_metric_key("tpr@fpr=1e-3", "test") == ("test/tpr_at_fpr_1e-3", True)
    assert M.compare_metric_key("fpr@tpr=0.9", "val") == ("val/fpr_at_tpr_0.9", False)
    assert M.compare_metric_key("brier", "test") == ("test/brier", False)
    assert M.compare_metric_key("tss", "val") == ("val/tss", True)
    assert M.compare_metric_key("TSS", "val") == ("val/tss", True)  # case-insensitive
    assert M.compare_metric_key("TPR@FPR=1E-3", "test") == ("test/tpr_at_fpr_1e-3", True)
    with pytest.raises(ValueError, match=r"Unknown metric 'tpr@fpr=0.5'; available: .*tpr@fpr=1e-3"):
        M.compare_metric_key("tpr@fpr=0.5", "test")


def test_metrics_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, arflare.metrics, arflare.plots; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_monitor_direction_comes_from_the_metric_table():
    from arflare.metrics import monitor_sign

    assert monitor_sign("tss") == 1.0 and monitor_sign("auc") == 1.0
    assert monitor_sign("loss") == -1.0 and monitor_sign("brier") == -1.0  # smaller is better: maximise the negative
