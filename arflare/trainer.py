"""Train one run: ``train(spec, index=..., reporter=..., out_dir=...) -> TrainResult``.

The loop is one readable function plus small helpers. It never touches MLflow: it reports
through ``reporter`` (``log_metrics``, ``log_artifact``, ``log_dict``), backed by a tracked
run. Policy lives in small objects (``checkpoints.BestCheckpoint``) and hooks
(``on_validation``, where a sweep prunes), never in the reporter. Final scoring and
reporting are ``evaluation.evaluate`` and ``evaluation.report``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from arflare import record
from arflare.builders import Components, build_components
from arflare.checkpoints import (
    BEST_FILE,
    LAST_FILE,
    BestCheckpoint,
    CheckpointOptions,
    TrainState,
    atomic_save,
    load,
    restore_rng,
    rng_state,
    save_weights,
)
from arflare.data.index import DataIndex
from arflare.distributed import Ranks
from arflare.evaluation import Reporter, choose_threshold, evaluate, predict, report, split_metrics, to_device
from arflare.metrics import monitor_sign
from arflare.spec import RunSpec

log = logging.getLogger("arflare.trainer")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops as FAILED."""


ValidationHook = Callable[[int, Mapping[str, float]], None]  # (epoch, that epoch's metrics); may raise to stop


@dataclass
class TrainResult:
    """What a finished run produced; ``metrics`` holds ``best/val_<m>`` and ``test/<m>``."""

    metrics: dict[str, float]
    best_epoch: int
    epochs_run: int
    threshold: float
    history: dict[str, list[float]] = field(default_factory=dict)
    resumed_from: int = 0  # the epoch a resumed run continued after (0: trained from the start)


def train(spec: RunSpec, *, index: DataIndex, reporter: Reporter, out_dir: Path, progress: bool = True,
          resume: bool = False, on_validation: ValidationHook | None = None,
          checkpoints: CheckpointOptions = CheckpointOptions(), run_name: str = "", hard=None,
          ranks: Ranks = Ranks()) -> TrainResult:
    """Train ``spec`` on ``index``, report per-epoch metrics, then test once with the best checkpoint.

    After every epoch ``out_dir/checkpoints/last.pt`` holds the full training state (model,
    optimizer, scheduler, counters, every RNG, the best-checkpoint tracker), written before
    the epoch's metrics are reported, so a run killed at any moment continues bit-for-bit.

    Args:
        spec: The resolved run spec.
        index: The sample index of ``spec.data.root`` (built by the caller, so bad data fails
            before anything is tracked).
        reporter: Receives metrics (step = epoch) and artifacts.
        out_dir: The run's local folder (checkpoints, plots, predictions before they are reported);
            keep it across a crash to resume.
        progress: Show per-epoch progress bars.
        resume: Continue from ``out_dir/checkpoints/last.pt`` when it exists.
        on_validation: Called after each epoch's metrics are reported (a sweep's pruner); an
            exception it raises ends training.
        checkpoints: How checkpoints are logged.
        run_name: Named in the figures' captions (``exp5_atto_mixup/seed=3``).
        hard: The resolved hard negatives (:class:`arflare.lineage.HardNegativeSet`): over-sampled in
            training, and ``fpr_hard`` reported beside ``fpr`` for val (each epoch) and test.
        ranks: This process's DDP rank (see :mod:`arflare.distributed`). Every rank trains on its
            slice; only rank 0 writes checkpoints and reports, the others get a silent ``reporter``.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the best checkpoint so far is still reported).
    """
    if spec.model.kind != "cnn":  # physics / hybrid: boosted trees on features, fast enough to refit on resume
        from arflare.tabular import fit_tabular

        return fit_tabular(spec, index=index, reporter=reporter, out_dir=Path(out_dir), progress=progress,
                           on_validation=on_validation, run_name=run_name)
    ckpt_dir = Path(out_dir) / record.CHECKPOINTS
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(spec.train.seed)  # the same on every rank: rank 0's saved RNG state then resumes them all
    device = pick_device(spec.train.device, local_rank=ranks.local_rank)
    parts = build_components(spec, index, device, hard_table=None if hard is None else hard.table, ranks=ranks)
    rule = spec.train.early_stopping
    best = BestCheckpoint(min_delta=rule.min_delta, patience=rule.patience, min_epochs=rule.min_epochs)
    state = TrainState()
    saved = load(ckpt_dir / LAST_FILE) if resume and ranks.is_main and (ckpt_dir / LAST_FILE).is_file() else None
    saved = ranks.share(saved)  # loaded on the CPU: the other ranks unpickle it
    if saved is not None:
        _restore(saved, parts, best, state)
        _report_missing_epochs(reporter, state.history)
        log.info("resuming after epoch %d of %d (best so far: epoch %d)", state.epoch, spec.train.epochs, best.best_epoch)
    resumed_from = state.epoch
    step_model = _step_model(spec, parts.model, device, ranks)
    log.info("training %s on %s%s: %d train / %d val / %d test samples, %d steps per epoch", spec.model.backbone, device,
             f" x {ranks.world_size} processes" if ranks.active else "", len(parts.datasets["train"]),
             len(parts.datasets["val"]), len(parts.datasets["test"]), parts.steps_per_epoch)
    spec_json = spec.model_dump(mode="json")
    try:
        while not state.stopped and state.epoch < spec.train.epochs:
            epoch = state.epoch + 1
            metrics = _run_epoch(spec, parts, step_model, best, state, epoch, device, ckpt_dir, spec_json,
                                 progress, hard, ranks)
            if ranks.is_main:
                _save_state(ckpt_dir / LAST_FILE, parts, best, state)  # before reporting: see _report_missing_epochs
            reporter.log_metrics(metrics, step=epoch)
            if on_validation is not None:
                on_validation(epoch, metrics)
            if state.stopped:
                log.info("early stopping after epoch %d: no %s improvement for %d epochs", epoch, spec.eval.monitor, best.stale)
        if ranks.is_main:
            parts.model.load_state_dict(load(ckpt_dir / BEST_FILE, device)["model"])
        ranks.sync_state(parts.model)
        evaluation = evaluate(parts.model, parts.loaders, parts.loss, device, threshold=best.threshold,
                              threshold_meets_constraints=best.constrained, best_epoch=best.best_epoch,
                              epochs_run=state.epoch, history=state.history, keep_rate=parts.keep_rate,
                              gather=ranks.gather_split)
        if hard is not None:
            evaluation.metrics.update(hard.final_metrics(parts.datasets, evaluation.splits, best.threshold))
        if ranks.is_main:
            report(evaluation, spec=spec, datasets=parts.datasets, index=index, reporter=reporter,
                   out_dir=Path(out_dir), run_name=run_name)
            _log_checkpoints(reporter, ckpt_dir, checkpoints, with_last=checkpoints.log_last)
    except BaseException:
        if ranks.is_main and (ckpt_dir / BEST_FILE).is_file():  # the best weights so far stay with a failed or killed run
            _log_checkpoints(reporter, ckpt_dir, checkpoints, with_last=False)
        raise
    return TrainResult(metrics=evaluation.metrics, best_epoch=best.best_epoch, epochs_run=state.epoch,
                       threshold=best.threshold, history=state.history, resumed_from=resumed_from)


