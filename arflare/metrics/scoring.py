"""Computing metrics: input checks, confusion counts, threshold choice, and evaluating the table."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from arflare.metrics.table import METRICS, Counts, Scored, _div, _fpr_at, _hss, _tpr_at, _tss, threshold_choices


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
    return float(_tss(Counts(tp, tn, fp, fn, np.nan)))


def hss(tp: int, tn: int, fp: int, fn: int) -> float:
    """Heidke skill score (2x2 form); 0.0 when its denominator is 0 (e.g. one class, all right)."""
    return float(_hss(Counts(tp, tn, fp, fn, np.nan)))


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
    metric: str = "tss",
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
        metric: what to maximise; one of :func:`threshold_choices`.
        min_recall: only consider thresholds with recall >= this.
        min_precision: only consider thresholds with precision >= this.

    Returns:
        The threshold; predict positive iff ``score >= threshold``.

    Raises:
        ValueError: for an unknown metric or constraints no threshold meets.
    """
    if metric not in threshold_choices():
        raise ValueError(f"Unknown metric {metric!r}; available: {', '.join(threshold_choices())}")
    y, s = validate_inputs(y_true, scores)
    thresholds, tp, fp = _sweep(y, s)
    n_pos = int(y.sum())
    value = METRICS[metric].fn(Counts(tp, (y.size - n_pos) - fp, fp, n_pos - tp, thresholds))
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
    """Skill of the forecast ``score >= threshold``: every metric that ``needs="threshold"``.

    Returns:
        ``tss, hss, precision, recall, f1, accuracy, threshold, tp, tn, fp, fn`` (counts as floats)
        and any registered threshold metric, in table order.
    """
    y, s = validate_inputs(y_true, scores)
    counts = Counts(*confusion(y, s >= threshold), float(threshold))
    return {m.name: float(m.fn(counts)) for m in METRICS.rows() if m.needs == "threshold"}


def tpr_at_fpr(y_true: ArrayLike, scores: ArrayLike, fpr: float) -> float:
    """Highest TPR among ROC operating points with FPR <= ``fpr``.

    Tie groups are taken whole (conservative). If ``n_neg * fpr < 1`` this is the
    TPR at zero false positives: the fraction of positives scoring strictly above
    every negative. NaN if ``y_true`` has a single class.
    """
    scored = Scored(*validate_inputs(y_true, scores))
    return float("nan") if scored.roc is None else _tpr_at(fpr, scored)


def fpr_at_tpr(y_true: ArrayLike, scores: ArrayLike, tpr: float) -> float:
    """Lowest FPR among ROC operating points with TPR >= ``tpr``; NaN for a single class."""
    scored = Scored(*validate_inputs(y_true, scores))
    return float("nan") if scored.roc is None else _fpr_at(tpr, scored)


def probability_metrics(y_true: ArrayLike, scores: ArrayLike, *, keep_rate: float | None = None) -> dict[str, float]:
    """Threshold-free metrics of probability forecasts: every metric that ``needs="probability"``.

    Args:
        y_true: 0/1 labels.
        scores: predicted flare probabilities in [0, 1].
        keep_rate: odds factor of a rebalanced training mix; ``brier`` and ``bss`` score the
            probabilities corrected with it (:func:`arflare.calibration.correct_probability`),
            ``brier_raw`` and ``bss_raw`` the scores as given. None: no correction.

    Returns:
        ``auc, pr_auc, brier, bss, brier_raw, bss_raw, tpr_at_fpr_1e-4/1e-3/1e-2, fpr_at_tpr_0.9``
        (and any registered probability metric), in table order; all but the Brier scores are NaN
        when ``y_true`` holds a single class.
    """
    y, s = validate_inputs(y_true, scores)
    if s.min() < 0 or s.max() > 1:
        raise ValueError(
            f"scores must be probabilities in [0, 1]; got range [{s.min():.4g}, {s.max():.4g}] "
            "(apply a sigmoid/softmax to logits first)"
        )
    scored, single = Scored(y, s, keep_rate), y.min() == y.max()
    return {m.name: float("nan") if single and m.single_class_nan else float(m.fn(scored))
            for m in METRICS.rows() if m.needs == "probability"}


def evaluate(y_true: ArrayLike, scores: ArrayLike, *, threshold: float, keep_rate: float | None = None) -> dict[str, float]:
    """Every threshold and probability metric of :data:`METRICS`, keyed and ordered as the table
    (``keep_rate``: see :func:`probability_metrics`; the threshold metrics use the scores as given;
    the ``diagnostics`` rows need flare classes and ARs: :mod:`arflare.diagnostics` computes them)."""
    merged = {**probability_metrics(y_true, scores, keep_rate=keep_rate), **threshold_metrics(y_true, scores, threshold)}
    return {m.name: merged[m.name] for m in METRICS.rows() if m.needs != "diagnostics"}

