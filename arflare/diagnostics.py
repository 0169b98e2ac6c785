"""After training: strata, failure grids and calibration of a finished run's val and test predictions.

``diagnose(...)`` is called by the run's reporting step with the predictions of val and test and
the threshold chosen on validation. It writes ``strata/{split}.parquet`` and ``strata/{split}.png``,
``failures/{split}.parquet`` and ``failures/{split}.png``, and returns the metrics to log
(``{split}/tpr_M``, ``{split}/fpr_hard_ar``, ``{split}/ece``, ...: the ``diagnostics`` rows of the
metric table), with ``{split}/tpr_M_lo|_hi`` the AR-bootstrap interval of each strata rate. The threshold is never re-chosen here: test strata use val's threshold, like every
other test number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from arflare import failures as failure_analysis
from arflare import record
from arflare import strata as stratified
from arflare._strata_plot import plot_strata
from arflare.calibration import correct_probability
from arflare.metrics.table import METRICS

TOP_K = 8  # errors per kind in the failure grids: one row each, readable at paper size


@dataclass(frozen=True)
class Diagnostics:
    """What :func:`diagnose` produced.

    Attributes:
        metrics: ``{split}/{name}`` values to log (headline strata rates and ``ece``).
        files: ``(local path, artifact folder)`` of every file written.
    """

    metrics: dict[str, float]
    files: tuple[tuple[Path, str], ...]


def ground_truth_hard_negatives(index) -> pd.Series | None:
    """Per key, whether it belongs to a hard-negative AR, when the data set says so (the synthetic
    set's ``ground_truth.parquet`` beside its shard root); None for data that does not."""
    path = Path(index.root).parent / "ground_truth.parquet"
    if not path.is_file():
        return None
    truth = pd.read_parquet(path, columns=["key", "hard_negative"])
    return truth.set_index("key")["hard_negative"].astype(bool)


def diagnose(predictions: Mapping[str, pd.DataFrame], *, threshold: float, index, out_dir: Path,
             run_name: str, keep_rate: float | None = None, unsigned_flux: pd.Series | None = None,
             k: int = TOP_K, figures: bool = True) -> Diagnostics:
    """Stratified evaluation, failure analysis and ECE of each split in ``predictions``.

    Args:
        predictions: split -> key, ar, timestamp, label, reg_label, score.
        threshold: the threshold chosen on validation.
        index: the indexed shard set (frames for the failure grids; ground truth beside it).
        out_dir: the run's local output folder.
        run_name: named in the figure titles.
        keep_rate: negatives' keep rate of a rebalanced training set; ECE uses probabilities
            corrected to the true base rate (:mod:`arflare.calibration`), as the reliability figure does.
        unsigned_flux: total unsigned flux per key, for the AR-size strata; None leaves them out.
        k: errors per kind in the failure grids and tables.
        figures: write the PNGs (``eval.plots``); the tables are always written.
    """
    hard = ground_truth_hard_negatives(index)
    metrics: dict[str, float] = {}
    files: list[tuple[Path, str]] = []
    for split, frame in predictions.items():
        frame = frame.reset_index(drop=True)
        table = stratified.stratify(
            frame, threshold,
            unsigned_flux=None if unsigned_flux is None else frame["key"].map(unsigned_flux),
            hard_negative=None if hard is None else frame["key"].map(hard).fillna(False))
        path = out_dir / record.STRATA / f"{split}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(path, index=False)
        files.append((path, record.STRATA))
        if figures:
            files.append((plot_strata(table, out_dir / record.STRATA / f"{split}.png",
                                      title=f"{run_name + ' - ' if run_name else ''}{split}: {int(frame['label'].sum())} flares / "
                                            f"{int((frame['label'] == 0).sum())} non-flares, threshold {threshold:.3f} "
                                            f"chosen on val"), record.STRATA))
        probabilities = correct_probability(frame["score"].to_numpy(float), keep_rate)
        ece = stratified.expected_calibration_error(frame["label"].to_numpy(int), probabilities)
        for metric in METRICS.rows():  # the metric table names what is logged; NaN (no such stratum) is not
            value = metric.fn(table, ece) if metric.needs == "diagnostics" else float("nan")
            if value == value:
                metrics[f"{split}/{metric.name}"] = float(value)
        for end in ("_lo", "_hi"):  # AR-bootstrap interval of each headline rate, as test/tss_lo|_hi
            metrics.update({f"{split}/{name}{end}": value for name, value in stratified.headline(table, suffix=end).items()})
        errors = failure_analysis.top_failures(frame, threshold, k=k)
        path = out_dir / record.FAILURES / f"{split}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        errors.to_parquet(path, index=False)
        files.append((path, record.FAILURES))
        if figures:
            files.append((failure_analysis.write_failure_grid(errors, index, out_dir / record.FAILURES / f"{split}.png",
                                                              split=split, threshold=threshold, k=k), record.FAILURES))
    return Diagnostics(metrics=metrics, files=tuple(files))


def scan_flux(index, cache_dir: Path | None = None) -> pd.Series:
    """Total unsigned flux per key (the AR-size strata), from the gates' decoding pass (cached per data
    fingerprint; ``arflare run`` has made it before training, other callers pay one parallel pass once)."""
    from arflare.gates.scan import scan

    return scan(index, cache_dir=cache_dir, progress=False).set_index("key")["unsigned_flux"]
