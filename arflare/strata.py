"""Stratified evaluation at the validation-chosen threshold: who the model gets right and wrong.

``stratify(predictions, threshold)`` splits one split's predictions into *families* of strata,
each of which partitions the split (or its positives, or its negatives), and gives every
stratum its counts, TPR, FPR and TSS at the one threshold chosen on validation:

* ``all``: the whole split;
* ``flare_class``: the positives by the GOES class of their largest flare (C, M, X): TPR;
* ``negative``: the negatives by what happened in their window: no flare, a sub-C (A/B) flare,
  or a flare below ``min_flare_class`` (C when the positive class is M): FPR;
* ``ar_kind``: frames of hard-negative ARs (large, bright, rarely flaring; known for the
  synthetic set from ``ground_truth.parquet``) against the others;
* ``size``: terciles of the frame's total unsigned flux within the split;
* ``year``: the calendar year of the frame.

Counts (``n``, ``positives``, ``ars`` and the confusion cells) and a 95 % AR-bootstrap interval
come with every rate (the split's ARs resampled, as for the run's headline intervals); a stratum
with no positives has no TPR (NaN), one without negatives no FPR. :func:`headline` picks the numbers logged as run metrics (``tpr_M``,
``fpr_hard_ar``, ...) and :func:`expected_calibration_error` gives ``ece``. (``fpr_hard_ar`` is the
FPR on hard-negative ARs known from ground truth; ``fpr_hard`` is another number, the FPR on the
negatives a hard-negative source model got wrong, :mod:`arflare.lineage`.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from arflare.bootstrap import DEFAULT_RESAMPLES, cluster_index, count_rate_intervals
from arflare.calibration import reliability_bins

_COUNTED = ("family", "stratum", "n", "positives", "negatives", "ars", "tp", "fn", "fp", "tn", "tpr", "fpr", "tss")
COLUMNS = (*_COUNTED, *(f"{rate}_{end}" for rate in ("tpr", "fpr", "tss") for end in ("lo", "hi")))
# headline metric name -> (family, stratum): what a run logs as {split}/{name}
HEADLINE = {"tpr_C": ("flare_class", "C"), "tpr_M": ("flare_class", "M"), "tpr_X": ("flare_class", "X"),
            "fpr_noflare": ("negative", "no flare"), "fpr_subC": ("negative", "sub-C (A/B)"),
            "fpr_hard_ar": ("ar_kind", "hard negative")}  # fmt: skip


def flare_letter(reg_label: pd.Series) -> pd.Series:
    """The GOES class letter of each ``reg_label`` (``"M1.2"`` -> ``"M"``; no flare -> ``""``)."""
    letter = reg_label.astype(str).str.strip().str[:1].str.upper()
    return letter.where(letter.isin(list("ABCMX")), "")


def stratify(predictions: pd.DataFrame, threshold: float, *, unsigned_flux: pd.Series | None = None,
             hard_negative: pd.Series | None = None, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Counts and rates of every stratum of one split at ``threshold``.

    Args:
        predictions: key, ar, timestamp, label, reg_label, score (a run's ``predictions/{split}.parquet``).
        threshold: the decision threshold chosen on validation (score >= threshold is a flare forecast).
        unsigned_flux: total unsigned flux of each row (same index); gives the ``size`` family.
        hard_negative: True for rows of hard-negative ARs (same index); gives the ``ar_kind`` family.
        n_resamples: AR-bootstrap resamples of the intervals.
        seed: Seed of the resampling (the run's headline intervals use 0 too, so they share resamples).

    Returns:
        One row per stratum with the columns of ``COLUMNS``; within a family the strata partition
        the split (``flare_class`` its positives, ``negative`` its negatives). ``{tpr,fpr,tss}_lo|_hi``
        are 95 % AR-bootstrap percentile intervals (:func:`arflare.bootstrap.count_rate_intervals`).
    """
    frame = predictions.reset_index(drop=True)
    forecast = frame["score"].to_numpy(float) >= threshold
    label = frame["label"].to_numpy(int) == 1
    letter = flare_letter(frame["reg_label"])
    families: list[tuple[str, pd.Series]] = [("all", pd.Series("all", index=frame.index))]
    families.append(("flare_class", letter.where(label)))
    negative = np.select([letter.eq(""), letter.isin(["A", "B"])], ["no flare", "sub-C (A/B)"], default=letter + " (below the positive class)")
    families.append(("negative", pd.Series(negative, index=frame.index).where(~label)))
    if hard_negative is not None:
        kind = np.where(np.asarray(hard_negative, bool), "hard negative", "other")
        families.append(("ar_kind", pd.Series(kind, index=frame.index)))
    if unsigned_flux is not None and len(frame) >= 3:
        flux = pd.Series(np.asarray(unsigned_flux, float), index=frame.index)
        terciles = pd.qcut(flux.rank(method="first"), 3, labels=["small (lower third)", "middle third", "large (upper third)"])
        families.append(("size", terciles.astype(str)))
    families.append(("year", pd.to_datetime(frame["timestamp"]).dt.year.astype(str)))
    masks = [(family, stratum, (strata == stratum).to_numpy())
             for family, strata in families for stratum in _ordered(strata.dropna().unique(), family)]
    table = pd.DataFrame([_row(family, stratum, label[mask], forecast[mask], frame.loc[mask, "ar"])
                          for family, stratum, mask in masks], columns=list(_COUNTED))
    # One AR resample serves every stratum (and matches the split's headline intervals, same seed).
    cluster = cluster_index(frame["ar"])
    cells = np.stack([label & forecast, label & ~forecast, ~label & forecast, ~label & ~forecast], axis=1).astype(float)
    counts = np.zeros((int(cluster.max()) + 1 if len(frame) else 0, len(masks), 4))
    for s, (_, _, mask) in enumerate(masks):
        np.add.at(counts[:, s], cluster[mask], cells[mask])
    if len(frame):
        for rate, (lo, hi) in count_rate_intervals(counts, n_resamples=n_resamples, seed=seed).items():
            table[f"{rate}_lo"], table[f"{rate}_hi"] = lo, hi
    return table.reindex(columns=list(COLUMNS))


