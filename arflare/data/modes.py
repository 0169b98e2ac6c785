"""Input modes as data: one row per mode says what a sample holds; everything else derives from it.

The spec's allowed ``data.input_mode`` values and its checks (offsets, flow root, Mixup,
variant compatibility, input channels), the data a run indexes, the tensors moved to the
device, and the dataset's composition all read :data:`INPUT_MODES`. Torch-free, so
``arflare validate`` and ``show`` can read it.

Adding a mode = one :class:`InputMode` row plus its compose function::

    def compose_stack(frames, flow):          # frames (T, 1, S, S), flow (2, S, S) or None
        return {"image": frames[:, 0]}        # the batch's input tensors, per sample

    register_input_mode(InputMode(name="stack", summary="history frames as channels", layout="image",
                                  default_variant="single", compose=compose_stack, offsets=None, channels=None))

Layouts (what a model reads; a model variant lists the layouts it accepts, see
:mod:`arflare.models.variants`), per sample, ``C`` = the mode's channels:

- ``image``: ``image (C, S, S)``.
- ``image+diff``: ``image (C, S, S)`` whose second half of channels is a difference image.
- ``image+flow``: ``image (C, S, S)`` and ``flow (2, S, S)``.
- ``frames``: ``image (T, C, S, S)``, one frame per history offset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from arflare.tables import NamedTable

CADENCE_MIN = 12  # HMI SHARP frames are 12 minutes apart


@dataclass(frozen=True)
class InputMode:
    """One input mode.

    Attributes:
        name: The ``data.input_mode`` value.
        summary: One phrase for the spec's description and ``--help``.
        layout: What the composed sample looks like to a model (see the module docstring).
        default_variant: The model variant ``model.variant: auto`` picks.
        compose: ``compose(frames, flow) -> {key: tensor}`` or ``"module:function"``;
            ``frames`` is ``(T, 1, S, S)`` in the order of the history offsets, ``flow`` is
            ``(2, S, S)`` when ``reads_flow`` else None.
        offsets: History offsets in minutes (<= 0) the mode reads; None = ``data.offsets_min``.
        exact_offsets: When set, ``data.offsets_min`` must hold exactly this many offsets.
        fill: A missing history frame is replaced by the AR's earliest frame or by the
            sample's own frame (``self``: a difference then says "no change").
        reads_flow: Needs ``data.flow_root``; ``flow`` is passed to ``compose``.
        channels: Image channels per frame after composing; None = one per history offset.
        mixup: Mixup/CutMix may mix this mode's samples (it mixes ``image`` only).
        keys: The input tensors ``compose`` returns (moved to the device for the model).
    """

    name: str
    summary: str
    layout: str
    default_variant: str
    compose: str | Callable
    offsets: tuple[int, ...] | None = (0,)
    exact_offsets: int | None = None
    fill: Literal["earliest", "self"] = "earliest"
    reads_flow: bool = False
    channels: int | None = 1
    mixup: bool = True
    keys: tuple[str, ...] = ("image",)

    def history(self, offsets_min: Sequence[int]) -> tuple[int, ...]:
        """The offsets (minutes) of the frames one sample reads, given ``data.offsets_min``."""
        return tuple(offsets_min) if self.offsets is None else self.offsets

    def image_channels(self, offsets_min: Sequence[int]) -> int:
        """Channels of the composed ``image`` per frame, given ``data.offsets_min``."""
        return len(self.history(offsets_min)) if self.channels is None else self.channels


INPUT_MODES: NamedTable[InputMode] = NamedTable("input mode")
register_input_mode = INPUT_MODES.register

_COMPOSE = "arflare.data.compose"
for _row in (
    InputMode("frame", "one magnetogram", "image", "single", f"{_COMPOSE}:frame"),
    InputMode("flow", "frame + 2-channel optical flow", "image+flow", "two_stream", f"{_COMPOSE}:frame_and_flow",
              reads_flow=True, mixup=False, keys=("image", "flow")),
    InputMode("sequence", "frames at offsets_min", "frames", "temporal", f"{_COMPOSE}:sequence", offsets=None,
              mixup=False),
    InputMode("multiscale", "t, t-1h, t-6h as 3 channels", "image", "single", f"{_COMPOSE}:multiscale",
              offsets=None, exact_offsets=3, channels=None),
    # A difference image with a missing previous frame says "no change" (the frame itself), not
    # "the change since the AR was first seen", which padding with the earliest frame would say.
    InputMode("diff", "frame and I_t - I_{t-12min}", "image+diff", "diff_attention", f"{_COMPOSE}:diff",
              offsets=(0, -CADENCE_MIN), fill="self", channels=2),
):
    register_input_mode(_row)


def model_input_keys() -> frozenset[str]:
    """Every batch key some input mode feeds the model (what moves to the device; labels and indices stay)."""
    return frozenset(key for mode in INPUT_MODES.rows() for key in mode.keys)


def describe_modes() -> str:
    """``"frame: one magnetogram; flow: ..."``: every mode and its summary, for help texts."""
    return "; ".join(f"{mode.name}: {mode.summary}" for mode in INPUT_MODES.rows())
