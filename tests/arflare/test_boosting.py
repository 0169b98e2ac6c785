"""Boosted trees in rounds and grouped permutation importances, on small constructed tables."""

from __future__ import annotations

import numpy as np
import pytest

from arflare.physics import boosting


def _table(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=n) > 0.8).astype(int)  # columns 2, 3 are noise
    x[rng.random(n) < 0.05, 1] = np.nan  # missing values are allowed (a change without history)
    return x, y


def _classifier(**overrides):
    params = dict(learning_rate=0.1, max_depth=3, l2_regularization=0.0, max_leaf_nodes=15, min_samples_leaf=10,
                  class_weight="balanced", seed=0)  # fmt: skip
    return boosting.make_classifier(**{**params, **overrides})


def test_rounds_add_trees_and_stop_when_told():
    x, y = _table()
    seen = []

    def after(number, model):
        seen.append((number, model.n_iter_))
        return number == 3

    assert boosting.boost_rounds(_classifier(), x, y, rounds=10, trees_per_round=5, after_round=after) == 3
    assert seen == [(1, 5), (2, 10), (3, 15)]


def test_snapshot_is_not_changed_by_later_rounds():
    x, y = _table()
    kept = {}

    def after(number, model):
        if number == 1:
            kept["first"] = boosting.snapshot(model)
        return False

    model = _classifier()
    boosting.boost_rounds(model, x, y, rounds=3, trees_per_round=4, after_round=after)
    assert kept["first"].n_iter_ == 4 and model.n_iter_ == 12
    assert not np.allclose(boosting.scores(kept["first"], x), boosting.scores(model, x))


def test_warm_started_rounds_equal_one_fit_of_all_trees():
    x, y = _table()
    rounds = _classifier()
    boosting.boost_rounds(rounds, x, y, rounds=3, trees_per_round=5, after_round=lambda *_: False)
    once = _classifier().set_params(max_iter=15).fit(x, y)
    np.testing.assert_allclose(boosting.scores(rounds, x), boosting.scores(once, x), rtol=1e-6)


def test_grouped_importance_ranks_signal_above_noise_and_shuffles_groups_jointly():
    x, y = _table(seed=1)
    model = _classifier().set_params(max_iter=40).fit(x, y)
    table = boosting.grouped_permutation_importance(model, x, y, {"x0": [0], "x1": [1], "noise": [2, 3]}, repeats=3)
    ranked = table.set_index("feature")["importance"]
    assert ranked.index[0] == "x0"
    assert ranked["x0"] > ranked["x1"] > 0.01 > abs(ranked["noise"])


def test_importance_on_one_class_is_nan_not_an_error():
    x, y = _table()
    model = _classifier().set_params(max_iter=5).fit(x, y)
    table = boosting.grouped_permutation_importance(model, x, np.zeros_like(y), {"x0": [0]})
    assert np.isnan(table["importance"]).all()


@pytest.mark.parametrize("weight", ["balanced", "none"])
def test_class_weight_option(weight):
    model = _classifier(class_weight=weight)
    assert model.class_weight == ("balanced" if weight == "balanced" else None)