def _run_epoch(spec, parts: Components, step_model, best: BestCheckpoint, state: TrainState, epoch: int, device,
               ckpt_dir: Path, spec_json: dict, progress: bool, hard=None, ranks: Ranks = Ranks()) -> dict[str, float]:
    """Train and validate one epoch, update the best checkpoint and ``state``; return the epoch's metrics.

    Every rank computes the same metrics, threshold and best epoch from the gathered validation
    scores, so they all stop together; rank 0 alone writes ``best.pt``.
    """
    started = time.perf_counter()
    parts.datasets["train"].set_epoch(epoch)
    parts.loaders["train"].sampler.set_epoch(epoch)
    train_loss, steps = _train_epoch(step_model, parts.loaders["train"], parts.loss, parts.mixup, parts.optimizer,
                                     parts.scheduler, device, epoch=epoch, max_steps=spec.train.max_steps_per_epoch,
                                     step0=state.updates, grad_clip=spec.train.grad_clip, progress=progress,
                                     ranks=ranks)
    ranks.sync_state(parts.model)  # BatchNorm statistics drift apart per rank: validate (and save) rank 0's
    val = ranks.gather_split(predict(parts.model, parts.loaders["val"], parts.loss, device))
    threshold, constrained = choose_threshold(spec, val)
    scores = split_metrics(val, threshold, parts.keep_rate)
    if hard is not None:
        scores.update(hard.split_metrics("val", parts.datasets["val"], val, threshold))
    metrics = {"train/loss": train_loss, "epoch_seconds": time.perf_counter() - started,
               **{f"val/{name}": value for name, value in scores.items()}}
    log.info("epoch %d: train/loss %.4f val/loss %.4f val/auc %.4f val/tss %.4f (%.1fs)", epoch, train_loss,
             val.loss, scores["auc"], scores["tss"], metrics["epoch_seconds"])
    monitored = monitor_sign(spec.eval.monitor) * scores[spec.eval.monitor]
    if best.update(epoch, monitored, threshold=threshold, constrained=constrained) and ranks.is_main:
        save_weights(ckpt_dir / BEST_FILE, parts.model, spec=spec_json, epoch=epoch, threshold=threshold)
    for name, value in metrics.items():
        state.history.setdefault(name, []).append(value)
    state.epoch, state.updates, state.stopped = epoch, state.updates + steps, best.should_stop(epoch)
    return metrics


