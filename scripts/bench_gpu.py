"""Benchmark on a GPU: images/s of arflare's training step against a bare loop, and GPU utilisation.

Both loops train the same timm model on the same batches, in the same run:

- bare: the plainest fast loop (bf16 autocast, channels_last model and inputs, AdamW, no checks);
- trainer: arflare's epoch function with the settings a CUDA run gets (bf16 autocast,
  channels_last, the per-step finite-loss check, gradient clipping, the per-step scheduler),
  optionally under ``torch.compile`` (``--compile``, as ``train.compile: true``).

Batches come from pinned host memory and are copied with ``non_blocking`` like the DataLoader's,
so the figures are the model-side rate: the data loader is measured by ``bench_scale.py``.
GPU utilisation is sampled from ``nvidia-smi`` every 0.2 s while each loop runs.

    python scripts/bench_gpu.py [--backbone convnext_tiny] [--size 224] [--batch-size 128] [--steps 50] [--compile]

Without a CUDA device it says so and exits with status 1: no GPU figure is ever made up.
``--device cpu`` runs the same code on the CPU (to check the script itself; no utilisation).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time

import torch


class UtilisationSampler:
    """Mean GPU utilisation (%) reported by ``nvidia-smi`` while the ``with`` block runs."""

    def __init__(self, device_index: int, every_s: float = 0.2) -> None:
        self.index, self.every_s, self.samples = device_index, every_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                self.samples.append(float(subprocess.run(query, capture_output=True, text=True, timeout=5).stdout))
            except (OSError, ValueError, subprocess.SubprocessError):  # no nvidia-smi: utilisation stays unknown
                return
            self._stop.wait(self.every_s)

    def __enter__(self) -> UtilisationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def _batches(n: int, batch: int, size: int, *, pin: bool) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        item = {"image": torch.randn(batch, 1, size, size, generator=gen),
                "label": (torch.rand(batch, generator=gen) < 0.3).float()}
        out.append({k: v.pin_memory() for k, v in item.items()} if pin else item)
    return out


def _spec(backbone: str, size: int, batch: int, compile_: bool):
    from arflare.spec import RunSpec

    return RunSpec.model_validate({"model": {"backbone": backbone}, "data": {"image_size": size},
                                   "train": {"batch_size": batch, "epochs": 1, "compile": compile_}})


def run_trainer(spec, batches, device: torch.device) -> None:
    """arflare's epoch function, with the model placed and wrapped as ``train()`` does on this device."""
    from arflare.builders import build_loss_from_spec, build_model_from_spec, build_optimizer
    from arflare.distributed import Ranks
    from arflare.trainer import _step_model, _train_epoch

    torch.manual_seed(0)
    model = build_model_from_spec(spec).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(spec, model, steps_per_epoch=len(batches))
    _train_epoch(_step_model(spec, model, device, Ranks()), batches, build_loss_from_spec(spec).to(device), None,
                 optimizer, scheduler, device, epoch=1, max_steps=len(batches), step0=0, grad_clip=spec.train.grad_clip,
                 progress=False)
    _sync(device)


def run_bare(spec, batches, device: torch.device) -> None:
    """The plainest fast loop on the same model and batches."""
    from arflare.builders import build_model_from_spec

    torch.manual_seed(0)
    model = build_model_from_spec(spec).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.train.lr, weight_decay=spec.train.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for item in batches:
        image = item["image"].to(device, non_blocking=True)
        if cuda:
            image = image.contiguous(memory_format=torch.channels_last)
        label = item["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(model({"image": image})[:, 0], label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, spec, batches, device: torch.device, *, warmup: list) -> tuple[float, float | None]:
    """Images/s of ``fn`` over ``batches`` (after a warm-up pass over ``warmup``) and mean utilisation."""
    fn(spec, warmup, device)  # cuDNN autotuning, allocator growth, the compile
    images = sum(len(b["label"]) for b in batches)
    with UtilisationSampler(device.index or 0) if device.type == "cuda" else _NoSampler() as util:
        started = time.perf_counter()
        fn(spec, batches, device)
        elapsed = time.perf_counter() - started
    return images / elapsed, util.mean


class _NoSampler:
    mean = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="convnext_tiny")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per loop (after 5 warm-up steps)")
    parser.add_argument("--compile", action="store_true", help="also time the trainer with train.compile: true")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to check the script itself")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU is present on this machine (torch.cuda.is_available() is False); "
              "nothing was measured. Run it on a GPU machine; the README's GPU figures stay unmeasured until then.",
              file=sys.stderr)
        return 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    pin = device.type == "cuda"
    batches = _batches(args.steps, args.batch_size, args.size, pin=pin)
    warmup = batches[:5]
    rows = [("bare loop (bf16, channels_last)" if pin else "bare loop", run_bare, _spec(args.backbone, args.size, args.batch_size, False)),
            ("arflare trainer", run_trainer, _spec(args.backbone, args.size, args.batch_size, False))]
    if args.compile:
        rows.append(("arflare trainer, train.compile", run_trainer, _spec(args.backbone, args.size, args.batch_size, True)))
    print(f"{name}, torch {torch.__version__}: {args.backbone} at {args.size} px, batch {args.batch_size}, "
          f"{args.steps} timed steps per loop")
    print(f"{'loop':<34}{'images/s':>10}{'x bare':>8}{'GPU util %':>12}")
    bare_rate = None
    for label, fn, spec in rows:
        rate, util = measure(fn, spec, batches, device, warmup=warmup)
        bare_rate = bare_rate or rate
        print(f"{label:<34}{rate:>10.1f}{rate / bare_rate:>8.2f}{'n/a' if util is None else f'{util:.0f}':>12}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
