"""Forecast-skill metrics for binary flare / no-flare classifiers.

:data:`METRICS` is the one home of every metric: one :class:`Metric` row (name, direction,
what it needs, CLI alias, function, where it is offered). What is logged (``val/<name>``,
``test/<name>``), the spec's ``eval.monitor`` / ``eval.threshold_metric`` values, the
``compare --metric`` names and help, the headline columns and sweep objectives all derive from
it. A new metric is one :func:`register_metric` call. Everything here is numpy and
scikit-learn only (no torch), and scikit-learn is imported only when a metric is computed.
The table lives in :mod:`arflare.metrics.table`, the computing in :mod:`arflare.metrics.scoring`.

Conventions, relied on by the tests and by anyone reading a logged number:

* Prediction rule: positive iff ``score >= threshold``.
* ``tss`` (Hanssen-Kuipers / true skill statistic) is ``TPR - FPR`` and ``hss``
  (Heidke skill score) is ``2(TP·TN - FN·FP) / ((TP+FN)(FN+TN) + (TP+FP)(FP+TN))``.
  A ratio whose denominator is 0 counts as 0.0 (so TSS of a single-class set is
  ``0 - FPR`` or ``TPR - 0``, and precision with no positive predictions is 0.0)
  instead of raising; the same rule applies to precision, recall and F1.
* ``bss`` is the Brier skill score ``1 - BS / BS_clim`` where the climatology
  forecast is the base rate of the *same* set being scored (``BS_clim = p(1-p)``).
  It is therefore not comparable across sets with different base rates. ``brier`` and
  ``bss`` score the probabilities corrected to the true base rate when the run trained on a
  rebalanced mix (``keep_rate``, see :mod:`arflare.calibration`); ``brier_raw`` and
  ``bss_raw`` score the model's own output.
* ``tpr_at_fpr`` reads the ROC step function (``sklearn.metrics.roc_curve`` with
  ``drop_intermediate=False``): the highest TPR among operating points whose FPR
  is <= the target. An operating point includes or excludes a whole group of tied
  scores (no interpolation, no random tie-breaking), so the value is conservative.
  With fewer negatives than ``1 / fpr`` (``n_neg * fpr < 1``) the only admissible
  points have zero false positives, so the value is the *TPR at zero false
  positives*: the fraction of positives scoring strictly above every negative.
* ``fpr_at_tpr`` is the lowest FPR among operating points with TPR >= the target.
* Degenerate sets (``y_true`` of a single class): ranking metrics (``auc``,
  ``pr_auc``, ``bss``, ``bss_raw``, ``tpr_at_fpr_*``, ``fpr_at_tpr_0.9``) are NaN rather
  than an exception, so a tiny validation split cannot crash a run; threshold metrics
  and the Brier scores stay defined.
"""

from arflare.metrics.scoring import (
    choose_threshold, confusion, evaluate, fpr_at_tpr, hss, probability_metrics, threshold_metrics, tpr_at_fpr, tss,
    validate_inputs,
)
from arflare.metrics.table import (
    METRICS, Counts, Metric, Scored, compare_choices, compare_metric_key, find_metric, headline_metrics,
    monitor_choices, monitor_sign, register_metric, threshold_choices,
)

__all__ = [
    "METRICS", "METRIC_NAMES", "Counts", "Metric", "Scored", "choose_threshold", "compare_choices", "compare_metric_key", "confusion",
    "evaluate", "find_metric", "fpr_at_tpr", "headline_metrics", "hss", "monitor_choices", "monitor_sign", "probability_metrics",
    "register_metric", "threshold_choices", "threshold_metrics", "tpr_at_fpr", "tss", "validate_inputs",
]


def __getattr__(name: str) -> object:
    # PEP 562: METRIC_NAMES is derived from the table on every access, so rows registered later count.
    if name == "METRIC_NAMES":
        return tuple(METRICS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
