"""Uncertainty of skill scores by resampling active regions (cluster bootstrap).

Frames of one active region are strongly correlated (the same magnetic structure imaged every
12 minutes), so resampling *frames* with replacement pretends there are thousands of
independent cases when there are a few dozen ARs, and gives intervals that are far too
narrow. Here each bootstrap resample draws ARs with replacement (every frame of a drawn AR
comes along, as often as the AR was drawn) and re-scores the run at its fixed threshold.

Everything is numpy: a resample is a vector of AR multiplicities, so the confusion counts,
Brier sums and the weighted ROC/PR curves of all resamples are matrix products over
per-AR (or per-AR x tie-group) counts, done in chunks of resamples to bound memory.
No torch here: ``arflare compare --paired`` uses this module too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

FIXED_FPRS: Mapping[str, float] = {"tpr_at_fpr_1e-4": 1e-4, "tpr_at_fpr_1e-3": 1e-3, "tpr_at_fpr_1e-2": 1e-2}
BOOTSTRAP_METRICS: tuple[str, ...] = ("tss", "hss", "auc", "pr_auc", "bss", *FIXED_FPRS)
DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
_CELLS_PER_CHUNK = 4_000_000  # resamples x tie groups held at once (~32 MB of float64 per matrix)


@dataclass(frozen=True)
class _Clusters:
    """Per-AR sums the metrics need; every resample is a weight vector over these rows."""

    n_clusters: int
    pos_pred: np.ndarray  # (K, 4): tp, fp, fn, tn counts per AR at the threshold
    brier: np.ndarray  # (K, 3): frames, positives, sum of squared errors per AR (corrected probabilities)
    pos_by_group: np.ndarray  # (K, G): positives per AR in each tie group of scores, descending
    neg_by_group: np.ndarray  # (K, G): negatives per AR in each tie group


def cluster_index(ars: ArrayLike) -> np.ndarray:
    """Map AR ids to 0..K-1 in sorted order of the ids (stable, so seeds reproduce across runs)."""
    _, inverse = np.unique(np.asarray(ars).astype(str), return_inverse=True)
    return inverse.ravel()


def _clusters(labels: np.ndarray, scores: np.ndarray, cluster: np.ndarray, threshold: float,
              keep_rate: float | None = None) -> _Clusters:
    from arflare.calibration import correct_probability

    k = int(cluster.max()) + 1
    y = labels.astype(bool)
    pred = scores >= threshold
    cells = np.stack([y & pred, ~y & pred, y & ~pred, ~y & ~pred], axis=1).astype(np.float64)
    pos_pred = np.zeros((k, 4))
    np.add.at(pos_pred, cluster, cells)
    brier = np.zeros((k, 3))
    np.add.at(brier, cluster, np.stack([np.ones_like(scores), y.astype(float),
                                                  (correct_probability(scores, keep_rate) - y) ** 2], axis=1))
    # Tie groups of scores, highest first: an ROC/PR operating point admits a whole group.
    distinct, group = np.unique(-scores, return_inverse=True)
    pos_by_group = np.zeros((k, distinct.size), dtype=np.float64)
    neg_by_group = np.zeros((k, distinct.size), dtype=np.float64)
    np.add.at(pos_by_group, (cluster, group.ravel()), y.astype(np.float64))
    np.add.at(neg_by_group, (cluster, group.ravel()), (~y).astype(np.float64))
    return _Clusters(k, pos_pred, brier, pos_by_group, neg_by_group)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _scores(c: _Clusters, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of BOOTSTRAP_METRICS for each row of ``weights`` (resamples x ARs)."""
    tp, fp, fn, tn = (weights @ c.pos_pred).T
    out = {"tss": _div(tp, tp + fn) - _div(fp, fp + tn),
           "hss": _div(2 * (tp * tn - fn * fp), (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))}
    n, n_pos, squared = (weights @ c.brier).T
    n_neg = n - n_pos
    single = (n_pos == 0) | (n_neg == 0)
    base = _div(n_pos, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["bss"] = np.where(single, np.nan, 1 - _div(squared, n) / (base * (1 - base)))
    pos = weights @ c.pos_by_group  # (B, G) weighted positives per tie group, descending score
    neg = weights @ c.neg_by_group
    cum_pos, cum_neg = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # AUC: each positive beats the negatives of lower groups and ties half with its own.
        below = n_neg[:, None] - cum_neg
        out["auc"] = np.where(single, np.nan, (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg))
        # Average precision as scikit-learn defines it: sum of recall steps x precision.
        precision = _div(cum_pos, cum_pos + cum_neg)
        out["pr_auc"] = np.where(single, np.nan, (pos * precision).sum(axis=1) / n_pos)
        tpr, fpr = cum_pos / n_pos[:, None], cum_neg / n_neg[:, None]
    for name, target in FIXED_FPRS.items():
        # (0, 0) is always an admissible point, hence the initial 0.
        best = np.where(fpr <= target + 1e-12, tpr, 0.0).max(axis=1, initial=0.0)
        out[name] = np.where(single, np.nan, best)
    return out


def _weights(n_clusters: int, n_resamples: int, seed: int) -> np.ndarray:
    """AR multiplicities of each resample: K draws with replacement, counted per AR."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_clusters, size=(n_resamples, n_clusters))
    offsets = np.arange(n_resamples)[:, None] * n_clusters
    return np.bincount((draws + offsets).ravel(), minlength=n_resamples * n_clusters).reshape(n_resamples, n_clusters).astype(float)


def _resampled(c: _Clusters, weights: np.ndarray) -> dict[str, np.ndarray]:
    chunk = max(1, _CELLS_PER_CHUNK // max(c.pos_by_group.shape[1], 1))
    parts = [_scores(c, weights[start:start + chunk]) for start in range(0, len(weights), chunk)]
    return {name: np.concatenate([p[name] for p in parts]) for name in BOOTSTRAP_METRICS}


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval; ``n_valid`` resamples had both classes."""

    estimate: float
    lo: float
    hi: float
    n_valid: int

    def as_dict(self) -> dict[str, float | int]:
        return {"estimate": self.estimate, "lo": self.lo, "hi": self.hi, "n_valid": self.n_valid}


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float, int]:
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return math.nan, math.nan, 0
    lo, hi = np.percentile(valid, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi), int(valid.size)


