"""Scoring a model, and the one place where a run's final results are reported.

``evaluate`` is pure: the best checkpoint's weights in, scores out, nothing logged.
``report`` is the single reporting step: metrics, ``metrics.json``, predictions, plots, strata
and failure grids all leave the run from there (intervals and new figures are added there too). Science rules
kept here: the threshold comes from validation only and is applied unchanged to test, which
is scored exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from arflare import metrics as skill
from arflare import record
from arflare.data.modes import model_input_keys
from arflare.losses import positive_probability
from arflare.spec import RunSpec

log = logging.getLogger("arflare.trainer")


class Reporter(Protocol):
    """Where a run's numbers and files go (a tracked MLflow run, a sweep trial, a test double)."""

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None: ...
    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None: ...
    def log_dict(self, obj: object, artifact_file: str) -> None: ...


@dataclass
class SplitScores:
    """A model's scores on one split."""

    labels: np.ndarray
    scores: np.ndarray
    loss: float
    indices: np.ndarray  # dataset positions: a corrupt item is replaced by its neighbour, so never assume order


@dataclass
class Evaluation:
    """The best checkpoint scored on val and test with val's threshold (what ``report`` writes)."""

    splits: dict[str, SplitScores]
    metrics: dict[str, float]  # best/val_<m> and test/<m>
    threshold: float
    threshold_meets_constraints: bool
    best_epoch: int
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)
    keep_rate: float | None = None  # odds factor of the training mix: calibration metrics, figures, intervals


@torch.no_grad()
def predict(model: torch.nn.Module, loader, loss_fn: torch.nn.Module, device: torch.device) -> SplitScores:
    """Score every sample of ``loader`` in order (fp32 logits, even under CUDA autocast)."""
    model.eval()
    labels, scores, indices, total = [], [], [], 0.0
    for batch in loader:
        inputs, target = to_device(batch, device)
        logits = model(inputs)  # fp32 even on CUDA: bf16 logits would tie scores that rare-event metrics separate
        total += loss_fn(logits.float(), target).item() * len(target)
        labels.append(target.cpu().numpy())
        scores.append(positive_probability(logits.float()).cpu().numpy())
        indices.append(np.asarray(batch["index"]))
    labels_arr = np.concatenate(labels).astype(int)
    return SplitScores(labels=labels_arr, scores=np.concatenate(scores).astype(float),
                       loss=total / max(len(labels_arr), 1), indices=np.concatenate(indices).astype(int))


