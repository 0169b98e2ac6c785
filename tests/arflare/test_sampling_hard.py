"""Hard negatives in the training sampler: always kept, drawn ``weight`` times as often."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from arflare.data.sampling import BalancedSampler

N_POS, N_HARD, N_ORD = 50, 100, 850
LABELS = np.array([1] * N_POS + [0] * (N_HARD + N_ORD))
HARD = np.zeros(len(LABELS), dtype=bool)
HARD[N_POS : N_POS + N_HARD] = True
KEYS = [f"k{i:04d}" for i in range(len(LABELS))]
ALPHA = 1e-3  # a fixed seed makes every p-value below deterministic; the level guards against a lucky seed


def _counts(sampler: BalancedSampler, epochs: int) -> np.ndarray:
    counts = np.zeros((epochs, len(LABELS)), dtype=np.int64)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        counts[epoch] = np.bincount(list(sampler), minlength=len(LABELS))
    return counts


def test_weights_mode_draws_a_hard_negative_weight_times_as_often_as_an_ordinary_one():
    weight, epochs = 5.0, 20
    counts = _counts(BalancedSampler(LABELS, mode="weights", hard=HARD, hard_weight=weight, seed=0), epochs)
    hard_draws, negative_draws = int(counts[:, HARD].sum()), int(counts[:, LABELS == 0].sum())

    def share(w: float) -> float:  # expected share of hard draws among negative draws
        return w * N_HARD / (w * N_HARD + N_ORD)

    assert binomtest(hard_draws, negative_draws, share(weight)).pvalue > ALPHA
    # The test has power: a sampler ignoring the weight, or off by one, would be rejected.
    for wrong in (1.0, weight - 1, weight + 1):
        assert binomtest(hard_draws, negative_draws, share(wrong)).pvalue < ALPHA
    # Positives keep their balanced share: hard negatives replace ordinary ones, not flares.
    assert binomtest(int(counts[:, LABELS == 1].sum()), int(counts.sum()), 0.5).pvalue > ALPHA


@pytest.mark.parametrize("mode", ["prob", "fixed"])
def test_thinning_modes_always_keep_hard_negatives_and_draw_them_weight_times_as_often(mode):
    weight, keep, epochs = 5.0, 0.25, 200
    sampler = BalancedSampler(LABELS, mode=mode, keep_negative_prob=keep, keys=KEYS, hard=HARD, hard_weight=weight, seed=3)
    counts = _counts(sampler, epochs)
    assert (counts[:, HARD] >= 1).all(), "a hard negative was dropped in some epoch"
    assert (counts[:, LABELS == 1] == 1).all()
    # Each hard negative appears floor(5 * 0.25) = 1 time plus once more with probability 0.25.
    extra = int((counts[:, HARD] - 1).sum())
    assert set(np.unique(counts[:, HARD])) == {1, 2}
    assert binomtest(extra, N_HARD * epochs, weight * keep - 1).pvalue > ALPHA
    hard_rate = counts[:, HARD].mean()
    ordinary_rate = counts[:, (LABELS == 0) & ~HARD].mean()
    if mode == "prob":  # ordinary negatives are redrawn each epoch: Binomial(keep)
        ordinary = int(counts[:, (LABELS == 0) & ~HARD].sum())
        assert binomtest(ordinary, N_ORD * epochs, keep).pvalue > ALPHA
        assert hard_rate / ordinary_rate == pytest.approx(weight, rel=0.05)
    else:  # fixed: the same hashed subset every epoch, about `keep` of the ordinary negatives
        assert (counts[:, (LABELS == 0) & ~HARD] == counts[0, (LABELS == 0) & ~HARD]).all()
        assert hard_rate / ordinary_rate == pytest.approx(weight, rel=0.15)


def test_none_mode_repeats_each_hard_negative_weight_times():
    counts = _counts(BalancedSampler(LABELS, hard=HARD, hard_weight=3.0, seed=1), 2)
    assert (counts[:, HARD] == 3).all() and (counts[:, ~HARD] == 1).all()


def test_without_hard_negatives_the_draw_is_unchanged():
    plain = BalancedSampler(LABELS, mode="prob", keep_negative_prob=0.3, seed=4)
    empty = BalancedSampler(LABELS, mode="prob", keep_negative_prob=0.3, seed=4, hard=np.zeros(len(LABELS), bool), hard_weight=5)
    assert list(plain) == list(empty)


def test_hard_flags_are_checked():
    with pytest.raises(ValueError, match="positives"):
        BalancedSampler(LABELS, hard=LABELS == 1)
    with pytest.raises(ValueError, match="one flag per label"):
        BalancedSampler(LABELS, hard=HARD[:10])
    with pytest.raises(ValueError, match="hard_weight"):
        BalancedSampler(LABELS, hard=HARD, hard_weight=0)


@pytest.mark.parametrize(("mode", "q", "weight"), [("prob", 0.25, 5.0), ("fixed", 0.25, 2.0), ("none", 1.0, 5.0),
                                                   ("weights", 1.0, 5.0), ("prob", 0.1, 3.0)])
def test_negative_keep_rate_is_the_observed_ratio_of_draws_per_negative_to_draws_per_positive(mode, q, weight):
    # The odds factor that calibration corrects with: measured over many epochs, it must match.
    sampler = BalancedSampler(LABELS, mode=mode, keep_negative_prob=q, keys=KEYS, hard=HARD, hard_weight=weight, seed=1)
    counts = _counts(sampler, 200 if mode in ("prob", "weights") else 1)
    observed = counts[:, LABELS == 0].sum() / (LABELS == 0).sum() / (counts[:, LABELS == 1].sum() / N_POS)
    assert sampler.negative_keep_rate() == pytest.approx(observed, rel=0.03)


def test_negative_keep_rate_without_hard_negatives_is_the_balancing_rate():
    assert BalancedSampler(LABELS, mode="prob", keep_negative_prob=0.3).negative_keep_rate() == pytest.approx(0.3)
    assert BalancedSampler(LABELS, mode="weights").negative_keep_rate() == pytest.approx(N_POS / (N_HARD + N_ORD))
    assert BalancedSampler(LABELS, mode="none").negative_keep_rate() == 1.0
    assert BalancedSampler(np.zeros(5, dtype=int), mode="none").negative_keep_rate() is None
