"""Benchmark: arflare's training step against a bare PyTorch loop, and the cost of tracking.

1. Throughput: the trainer's epoch function (autocast context, finite-loss check, gradient
   clipping, per-step scheduler, progress bar) against the plainest loop that trains the same
   timm model on the same in-memory tensors with the same optimiser. Reported as images/s and
   the ratio trainer / bare (1.0 = no overhead).
2. Tracking share: a full ``train()`` on synthetic data reporting into a real sqlite MLflow
   store; the time spent inside reporter calls (per-epoch metrics, then artifacts) as a share
   of the run's wall time.

    python scripts/bench_trainer.py [--backbone convnext_atto] [--size 64] [--batches 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _batches(n: int, batch: int, size: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(batch, 1, size, size, generator=gen),
             "label": (torch.rand(batch, generator=gen) < 0.3).float()} for _ in range(n)]


def bench_throughput(backbone: str, size: int, n_batches: int, batch: int) -> tuple[float, float]:
    """Images/s of the trainer's epoch function and of a bare loop, same model and tensors."""
    from arflare.builders import build_loss_from_spec, build_model_from_spec, build_optimizer
    from arflare.spec import RunSpec
    from arflare.trainer import _train_epoch

    spec = RunSpec.model_validate({"model": {"backbone": backbone}, "data": {"image_size": size},
                                   "train": {"batch_size": batch, "epochs": 1}})
    batches = _batches(n_batches, batch, size)

    def run_trainer() -> None:
        torch.manual_seed(0)
        model = build_model_from_spec(spec)
        optimizer, scheduler = build_optimizer(spec, model, steps_per_epoch=n_batches)
        _train_epoch(model, batches, build_loss_from_spec(spec), None, optimizer, scheduler, torch.device("cpu"),
                     epoch=1, max_steps=n_batches, step0=0, grad_clip=spec.train.grad_clip, progress=True)

    def run_bare() -> None:
        torch.manual_seed(0)
        model = build_model_from_spec(spec)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=spec.train.lr, weight_decay=spec.train.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for item in batches:
            loss = loss_fn(model(item)[:, 0], item["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    images = n_batches * batch
    timings = {}
    for name, fn in (("bare", run_bare), ("trainer", run_trainer), ("bare", run_bare), ("trainer", run_trainer)):
        started = time.perf_counter()
        fn()
        timings.setdefault(name, []).append(time.perf_counter() - started)
    return images / min(timings["trainer"]), images / min(timings["bare"])


class _TimedReporter:
    """Wraps a tracked run and accumulates the seconds spent in each kind of call."""

    def __init__(self, handle) -> None:
        self.handle, self.seconds = handle, {"metrics": 0.0, "artifacts": 0.0}

    def _timed(self, kind, fn, *args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[kind] += time.perf_counter() - started

    def log_metrics(self, metrics, *, step=None):
        return self._timed("metrics", self.handle.log_metrics, metrics, step=step)

    def log_artifact(self, path, artifact_path=None):
        return self._timed("artifacts", self.handle.log_artifact, path, artifact_path)

    def log_dict(self, obj, artifact_file):
        return self._timed("artifacts", self.handle.log_dict, obj, artifact_file)


def bench_tracking(backbone: str, size: int, epochs: int) -> tuple[float, dict[str, float]]:
    """Wall time of a full train() into a real sqlite store, and seconds inside reporter calls."""
    from arflare.commands import prepare_data
    from arflare.data.synth import generate
    from arflare.spec import RunSpec
    from arflare.trainer import train
    from registry.tracking import Tracker

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "synth", ars=8, size=size, hours=12, seed=0, progress=False)
        spec = RunSpec.model_validate({
            "data": {"root": str(tmp / "synth" / "magnetograms"), "image_size": size, "cache_dir": str(tmp / "cache")},
            "model": {"backbone": backbone}, "train": {"epochs": epochs, "batch_size": 32, "warmup_epochs": 0}})
        index = prepare_data(spec, progress=False)
        tracker = Tracker(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", experiment="bench",
                          artifact_location=(tmp / "artifacts").as_uri())
        with tracker.start_run(run_name="bench", tags={}) as handle:
            reporter = _TimedReporter(handle)
            started = time.perf_counter()
            train(spec, index=index, reporter=reporter, out_dir=tmp / "out", progress=False)
            total = time.perf_counter() - started
    return total, reporter.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="convnext_atto")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    trainer_ips, bare_ips = bench_throughput(args.backbone, args.size, args.batches, args.batch_size)
    total, seconds = bench_tracking(args.backbone, args.size, args.epochs)
    print(f"{args.backbone} at {args.size} px, batch {args.batch_size}, {torch.get_num_threads()} CPU threads")
    print(f"{'loop':<28}{'images/s':>10}{'ratio':>8}")
    print(f"{'bare PyTorch loop':<28}{bare_ips:>10.1f}{1.0:>8.2f}")
    print(f"{'arflare trainer epoch':<28}{trainer_ips:>10.1f}{trainer_ips / bare_ips:>8.2f}")
    print(f"\nfull train(), {args.epochs} epochs into a sqlite MLflow store: {total:.1f} s")
    print(f"  per-epoch metric logging: {seconds['metrics']:.3f} s ({100 * seconds['metrics'] / total:.2f} % of the run)")
    print(f"  artifacts (checkpoints, plots, predictions): {seconds['artifacts']:.3f} s ({100 * seconds['artifacts'] / total:.2f} %)")


if __name__ == "__main__":
    main()
