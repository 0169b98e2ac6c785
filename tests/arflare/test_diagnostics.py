"""Strata, failure grids and ECE of a split's predictions (no training needed: scores are made up)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from arflare.data.index import build_index
from arflare.diagnostics import diagnose
from arflare.failures import top_failures
from arflare.strata import expected_calibration_error, headline, stratify


def _predictions(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    reg = rng.choice(["0", "B3.1", "C2.0", "M1.5", "X2.0"], size=n, p=[0.4, 0.2, 0.2, 0.15, 0.05])
    return pd.DataFrame({
        "key": [f"k{i}" for i in range(n)], "ar": rng.choice(["11000", "11001", "11002", "11003"], size=n),
        "timestamp": pd.to_datetime("2011-12-20") + pd.to_timedelta(rng.integers(0, 30 * 24, n), unit="h"),
        "label": np.isin(reg, ["C2.0", "M1.5", "X2.0"]).astype(int), "reg_label": reg, "score": rng.random(n)})


def test_strata_counts_add_up_to_the_split():
    frame = _predictions()
    table = stratify(frame, 0.5, unsigned_flux=pd.Series(np.arange(len(frame), dtype=float)),
                     hard_negative=frame["ar"] == "11003")
    n, pos = len(frame), int(frame["label"].sum())
    for family, part in table.groupby("family"):
        total = {"flare_class": pos, "negative": n - pos}.get(family, n)
        assert part["n"].sum() == total, family
        assert (part["tp"] + part["fn"] + part["fp"] + part["tn"] == part["n"]).all()
    assert set(table["family"]) == {"all", "flare_class", "negative", "ar_kind", "size", "year"}
    assert list(table.loc[table["family"] == "flare_class", "stratum"]) == ["C", "M", "X"]
    assert list(table.loc[table["family"] == "negative", "stratum"]) == ["no flare", "sub-C (A/B)"]
    assert table.loc[table["family"] == "size", "n"].tolist() == [20, 20, 20]


def test_tpr_by_class_and_fpr_by_negative_stratum_at_the_given_threshold():
    frame = pd.DataFrame({"key": list("abcdef"), "ar": ["1"] * 6, "timestamp": pd.to_datetime(["2012-01-01"] * 6),
                          "label": [1, 1, 1, 0, 0, 0], "reg_label": ["M1.0", "M2.0", "C1.0", "0", "B1.0", "B2.0"],
                          "score": [0.9, 0.1, 0.8, 0.7, 0.2, 0.6]})
    table = stratify(frame, 0.5, hard_negative=pd.Series([False] * 3 + [True] * 3))
    assert headline(table) == {"tpr_C": 1.0, "tpr_M": 0.5, "fpr_noflare": 1.0, "fpr_subC": 0.5,
                               "fpr_hard_ar": pytest.approx(2 / 3)}


def test_ece_is_zero_when_calibrated_and_the_gap_otherwise():
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.0
    assert expected_calibration_error([0, 0, 0, 0], [0.9, 0.9, 0.1, 0.1]) == pytest.approx(0.5)


def test_top_failures_rank_confident_false_positives_and_missed_flares():
    frame = _predictions()
    errors = top_failures(frame, 0.5, k=3)
    fp, fn = errors[errors["kind"] == "FP"], errors[errors["kind"] == "FN"]
    assert (fp["label"] == 0).all() and (fp["score"] >= 0.5).all() and fp["score"].is_monotonic_decreasing
    assert (fn["label"] == 1).all() and (fn["score"] < 0.5).all() and fn["score"].is_monotonic_increasing
    assert len(fp) == len(fn) == 3 and fp["rank"].tolist() == [1, 2, 3]


def test_diagnose_writes_strata_and_failure_grids_for_val_and_test(tiny_shards, tmp_path):
    index = build_index(tiny_shards.root, progress=False)
    predictions = {}
    for split in ("val", "test"):
        part = index.table[index.table["split"] == split][["key", "ar", "timestamp", "label", "reg_label"]]
        predictions[split] = part.assign(score=np.linspace(0.1, 0.9, len(part))[::-1])
    result = diagnose(predictions, threshold=0.5, index=index, out_dir=tmp_path, run_name="tiny", k=2)
    for split in ("val", "test"):
        for folder in ("strata", "failures"):
            assert (tmp_path / folder / f"{split}.png").stat().st_size > 0
            assert (tmp_path / folder / f"{split}.parquet").is_file()
        strata = pd.read_parquet(tmp_path / "strata" / f"{split}.parquet")
        assert strata.loc[strata["family"] == "all", "n"].item() == len(predictions[split])
        assert 0 <= result.metrics[f"{split}/ece"] <= 1
    assert result.metrics["val/tpr_M"] == 0.0  # the M6.6 frame of val scores lowest: missed
    assert len(result.files) == 8


def test_every_headline_stratum_is_a_metric_row_that_compare_accepts():
    from arflare.metrics import compare_metric_key
    from arflare.metrics.table import METRICS
    from arflare.strata import HEADLINE

    diagnostics = {m.name for m in METRICS.rows() if m.needs == "diagnostics"}
    assert diagnostics == {*HEADLINE, "ece"}
    assert compare_metric_key("tpr_M", "test") == ("test/tpr_M", True)
    assert compare_metric_key("FPR_HARD_AR", "val") == ("val/fpr_hard_ar", False)


def test_strata_intervals_resample_ars_like_the_headline_intervals():
    from arflare.bootstrap import bootstrap_intervals

    frame = _predictions(n=400, seed=3)
    frame["ar"] = np.random.default_rng(3).choice([f"1100{i}" for i in range(8)], size=len(frame))
    table = stratify(frame, 0.5, n_resamples=300, seed=7)
    everything = table[table["family"] == "all"].iloc[0]
    headline_tss = bootstrap_intervals(frame["label"], frame["score"], frame["ar"], threshold=0.5, n_resamples=300, seed=7)["tss"]
    # the same AR draws as the run's headline interval, so the 'all' stratum's interval is that interval
    assert (everything["tss_lo"], everything["tss_hi"]) == pytest.approx((headline_tss.lo, headline_tss.hi))
    rated = table.dropna(subset=["tpr"])
    assert (rated["tpr_lo"] <= rated["tpr"] + 1e-12).all() and (rated["tpr"] <= rated["tpr_hi"] + 1e-12).all()


def test_a_rate_that_varies_between_ars_gets_a_wide_interval_and_a_uniform_one_none():
    # AR 'a' alarms on every negative, 'b' on none: the FPR hinges on which ARs are drawn.
    # Every AR of 'uniform' alarms on half its negatives: no resample can move that FPR.
    ars = [a for a in "abcdef" for _ in range(4)]
    score = [0.9] * 4 + [0.1] * 4 + [0.9, 0.1] * 8
    frame = pd.DataFrame({"key": [f"k{i}" for i in range(24)], "ar": ars, "timestamp": pd.to_datetime(["2012-01-01"] * 24),
                          "label": 0, "reg_label": "0", "score": score})
    varying = stratify(frame.iloc[:8], 0.5).iloc[0]
    uniform = stratify(frame.iloc[8:], 0.5).iloc[0]
    assert varying["fpr"] == 0.5 and varying["fpr_lo"] == 0.0 and varying["fpr_hi"] == 1.0
    assert uniform["fpr"] == uniform["fpr_lo"] == uniform["fpr_hi"] == 0.5
    assert np.isnan(uniform["tpr_lo"])  # no positives: no TPR and no interval


def test_diagnose_logs_the_interval_of_every_headline_rate(tiny_shards, tmp_path):
    index = build_index(tiny_shards.root, progress=False)
    part = index.table[index.table["split"] == "test"][["key", "ar", "timestamp", "label", "reg_label"]]
    scores = np.random.default_rng(0).random(len(part))
    result = diagnose({"test": part.assign(score=scores)}, threshold=0.5, index=index, out_dir=tmp_path, run_name="",
                      figures=False)
    rates = [k for k in result.metrics if k.startswith(("test/tpr_", "test/fpr_")) and not k.endswith(("_lo", "_hi"))]
    assert rates
    for key in rates:
        assert result.metrics[f"{key}_lo"] <= result.metrics[key] <= result.metrics[f"{key}_hi"]
