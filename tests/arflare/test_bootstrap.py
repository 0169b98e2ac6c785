"""AR cluster bootstrap: exact against per-resample sklearn metrics, and the AR-vs-frame width."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from arflare import bootstrap as bt
from arflare import metrics as skill


def synthetic(n_ars=15, per_ar=40, seed=0):
    """ARs with their own base rate and score level: frames within an AR are correlated."""
    rng = np.random.default_rng(seed)
    ars = np.repeat(np.arange(n_ars), per_ar)
    level = rng.random(n_ars)
    labels = (rng.random(ars.size) < 0.1 + 0.6 * level[ars]).astype(int)
    scores = np.round(np.clip(0.5 * level[ars] + 0.3 * labels + 0.2 * rng.random(ars.size), 0, 1), 2)  # ties
    return labels, scores, ars


def test_every_resample_equals_sklearn_metrics_of_the_resampled_frames():
    labels, scores, ars = synthetic()
    cluster = bt.cluster_index(ars)
    prepared = bt._clusters(labels, scores, cluster, threshold=0.5)
    weights = bt._weights(prepared.n_clusters, 6, seed=3)
    vectorised = bt._scores(prepared, weights)
    for b, counts in enumerate(weights.astype(int)):
        frames = np.concatenate([np.tile(np.flatnonzero(cluster == k), n) for k, n in enumerate(counts)])
        reference = skill.evaluate(labels[frames], scores[frames], threshold=0.5)
        for name in bt.BOOTSTRAP_METRICS:
            assert vectorised[name][b] == pytest.approx(reference[name], abs=1e-9, nan_ok=True), name


def test_identical_frames_within_an_ar_give_the_one_frame_per_ar_interval_and_a_wider_one_than_frames():
    rng = np.random.default_rng(1)
    n_ars, per_ar = 20, 50
    one_label = (np.arange(n_ars) % 3 == 0).astype(int)
    one_score = np.clip(0.35 * one_label + 0.6 * rng.random(n_ars), 0, 1)
    ars = np.repeat([f"AR{i}" for i in range(n_ars)], per_ar)
    labels, scores = np.repeat(one_label, per_ar), np.repeat(one_score, per_ar)
    cluster = bt.bootstrap_intervals(labels, scores, ars, threshold=0.5, seed=7)
    per_ar = bt.bootstrap_intervals(one_label, one_score, [f"AR{i}" for i in range(n_ars)], threshold=0.5, seed=7)
    per_frame = bt.bootstrap_intervals(labels, scores, np.arange(labels.size), threshold=0.5, seed=7)
    for name in ("tss", "hss", "auc", "pr_auc", "bss"):
        assert (cluster[name].lo, cluster[name].hi) == pytest.approx((per_ar[name].lo, per_ar[name].hi), abs=1e-12)
        assert cluster[name].estimate == pytest.approx(per_frame[name].estimate)
        width = cluster[name].hi - cluster[name].lo
        assert width > 3 * (per_frame[name].hi - per_frame[name].lo), name


def test_seeded_and_reproducible():
    labels, scores, ars = synthetic()
    first = bt.bootstrap_intervals(labels, scores, ars, threshold=0.5, seed=1, n_resamples=200)
    again = bt.bootstrap_intervals(labels, scores, ars, threshold=0.5, seed=1, n_resamples=200)
    other = bt.bootstrap_intervals(labels, scores, ars, threshold=0.5, seed=2, n_resamples=200)
    assert first == again and first != other
    assert first["tss"].lo <= first["tss"].estimate <= first["tss"].hi


def test_paired_with_itself_is_zero_with_p_one_and_a_real_difference_is_found():
    labels, scores, ars = synthetic()
    same = bt.paired_bootstrap(labels, scores, scores, ars, threshold_a=0.5, threshold_b=0.5)
    for d in same.values():
        if np.isfinite(d.difference):
            assert (d.difference, d.lo, d.hi, d.p_value) == (0, 0, 0, 1)
    noise = np.random.default_rng(0).random(labels.size)
    better = bt.paired_bootstrap(labels, scores, noise, ars, threshold_a=0.5, threshold_b=0.5)
    assert better["auc"].difference > 0.2 and better["auc"].lo > 0 and better["auc"].p_value < 0.05


def test_interval_metrics_names_and_json(tmp_path):
    labels, scores, ars = synthetic()
    table = pd.DataFrame({"ar": ars.astype(str), "label": labels, "score": scores})

    class Reporter:
        logged: dict = {}
        files: dict = {}

        def log_metrics(self, metrics, *, step=None):
            self.logged.update(metrics)

        def log_dict(self, obj, name):
            self.files[name] = json.loads(json.dumps(obj))

    table.to_parquet(tmp_path / "test.parquet")
    reporter = Reporter()
    metrics = bt.report_intervals(reporter, {"test": tmp_path / "test.parquet", "val": tmp_path / "test.parquet"},
                                  threshold=0.5, n_resamples=100)
    assert set(metrics) == {f"{s}/{m}_{e}" for s in ("val", "test") for m in bt.BOOTSTRAP_METRICS for e in ("lo", "hi")}
    body = reporter.files["bootstrap.json"]
    assert body["splits"]["test"]["n_ars"] == 15 and body["n_resamples"] == 100
    assert body["splits"]["test"]["metrics"]["tss"]["lo"] == metrics["test/tss_lo"]


def test_bss_is_resampled_on_the_corrected_probabilities_of_a_rebalanced_run():
    labels, scores, ars = synthetic()
    cluster = bt.cluster_index(ars)
    prepared = bt._clusters(labels, scores, cluster, threshold=0.5, keep_rate=0.25)
    weights = bt._weights(prepared.n_clusters, 4, seed=5)
    vectorised = bt._scores(prepared, weights)
    for b, counts in enumerate(weights.astype(int)):
        frames = np.concatenate([np.tile(np.flatnonzero(cluster == k), n) for k, n in enumerate(counts)])
        reference = skill.evaluate(labels[frames], scores[frames], threshold=0.5, keep_rate=0.25)
        assert vectorised["bss"][b] == pytest.approx(reference["bss"], abs=1e-9)  # what the run logs as bss
        assert vectorised["tss"][b] == pytest.approx(reference["tss"], abs=1e-9)  # threshold metrics unchanged
    point = bt.bootstrap_intervals(labels, scores, ars, threshold=0.5, keep_rate=0.25, n_resamples=50)["bss"]
    assert point.estimate == pytest.approx(skill.evaluate(labels, scores, threshold=0.5, keep_rate=0.25)["bss"])
