"""Train and evaluate one run: ``train(spec, index=..., reporter=..., out_dir=...) -> TrainResult``.

The loop is one readable function plus small helpers. It never touches MLflow: it reports
through ``reporter`` (``log_metrics``, ``log_artifact``, ``log_dict``), which the CLI backs
with a tracked run and a sweep wraps to report to Optuna. Science rules kept here:
the decision threshold is chosen on validation only and applied unchanged to test; test is
evaluated exactly once, with the best checkpoint.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from arflare import metrics as skill
from arflare.builders import build_datasets, build_loss_from_spec, build_mixup_from_spec, build_model_from_spec, build_optimizer
from arflare.data.index import DataIndex
from arflare.losses import positive_probability
from arflare.spec import RunSpec

log = logging.getLogger("arflare.trainer")


class Reporter(Protocol):
    """Where a run's numbers and files go (a tracked MLflow run, a sweep trial, a test double)."""

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None: ...
    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None: ...
    def log_dict(self, obj: object, artifact_file: str) -> None: ...


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops as FAILED."""


@dataclass
class TrainResult:
    """What a finished run produced; ``metrics`` holds the final ``val/...`` and ``test/...`` values."""

    metrics: dict[str, float]
    best_epoch: int
    epochs_run: int
    threshold: float
    history: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class _Split:
    labels: np.ndarray
    scores: np.ndarray
    loss: float
    indices: np.ndarray  # dataset positions: a corrupt item is replaced by its neighbour, so never assume order


def train(spec: RunSpec, *, index: DataIndex, reporter: Reporter, out_dir: Path, progress: bool = True,
          run_name: str = "") -> TrainResult:
    """Train ``spec`` on ``index``, report per-epoch metrics, then test once with the best checkpoint.

    Args:
        spec: The resolved run spec.
        index: The sample index of ``spec.data.root`` (built by the caller, so bad data fails
            before anything is tracked).
        reporter: Receives metrics (step = epoch) and artifacts.
        out_dir: Scratch folder for checkpoints, plots and predictions before they are reported.
        progress: Show per-epoch progress bars.
        run_name: Named in the figures' captions (``exp5_atto_mixup/seed=3``).

    Raises:
        NonFiniteLossError: the loss became NaN/inf (checkpoints written so far are still reported).
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(spec.train.seed)
    device = pick_device(spec.train.device)
    datasets = build_datasets(spec, index)
    loaders = _make_loaders(spec, datasets, device)
    model = build_model_from_spec(spec).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    datasets["train"].set_epoch(1)
    loaders["train"].sampler.set_epoch(1)
    # Balanced epochs vary a little in length: the schedule is sized from epoch 1's draw and
    # stepped by a running update count, so it never skips or repeats a step.
    steps_per_epoch = _epoch_steps(loaders["train"], spec.train.max_steps_per_epoch)
    optimizer, scheduler = build_optimizer(spec, model, steps_per_epoch=steps_per_epoch)
    loss_fn = build_loss_from_spec(spec).to(device)
    mixup = build_mixup_from_spec(spec)
    log.info("training %s on %s: %d train / %d val / %d test samples, %d steps per epoch",
             spec.model.backbone, device, len(datasets["train"]), len(datasets["val"]), len(datasets["test"]), steps_per_epoch)

    history: dict[str, list[float]] = {}
    best_value, best_epoch, threshold, stale, updates = -math.inf, 0, 0.5, 0, 0
    constrained = True
    try:
        for epoch in range(1, spec.train.epochs + 1):
            started = time.perf_counter()
            datasets["train"].set_epoch(epoch)
            loaders["train"].sampler.set_epoch(epoch)
            train_loss, steps = _train_epoch(model, loaders["train"], loss_fn, mixup, optimizer, scheduler, device,
                                             epoch=epoch, max_steps=spec.train.max_steps_per_epoch, step0=updates,
                                             grad_clip=spec.train.grad_clip, progress=progress)
            updates += steps
            val = _predict(model, loaders["val"], loss_fn, device)
            epoch_threshold, epoch_constrained = _choose_threshold(spec, val)
            scores = {"loss": val.loss, **skill.evaluate(val.labels, val.scores, threshold=epoch_threshold)}
            epoch_metrics = {"train/loss": train_loss, "epoch_seconds": time.perf_counter() - started,
                             **{f"val/{name}": value for name, value in scores.items()}}
            for name, value in epoch_metrics.items():
                history.setdefault(name, []).append(value)
            reporter.log_metrics(epoch_metrics, step=epoch)
            monitored = -scores["loss"] if spec.eval.monitor == "loss" else scores[spec.eval.monitor]
            monitored = -math.inf if math.isnan(monitored) else monitored
            log.info("epoch %d: train/loss %.4f val/loss %.4f val/auc %.4f val/tss %.4f (%.1fs)", epoch, train_loss,
                     val.loss, scores["auc"], scores["tss"], epoch_metrics["epoch_seconds"])
            if best_epoch == 0 or monitored > best_value + spec.train.early_stopping.min_delta:
                best_value, best_epoch, threshold, stale = monitored, epoch, epoch_threshold, 0
                constrained = epoch_constrained
                _save_checkpoint(ckpt_dir / "best.pt", model, spec, epoch=epoch, threshold=threshold)
            else:
                stale += 1
            if _should_stop(spec, epoch, stale):
                log.info("early stopping after epoch %d: no %s improvement for %d epochs", epoch, spec.eval.monitor, stale)
                break
        _save_checkpoint(ckpt_dir / "last.pt", model, spec, epoch=epoch, threshold=epoch_threshold)
        result = _final_evaluation(spec, model, loaders, loss_fn, device, ckpt_dir / "best.pt", out_dir, reporter,
                                   history=history, best_epoch=best_epoch, epochs_run=epoch, constrained=constrained,
                                   run_name=run_name)
    finally:
        # Checkpoints written so far are reported even when the run fails (NaN loss, Ctrl-C).
        for path in sorted(ckpt_dir.glob("*.pt")):
            reporter.log_artifact(path, "checkpoints")
    return result


