"""Benchmark: arflare's training step against a bare PyTorch loop, and the cost of tracking.

1. Throughput: the trainer's epoch function (autocast context, finite-loss check, gradient
   clipping, per-step scheduler, progress bar) against the plainest loop that trains the same
   timm model on the same in-memory tensors with the same optimiser. Reported as images/s and
   the ratio trainer / bare (1.0 = no overhead).
2. Checkpoint share: the per-epoch full-state ``last.pt`` (model, AdamW moments, scheduler,
   counters, RNG states) written exactly as the trainer writes it, against the time of one
   epoch at the demo settings (ConvNeXt-Tiny, 64 px, batch 32, the default synthetic
   training set), both measured in this run. The epoch time is the measured time per step
   times the demo's steps per epoch, so the script stays minutes long.
3. Tracking share: a full ``train()`` on synthetic data reporting into a real sqlite MLflow
   store; the time spent inside reporter calls (per-epoch metrics, then artifacts) as a share
   of the run's wall time.

    python scripts/bench_trainer.py [--backbone convnext_atto] [--size 64] [--batches 20] [--demo-steps 262]
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


def bench_checkpoint(backbone: str, size: int, batch: int, n_batches: int, demo_steps: int) -> dict[str, float]:
    """Seconds to write the full-state last.pt and the weights-only best.pt, against a demo epoch."""
    from arflare.builders import Components, build_loss_from_spec, build_model_from_spec, build_optimizer
    from arflare.checkpoints import BestCheckpoint, TrainState, save_weights
    from arflare.spec import RunSpec
    from arflare.trainer import _save_state, _train_epoch

    spec = RunSpec.model_validate({"model": {"backbone": backbone}, "data": {"image_size": size},
                                   "train": {"batch_size": batch, "epochs": 6}})
    torch.manual_seed(0)
    model = build_model_from_spec(spec)
    optimizer, scheduler = build_optimizer(spec, model, steps_per_epoch=demo_steps)
    batches = _batches(n_batches, batch, size)
    loss = build_loss_from_spec(spec)
    _train_epoch(model, batches[:1], loss, None, optimizer, scheduler, torch.device("cpu"), epoch=1, max_steps=1,
                 step0=0, grad_clip=spec.train.grad_clip, progress=False)  # warm-up; fills the AdamW moments
    started = time.perf_counter()
    _train_epoch(model, batches, loss, None, optimizer, scheduler, torch.device("cpu"), epoch=1, max_steps=n_batches,
                 step0=1, grad_clip=spec.train.grad_clip, progress=False)
    step_s = (time.perf_counter() - started) / n_batches
    parts = Components(model=model, datasets={}, loaders={}, generators={"train": torch.Generator().manual_seed(0)},
                       loss=loss, optimizer=optimizer, scheduler=scheduler, mixup=None, steps_per_epoch=demo_steps)
    state = TrainState(epoch=1, updates=n_batches + 1, history={"train/loss": [0.5]})
    with tempfile.TemporaryDirectory() as tmp:
        saves = []
        for _ in range(3):
            started = time.perf_counter()
            _save_state(Path(tmp) / "last.pt", parts, BestCheckpoint(), state)
            saves.append(time.perf_counter() - started)
        started = time.perf_counter()
        save_weights(Path(tmp) / "best.pt", model, spec={}, epoch=1, threshold=0.5)
        best_s = time.perf_counter() - started
        sizes = {name: (Path(tmp) / name).stat().st_size / 2**20 for name in ("last.pt", "best.pt")}
        save_weights(Path(tmp) / "best16.pt", model, spec={}, epoch=1, threshold=0.5, fp16=True)
        sizes["best.pt fp16"] = (Path(tmp) / "best16.pt").stat().st_size / 2**20
    return {"step_s": step_s, "epoch_s": step_s * demo_steps, "last_s": min(saves), "best_s": best_s, **sizes}


def demo_steps(name: str = "exp2_basic_aug", profile: str = "demo") -> int:
    """Steps per epoch of ``arflare run NAME --profile demo`` (generates the synthetic set if missing)."""
    from arflare.builders import build_datasets, build_sampler
    from arflare.lifecycle import prepare_data
    from arflare.spec import RunSpec
    from registry.loader import load_registry

    (run,) = load_registry(Path(__file__).parents[1] / "experiments.yaml", RunSpec).expand(name, profile=profile)
    sampler = build_sampler(run.spec, build_datasets(run.spec, prepare_data(run.spec, progress=False))["train"])
    sampler.set_epoch(1)
    return len(sampler) // run.spec.train.batch_size


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
    from arflare.lifecycle import prepare_data
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
    parser.add_argument("--demo-backbone", default="convnext_tiny")
    parser.add_argument("--demo-steps", type=int,
                        help="steps of a demo epoch (default: counted from exp2_basic_aug --profile demo's data)")
    args = parser.parse_args()
    steps = args.demo_steps or demo_steps()
    ckpt = bench_checkpoint(args.demo_backbone, args.size, args.batch_size, 6, steps)
    print(f"demo settings ({args.demo_backbone}, {args.size} px, batch {args.batch_size}): "
          f"{ckpt['step_s']:.3f} s per step x {steps} steps = {ckpt['epoch_s']:.1f} s per epoch")
    print(f"  full-state last.pt ({ckpt['last.pt']:.0f} MiB): {ckpt['last_s']:.3f} s = "
          f"{100 * ckpt['last_s'] / ckpt['epoch_s']:.2f} % of an epoch")
    print(f"  weights-only best.pt ({ckpt['best.pt']:.0f} MiB, fp16 {ckpt['best.pt fp16']:.0f} MiB): "
          f"{ckpt['best_s']:.3f} s when an epoch improves")
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
