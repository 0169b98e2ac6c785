"""Gradient boosting on feature tables: rounds of trees, grouped permutation importances.

Plain numpy/scikit-learn, no spec and no torch: the run body (``arflare.tabular``) translates
the spec into these keyword arguments. A *round* adds ``trees_per_round`` trees to a
warm-started :class:`~sklearn.ensemble.HistGradientBoostingClassifier`; rounds play the part
epochs play for a CNN (validation scores per round, early stopping, best round kept).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score


def make_classifier(*, learning_rate: float, max_depth: int | None, l2_regularization: float, max_leaf_nodes: int,
                    min_samples_leaf: int, class_weight: Literal["balanced", "none"], seed: int,
                    ) -> HistGradientBoostingClassifier:  # fmt: skip
    """A warm-startable boosted-trees classifier with no built-in early stopping (rounds do that, on val).

    Args:
        learning_rate: Shrinkage of each tree.
        max_depth: Tree depth limit; None = limited by ``max_leaf_nodes`` only.
        l2_regularization: L2 penalty on leaf values.
        max_leaf_nodes: Leaves per tree.
        min_samples_leaf: Smallest leaf.
        class_weight: ``balanced`` weighs classes by inverse frequency; ``none`` equally.
        seed: Random state (ties and binning subsample).
    """
    return HistGradientBoostingClassifier(
        learning_rate=learning_rate, max_depth=max_depth, l2_regularization=l2_regularization,
        max_leaf_nodes=max_leaf_nodes, min_samples_leaf=min_samples_leaf,
        class_weight="balanced" if class_weight == "balanced" else None,
        early_stopping=False, warm_start=True, max_iter=0, random_state=seed,
    )  # fmt: skip


def boost_rounds(model: HistGradientBoostingClassifier, x_train: np.ndarray, y_train: np.ndarray, *,
                 rounds: int, trees_per_round: int,
                 after_round: Callable[[int, HistGradientBoostingClassifier], bool]) -> int:  # fmt: skip
    """Grow ``model`` round by round until ``rounds`` or until ``after_round`` says stop.

    Args:
        model: From :func:`make_classifier`.
        x_train, y_train: Training features (NaN allowed) and 0/1 labels.
        rounds: Most rounds to grow.
        trees_per_round: Trees added per round.
        after_round: Called with (round, model) after each round; returns True to stop.

    Returns:
        The number of rounds grown.
    """
    for number in range(1, rounds + 1):
        model.set_params(max_iter=number * trees_per_round)
        model.fit(x_train, y_train)
        if after_round(number, model):
            return number
    return rounds


def snapshot(model: HistGradientBoostingClassifier) -> HistGradientBoostingClassifier:
    """A frozen copy of ``model`` as it is now (warm starting mutates the original)."""
    return copy.deepcopy(model)


def scores(model: HistGradientBoostingClassifier, x: np.ndarray) -> np.ndarray:
    """Probability of the positive class."""
    return model.predict_proba(x)[:, 1]


def grouped_permutation_importance(model, x: np.ndarray, y: np.ndarray, groups: Mapping[str, Sequence[int]], *,
                                   repeats: int = 5, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """Drop of ROC AUC when the columns of one group are shuffled together, per group.

    Shuffling a block of columns jointly (e.g. all of a CNN embedding) asks what the block adds
    as a whole, which per-column importances of correlated columns cannot say.

    Returns:
        One row per group, sorted by ``importance`` (mean AUC drop), with ``std`` over repeats.
    """
    if len(np.unique(y)) < 2:  # AUC is undefined on one class: say so instead of ranking noise
        return pd.DataFrame({"feature": list(groups), "importance": np.nan, "std": np.nan})
    rng = np.random.default_rng(seed)
    base = roc_auc_score(y, scores(model, x))
    rows = []
    for name, columns in groups.items():
        drops = []
        for _ in range(repeats):
            shuffled = x.copy()
            shuffled[:, columns] = x[rng.permutation(len(x))][:, columns]
            drops.append(base - roc_auc_score(y, scores(model, shuffled)))
        rows.append({"feature": name, "importance": float(np.mean(drops)), "std": float(np.std(drops))})
    return pd.DataFrame(rows).sort_values("importance", ascending=False, ignore_index=True)