def _train_epoch(model, loader, loss_fn, mixup, optimizer, scheduler, device, *, epoch, max_steps, step0, grad_clip,
                 progress) -> tuple[float, int]:
    """One pass over the (balanced) training set, or ``max_steps`` of it; returns mean loss and steps taken."""
    model.train()
    total, count, step = 0.0, 0, 0
    bar = tqdm(total=_epoch_steps(loader, max_steps), desc=f"epoch {epoch}", unit="step", leave=False, disable=not progress)
    for step, batch in enumerate(loader, start=1):
        inputs, target = _to_device(batch, device)
        if mixup is not None:
            inputs["image"], target = mixup(inputs["image"], target.long())
        with _autocast(device):
            loss = loss_fn(model(inputs), target)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"training loss is {loss.item()} at epoch {epoch}, step {step}; "
                                     "lower train.lr, set train.grad_clip, or check the data for NaNs")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step_update(num_updates=step0 + step)
        total += loss.item() * len(target)
        count += len(target)
        bar.update()
        bar.set_postfix(loss=f"{total / count:.4f}")
        if max_steps is not None and step >= max_steps:
            break
    bar.close()
    return total / max(count, 1), step


def _epoch_steps(loader, max_steps: int | None) -> int:
    return len(loader) if max_steps is None else min(len(loader), max_steps)


@torch.no_grad()
def _predict(model, loader, loss_fn, device) -> _Split:
    model.eval()
    labels, scores, indices, total = [], [], [], 0.0
    for batch in loader:
        inputs, target = _to_device(batch, device)
        logits = model(inputs)  # fp32 even on CUDA: bf16 logits would tie scores that rare-event metrics separate
        total += loss_fn(logits.float(), target).item() * len(target)
        labels.append(target.cpu().numpy())
        scores.append(positive_probability(logits.float()).cpu().numpy())
        indices.append(np.asarray(batch["index"]))
    labels_arr = np.concatenate(labels).astype(int)
    return _Split(labels=labels_arr, scores=np.concatenate(scores).astype(float), loss=total / max(len(labels_arr), 1),
                  indices=np.concatenate(indices).astype(int))