def _ordered(values, family: str) -> list:
    order = {"C": 0, "M": 1, "X": 2, "no flare": 0, "sub-C (A/B)": 1, "small (lower third)": 0, "middle third": 1,
             "large (upper third)": 2, "other": 0, "hard negative": 1}
    return sorted(values, key=lambda v: (order.get(v, 9), v))


def _row(family: str, stratum: str, label: np.ndarray, forecast: np.ndarray, ars: pd.Series) -> dict:
    tp, fn = int((label & forecast).sum()), int((label & ~forecast).sum())
    fp, tn = int((~label & forecast).sum()), int((~label & ~forecast).sum())
    tpr = tp / (tp + fn) if tp + fn else np.nan
    fpr = fp / (fp + tn) if fp + tn else np.nan
    return {"family": family, "stratum": stratum, "n": len(label), "positives": tp + fn, "negatives": fp + tn,
            "ars": int(ars.nunique()), "tp": tp, "fn": fn, "fp": fp, "tn": tn, "tpr": tpr, "fpr": fpr,
            "tss": tpr - fpr}


def headline(strata: pd.DataFrame, *, suffix: str = "") -> dict[str, float]:
    """The strata numbers a run logs as metrics (``tpr_M``, ``fpr_hard_ar``, ...), where the split has them.

    ``suffix="_lo"`` or ``"_hi"`` gives the ends of their intervals instead.
    """
    out = {}
    for name, (family, stratum) in HEADLINE.items():
        row = strata[(strata["family"] == family) & (strata["stratum"] == stratum)]
        value = row[("tpr" if name.startswith("tpr") else "fpr") + suffix]
        if len(row) and not np.isnan(value.iloc[0]):
            out[name] = float(value.iloc[0])
    return out


def expected_calibration_error(labels, probabilities, *, bins: int = 10) -> float:
    """ECE: the count-weighted mean gap between forecast probability and observed frequency over
    ``bins`` equal-width bins. Pass probabilities corrected to the true base rate
    (:func:`arflare.calibration.correct_probability`) for runs trained on a rebalanced set."""
    table = reliability_bins(labels, probabilities, bins=bins)
    return float(np.sum(table.count * np.abs(table.observed - table.forecast)) / np.sum(table.count))
