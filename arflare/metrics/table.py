"""The metric table: one :class:`Metric` row per logged metric, and what derives from it.

Rows name a function of a confusion matrix (:class:`Counts`, vectorised over thresholds) or of
scored probabilities (:class:`Scored`). Spec choices (:func:`monitor_choices`,
:func:`threshold_choices`), CLI names (:func:`compare_choices`, :func:`find_metric`) and the
headline columns (:func:`headline_metrics`) are computed from the table when asked, so a row
registered later (a plugin, a test) is offered everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Literal, NamedTuple

import numpy as np

from arflare.errors import UsageError
from arflare.tables import NamedTable


class Counts(NamedTuple):
    """A confusion matrix at a threshold; each field is a number or an array over many thresholds."""

    tp: np.ndarray | float
    tn: np.ndarray | float
    fp: np.ndarray | float
    fn: np.ndarray | float
    threshold: np.ndarray | float


@dataclass(frozen=True)
class Scored:
    """Validated labels ``y`` (int8) and probabilities ``s`` (float64) of one set, with shared curves.

    ``keep_rate`` is the odds factor of the training mix (:func:`arflare.calibration.correct_probability`;
    None when training saw the true class mix): calibration metrics read :attr:`calibrated`.
    """

    y: np.ndarray
    s: np.ndarray
    keep_rate: float | None = None

    @cached_property
    def roc(self) -> tuple[np.ndarray, np.ndarray] | None:
        """ROC step function ``(fpr, tpr)`` (all operating points), or None for a single class."""
        return _roc(self.y, self.s)

    @cached_property
    def calibrated(self) -> np.ndarray:
        """The probabilities corrected to the true base rate (``s`` itself without a keep rate)."""
        from arflare.calibration import correct_probability  # lazy: calibration imports this package

        return correct_probability(self.s, self.keep_rate)


@dataclass(frozen=True)
class Metric:
    """One metric: how it is computed, which way is better, and where it is offered.

    Attributes:
        name: Logged as ``val/<name>`` and ``test/<name>``.
        fn: ``needs="threshold"``: ``fn(Counts) -> value``, vectorised (a threshold sweep passes
            arrays); ``needs="probability"``: ``fn(Scored) -> float``; ``needs="diagnostics"``:
            ``fn(strata, ece) -> float`` (NaN when the split lacks the stratum), computed once after
            training by :mod:`arflare.diagnostics` from the predictions with flare classes and ARs.
        needs: A decision threshold (skill of the yes/no forecast), the probabilities only, or the
            after-training diagnostics (never per epoch, never by ``evaluate()``).
        higher_is_better: Direction for ranking and model selection.
        alias: The ``arflare compare --metric`` name, when it differs (``tpr@fpr=1e-3``).
        label: Column header; default the alias or name in capitals.
        compare: Listed by ``arflare compare --help`` (every metric is accepted).
        headline: Position among the headline columns (run summary, compare table); None = not one.
        monitor: May pick the best checkpoint (``eval.monitor``).
        selects_threshold: May choose the decision threshold (``eval.threshold_metric``).
        interval: Worth a bootstrap confidence interval in comparisons.
        single_class_nan: NaN when the set holds one class (ranking metrics), not an error.
    """

    name: str
    fn: Callable
    needs: Literal["threshold", "probability", "diagnostics"]
    higher_is_better: bool = True
    alias: str | None = None
    label: str | None = None
    compare: bool = False
    headline: int | None = None
    monitor: bool = False
    selects_threshold: bool = False
    interval: bool = False
    single_class_nan: bool = True

    @property
    def cli_name(self) -> str:
        """The name ``arflare compare --metric`` lists."""
        return self.alias or self.name

    @property
    def column(self) -> str:
        """The column header in tables."""
        return self.label or self.cli_name.upper()


METRICS: NamedTable[Metric] = NamedTable("metric")
register_metric = METRICS.register


def _div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num / den, with 0.0 wherever den == 0 (the documented zero-denominator rule)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _tss(c: Counts) -> np.ndarray:
    return _div(c.tp, c.tp + c.fn) - _div(c.fp, c.fp + c.tn)


def _hss(c: Counts) -> np.ndarray:
    tp, tn, fp, fn = (np.asarray(x, dtype=np.float64) for x in c[:4])
    return _div(2 * (tp * tn - fn * fp), (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def _auc(sc: Scored) -> float:
    from sklearn.metrics import roc_auc_score  # lazy: `arflare validate` reads the table only

    return float(roc_auc_score(sc.y, sc.s))


def _pr_auc(sc: Scored) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(sc.y, sc.s))


def _brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def _bss(p: np.ndarray, y: np.ndarray) -> float:
    base_rate = y.mean()
    return 1.0 - _brier(p, y) / float(base_rate * (1 - base_rate))


def _tpr_at(target: float, sc: Scored) -> float:
    # The (0, 0) point always qualifies, so the selection is never empty.
    fpr, tpr = sc.roc
    return float(tpr[fpr <= target].max())


def _fpr_at(target: float, sc: Scored) -> float:
    # The (1, 1) point always qualifies, so the selection is never empty.
    fpr, tpr = sc.roc
    return float(fpr[tpr >= target].min())


def _count(field: str) -> Callable[[Counts], np.ndarray]:
    return lambda c: np.asarray(getattr(c, field), dtype=np.float64)


_T, _P = "threshold", "probability"
# Table order is the order of evaluate()'s keys (metrics.json, logged metrics).
for _row in (
    Metric("auc", _auc, _P, compare=True, headline=3, monitor=True, interval=True),
    Metric("pr_auc", _pr_auc, _P, compare=True, monitor=True, interval=True),
    # Calibration is scored on probabilities corrected to the true base rate (Scored.calibrated);
    # the *_raw rows keep the model's own output, which a rebalanced training mix inflates.
    Metric("brier", lambda sc: _brier(sc.calibrated, sc.y), _P, higher_is_better=False, compare=True, interval=True,
           single_class_nan=False),
    Metric("bss", lambda sc: _bss(sc.calibrated, sc.y), _P, compare=True, monitor=True, interval=True),
    Metric("brier_raw", lambda sc: _brier(sc.s, sc.y), _P, higher_is_better=False, single_class_nan=False),
    Metric("bss_raw", lambda sc: _bss(sc.s, sc.y), _P),
    Metric("tss", _tss, _T, compare=True, headline=1, monitor=True, selects_threshold=True, interval=True),
    Metric("hss", _hss, _T, compare=True, headline=2, monitor=True, selects_threshold=True, interval=True),
    Metric("precision", lambda c: _div(c.tp, c.tp + c.fp), _T, interval=True),
    Metric("recall", lambda c: _div(c.tp, c.tp + c.fn), _T, interval=True),
    Metric("fpr", lambda c: _div(c.fp, c.fp + c.tn), _T, higher_is_better=False, interval=True),
    Metric("f1", lambda c: _div(2 * c.tp, 2 * c.tp + c.fp + c.fn), _T, compare=True, monitor=True,
           selects_threshold=True, interval=True),
    Metric("accuracy", lambda c: _div(c.tp + c.tn, c.tp + c.tn + c.fp + c.fn), _T, interval=True),
    # Not a skill; listed so every logged name has a direction.
    Metric("threshold", _count("threshold"), _T),
    Metric("tpr_at_fpr_1e-4", partial(_tpr_at, 1e-4), _P, alias="tpr@fpr=1e-4", compare=True, interval=True),
    Metric("tpr_at_fpr_1e-3", partial(_tpr_at, 1e-3), _P, alias="tpr@fpr=1e-3", label="TPR@FPR=1e-3",
           compare=True, headline=4, interval=True),
    Metric("tpr_at_fpr_1e-2", partial(_tpr_at, 1e-2), _P, alias="tpr@fpr=1e-2", compare=True, interval=True),
    Metric("fpr_at_tpr_0.9", partial(_fpr_at, 0.9), _P, higher_is_better=False, alias="fpr@tpr=0.9",
           compare=True, interval=True),
    Metric("tp", _count("tp"), _T),
    Metric("tn", _count("tn"), _T),
    Metric("fp", _count("fp"), _T, higher_is_better=False),
    Metric("fn", _count("fn"), _T, higher_is_better=False),
):
    register_metric(_row)


def _stratum_rate(name: str, strata, ece: float) -> float:
    from arflare.strata import headline  # lazy: pandas; `arflare validate` reads the table only

    return headline(strata).get(name, float("nan"))


# After training, at the val threshold (arflare.strata): TPR by the flare class of the positives, FPR by
# negative stratum and on the frames of hard-negative ARs, and the expected calibration error.
_D = "diagnostics"
for _row in (
    *(Metric(f"tpr_{c}", partial(_stratum_rate, f"tpr_{c}"), _D, compare=True, interval=True) for c in "CMX"),
    *(Metric(f"fpr_{s}", partial(_stratum_rate, f"fpr_{s}"), _D, higher_is_better=False, compare=True, interval=True)
      for s in ("noflare", "subC", "hard_ar")),
    Metric("ece", lambda strata, ece: ece, _D, higher_is_better=False, compare=True),
):
    register_metric(_row)


def headline_metrics() -> tuple[Metric, ...]:
    """The headline columns (run summary, ``arflare compare``), in column order."""
    return tuple(sorted((m for m in METRICS.rows() if m.headline is not None), key=lambda m: m.headline))


def compare_choices() -> tuple[str, ...]:
    """The names ``arflare compare --help`` lists (every metric name is accepted too)."""
    return tuple(m.cli_name for m in METRICS.rows() if m.compare)


def monitor_choices() -> tuple[str, ...]:
    """Allowed ``eval.monitor`` values: monitorable metrics, and ``loss`` (minimised)."""
    return (*(m.name for m in METRICS.rows() if m.monitor), "loss")


def monitor_sign(name: str) -> float:
    """+1 when a larger ``eval.monitor`` value is better, -1 when smaller is (``loss``, ``brier``, ...)."""
    if name == "loss":
        return -1.0
    return 1.0 if find_metric(name).higher_is_better else -1.0


def threshold_choices() -> tuple[str, ...]:
    """Allowed ``eval.threshold_metric`` values."""
    return tuple(m.name for m in METRICS.rows() if m.selects_threshold)


def find_metric(name: str) -> Metric:
    """The metric called ``name`` or aliased so on the CLI, case-insensitively (``TSS``, ``TPR@FPR=1e-3``).

    Raises:
        UsageError: for an unknown name, listing the compare names.
    """
    wanted = name.strip().lower()
    for metric in METRICS.rows():
        if wanted in (metric.name.lower(), metric.cli_name.lower()):
            return metric
    raise UsageError(f"Unknown metric {name!r}; available: {', '.join(compare_choices())} "
                     f"(or any logged name: {', '.join(METRICS)})")


def _roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """ROC step function ``(fpr, tpr)`` or None if y has a single class."""
    if y.min() == y.max():
        return None
    from sklearn.metrics import roc_curve  # lazy: `arflare validate` reads the table only

    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr


def compare_metric_key(name: str, split: str) -> tuple[str, bool]:
    """Translate an ``arflare compare --metric`` name into a logged key and its direction.

    Args:
        name: a CLI name (``tss``, ``tpr@fpr=1e-3``, ...) or any metric name; case-insensitive.
        split: the split prefix, e.g. ``"test"``.

    Returns:
        ``(f"{split}/{key}", higher_is_better)``, e.g. ``("test/tpr_at_fpr_1e-3", True)``.

    Raises:
        UsageError: for an unknown name (a ``ValueError``).
    """
    metric = find_metric(name)
    return f"{split}/{metric.name}", metric.higher_is_better
