"""The data gates: integrity, balance, split integrity, shortcut and the physics baseline.

Each gate is a function of plain inputs (the scan table, the index, the gate settings)
returning a :class:`~arflare.gates.report.GateResult`; none of them imports torch.
Leakage (a key or an AR in two splits) never reaches these gates: the index refuses it as
bad input (exit 2) and names the ARs and shards.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from arflare.data.shards import SPLITS
from arflare.gates.report import GateResult, worst
from arflare.gates.shortcut import NUISANCE, ar_permutation_null, grouped_cv_auc, nuisance_features

_LISTED = 50  # problems listed in the report; the count is always complete


def positive_labels(table: pd.DataFrame, min_flare_class: str) -> np.ndarray:
    """0/1 labels at ``data.min_flare_class`` (C: the json label; M: M and X flares only)."""
    if min_flare_class == "M":
        return table["reg_label"].str.upper().str.startswith(("M", "X")).to_numpy(int)
    return table["label"].to_numpy(int)


def integrity(scan: pd.DataFrame, skipped, *, max_bad_fraction: float, max_saturated: float) -> GateResult:
    """Every sample decodes, is not constant, has finite flow; few pixels are clipped.

    Args:
        scan: the scan table of the index.
        skipped: the index's skipped samples (unreadable at indexing time), also problems.
        max_bad_fraction: FAIL above this fraction of bad samples, WARN below.
        max_saturated: WARN when this share of all pixels or more is at 0 or 255.
    """
    problems = [{"split": s.split, "shard": s.shard, "member": s.member, "problem": s.reason} for s in skipped]
    ok = scan["ok"].astype(bool)
    checks = ((~ok, scan["error"]), (ok & (scan["min"] == scan["max"]), "constant image"),
              (~scan["flow_ok"].astype(bool), "flow not decodable or not finite"))  # fmt: skip
    bad = np.zeros(len(scan), dtype=bool)
    for mask, reason in checks:
        bad |= mask.to_numpy()
        for row in scan[mask].itertuples():
            member = f"{row.key}.flow.npz" if reason == checks[2][1] else f"{row.key}.png"
            shard = row.flow_shard if reason == checks[2][1] else row.shard
            text = reason if isinstance(reason, str) else str(reason[row.Index])
            problems.append({"split": row.split, "shard": shard, "member": member, "problem": text})
    n_bad = int(bad.sum()) + len(skipped)
    fraction = n_bad / max(len(scan) + len(skipped), 1)
    saturated = float(scan.loc[ok, "saturated"].mean()) if ok.any() else 0.0
    value_range = [float(scan.loc[ok, "min"].min()), float(scan.loc[ok, "max"].max())] if ok.any() else []
    status = "FAIL" if fraction > max_bad_fraction else "WARN" if n_bad or saturated >= max_saturated else "PASS"
    summary = (f"{n_bad} bad of {len(scan) + len(skipped)} samples ({fraction:.2%}; FAIL above {max_bad_fraction:.2%}), "
               f"values {value_range[0]:.0f}..{value_range[1]:.0f}, {saturated:.2%} of pixels at 0/255"
               if value_range else f"no sample decodes ({n_bad} bad)")
    return GateResult("integrity", status, summary, {
        "bad_samples": n_bad, "bad_fraction": fraction, "saturated_share": saturated, "value_range": value_range,
        "problems": problems[:_LISTED], "problems_listed": min(len(problems), _LISTED)})


def balance(table: pd.DataFrame, *, min_flare_class: str, min_positives: int, max_base_rate_ratio: float) -> GateResult:
    """Positives per split and how far the splits' base rates differ (WARN only: a run can still start)."""
    labels = positive_labels(table, min_flare_class)
    rows, statuses, notes = [], [], []
    for split in SPLITS:
        mask = (table["split"] == split).to_numpy()
        pos, n = int(labels[mask].sum()), int(mask.sum())
        rows.append({"split": split, "samples": n, "positives": pos, "rate": pos / max(n, 1)})
        if pos == 0:  # WARN, not FAIL: tiny smoke sets lack them; every skill score of the split says n/a
            statuses.append("WARN")
            notes.append(f"{split} has no positives: its TSS, AUC and threshold are undefined")
        elif pos < min_positives:
            statuses.append("WARN")
            notes.append(f"{split} has {pos} < {min_positives} positives")
    rates = {r["split"]: r["rate"] for r in rows}
    ratios = {f"{a}/{b}": max(rates[a], rates[b]) / min(rates[a], rates[b])
              for a, b in itertools.combinations(SPLITS, 2) if min(rates[a], rates[b]) > 0}
    for pair, ratio in ratios.items():
        if ratio > max_base_rate_ratio:
            statuses.append("WARN")
            notes.append(f"base rates {pair} differ {ratio:.1f}x (> {max_base_rate_ratio:g}x)")
    shown = ", ".join(f"{r['split']} {r['positives']}/{r['samples']} ({r['rate']:.1%})" for r in rows)
    summary = f"positives (>= {min_flare_class}) {shown}" + (f"; {'; '.join(notes)}" if notes else "")
    return GateResult("balance", worst(statuses), summary, {"splits": rows, "rate_ratios": ratios})


