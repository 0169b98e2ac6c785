"""Hard negatives: the negatives a trained model calls positive, as a table with its lineage.

A hard-negative table has one row per sample: ``key, ar, timestamp, score, source_run``.
It is selected from a scored split (:func:`select_hard_negatives`), merged across source runs
(:func:`merge_hard_negatives`: union by key, the highest score kept) and identified by content
(:func:`table_digest`), which enters the spec hash of the runs that train on it. This module
imports pandas only (no torch, no mlflow), so ``validate`` and ``show`` can use it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("key", "ar", "timestamp", "score", "source_run")
TABLE_FILE = "hard_negatives.parquet"  # artifact path inside a mine run
DATASET_NAME = "hard_negatives"  # name of the MLflow dataset input


@dataclass(frozen=True)
class MineRule:
    """Which negatives count as hard: score >= ``min_score``, or the top ``top_fraction`` of them.

    With neither set, the source run's own decision threshold (chosen on validation) is the
    minimum score: the negatives it would have called flares.
    """

    min_score: float | None = None
    top_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.min_score is not None and self.top_fraction is not None:
            raise ValueError("give min_score or top_fraction, not both")
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score={self.min_score!r} must be a probability in [0, 1]")
        if self.top_fraction is not None and not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction={self.top_fraction!r} must be in (0, 1]")

    def resolved(self, threshold: float) -> MineRule:
        """The rule with the source run's ``threshold`` filled in when neither field is set."""
        if self.min_score is None and self.top_fraction is None:
            return MineRule(min_score=float(threshold))
        return self

    @property
    def text(self) -> str:
        """A stable, readable name of the rule (``score>=0.4312`` or ``top=0.05``), used in tags."""
        if self.top_fraction is not None:
            return f"top={self.top_fraction:g}"
        return "threshold" if self.min_score is None else f"score>={self.min_score:.6g}"


def select_hard_negatives(predictions: pd.DataFrame, rule: MineRule, *, source_run: str) -> pd.DataFrame:
    """The hard negatives of a scored split.

    Args:
        predictions: One row per sample with ``key, ar, timestamp, label, score``.
        rule: A resolved rule (``min_score`` or ``top_fraction`` set).
        source_run: The run whose model produced the scores (recorded per row).

    Returns:
        The table (:data:`COLUMNS`), negatives only (label 0), highest score first; keys unique.
    """
    if rule.min_score is None and rule.top_fraction is None:
        raise ValueError("resolve the rule with the source run's threshold first (MineRule.resolved)")
    negatives = predictions[predictions["label"] == 0]
    if rule.top_fraction is not None:
        count = int(np.ceil(rule.top_fraction * len(negatives)))
        chosen = negatives.sort_values(["score", "key"], ascending=[False, True], kind="stable").head(count)
    else:
        chosen = negatives[negatives["score"] >= rule.min_score]
    table = chosen.assign(source_run=source_run)[list(COLUMNS)]
    return _canonical(table.drop_duplicates("key"))


def merge_hard_negatives(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Union of several sources' tables, one row per key: the row with the highest score."""
    frames = [t[list(COLUMNS)] for t in tables]
    if not frames:
        return empty_table()
    merged = pd.concat(frames, ignore_index=True)
    # Highest score first, ties by source run id, so the kept row never depends on the order given.
    merged = merged.sort_values(["key", "score", "source_run"], ascending=[True, False, True], kind="stable")
    return _canonical(merged.drop_duplicates("key", keep="first"))


def table_digest(table: pd.DataFrame) -> str:
    """Content digest of a table: the same rows give the same 16 hex digits, whatever their order."""
    canonical = _canonical(table[list(COLUMNS)])
    text = canonical.assign(timestamp=canonical["timestamp"].astype("datetime64[s]").astype(str),
                            score=canonical["score"].map(lambda s: f"{s:.9g}")).to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def empty_table() -> pd.DataFrame:
    """A table with the right columns and no rows."""
    return pd.DataFrame({"key": pd.Series(dtype=str), "ar": pd.Series(dtype=str),
                         "timestamp": pd.Series(dtype="datetime64[ns]"), "score": pd.Series(dtype=float),
                         "source_run": pd.Series(dtype=str)})


def write_table(table: pd.DataFrame, path: Path) -> Path:
    """Write a table as parquet (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _canonical(table[list(COLUMNS)]).to_parquet(path, index=False)
    return path


def read_table(path: Path) -> pd.DataFrame:
    """Read a table :func:`write_table` wrote, checking its columns."""
    table = pd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} is not a hard-negative table: columns {missing} are missing (expected {list(COLUMNS)})")
    return _canonical(table[list(COLUMNS)])


def hard_flags(keys: Iterable[str], labels: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """Per item: True when its key is in ``table`` and it is a negative in this data set.

    A key the table holds but the data labels positive (another ``min_flare_class``) is not
    a hard negative here, so it is never flagged.
    """
    wanted = set(table["key"])
    return np.fromiter((k in wanted for k in keys), dtype=bool) & (np.asarray(labels) == 0)


def _canonical(table: pd.DataFrame) -> pd.DataFrame:
    table = table.astype({"key": str, "ar": str, "source_run": str, "score": float})
    table = table.assign(timestamp=pd.to_datetime(table["timestamp"]))
    return table.sort_values(["score", "key"], ascending=[False, True], kind="stable").reset_index(drop=True)
