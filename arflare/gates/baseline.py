"""The physics baseline's features: total unsigned flux, field gradients and an R-value of train frames.

:func:`arflare.gates.checks.physics_baseline` fits the shortcut gate's procedure on them and
reports the AUC as the skill a network has to beat (never a failure). The features come from
:mod:`arflare.physics`: the whole data set's cached feature table when one exists (a physics or
hybrid run made it), else only the at most ``max_samples`` train frames the gate fits on, cached
on their own, so a check of the full data set does not compute features for ~950k frames.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pandas as pd

from arflare.data.index import DataIndex, cache_root

# heavy-tailed sizes enter as logs, as in the synthetic baselines and the SHARP literature
BASELINE_FEATURES = {"unsigned_flux": np.log1p, "mean_gradient": None, "max_gradient": None, "r_value": np.log1p}
SEED = 0  # the same train frames in every check of the same data
_PARALLEL_FROM = 4096


def physics_features(index: DataIndex, *, max_samples: int, cache_dir=None,
                     progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The baseline features and the split/ar/label/reg_label of at most ``max_samples`` train frames.

    Returns:
        ``(features, table)`` with the same rows: the columns of :data:`BASELINE_FEATURES` (logs
        where named), and the index columns the gate needs.
    """
    from arflare.physics.table import definitions_digest, feature_table

    train = index.table[index.table["split"] == "train"]
    if len(train) > max_samples:
        keep = np.sort(np.random.default_rng(SEED).choice(len(train), max_samples, replace=False))
        train = train.iloc[keep]
    full = cache_root(cache_dir) / f"features-{index.fingerprint}-{definitions_digest()}.parquet"
    if full.is_file():
        table = feature_table(index, cache_dir=cache_dir, progress=progress)
        table = table[table["key"].isin(train["key"])]
    else:  # only the sampled train frames, cached under a fingerprint of their own
        subset = replace(index, table=train.reset_index(drop=True), fingerprint=f"{index.fingerprint}-train{len(train)}")
        # worker processes pay off only beyond a few thousand frames (starting them costs seconds)
        workers = min(os.cpu_count() or 1, 8) if len(train) > _PARALLEL_FROM else 1
        table = feature_table(subset, cache_dir=cache_dir, progress=progress, workers=workers)
    table = table.reset_index(drop=True)
    features = pd.DataFrame({f"log_{name}" if fn else name: (fn(table[name].clip(lower=0)) if fn else table[name])
                             for name, fn in BASELINE_FEATURES.items()})
    return features, table[["split", "ar", "label", "reg_label"]]
