"""Forecast-skill metrics for binary flare / no-flare classifiers.

Everything here is numpy and scikit-learn only (no torch), so ``arflare compare``
can use the metric names without importing a deep-learning stack.

Conventions, relied on by the tests and by anyone reading a logged number:

* Prediction rule: positive iff ``score >= threshold``.
* ``tss`` (Hanssen-Kuipers / true skill statistic) is ``TPR - FPR`` and ``hss``
  (Heidke skill score) is ``2(TP·TN - FN·FP) / ((TP+FN)(FN+TN) + (TP+FP)(FP+TN))``.
  A ratio whose denominator is 0 counts as 0.0 (so TSS of a single-class set is
  ``0 - FPR`` or ``TPR - 0``, and precision with no positive predictions is 0.0)
  instead of raising; the same rule applies to precision, recall and F1.
* ``bss`` is the Brier skill score ``1 - BS / BS_clim`` where the climatology
  forecast is the base rate of the *same* set being scored (``BS_clim = p(1-p)``).
  It is therefore not comparable across sets with different base rates.
* ``tpr_at_fpr`` reads the ROC step function (``sklearn.metrics.roc_curve`` with
  ``drop_intermediate=False``): the highest TPR among operating points whose FPR
  is <= the target. An operating point includes or excludes a whole group of tied
  scores (no interpolation, no random tie-breaking), so the value is conservative.
  With fewer negatives than ``1 / fpr`` (``n_neg * fpr < 1``) the only admissible
  points have zero false positives, so the value is the *TPR at zero false
  positives*: the fraction of positives scoring strictly above every negative.
* ``fpr_at_tpr`` is the lowest FPR among operating points with TPR >= the target.
* Degenerate sets (``y_true`` of a single class): ranking metrics (``auc``,
  ``pr_auc``, ``bss``, ``tpr_at_fpr_*``, ``fpr_at_tpr_0.9``) are NaN rather than
  an exception, so a tiny validation split cannot crash a run; threshold metrics
  and ``brier`` stay defined.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

THRESHOLD_METRIC_NAMES = (
    "tss", "hss", "precision", "recall", "f1", "accuracy", "threshold", "tp", "tn", "fp", "fn",
)
_FIXED_FPRS = {"tpr_at_fpr_1e-4": 1e-4, "tpr_at_fpr_1e-3": 1e-3, "tpr_at_fpr_1e-2": 1e-2}
PROBABILITY_METRIC_NAMES = ("auc", "pr_auc", "brier", "bss", *_FIXED_FPRS, "fpr_at_tpr_0.9")
METRIC_NAMES: tuple[str, ...] = (
    "auc", "pr_auc", "brier", "bss", "tss", "hss", "precision", "recall", "f1", "accuracy",
    "threshold", *_FIXED_FPRS, "fpr_at_tpr_0.9", "tp", "tn", "fp", "fn",
)
# "threshold" is not a skill; it is listed so every logged name has a direction.
HIGHER_IS_BETTER: Mapping[str, bool] = MappingProxyType(
    {name: name not in {"brier", "fpr_at_tpr_0.9", "fp", "fn"} for name in METRIC_NAMES}
)
# Names accepted by ``arflare compare --metric``; the keys logged are METRIC_NAMES.
COMPARE_METRICS: Mapping[str, str] = MappingProxyType({
    "tss": "tss", "hss": "hss", "auc": "auc", "pr_auc": "pr_auc", "f1": "f1", "bss": "bss",
    "brier": "brier", "tpr@fpr=1e-4": "tpr_at_fpr_1e-4", "tpr@fpr=1e-3": "tpr_at_fpr_1e-3",
    "tpr@fpr=1e-2": "tpr_at_fpr_1e-2", "fpr@tpr=0.9": "fpr_at_tpr_0.9",
})


def validate_inputs(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert labels and scores to 1-D arrays (int8 labels, float64 scores).

    Raises:
        ValueError: if shapes differ, the set is empty, labels are not 0/1 or a
            score is not finite.
    """
    y = _labels(y_true, "y_true")
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.size != s.size or y.size == 0:
        raise ValueError(f"y_true and scores need the same non-zero length; got {y.size} and {s.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf; check the model outputs before scoring")
    return y, s


def _labels(values: ArrayLike, name: str) -> np.ndarray:
    """A 1-D int8 array of 0/1 labels, or ValueError naming the offending values."""
    arr = np.asarray(values).ravel()
    bad = np.setdiff1d(np.unique(arr), [0, 1])
    if bad.size:
        raise ValueError(f"{name} must hold only 0/1 labels; found {bad[:5].tolist()}")
    return arr.astype(np.int8)