def _final_evaluation(spec, model, loaders, loss_fn, device, best_path, out_dir, reporter, *, history, best_epoch, epochs_run,
                      constrained, run_name) -> TrainResult:
    """Reload the best checkpoint, re-score val, then test once with val's threshold."""
    checkpoint = torch.load(best_path, map_location=device, weights_only=False)
    model.load_state_dict(checkpoint["model"])
    threshold = float(checkpoint["threshold"])
    final: dict[str, float] = {}
    splits = {}
    for split in ("val", "test"):
        result = _predict(model, loaders[split], loss_fn, device)
        splits[split] = result
        values = {"loss": result.loss, **skill.evaluate(result.labels, result.scores, threshold=threshold)}
        final.update({f"{split}/{name}": value for name, value in values.items()})
    final["best_epoch"] = best_epoch
    # The last point of each val/ curve is the best checkpoint's score, so a run's latest val/
    # value (what `arflare compare --split val` ranks) belongs to the model that was tested.
    reporter.log_metrics({k: v for k, v in final.items() if k.startswith("val/")}, step=epochs_run)
    reporter.log_metrics({k: v for k, v in final.items() if k.startswith("test/")}, step=best_epoch)
    reporter.log_metrics({"best_epoch": best_epoch, "threshold": threshold})
    reporter.log_dict({"metrics": final, "threshold": threshold, "threshold_meets_constraints": constrained,
                       "best_epoch": best_epoch, "epochs_run": epochs_run, "history": history}, "metrics.json")
    from arflare.reports import write_predictions, write_plots

    for split, result in splits.items():
        path = write_predictions(loaders[split].dataset, result.indices, result.labels, result.scores,
                                 out_dir / "predictions" / f"{split}.parquet")
        reporter.log_artifact(path, "predictions")
    if spec.eval.plots:
        from arflare.calibration import negative_keep_rate

        train_labels = np.asarray(loaders["train"].dataset.labels)
        keep_rate = negative_keep_rate(spec.data.balance, spec.data.keep_negative_prob,
                                       n_pos=int(train_labels.sum()), n_neg=int((train_labels == 0).sum()))
        for path in write_plots(out_dir / "plots", run_name=run_name, history=history, best_epoch=best_epoch,
                                monitor=spec.eval.monitor, val=(splits["val"].labels, splits["val"].scores),
                                test=(splits["test"].labels, splits["test"].scores), threshold=threshold,
                                min_flare_class=spec.data.min_flare_class, keep_rate=keep_rate):
            reporter.log_artifact(path, "plots")
    return TrainResult(metrics=final, best_epoch=best_epoch, epochs_run=epochs_run, threshold=threshold, history=history)


def _choose_threshold(spec: RunSpec, split: _Split) -> tuple[float, bool]:
    """The validation threshold, and whether it meets eval.min_recall / min_precision (recorded in metrics.json)."""
    try:
        return skill.choose_threshold(split.labels, split.scores, metric=spec.eval.threshold_metric,
                                      min_recall=spec.eval.min_recall, min_precision=spec.eval.min_precision), True
    except ValueError as exc:  # constraint cannot be met on this epoch's scores: fall back, say so
        log.warning("%s; using the unconstrained %s-optimal threshold this epoch", exc, spec.eval.threshold_metric)
        return skill.choose_threshold(split.labels, split.scores, metric=spec.eval.threshold_metric), False


def _should_stop(spec: RunSpec, epoch: int, stale: int) -> bool:
    rule = spec.train.early_stopping
    return rule.patience is not None and epoch >= rule.min_epochs and stale >= rule.patience


def _save_checkpoint(path: Path, model, spec: RunSpec, *, epoch: int, threshold: float) -> None:
    state = {"model": model.state_dict(), "epoch": epoch, "threshold": threshold, "spec": spec.model_dump(mode="json")}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint under the real name


def _make_loaders(spec: RunSpec, datasets, device) -> dict[str, DataLoader]:
    from arflare.builders import build_sampler

    common = {"num_workers": spec.data.num_workers, "pin_memory": device.type == "cuda",
              "persistent_workers": spec.data.num_workers > 0}
    # Each loader draws its worker seeds from its own generator, not torch's global one, so the
    # dropout/drop-path masks (global RNG) are the same whatever data.num_workers is.
    def seeded() -> torch.Generator:
        return torch.Generator().manual_seed(spec.train.seed)

    sampler = build_sampler(spec, datasets["train"])
    loaders = {"train": DataLoader(datasets["train"], batch_size=spec.train.batch_size, sampler=sampler, generator=seeded(),
                                   drop_last=spec.train.mixup.enabled or len(sampler) > spec.train.batch_size, **common)}
    for split in ("val", "test"):
        loaders[split] = DataLoader(datasets[split], batch_size=spec.train.batch_size * 2, shuffle=False, generator=seeded(), **common)
    return loaders


def _to_device(batch: Mapping, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k in ("image", "flow")}
    return inputs, batch["label"].to(device, non_blocking=True).float()


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (the data order is seeded through the sampler)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for cuda without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
