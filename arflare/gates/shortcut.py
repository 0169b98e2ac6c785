"""The shortcut gate: can a linear model predict the label from things that should not carry it?

A logistic regression with AR-grouped cross-validation on the training split, fed *nuisance*
features: statistics of the image border ring, the image mean and standard deviation, the
fractional year and hour of day of the frame, the AR number, and any json keys the spec
lists. A flare label that these predict well (AUC above ``gates.shortcut_max_auc``) rides on
a non-physical shortcut: the solar-cycle phase, AR numbering, a border artefact, a processing
flag. The same procedure on physical features is the baseline a network has to beat.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from arflare.errors import UsageError

NUISANCE = ("border_mean", "border_std", "border_abs_mean", "mean", "std", "year", "hour", "ar_number")
SEED = 0  # fixed: the gate's verdict must not change between two checks of the same data


def nuisance_features(scan: pd.DataFrame, json_keys=()) -> pd.DataFrame:
    """The nuisance features of every row of a :func:`arflare.gates.scan.scan` table.

    Args:
        scan: the scan table (decoded rows only are meaningful).
        json_keys: extra numeric json keys (``gates.shortcut_json_keys``).

    Raises:
        UsageError: a listed json key is missing from every sample or is not numeric.
    """
    when = pd.to_datetime(scan["timestamp"])
    start = pd.to_datetime(when.dt.year.astype(str) + "-01-01")
    days = np.where(when.dt.is_leap_year, 366.0, 365.0)
    out = scan[["border_mean", "border_std", "border_abs_mean", "mean", "std"]].astype(float).copy()
    out["year"] = when.dt.year + (when - start).dt.total_seconds() / 86400.0 / days
    out["hour"] = when.dt.hour + when.dt.minute / 60.0
    out["ar_number"] = pd.to_numeric(scan["ar"].str.extract(r"(\d+)", expand=False), errors="coerce")
    if json_keys:
        meta = pd.DataFrame([json.loads(m) for m in scan["meta"]], index=scan.index)
        for key in json_keys:
            if key not in meta:
                raise UsageError(f"gates.shortcut_json_keys: no sample has json key {key!r}; "
                                 f"keys present: {', '.join(sorted(meta.columns)) or 'none'}")
            values = pd.to_numeric(meta[key], errors="coerce")
            if values.isna().all():
                raise UsageError(f"gates.shortcut_json_keys: json key {key!r} is not numeric "
                                 f"(e.g. {meta[key].iloc[0]!r}); list numeric keys only")
            out[f"json:{key}"] = values
    return out


def grouped_cv_auc(features: pd.DataFrame, labels: np.ndarray, groups: np.ndarray, *, folds: int,
                   max_samples: int) -> dict:
    """Out-of-fold ROC AUC of a standardised logistic regression, folds split by group (AR).

    Args:
        features: one numeric column per feature; NaNs are filled with the column median.
        labels: 0/1 per row.
        groups: the AR of each row; no AR is in a training and a held-out fold at once.
        folds: requested folds (fewer when there are fewer groups with both classes around).
        max_samples: rows kept at most (a fixed random subset).

    Returns:
        ``auc`` (NaN when it cannot be measured, with ``reason``), ``folds``, ``samples``,
        ``positives``, ``ars`` and the ``coefficients`` of a fit on all rows (standardised units),
        largest magnitude first, which say what the shortcut is.
    """
    labels, groups = np.asarray(labels, int), np.asarray(groups)
    if len(labels) > max_samples:
        keep = np.sort(np.random.default_rng(SEED).choice(len(labels), max_samples, replace=False))
        features, labels, groups = features.iloc[keep], labels[keep], groups[keep]
    x = features.fillna(features.median()).fillna(0.0).to_numpy(float)
    info = {"samples": len(labels), "positives": int(labels.sum()), "ars": int(len(np.unique(groups)))}
    folds = min(folds, info["ars"], int(labels.sum()), int((labels == 0).sum()))
    if folds < 2:
        return {**info, "auc": float("nan"), "folds": folds,
                "reason": "needs at least 2 ARs and 2 samples of each class in train", "coefficients": {}}
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    scores = np.full(len(labels), np.nan)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=SEED)
    for fit, held in splitter.split(x, labels, groups):
        if len(np.unique(labels[fit])) < 2:
            continue  # a fold without one class cannot be fitted; its rows stay unscored
        scores[held] = model.fit(x[fit], labels[fit]).predict_proba(x[held])[:, 1]
    scored = ~np.isnan(scores)
    auc = float(roc_auc_score(labels[scored], scores[scored])) if len(np.unique(labels[scored])) == 2 else float("nan")
    coefs = model.fit(x, labels)[-1].coef_[0]
    ranked = sorted(zip(features.columns, coefs, strict=True), key=lambda kv: -abs(kv[1]))
    out = {**info, "auc": auc, "folds": folds, "scored": int(scored.sum()),
           "coefficients": {name: round(float(c), 4) for name, c in ranked}}
    if np.isnan(auc):
        out["reason"] = "the folds that could be fitted held out only one class"
    return out


def ar_permutation_null(features: pd.DataFrame, labels: np.ndarray, groups: np.ndarray, *, folds: int,
                        max_samples: int, permutations: int) -> np.ndarray:
    """AUCs of the same procedure after swapping whole ARs' features between ARs.

    Each AR keeps its labels but gets the features of another AR (resampled in time order to its
    number of frames), which breaks any feature-label link while keeping everything that makes a
    frame-level AUC over few ARs noisy: frames of one AR are alike, and an AR-level feature
    (AR number, date) splits a few dozen ARs by chance. The observed AUC is only evidence of a
    shortcut when it stands out from these.
    """
    labels, groups = np.asarray(labels, int), np.asarray(groups)
    features = features.reset_index(drop=True)
    ars = np.unique(groups)
    rows = {ar: np.flatnonzero(groups == ar) for ar in ars}
    rng = np.random.default_rng(SEED)
    null = []
    for _ in range(permutations):
        source = np.empty(len(labels), dtype=int)
        for ar, other in zip(ars, rng.permutation(ars), strict=True):
            src, dst = rows[other], rows[ar]
            source[dst] = src[np.round(np.linspace(0, len(src) - 1, len(dst))).astype(int)]
        null.append(grouped_cv_auc(features.iloc[source], labels, groups, folds=folds, max_samples=max_samples)["auc"])
    return np.asarray(null, dtype=float)