def split_integrity(table: pd.DataFrame) -> GateResult:
    """AR-exclusive splits (the index guarantees it; checked again) and their overlap in time."""
    per_ar = table.groupby("ar")["split"].nunique()
    leaked = sorted(per_ar[per_ar > 1].index)
    spans = {s: (table.loc[table["split"] == s, "timestamp"].min(), table.loc[table["split"] == s, "timestamp"].max())
             for s in SPLITS}
    overlaps = {}
    for a, b in itertools.combinations(SPLITS, 2):
        start, end = max(spans[a][0], spans[b][0]), min(spans[a][1], spans[b][1])
        shorter = min(spans[a][1] - spans[a][0], spans[b][1] - spans[b][0])
        overlaps[f"{a}/{b}"] = float(max((end - start) / shorter, 0.0)) if shorter > pd.Timedelta(0) else 0.0
    ars = {s: int(table.loc[table["split"] == s, "ar"].nunique()) for s in SPLITS}
    overlap_text = ", ".join(f"{k} {v:.0%}" for k, v in overlaps.items())
    summary = (f"ARs per split {ars['train']}/{ars['val']}/{ars['test']}, none shared; time overlap "
               f"(share of the shorter span) {overlap_text}: splits by AR, not by time, so solar-cycle "
               f"phase is shared")
    if leaked:
        return GateResult("split", "FAIL", f"ARs in two splits: {', '.join(leaked[:20])}", {"leaked_ars": leaked})
    return GateResult("split", "PASS", summary, {"ars": ars, "time_overlap": overlaps,
                                                 "spans": {s: [str(a), str(b)] for s, (a, b) in spans.items()}})


def shortcut(scan: pd.DataFrame, *, min_flare_class: str, json_keys, folds: int, max_samples: int,
             max_auc: float, permutations: int, alpha: float) -> GateResult:
    """FAIL when nuisance features predict the train labels better than ``max_auc`` (AR-grouped CV AUC)
    and better than chance (AR-permutation p-value below ``alpha``); above ``max_auc`` by chance WARNs."""
    train = scan[(scan["split"] == "train") & scan["ok"].astype(bool)]
    features = nuisance_features(train, json_keys)
    labels, groups = positive_labels(train, min_flare_class), train["ar"].to_numpy()
    result = grouped_cv_auc(features, labels, groups, folds=folds, max_samples=max_samples)
    auc = result["auc"]
    top = ", ".join(f"{k} {v:+.2f}" for k, v in list(result["coefficients"].items())[:3])
    if np.isnan(auc):
        return GateResult("shortcut", "WARN", f"not measurable: {result['reason']}", result)
    details = {**result, "features": list(features.columns), "nuisance": list(NUISANCE), "max_auc": max_auc}
    significant, chance = True, ""
    if auc > max_auc and permutations:
        null = ar_permutation_null(features, labels, groups, folds=folds, max_samples=max_samples,
                                   permutations=permutations)
        p_value = float((1 + np.sum(null >= auc)) / (1 + len(null)))
        significant = p_value < alpha
        details.update(p_value=p_value, null_auc_q95=float(np.nanquantile(null, 0.95)), permutations=permutations)
        chance = f"; AR-permutation p = {p_value:.3f} ({permutations} perms, 95% of chance AUCs <= {details['null_auc_q95']:.3f})"
    status = "PASS" if auc <= max_auc else "FAIL" if significant else "WARN"
    summary = (f"nuisance AUC {auc:.3f} (FAIL above {max_auc:g} when p < {alpha:g}), logistic regression, "
               f"{result['folds']}-fold AR-grouped CV on {result['samples']} train frames / {result['ars']} ARs"
               f"{chance}; strongest: {top}")
    return GateResult("shortcut", status, summary, details)


def physics_baseline(features: pd.DataFrame, table: pd.DataFrame, *, min_flare_class: str, folds: int,
                     max_samples: int) -> GateResult:
    """The same grouped-CV logistic regression on physical features: the skill a network must beat.

    Args:
        features: one row per row of ``table`` (train rows are used), physical feature columns only.
        table: split, ar, label, reg_label of the same rows.
    """
    train = (table["split"] == "train").to_numpy()
    result = grouped_cv_auc(features[train], positive_labels(table[train], min_flare_class),
                            table.loc[train, "ar"].to_numpy(), folds=folds, max_samples=max_samples)
    if np.isnan(result["auc"]):
        return GateResult("physics_baseline", "WARN", f"not measurable: {result['reason']}", result)
    summary = (f"physical-feature AUC {result['auc']:.3f} ({', '.join(features.columns[:4])}"
               f"{', ...' if len(features.columns) > 4 else ''}; same CV): the baseline to beat, never a failure")
    return GateResult("physics_baseline", "PASS", summary, {**result, "features": list(features.columns)})
