"""Physically consistent augmentation of magnetogram sequences and their optical flow.

A sample's frames show one active region over time, so every frame gets the *same*
random transform (one draw per sample); otherwise the model would see the region jump
between frames. The flow field is transformed with them, and because it holds
vectors, flips and rotations also act on its (u, v) components.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentParams:
    """What to randomise; the defaults change nothing.

    Attributes:
        hflip: mirror left-right with probability 1/2 (flow u -> -u).
        vflip: mirror top-bottom with probability 1/2 (flow v -> -v).
        rotate_deg: rotate by an angle drawn uniformly in [-rotate_deg, rotate_deg].
        scale: zoom by a factor drawn uniformly in [1 - scale, 1 + scale].
        polarity_flip: negate the field (swap magnetic polarities) with probability 1/2;
            0 G stays 0 G and the flow is unchanged.
        noise: add integer noise uniform in [-noise, noise] in 8-bit pixel units.
    """

    hflip: bool = False
    vflip: bool = False
    rotate_deg: float = 0.0
    scale: float = 0.0
    polarity_flip: bool = False
    noise: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.scale < 1.0:
            raise ValueError(f"scale={self.scale!r} must be in [0, 1): the zoom is drawn in [1-scale, 1+scale]")
        if self.rotate_deg < 0 or self.noise < 0:
            raise ValueError(f"rotate_deg={self.rotate_deg!r} and noise={self.noise!r} must be >= 0")


def augment(
    frames: torch.Tensor,
    flow: torch.Tensor | None,
    params: AugmentParams,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply one random draw of ``params`` to all frames of a sample and its flow.

    Args:
        frames: float tensor ``(T, 1, H, W)`` of field values (0 = 0 G).
        flow: ``(2, H, W)`` or ``(T, 2, H, W)`` flow in pixels per frame (u, v), or None.
        params: what to randomise.
        generator: source of randomness; seed it per sample for reproducible runs.

    Returns:
        The transformed ``(frames, flow)``; new tensors, the inputs are not modified.
    """
    draw = _draw(params, generator)
    if draw["hflip"]:
        frames = frames.flip(-1)
        flow = None if flow is None else _negate(flow.flip(-1), channel=0)
    if draw["vflip"]:
        frames = frames.flip(-2)
        flow = None if flow is None else _negate(flow.flip(-2), channel=1)
    if draw["angle"] != 0.0 or draw["zoom"] != 1.0:
        frames, flow = _rotate_zoom(frames, flow, angle=draw["angle"], zoom=draw["zoom"])
    if draw["polarity"]:
        frames = -frames
    if params.noise:
        # One noise field for the sample, like every other draw, so differences of
        # frames (diff mode) keep their true signal.
        shape = (1, *frames.shape[1:])
        steps = torch.randint(-params.noise, params.noise + 1, shape, generator=generator)
        frames = frames + steps.to(frames.dtype) / 128.0
    return frames, flow


def _draw(params: AugmentParams, generator: torch.Generator) -> dict:
    # Always draw every number so one setting does not shift the others' random stream.
    u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
    return {
        "hflip": params.hflip and u[0] < 0.5,
        "vflip": params.vflip and u[1] < 0.5,
        "angle": math.radians(params.rotate_deg * (2 * u[2] - 1)),
        "zoom": 1.0 + params.scale * (2 * u[3] - 1),
        "polarity": params.polarity_flip and u[4] < 0.5,
    }


def _negate(flow: torch.Tensor, *, channel: int) -> torch.Tensor:
    sign = torch.ones(2, 1, 1, dtype=flow.dtype)
    sign[channel] = -1
    return flow * sign


def _rotate_zoom(frames, flow, *, angle: float, zoom: float):
    """Rotate by ``angle`` and magnify by ``zoom`` in one resample; fill with 0 G."""
    cos, sin = math.cos(angle), math.sin(angle)
    # A point p of the input lands at zoom * R p; grid_sample needs the inverse map.
    rot = torch.tensor([[cos, -sin], [sin, cos]], dtype=frames.dtype)
    theta = torch.cat([rot.T / zoom, torch.zeros(2, 1, dtype=frames.dtype)], dim=1)
    frames = _resample(frames, theta)
    if flow is not None:
        flow = _resample(flow, theta)
        # Displacement vectors turn and stretch with the image: (u, v) -> zoom * R (u, v).
        flow = torch.einsum("ij,...jhw->...ihw", rot * zoom, flow)
    return frames, flow


def _resample(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    batch = images if images.dim() == 4 else images.unsqueeze(0)
    grid = F.affine_grid(theta.expand(len(batch), 2, 3), list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out if images.dim() == 4 else out.squeeze(0)
