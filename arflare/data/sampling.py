"""Class balancing for flare data, where positives are a few percent of the frames.

:class:`BalancedSampler` chooses each epoch's indices in one of four ways and splits
them between DDP ranks. Every choice is a pure function of ``(seed, epoch)``, so all
ranks agree on the list without talking to each other and runs repeat exactly.

Hard negatives (negatives an earlier model called positive, see :mod:`arflare.mining`) are
never thinned away and are drawn ``hard_weight`` times as often as an ordinary negative.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch

Mode = Literal["none", "prob", "fixed", "weights"]
MODES = ("none", "prob", "fixed", "weights")


class BalancedSampler(torch.utils.data.Sampler[int]):
    """Indices of one epoch, with negatives thinned or classes re-weighted.

    Modes:
        none: every index once.
        prob: every positive, and each negative with probability ``keep_negative_prob``,
            redrawn every epoch.
        fixed: every positive, and the negatives whose key hashes (sha256) below
            ``keep_negative_prob``: the same subset every epoch and every run.
        weights: ``len(labels)`` draws with replacement (or, when ``keep_negative_prob``
            < 1, the expected size of a prob-mode epoch), with probability proportional
            to ``weights`` (default: inverse class frequency, i.e. balanced classes).

    Args:
        labels: 0/1 label of every dataset item.
        mode: one of the modes above.
        keep_negative_prob: fraction of negatives to keep, in (0, 1].
        weights: per-item sampling weights for ``mode="weights"``.
        seed: base seed; the epoch's draw depends on ``(seed, epoch)`` only.
        shuffle: shuffle the epoch's indices (otherwise ascending, except in weights mode).
        num_replicas: number of DDP ranks sharing the epoch.
        rank: this process's rank; each rank gets a disjoint, equal-length slice,
            padded by wrapping around like ``DistributedSampler``.
        keys: stable per-item names (e.g. sample keys), needed by ``mode="fixed"``.
        hard: per-item True for a hard negative (label 0 only), or None for none.
        hard_weight: how many times as often a hard negative is drawn as an ordinary
            negative (expected draws per epoch). In none/prob/fixed a hard negative is
            always kept: it appears ``hard_weight * r`` times per epoch on average, where
            ``r`` is an ordinary negative's expected count (``keep_negative_prob``, or 1 in
            none), and at least once. In weights mode its sampling weight is ``hard_weight``
            times that of an ordinary negative (never excluded from the draw), with the
            negatives' total weight unchanged, so the class balance stays as it was.
    """

    def __init__(
        self,
        labels: np.ndarray,
        *,
        mode: Mode = "none",
        keep_negative_prob: float = 1.0,
        weights: np.ndarray | None = None,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        keys: Sequence[str] | None = None,
        hard: np.ndarray | None = None,
        hard_weight: float = 1.0,
    ) -> None:
        self.labels = np.asarray(labels).astype(np.int64)
        _check_args(self.labels, mode, keep_negative_prob, num_replicas, rank, keys)
        self.hard = _check_hard(self.labels, hard, hard_weight)
        self.hard_weight = float(hard_weight)
        self.mode = mode
        self.keep_negative_prob = float(keep_negative_prob)
        self.weights = self._resolve_weights(weights) if mode == "weights" else None
        if self.weights is not None and self.hard is not None:
            self.weights = _upweight_hard(self.weights, self.labels, self.hard, self.hard_weight)
        self.seed, self.shuffle = seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.keys = list(keys) if keys is not None else None
        self._key_uniform = _stable_uniform(self.keys) if mode == "fixed" else None
        self.epoch = 0
        self._cache: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draw ``__iter__`` returns (call before each epoch)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(self._rank_indices().tolist())

    def __len__(self) -> int:
        return len(self._rank_indices())

    def epoch_indices(self) -> np.ndarray:
        """All ranks' indices for the current epoch, before the split between ranks."""
        if self._cache is None or self._cache[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._cache = (self.epoch, self._draw(rng))
        return self._cache[1]

    def negative_keep_rate(self) -> float | None:
        """Expected draws of a negative per expected draws of a positive in one epoch.

        The factor by which the training mix scales the odds of a flare (true odds = learnt
        odds × this; :func:`arflare.calibration.training_keep_rate`): ``keep_negative_prob`` for
        ``prob``/``fixed``, n_pos / n_neg for default ``weights``, raised by over-drawn hard
        negatives. None when the set holds a single class.
        """
        positive = self.labels == 1
        if positive.all() or not positive.any():
            return None
        if self.mode == "weights":
            return float(self.weights[~positive].mean() / self.weights[positive].mean())
        r = 1.0 if self.mode == "none" else self.keep_negative_prob
        # fixed keeps one subset for good: its realised share, not the expected one
        rate = (self._key_uniform < r).astype(float) if self.mode == "fixed" else np.full(len(self.labels), r)
        if self.hard is not None:  # _hard_counts: weight * r on average, but at least once
            rate[self.hard] = max(self.hard_weight * r, 1.0)
        return float(rate[~positive].mean())

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        positive = self.labels == 1
        if self.mode == "weights":
            size = round(positive.sum() + self.keep_negative_prob * (~positive).sum())
            prob = self.weights / self.weights.sum()
            return rng.choice(len(self.labels), size=size, replace=True, p=prob)
        if self.mode == "prob":
            keep = positive | (rng.random(len(self.labels)) < self.keep_negative_prob)
        elif self.mode == "fixed":
            keep = positive | (self._key_uniform < self.keep_negative_prob)
        else:
            keep = np.ones(len(self.labels), dtype=bool)
        if self.hard is None:
            indices = np.flatnonzero(keep)
        else:
            counts = keep.astype(np.int64)
            counts[self.hard] = self._hard_counts(rng)
            indices = np.repeat(np.arange(len(self.labels)), counts)
        return rng.permutation(indices) if self.shuffle else indices

    def _hard_counts(self, rng: np.random.Generator) -> np.ndarray:
        """Draws of each hard negative this epoch: ``weight * r`` on average (stochastic rounding), >= 1."""
        rate = self.hard_weight * (1.0 if self.mode == "none" else self.keep_negative_prob)
        n_hard = int(self.hard.sum())
        counts = np.floor(rate) + (rng.random(n_hard) < rate - np.floor(rate))
        return np.maximum(counts, 1).astype(np.int64)

    def _rank_indices(self) -> np.ndarray:
        indices = self.epoch_indices()
        if self.num_replicas == 1 or len(indices) == 0:
            return indices
        per_rank = -(-len(indices) // self.num_replicas)
        padded = np.resize(indices, per_rank * self.num_replicas)  # wraps around
        return padded[self.rank :: self.num_replicas]

    def _resolve_weights(self, weights: np.ndarray | None) -> np.ndarray:
        if weights is None:
            counts = np.bincount(self.labels, minlength=2).astype(np.float64)
            return 1.0 / counts[self.labels]
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != self.labels.shape or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"weights must be {len(self.labels)} non-negative numbers with a positive sum "
                f"(one per label); got shape {weights.shape}"
            )
        return weights


def _check_args(labels, mode, keep_negative_prob, num_replicas, rank, keys) -> None:
    if mode not in MODES:
        raise ValueError(f"Unknown balancing mode {mode!r}; available: {', '.join(MODES)}")
    if not set(np.unique(labels)) <= {0, 1}:
        raise ValueError(f"labels must be 0/1; got values {sorted(set(np.unique(labels)))[:5]}")
    if not 0.0 < keep_negative_prob <= 1.0:
        raise ValueError(f"keep_negative_prob={keep_negative_prob!r} must be in (0, 1]")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank={rank!r} must be in [0, num_replicas={num_replicas!r})")
    if mode == "fixed" and (keys is None or len(keys) != len(labels)):
        raise ValueError(
            f"mode='fixed' chooses negatives by a hash of their key: pass keys= with one key per "
            f"label ({len(labels)}), e.g. dataset.frame_table['key']"
        )


def _upweight_hard(weights: np.ndarray, labels: np.ndarray, hard: np.ndarray, hard_weight: float) -> np.ndarray:
    # Rescale the negatives so their total mass is unchanged: hard negatives take draws from
    # ordinary negatives, never from the positives (the class balance stays what it was).
    negative = labels == 0
    raised = np.where(hard, weights * hard_weight, weights)
    raised[negative] *= weights[negative].sum() / raised[negative].sum()
    return raised


def _check_hard(labels: np.ndarray, hard, hard_weight: float) -> np.ndarray | None:
    if not hard_weight > 0:
        raise ValueError(f"hard_weight={hard_weight!r} must be > 0 (1 = as often as an ordinary negative)")
    if hard is None:
        return None
    hard = np.asarray(hard, dtype=bool)
    if hard.shape != labels.shape:
        raise ValueError(f"hard must hold one flag per label ({len(labels)}); got shape {hard.shape}")
    if (hard & (labels == 1)).any():
        raise ValueError(f"{int((hard & (labels == 1)).sum())} items flagged hard are positives; "
                         "hard negatives must have label 0")
    return hard if hard.any() else None


def _stable_uniform(keys: Sequence[str]) -> np.ndarray:
    # Python's hash() is salted per process; sha256 gives the same number everywhere.
    return np.array(
        [int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") / 2.0**64 for k in keys]
    )
