"""Benchmark: wall time of one ``arflare sweep`` with 1 and with 2 worker processes.

Both runs train the same tiny sweep (synthetic data, ConvNeXt-Atto at 32 px, a few steps per
epoch, random sampler, no pruner) into their own fresh MLflow store and Optuna journal, through
the real CLI. Each worker gets an equal share of the CPU cores for torch's threads
(``OMP_NUM_THREADS`` = cores // workers, unless ``--threads`` says otherwise), so the
comparison is parallel trials against parallel kernels on the same cores. Process start-up
(imports, store connections) is part of what is measured.

    python scripts/bench_sweep.py [--trials 4] [--epochs 2] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_EXPERIMENTS = """\
project: bench_sweep
defaults:
  data: {{root: {root}, generate_if_missing: false, image_size: 32, cache_dir: {cache}}}
  model: {{backbone: convnext_atto}}
  train: {{epochs: {epochs}, batch_size: 16, max_steps_per_epoch: {steps}, warmup_epochs: 0}}
experiments:
  bench:
    description: a tiny sweep for timing worker processes (python scripts/bench_sweep.py)
    search:
      objective: val/tss
      direction: maximize
      n_trials: {trials}
      sampler: {{name: random, seed: 0}}
      params:
        model.drop_rate: {{type: float, low: 0.0, high: 0.5}}
        train.weight_decay: {{type: float, low: 1.0e-3, high: 0.3, log: true}}
"""


def time_sweep(folder: Path, *, workers: int, threads: int) -> float:
    """Seconds ``arflare sweep bench --workers K`` takes in its own store under ``folder``."""
    command = [sys.executable, "-m", "arflare.cli", "sweep", "bench", "--file", str(folder / "experiments.yaml"),
               "--workers", str(workers)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # spawned workers inherit it
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="training steps per epoch")
    parser.add_argument("--ars", type=int, default=8, help="synthetic active regions")
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: cores // workers)")
    args = parser.parse_args()
    from arflare.data.synth import generate

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tmp = Path(tmp)
        generate(tmp / "synth", ars=args.ars, size=32, hours=12, seed=0, progress=False)
        text = _EXPERIMENTS.format(root=tmp / "synth" / "magnetograms", cache=tmp / "cache", epochs=args.epochs,
                                   steps=args.steps, trials=args.trials)
        timings, threads = {}, {}
        for workers in (1, 2):
            folder = tmp / f"workers{workers}"  # own mlruns/ (store + journal) per measurement
            folder.mkdir()
            (folder / "experiments.yaml").write_text(text)
            threads[workers] = args.threads or max(1, (os.cpu_count() or 1) // workers)
            timings[workers] = time_sweep(folder, workers=workers, threads=threads[workers])
    print(f"{args.trials} trials x {args.epochs} epochs x {args.steps} steps, convnext_atto at 32 px, {os.cpu_count()} cores")
    print(f"{'workers':<10}{'threads':>8}{'wall s':>8}{'s/trial':>10}{'speed-up':>10}")
    for workers, seconds in timings.items():
        print(f"{workers:<10}{threads[workers]:>8}{seconds:>8.1f}{seconds / args.trials:>10.1f}{timings[1] / seconds:>10.2f}")


if __name__ == "__main__":
    main()
