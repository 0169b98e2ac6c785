"""Model variants as data: each says which input layouts it reads and where its builder is; torch-free.

The spec reads this table to accept ``model.variant`` values, to check that a variant can
read ``data.input_mode`` (the mode's ``layout`` must be one the variant ``accepts``) and to
size the backbone's input channels; :func:`arflare.models.build_model` calls the builder.
Each shipped builder lives beside its model (``arflare.models.single:build_single``, ...)
and is imported only when a model is built, so reading this table never imports torch.

Adding a variant = one :class:`ModelVariant` row plus its builder::

    def build_wide(make_backbone, *, in_chans, num_outputs, drop_rate, **options):
        return MyNet(make_backbone(in_chans, 0), num_outputs=num_outputs)

    register_variant(ModelVariant("wide", accepts=("image",), build=build_wide, summary="..."))

A builder gets ``make_backbone(in_chans, num_classes, *, drop_rate=0.0)`` (a timm model that
follows arflare's backbone rules: no downloads, local weights, drop-path support) and the
keyword arguments ``in_chans``, ``num_outputs``, ``drop_rate`` and the variant options
(``temporal_pool``, ``flow_channels``); it returns a module mapping the batch's input dict to
``(B, num_outputs)`` logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from arflare.tables import NamedTable


@dataclass(frozen=True)
class ModelVariant:
    """One model variant.

    Attributes:
        name: The ``model.variant`` value.
        accepts: Input layouts it reads (see :mod:`arflare.data.modes`).
        build: The builder, or ``"module:function"`` imported when a model is built.
        summary: One phrase for help texts.
        channel_groups: The composed image's channels hold this many equal groups and the
            backbone reads one group (diff_attention: the frame, then its difference).
    """

    name: str
    accepts: tuple[str, ...]
    build: str | Callable
    summary: str = ""
    channel_groups: int = 1


VARIANTS: NamedTable[ModelVariant] = NamedTable("model variant")
register_variant = VARIANTS.register

for _row in (
    ModelVariant("single", ("image", "image+diff"), "arflare.models.single:build_single",
                 "one timm classifier on the image channels"),
    ModelVariant("two_stream", ("image+flow",), "arflare.models.two_stream:build_two_stream",
                 "image backbone + optical-flow CNN, fused late"),
    ModelVariant("temporal", ("frames",), "arflare.models.temporal:build_temporal",
                 "one encoder shared over the history frames, pooled over time"),
    ModelVariant("diff_attention", ("image+diff",), "arflare.models.diff_attention:build_diff_attention",
                 "frame features gated by attention from the difference image", channel_groups=2),
):
    register_variant(_row)