def _div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num / den, with 0.0 wherever den == 0 (the documented zero-denominator rule)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _tss(tp, tn, fp, fn) -> np.ndarray:
    return _div(tp, tp + fn) - _div(fp, fp + tn)


def _hss(tp, tn, fp, fn) -> np.ndarray:
    tp, tn, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, tn, fp, fn))
    return _div(2 * (tp * tn - fn * fp), (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def confusion(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[int, int, int, int]:
    """Count a binary confusion matrix.

    Args:
        y_true: 0/1 labels.
        y_pred: 0/1 predictions of the same length.

    Returns:
        ``(tp, tn, fp, fn)``.
    """
    y, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if y.size != p.size:
        raise ValueError(f"y_true and y_pred need the same length; got {y.size} and {p.size}")
    yb, p = y.astype(bool), p.astype(bool)
    tp = int(np.count_nonzero(yb & p))
    fp = int(np.count_nonzero(~yb & p))
    fn = int(np.count_nonzero(yb & ~p))
    return tp, y.size - tp - fp - fn, fp, fn


def tss(tp: int, tn: int, fp: int, fn: int) -> float:
    """True skill statistic ``TPR - FPR``; a rate with zero denominator counts as 0.0."""
    return float(_tss(tp, tn, fp, fn))


def hss(tp: int, tn: int, fp: int, fn: int) -> float:
    """Heidke skill score (2x2 form); 0.0 when its denominator is 0 (e.g. one class, all right)."""
    return float(_hss(tp, tn, fp, fn))


def _f1(tp, tn, fp, fn) -> np.ndarray:
    return _div(2 * tp, 2 * tp + fp + fn)


_OBJECTIVES = {"tss": _tss, "hss": _hss, "f1": _f1}


def _sweep(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts at every candidate threshold, in O(n log n).

    Candidates are the distinct scores, descending, preceded by one just above the
    maximum (predicts nothing). Returns ``(thresholds, tp, fp)``.
    """
    order = np.argsort(s, kind="stable")[::-1]
    s_sorted, y_sorted = s[order], y[order]
    # The last index of each tie group: a threshold admits the whole group at once.
    ends = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tp = np.cumsum(y_sorted, dtype=np.int64)[ends]
    fp = ends + 1 - tp
    above_max = np.nextafter(s_sorted[0], np.inf)
    return np.r_[above_max, s_sorted[ends]], np.r_[0, tp], np.r_[0, fp]


def choose_threshold(
    y_true: ArrayLike,
    scores: ArrayLike,
    *,
    metric: Literal["tss", "hss", "f1"] = "tss",
    min_recall: float | None = None,
    min_precision: float | None = None,
) -> float:
    """Pick the decision threshold that maximises a skill metric on this set.

    Candidates are the distinct scores plus one just above the largest score
    (``np.nextafter(max, inf)``: predict no flares). Ties in the metric go to the
    *largest* threshold achieving the maximum, i.e. the fewest positive predictions.

    Args:
        y_true: 0/1 labels.
        scores: real-valued scores; higher means more likely positive.
        metric: what to maximise.
        min_recall: only consider thresholds with recall >= this.
        min_precision: only consider thresholds with precision >= this.

    Returns:
        The threshold; predict positive iff ``score >= threshold``.

    Raises:
        ValueError: for an unknown metric or constraints no threshold meets.
    """
    if metric not in _OBJECTIVES:
        raise ValueError(f"Unknown metric {metric!r}; available: {', '.join(_OBJECTIVES)}")
    y, s = validate_inputs(y_true, scores)
    thresholds, tp, fp = _sweep(y, s)
    n_pos = int(y.sum())
    value = _OBJECTIVES[metric](tp, (y.size - n_pos) - fp, fp, n_pos - tp)
    ok = np.ones(thresholds.size, dtype=bool)
    for name, bound, achieved in (
        ("min_recall", min_recall, _div(tp, n_pos)),
        ("min_precision", min_precision, _div(tp, tp + fp)),
    ):
        if bound is None:
            continue
        if not (ok & (achieved >= bound)).any():
            raise ValueError(
                f"No threshold meets {name}={bound}: the best {name[4:]} reachable on this set"
                f"{' together with min_recall' if name == 'min_precision' and min_recall is not None else ''}"
                f" is {achieved[ok].max():.4g}; lower {name}"
            )
        ok &= achieved >= bound
    # argmax returns the first maximum, i.e. the largest threshold (thresholds descend).
    return float(thresholds[np.argmax(np.where(ok, value, -np.inf))])


def threshold_metrics(y_true: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, float]:
    """Skill of the forecast ``score >= threshold``.

    Returns:
        ``tss, hss, precision, recall, f1, accuracy, threshold, tp, tn, fp, fn`` (counts as floats).
    """
    y, s = validate_inputs(y_true, scores)
    tp, tn, fp, fn = confusion(y, s >= threshold)
    return {
        "tss": tss(tp, tn, fp, fn),
        "hss": hss(tp, tn, fp, fn),
        "precision": float(_div(tp, tp + fp)),
        "recall": float(_div(tp, tp + fn)),
        "f1": float(_f1(tp, tn, fp, fn)),
        "accuracy": (tp + tn) / y.size,
        "threshold": float(threshold),
        "tp": float(tp), "tn": float(tn), "fp": float(fp), "fn": float(fn),
    }


def _roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """ROC step function ``(fpr, tpr)`` or None if y has a single class."""
    if y.min() == y.max():
        return None
    from sklearn.metrics import roc_curve  # lazy: `arflare validate` reads METRIC_NAMES only

    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr


def _tpr_at(roc: tuple[np.ndarray, np.ndarray] | None, target: float) -> float:
    # The (0, 0) point always qualifies, so the selection is never empty.
    return float("nan") if roc is None else float(roc[1][roc[0] <= target].max())


def _fpr_at(roc: tuple[np.ndarray, np.ndarray] | None, target: float) -> float:
    # The (1, 1) point always qualifies, so the selection is never empty.
    return float("nan") if roc is None else float(roc[0][roc[1] >= target].min())


def tpr_at_fpr(y_true: ArrayLike, scores: ArrayLike, fpr: float) -> float:
    """Highest TPR among ROC operating points with FPR <= ``fpr``.

    Tie groups are taken whole (conservative). If ``n_neg * fpr < 1`` this is the
    TPR at zero false positives: the fraction of positives scoring strictly above
    every negative. NaN if ``y_true`` has a single class.
    """
    return _tpr_at(_roc(*validate_inputs(y_true, scores)), fpr)


def fpr_at_tpr(y_true: ArrayLike, scores: ArrayLike, tpr: float) -> float:
    """Lowest FPR among ROC operating points with TPR >= ``tpr``; NaN for a single class."""
    return _fpr_at(_roc(*validate_inputs(y_true, scores)), tpr)


def probability_metrics(y_true: ArrayLike, scores: ArrayLike) -> dict[str, float]:
    """Threshold-free metrics of probability forecasts.

    Args:
        y_true: 0/1 labels.
        scores: predicted flare probabilities in [0, 1].

    Returns:
        ``auc, pr_auc, brier, bss, tpr_at_fpr_1e-4/1e-3/1e-2, fpr_at_tpr_0.9``; all but
        ``brier`` are NaN when ``y_true`` holds a single class.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = validate_inputs(y_true, scores)
    if s.min() < 0 or s.max() > 1:
        raise ValueError(
            f"scores must be probabilities in [0, 1]; got range [{s.min():.4g}, {s.max():.4g}] "
            "(apply a sigmoid/softmax to logits first)"
        )
    brier = float(np.mean((s - y) ** 2))
    single = y.min() == y.max()
    nan = float("nan")
    base_rate = y.mean()
    out = {
        "auc": nan if single else float(roc_auc_score(y, s)),
        "pr_auc": nan if single else float(average_precision_score(y, s)),
        "brier": brier,
        "bss": nan if single else 1.0 - brier / float(base_rate * (1 - base_rate)),
    }
    roc = _roc(y, s)
    out.update({name: _tpr_at(roc, rate) for name, rate in _FIXED_FPRS.items()})
    out["fpr_at_tpr_0.9"] = _fpr_at(roc, 0.9)
    return out


def evaluate(y_true: ArrayLike, scores: ArrayLike, *, threshold: float) -> dict[str, float]:
    """All metrics, keyed and ordered exactly as ``METRIC_NAMES``."""
    merged = {**probability_metrics(y_true, scores), **threshold_metrics(y_true, scores, threshold)}
    return {name: merged[name] for name in METRIC_NAMES}


def compare_metric_key(name: str, split: str) -> tuple[str, bool]:
    """Translate an ``arflare compare --metric`` name into a logged key and its direction.

    Args:
        name: a CLI name (``tss``, ``tpr@fpr=1e-3``, ...) or any of ``METRIC_NAMES``.
        split: the split prefix, e.g. ``"test"``.

    Returns:
        ``(f"{split}/{key}", higher_is_better)``, e.g. ``("test/tpr_at_fpr_1e-3", True)``.

    Raises:
        ValueError: for an unknown name.
    """
    key = COMPARE_METRICS.get(name) or (name if name in METRIC_NAMES else None)
    if key is None:
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(COMPARE_METRICS)}")
    return f"{split}/{key}", HIGHER_IS_BETTER[key]