def _prepare(labels: ArrayLike, scores: ArrayLike, ars: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not (y.size == s.size == np.asarray(ars).size) or y.size == 0:
        raise ValueError(f"labels, scores and ars need the same non-zero length; got {y.size}, {s.size}, {np.asarray(ars).size}")
    if not np.isin(y, (0, 1)).all() or not np.isfinite(s).all():
        raise ValueError("labels must be 0/1 and scores finite")
    return y, s, cluster_index(ars)


def bootstrap_intervals(labels: ArrayLike, scores: ArrayLike, ars: ArrayLike, *, threshold: float,
                        n_resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                        seed: int = 0, keep_rate: float | None = None) -> dict[str, Interval]:
    """Percentile intervals of the skill scores under an AR cluster bootstrap.

    Args:
        labels: 0/1 label per frame.
        scores: Predicted flare probability per frame.
        ars: Active-region id per frame; the unit that is resampled.
        threshold: The run's decision threshold (chosen on validation), held fixed.
        n_resamples: Number of bootstrap resamples.
        level: Coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
        seed: Seed of the resampling; the same inputs and seed give the same interval.
        keep_rate: The run's training odds factor: BSS is scored on the probabilities corrected
            with it, as the logged ``{split}/bss`` is (the other metrics do not depend on it).

    Returns:
        ``{name: Interval}`` for each of BOOTSTRAP_METRICS. Resamples that hold a single class
        leave out the ranking metrics (AUC, PR AUC, BSS, TPR@FPR) and are not counted in
        ``n_valid``.
    """
    y, s, cluster = _prepare(labels, scores, ars)
    c = _clusters(y, s, cluster, threshold, keep_rate)
    estimate = _scores(c, np.ones((1, c.n_clusters)))
    draws = _resampled(c, _weights(c.n_clusters, n_resamples, seed))
    out = {}
    for name in BOOTSTRAP_METRICS:
        lo, hi, valid = _percentiles(draws[name], level)
        out[name] = Interval(float(estimate[name][0]), lo, hi, valid)
    return out


def count_rate_intervals(counts: np.ndarray, *, n_resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                         seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """AR-bootstrap intervals of TPR, FPR and TSS of several subsets (strata) of one split at once.

    Every resample draws the split's ARs with replacement, exactly as :func:`bootstrap_intervals`
    does with the same ``seed``, and re-counts every stratum under it, so the strata of a split
    share their resamples with each other and with the split's headline intervals.

    Args:
        counts: ``(K, S, 4)``: tp, fn, fp, tn of AR k in stratum s at the fixed threshold; the
            ARs in the order of :func:`cluster_index`.
        n_resamples: Number of resamples.
        level: Coverage of the interval.
        seed: Seed of the resampling.

    Returns:
        ``{"tpr" | "fpr" | "tss": (lo, hi)}``, arrays of length S. A resample in which a stratum has
        no positives (negatives) leaves it out of that stratum's TPR (FPR); a stratum whose ARs are
        all one AR gets a zero-width interval, which its AR count explains.
    """
    k, strata, _ = counts.shape
    weights = _weights(k, n_resamples, seed)
    tp, fn, fp, tn = np.moveaxis(np.einsum("bk,ksc->bsc", weights, counts.astype(np.float64)), 2, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = {"tpr": np.where(tp + fn > 0, tp / (tp + fn), np.nan), "fpr": np.where(fp + tn > 0, fp / (fp + tn), np.nan)}
    rates["tss"] = rates["tpr"] - rates["fpr"]
    out = {}
    for name, draws in rates.items():
        bounds = [_percentiles(draws[:, s], level)[:2] for s in range(strata)]
        out[name] = (np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds]))
    return out


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` of one metric, its paired bootstrap interval and two-sided p-value."""

    a: float
    b: float
    difference: float
    lo: float
    hi: float
    p_value: float
    n_valid: int


def paired_bootstrap(labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike, ars: ArrayLike, *,
                     threshold_a: float, threshold_b: float, n_resamples: int = DEFAULT_RESAMPLES,
                     level: float = DEFAULT_LEVEL, seed: int = 0, keep_rate_a: float | None = None,
                     keep_rate_b: float | None = None) -> dict[str, PairedDifference]:
    """Difference of two runs' skill on the same frames, with the same AR resamples for both.

    The p-value tests "no difference" by shifting the bootstrap distribution of the difference
    to zero (Efron & Tibshirani 1993, ch. 16): the share of resamples whose difference lies at
    least as far from the observed one as the observed one lies from zero.

    Args:
        labels: 0/1 label per frame (the same test set for both runs).
        scores_a: Run A's probability per frame.
        scores_b: Run B's probability per frame, aligned with ``scores_a``.
        ars: Active-region id per frame.
        threshold_a: Run A's fixed threshold.
        threshold_b: Run B's fixed threshold.
        n_resamples: Number of bootstrap resamples.
        level: Coverage of the interval.
        seed: Seed of the resampling.
        keep_rate_a: Run A's training odds factor (its BSS uses corrected probabilities).
        keep_rate_b: Run B's.

    Returns:
        ``{name: PairedDifference}`` for each of BOOTSTRAP_METRICS.
    """
    y, s_a, cluster = _prepare(labels, scores_a, ars)
    _, s_b, _ = _prepare(labels, scores_b, ars)
    c_a = _clusters(y, s_a, cluster, threshold_a, keep_rate_a)
    c_b = _clusters(y, s_b, cluster, threshold_b, keep_rate_b)
    ones = np.ones((1, c_a.n_clusters))
    point_a, point_b = _scores(c_a, ones), _scores(c_b, ones)
    weights = _weights(c_a.n_clusters, n_resamples, seed)
    draws_a, draws_b = _resampled(c_a, weights), _resampled(c_b, weights)
    out = {}
    for name in BOOTSTRAP_METRICS:
        a, b = float(point_a[name][0]), float(point_b[name][0])
        observed = a - b
        diffs = draws_a[name] - draws_b[name]
        lo, hi, valid = _percentiles(diffs, level)
        finite = diffs[np.isfinite(diffs)]
        if finite.size and math.isfinite(observed):
            p_value = float(np.mean(np.abs(finite - observed) >= abs(observed) - 1e-12))
        else:
            p_value = math.nan
        out[name] = PairedDifference(a, b, observed, lo, hi, p_value, valid)
    return out


def interval_metrics(predictions: Mapping[str, object], *, threshold: float, n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0, keep_rate: float | None = None) -> tuple[dict[str, float], dict[str, object]]:
    """Intervals of every split's predictions, as metrics to log and a ``bootstrap.json`` body.

    Args:
        predictions: ``{split: table}`` with columns ``ar``, ``label``, ``score`` (the
            ``predictions/{split}.parquet`` tables).
        threshold: The run's fixed threshold.
        n_resamples: Number of resamples.
        seed: Seed of the resampling.
        keep_rate: The run's training odds factor (BSS on corrected probabilities).

    Returns:
        ``({"test/tss_lo": ..., "test/tss_hi": ..., ...}, json body)``.
    """
    metrics: dict[str, float] = {}
    body: dict[str, object] = {"method": "AR cluster bootstrap, percentile interval, threshold fixed",
                               "level": DEFAULT_LEVEL, "n_resamples": n_resamples, "seed": seed,
                               "threshold": threshold, "keep_rate": keep_rate,
                               "bss_probabilities": "raw" if keep_rate is None else "corrected: odds x keep_rate",
                               "splits": {}}
    for split, table in predictions.items():
        found = bootstrap_intervals(table["label"], table["score"], table["ar"], threshold=threshold,
                                    n_resamples=n_resamples, seed=seed, keep_rate=keep_rate)
        for name, interval in found.items():
            metrics[f"{split}/{name}_lo"] = interval.lo
            metrics[f"{split}/{name}_hi"] = interval.hi
        body["splits"][split] = {"n_frames": int(len(table["label"])),
                                 "n_ars": int(np.unique(np.asarray(table["ar"]).astype(str)).size),
                                 "metrics": {name: interval.as_dict() for name, interval in found.items()}}
    return metrics, body


def report_intervals(reporter, prediction_files: Mapping[str, object], *, threshold: float,
                     n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, keep_rate: float | None = None) -> dict[str, float]:
    """Log ``{split}/{name}_lo|_hi`` and ``bootstrap.json`` for a run's prediction files.

    The one call the end of a run makes; ``reporter`` needs ``log_metrics`` and ``log_dict``.
    """
    import pandas as pd

    tables = {split: pd.read_parquet(path, columns=["ar", "label", "score"]) for split, path in prediction_files.items()}
    metrics, body = interval_metrics(tables, threshold=threshold, n_resamples=n_resamples, seed=seed,
                                     keep_rate=keep_rate)
    reporter.log_metrics(metrics)
    reporter.log_dict(body, "bootstrap.json")
    return metrics
