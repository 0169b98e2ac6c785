"""Training policy and its state: the best-checkpoint / early-stopping tracker and the resume file.

``BestCheckpoint`` is a small stateful object in the Lightning manner (``update``,
``should_stop``, ``state_dict``), so it travels in ``last.pt`` and a resumed run stops and
selects exactly as an uninterrupted one. ``last.pt`` holds everything else a bit-identical
continuation needs; ``best.pt`` holds weights only.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

BEST_FILE, LAST_FILE = "best.pt", "last.pt"  # names inside the run's local checkpoint folder


@dataclass(frozen=True)
class CheckpointOptions:
    """How checkpoints leave the run (the local copies are always fp32 and complete).

    Attributes:
        fp16_best: Log ``best.pt`` in half precision (half the size; scores may move in the 4th digit).
        log_last: Also log the full-state ``last.pt`` (optimizer included, about 3x the weights).
    """

    fp16_best: bool = False
    log_last: bool = False


@dataclass
class BestCheckpoint:
    """Which epoch is best so far on the monitored validation metric, and when to stop.

    Args:
        min_delta: Smallest increase of the monitored value that counts as an improvement.
        patience: Epochs without improvement before stopping; None never stops early.
        min_epochs: Never stop before this epoch.
    """

    min_delta: float = 0.0
    patience: int | None = None
    min_epochs: int = 1
    best_value: float = -math.inf
    best_epoch: int = 0
    threshold: float = 0.5
    constrained: bool = True  # whether the best epoch's threshold met eval.min_recall/min_precision
    stale: int = 0

    def update(self, epoch: int, value: float, *, threshold: float, constrained: bool) -> bool:
        """Record epoch ``epoch``'s monitored ``value`` (higher is better; NaN never wins).

        Returns:
            True when this epoch is the new best (the caller saves its weights).
        """
        value = -math.inf if math.isnan(value) else value
        if self.best_epoch == 0 or value > self.best_value + self.min_delta:
            self.best_value, self.best_epoch, self.threshold, self.constrained, self.stale = (
                value, epoch, threshold, constrained, 0)
            return True
        self.stale += 1
        return False

    def should_stop(self, epoch: int) -> bool:
        """Whether early stopping ends training after ``epoch``."""
        return self.patience is not None and epoch >= self.min_epochs and self.stale >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """What :meth:`load_state_dict` needs to continue (the rule itself comes from the spec)."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "threshold": self.threshold,
                "constrained": self.constrained, "stale": self.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        for key in ("best_value", "best_epoch", "threshold", "constrained", "stale"):
            setattr(self, key, state[key])


@dataclass
class TrainState:
    """The loop's own counters, saved in ``last.pt``."""

    epoch: int = 0  # last completed epoch
    updates: int = 0  # optimizer steps so far (drives the per-step schedule)
    stopped: bool = False  # early stopping ended training after ``epoch``
    history: dict[str, list[float]] = field(default_factory=dict)


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random state a run draws from: python, numpy, torch (CPU and CUDA), the loaders' generators."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "generators": {name: gen.get_state() for name, gen in generators.items()}}


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Put back what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in generators.items():
        gen.set_state(state["generators"][name])


def save_weights(path: Path, model: torch.nn.Module, *, spec: dict, epoch: int, threshold: float,
                 fp16: bool = False) -> Path:
    """Write a weights-only checkpoint: ``model`` (state dict), ``epoch``, ``threshold``, ``spec``."""
    weights = model.state_dict()
    if fp16:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    return atomic_save({"model": weights, "epoch": epoch, "threshold": threshold, "spec": spec}, path)


def atomic_save(obj: object, path: Path) -> Path:
    """``torch.save`` to a temporary name, then rename: a kill never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
    return path


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint this module wrote (our own files: full unpickling is safe)."""
    return torch.load(path, map_location=device, weights_only=False)