def _save_state(path: Path, parts: Components, best: BestCheckpoint, state: TrainState) -> None:
    atomic_save({"model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
                 "scheduler": parts.scheduler.state_dict(), "best": best.state_dict(),
                 "state": {"epoch": state.epoch, "updates": state.updates, "stopped": state.stopped,
                           "history": state.history},
                 "rng": rng_state(parts.generators)}, path)


def _restore(saved: dict, parts: Components, best: BestCheckpoint, state: TrainState) -> None:
    parts.model.load_state_dict(saved["model"])
    parts.optimizer.load_state_dict(saved["optimizer"])
    parts.scheduler.load_state_dict(saved["scheduler"])
    best.load_state_dict(saved["best"])
    for key, value in saved["state"].items():
        setattr(state, key, value)
    restore_rng(saved["rng"], parts.generators)


def _report_missing_epochs(reporter: Reporter, history: dict[str, list[float]]) -> None:
    """Report saved epochs the store lacks (killed between saving last.pt and reporting), once each."""
    logged_steps = getattr(reporter, "logged_steps", None)
    if logged_steps is None:
        return
    logged = logged_steps("train/loss")
    for i in range(len(history.get("train/loss", []))):
        if i + 1 not in logged:
            reporter.log_metrics({name: values[i] for name, values in history.items()}, step=i + 1)


def _log_checkpoints(reporter: Reporter, ckpt_dir: Path, options: CheckpointOptions, *, with_last: bool) -> None:
    best_path = ckpt_dir / BEST_FILE
    if options.fp16_best:
        saved = load(best_path)
        half = ckpt_dir / "fp16" / BEST_FILE
        half.parent.mkdir(exist_ok=True)
        saved["model"] = {k: v.half() if v.is_floating_point() else v for k, v in saved["model"].items()}
        best_path = atomic_save(saved, half)
    reporter.log_artifact(best_path, record.CHECKPOINTS)
    if with_last and (ckpt_dir / LAST_FILE).is_file():
        reporter.log_artifact(ckpt_dir / LAST_FILE, record.CHECKPOINTS)


def _train_epoch(model, loader, loss_fn, mixup, optimizer, scheduler, device, *, epoch, max_steps, step0, grad_clip,
                 progress, ranks: Ranks = Ranks()) -> tuple[float, int]:
    """One pass over the (balanced) training set, or ``max_steps`` of it; returns mean loss and steps taken.

    Under DDP every rank sees every rank's loss before stepping: a NaN on one rank stops them all
    at the same step (and the mean loss is over all ranks' samples).
    """
    model.train()
    total, count, step = 0.0, 0, 0
    bar = tqdm(total=_epoch_steps(loader, max_steps), desc=f"epoch {epoch}", unit="step", leave=False, disable=not progress)
    for step, batch in enumerate(loader, start=1):
        inputs, target = to_device(batch, device)
        if device.type == "cuda" and "image" in inputs and inputs["image"].dim() == 4:  # channels_last model: match it
            inputs["image"] = inputs["image"].contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            inputs["image"], target = mixup(inputs["image"], target.long())
        with _autocast(device):
            loss = loss_fn(model(inputs), target)
        losses = ranks.losses(loss)
        if not all(np.isfinite(losses)):
            where = ", ".join(f"rank {r}" for r, value in enumerate(losses) if not np.isfinite(value))
            shown = f"{losses[0]}" if len(losses) == 1 else f"[{', '.join(f'{v:.4g}' for v in losses)}]"
            raise NonFiniteLossError(f"training loss is {shown} "
                                     f"{'' if len(losses) == 1 else f'(non-finite on {where}) '}at epoch {epoch}, "
                                     f"step {step}; lower train.lr, set train.grad_clip, or check the data for NaNs")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step_update(num_updates=step0 + step)
        total += sum(losses) * len(target)  # ranks' batches are the same size
        count += len(target) * len(losses)
        bar.update()
        bar.set_postfix(loss=f"{total / count:.4f}")
        if max_steps is not None and step >= max_steps:
            break
    bar.close()
    return total / max(count, 1), step


def _epoch_steps(loader, max_steps: int | None) -> int:
    return len(loader) if max_steps is None else min(len(loader), max_steps)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (the data order is seeded through the sampler)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str, *, local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for cuda without one is an error.

    On CUDA each DDP process on a node takes the device of its ``local_rank``.
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def _step_model(spec: RunSpec, model: torch.nn.Module, device: torch.device, ranks: Ranks) -> torch.nn.Module:
    """What training steps call: ``model`` in DDP when several ranks, compiled with ``train.compile``.

    ``model`` itself stays unwrapped: it holds the weights that checkpoints save and evaluation uses.
    """
    wrapped = ranks.wrap(model, device)
    return torch.compile(wrapped) if spec.train.compile else wrapped