def to_device(batch: Mapping, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The model inputs and the float target of a batch, on ``device``."""
    keys = model_input_keys()
    inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k in keys}
    return inputs, batch["label"].to(device, non_blocking=True).float()


def choose_threshold(spec: RunSpec, split: SplitScores) -> tuple[float, bool]:
    """The validation threshold, and whether it meets eval.min_recall / min_precision."""
    try:
        return skill.choose_threshold(split.labels, split.scores, metric=spec.eval.threshold_metric,
                                      min_recall=spec.eval.min_recall, min_precision=spec.eval.min_precision), True
    except ValueError as exc:  # constraint cannot be met on this epoch's scores: fall back, say so
        log.warning("%s; using the unconstrained %s-optimal threshold this epoch", exc, spec.eval.threshold_metric)
        return skill.choose_threshold(split.labels, split.scores, metric=spec.eval.threshold_metric), False


def split_metrics(split: SplitScores, threshold: float, keep_rate: float | None = None) -> dict[str, float]:
    """Loss plus every skill score of one split at ``threshold``.

    ``keep_rate`` (the training mix's odds factor, ``Components.keep_rate``) corrects the
    probabilities that ``brier`` and ``bss`` score; ``brier_raw``/``bss_raw`` keep the raw ones.
    """
    return {"loss": split.loss, **skill.evaluate(split.labels, split.scores, threshold=threshold, keep_rate=keep_rate)}


def evaluate(model: torch.nn.Module, loaders: Mapping, loss_fn: torch.nn.Module, device: torch.device, *,
             threshold: float, threshold_meets_constraints: bool, best_epoch: int, epochs_run: int,
             history: dict[str, list[float]], keep_rate: float | None = None,
             gather: Callable[[SplitScores], SplitScores] | None = None) -> Evaluation:
    """Score ``model`` (already holding the best weights) on val, then test once with val's ``threshold``.

    ``gather`` merges the parts of a split that DDP ranks scored (see :mod:`arflare.distributed`).
    """
    gather = gather or (lambda part: part)
    splits = {split: gather(predict(model, loaders[split], loss_fn, device)) for split in ("val", "test")}
    return Evaluation(splits=splits, metrics=final_metrics(splits, threshold, keep_rate), threshold=threshold,
                      threshold_meets_constraints=threshold_meets_constraints, best_epoch=best_epoch,
                      epochs_run=epochs_run, history=history, keep_rate=keep_rate)


def final_metrics(splits: Mapping[str, SplitScores], threshold: float, keep_rate: float | None) -> dict[str, float]:
    """``best/val_<m>`` and ``test/<m>`` of the best checkpoint, at val's threshold."""
    metrics = {record.best_val_metric(k): v for k, v in split_metrics(splits["val"], threshold, keep_rate).items()}
    metrics.update({f"test/{k}": v for k, v in split_metrics(splits["test"], threshold, keep_rate).items()})
    return metrics


def report(evaluation: Evaluation, *, spec: RunSpec, datasets: Mapping, index, reporter: Reporter, out_dir: Path,
           run_name: str = "") -> None:
    """Send a finished run's results to ``reporter``: the one place final results are written.

    Metrics ``best/val_<m>`` and ``test/<m>`` at step = best epoch (the per-epoch ``val/<m>``
    histories are left alone; ``brier``/``bss`` on probabilities corrected with ``keep_rate``,
    ``brier_raw``/``bss_raw`` on the model's own), ``best_epoch``, ``threshold`` and ``keep_rate``
    (when training was rebalanced), then ``predictions/{val,test}.parquet``, the strata, failure
    tables and ``ece`` (corrected probabilities) of val and test at the same threshold
    (:mod:`arflare.diagnostics`; ``best/val_tpr_M``, ``test/tpr_M``, ...), ``metrics.json``, the
    AR-bootstrap intervals and, with ``eval.plots``, the figures (captioned with ``run_name``).
    ``index`` is the indexed data (frames of the failure grids, flux of the size strata, ground
    truth beside it).
    """
    import pandas as pd

    from arflare.bootstrap import report_intervals
    from arflare.diagnostics import diagnose, scan_flux
    from arflare.reports import write_plots, write_predictions

    ev = evaluation
    reporter.log_metrics(ev.metrics, step=ev.best_epoch)
    summary = {"best_epoch": ev.best_epoch, "threshold": ev.threshold}
    if ev.keep_rate is not None:
        summary[record.METRIC_KEEP_RATE] = ev.keep_rate
    reporter.log_metrics(summary)
    files = {}
    for split, scores in ev.splits.items():
        files[split] = write_predictions(datasets[split], scores.indices, scores.labels, scores.scores,
                                         out_dir / record.PREDICTIONS / f"{split}.parquet")
        reporter.log_artifact(files[split], record.PREDICTIONS)
    found = diagnose({split: pd.read_parquet(path) for split, path in files.items()}, threshold=ev.threshold,
                     index=index, out_dir=out_dir, run_name=run_name, keep_rate=ev.keep_rate,
                     unsigned_flux=scan_flux(index, spec.data.cache_dir), figures=spec.eval.plots)
    # logged as best/val_<m> and test/<m>, like every other score of the best checkpoint
    strata = {record.best_val_metric(k.removeprefix("val/")) if k.startswith("val/") else k: v
              for k, v in found.metrics.items()}
    reporter.log_metrics(strata, step=ev.best_epoch)
    ev.metrics.update(strata)
    for path, folder in found.files:
        reporter.log_artifact(path, folder)
    reporter.log_dict({"metrics": ev.metrics, "threshold": ev.threshold, "keep_rate": ev.keep_rate,
                       "threshold_meets_constraints": ev.threshold_meets_constraints, "best_epoch": ev.best_epoch,
                       "epochs_run": ev.epochs_run, "history": ev.history}, record.ARTIFACT_METRICS)
    # {split}/{m}_lo|_hi and bootstrap.json; BSS resampled on the same corrected probabilities
    report_intervals(reporter, files, threshold=ev.threshold, keep_rate=ev.keep_rate)
    if spec.eval.plots:
        val, test = ev.splits["val"], ev.splits["test"]
        for path in write_plots(out_dir / record.PLOTS, run_name=run_name, history=ev.history,
                                best_epoch=ev.best_epoch, monitor=spec.eval.monitor, val=(val.labels, val.scores),
                                test=(test.labels, test.scores), threshold=ev.threshold,
                                min_flare_class=spec.data.min_flare_class, keep_rate=ev.keep_rate):
            reporter.log_artifact(path, record.PLOTS)
