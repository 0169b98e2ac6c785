"""Compose functions of the shipped input modes: a sample's frames (and flow) -> its input tensors.

Each takes ``frames (T, 1, S, S)`` in the order of the mode's history offsets and ``flow
(2, S, S)`` or None, already augmented, and returns the tensors a model reads; the rows in
:mod:`arflare.data.modes` name them.
"""

from __future__ import annotations

import torch


def frame(frames: torch.Tensor, flow: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``image (1, S, S)``: the frame at t."""
    return {"image": frames[0]}


def frame_and_flow(frames: torch.Tensor, flow: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``image (1, S, S)`` and ``flow (2, S, S)``."""
    return {"image": frames[0], "flow": flow}


def sequence(frames: torch.Tensor, flow: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``image (T, 1, S, S)``: every history frame."""
    return {"image": frames}


def multiscale(frames: torch.Tensor, flow: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``image (T, S, S)``: the history frames as channels."""
    return {"image": frames[:, 0]}


def diff(frames: torch.Tensor, flow: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``image (2, S, S)`` = ``[I_t, I_t - I_(t-12 min)]``."""
    return {"image": torch.cat([frames[0], frames[0] - frames[1]])}
