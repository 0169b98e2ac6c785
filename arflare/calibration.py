"""Calibration of flare probabilities: prior correction, reliability bins with intervals, Brier.

A model trained on a set whose negatives were thinned (``data.balance`` ``prob`` or ``fixed``
keeping each negative with probability q, or ``weights`` drawing both classes equally often)
learns the odds of the *training* mix, which are the true odds divided by q. Ranking metrics
(AUC, TSS at a threshold chosen on validation) do not care, but probabilities and the scores
built on them (Brier, BSS, the reliability diagram) do: multiplying the odds by q maps them back
to the base rate of the unbalanced population (Elkan 2001, "The foundations of cost-sensitive
learning"; Saerens et al. 2002).

numpy and scipy only, so the report can use it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from arflare.metrics import validate_inputs


def negative_keep_rate(balance: str, keep_negative_prob: float, *, n_pos: int | None = None,
                       n_neg: int | None = None) -> float | None:
    """The factor by which training thinned negatives relative to positives, or None if it did not.

    Args:
        balance: ``data.balance`` of the run (``none``, ``prob``, ``fixed``, ``weights``).
        keep_negative_prob: ``data.keep_negative_prob`` of the run.
        n_pos: positives in the training split (needed for ``weights``).
        n_neg: negatives in the training split (needed for ``weights``).

    Returns:
        q in (0, 1] such that true odds = model odds × q; None when no correction applies.
        ``weights`` draws each class equally often (inverse class frequency), so q = n_pos / n_neg.

    Raises:
        ValueError: for ``weights`` without both counts, or an unknown mode.
    """
    if balance == "none":
        return None
    if balance in ("prob", "fixed"):
        return None if keep_negative_prob >= 1 else float(keep_negative_prob)
    if balance == "weights":
        if not n_pos or not n_neg:
            raise ValueError("balance 'weights' needs the training split's n_pos and n_neg (both > 0) to correct odds")
        return float(n_pos) / float(n_neg)
    raise ValueError(f"Unknown balance {balance!r}; available: none, prob, fixed, weights")


def training_keep_rate(sample_rate: float | None, class_weights: tuple[float, float] | None = None) -> float | None:
    """The odds factor q of a training run: true odds = model odds × q, or None when q = 1.

    Args:
        sample_rate: expected draws of a negative per expected draws of a positive in an epoch
            (:meth:`arflare.data.sampling.BalancedSampler.negative_keep_rate`; hard negatives drawn
            more often raise it), or None for a set used as it is.
        class_weights: ``(negative, positive)`` loss weights (``train.class_weights``): a weighted
            cross-entropy learns odds × w_pos / w_neg, so q is multiplied by w_neg / w_pos.
    """
    q = 1.0 if sample_rate is None else float(sample_rate)
    if class_weights is not None:
        q *= float(class_weights[0]) / float(class_weights[1])
    return None if abs(q - 1.0) < 1e-12 else q


def correct_probability(scores: ArrayLike, keep_rate: float | None) -> np.ndarray:
    """Map probabilities learnt on a rebalanced set back to the true base rate.

    ``p' = q p / (q p + 1 - p)``, i.e. odds × q. ``keep_rate`` None returns the scores unchanged.
    q < 1 for negatives thinned (the usual case); q > 1 when negatives were drawn more often than
    positives (hard negatives over-sampled without thinning).
    """
    p = np.asarray(scores, dtype=float)
    if keep_rate is None:
        return p
    if not 0 < keep_rate < np.inf:
        raise ValueError(f"keep_rate must be a positive number; got {keep_rate}")
    return keep_rate * p / (keep_rate * p + (1.0 - p))


def brier_skill(y_true: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """``(Brier score, Brier skill score)``; BSS is against this set's climatology, NaN for one class."""
    y, p = validate_inputs(y_true, scores)
    brier = float(np.mean((p - y) ** 2))
    base = float(y.mean())
    return brier, (float("nan") if base in (0.0, 1.0) else 1.0 - brier / (base * (1 - base)))


def calibration_metrics(y_true: ArrayLike, scores: ArrayLike, keep_rate: float | None) -> dict[str, float]:
    """Brier and BSS of the corrected probabilities, plus the raw model's as ``*_raw``.

    The rows of the metric table that a run logs as ``{split}/brier``, ``bss``, ``brier_raw``,
    ``bss_raw``. With ``keep_rate`` None the corrected and raw values are the same numbers.
    """
    from arflare.metrics import probability_metrics

    found = probability_metrics(y_true, scores, keep_rate=keep_rate)
    return {name: found[name] for name in ("brier", "bss", "brier_raw", "bss_raw")}


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width probability bins; arrays hold the non-empty bins only."""

    edges: np.ndarray  # all bins + 1 edges on [0, 1]
    counts_all: np.ndarray  # samples per bin, empty bins included (for the histogram)
    forecast: np.ndarray  # mean forecast probability in each non-empty bin
    observed: np.ndarray  # observed flare frequency
    count: np.ndarray  # samples in the bin
    lower: np.ndarray  # Jeffreys interval of the observed frequency
    upper: np.ndarray


def reliability_bins(y_true: ArrayLike, scores: ArrayLike, *, bins: int = 10, level: float = 0.95) -> ReliabilityBins:
    """Bin forecasts and attach a Jeffreys binomial interval to each bin's observed frequency.

    The Jeffreys interval (Beta(k + ½, n − k + ½) quantiles, with the bound set to 0 or 1 when
    k is 0 or n) keeps close to nominal coverage for the small counts of the high-probability
    bins, where the normal approximation collapses to zero width.

    Args:
        y_true: 0/1 labels.
        scores: probabilities in [0, 1].
        bins: number of equal-width bins.
        level: coverage of the interval.
    """
    from scipy.stats import beta

    y, p = validate_inputs(y_true, scores)
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"scores must be probabilities in [0, 1]; got [{p.min():.4g}, {p.max():.4g}]")
    if bins < 1:
        raise ValueError(f"bins must be >= 1; got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)  # a score of 1.0 goes in the last bin
    counts = np.bincount(idx, minlength=bins)
    filled = counts > 0
    n = counts[filled]
    k = np.bincount(idx, weights=y, minlength=bins)[filled]
    alpha = (1 - level) / 2
    lower = np.where(k > 0, beta.ppf(alpha, k + 0.5, n - k + 0.5), 0.0)
    upper = np.where(k < n, beta.ppf(1 - alpha, k + 0.5, n - k + 0.5), 1.0)
    forecast = np.bincount(idx, weights=p, minlength=bins)[filled] / n
    return ReliabilityBins(edges=edges, counts_all=counts, forecast=forecast, observed=k / n, count=n,
                           lower=lower, upper=upper)
