"""timm backbones: name checking, creation and loading local weights.

Every network in ``arflare.models`` gets its image encoder from :func:`create_backbone`,
so the rules live in one place: nothing is downloaded, ``drop_path_rate`` is only
passed to backbones that accept it, and local weights are adapted to the channel count.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import timm
import torch
from timm.models import adapt_input_conv, load_state_dict
from torch import nn

_logger = logging.getLogger(__name__)


def check_backbone(name: str) -> None:
    """Raise unless ``name`` is a timm model name; builds nothing.

    Args:
        name: A timm architecture, optionally with a pretrained tag (``resnet18.a1_in1k``).

    Raises:
        ValueError: Unknown name; the message lists the closest timm names.
    """
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    family = name.split("_")[0].split(".")[0]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(
        f"Unknown timm backbone {name!r}; {hint}(timm.list_models('{family}*') lists them)"
    )


def feature_dim(backbone: nn.Module) -> int:
    """Width of the pooled features a timm backbone built with ``num_classes=0`` returns."""
    # head_hidden_size differs from num_features when the head has a pre-logits
    # layer (MobileNetV3: 288 -> 1024); it is what forward_head(pre_logits=True) yields.
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def create_backbone(
    name: str,
    *,
    in_chans: int,
    num_classes: int,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    pretrained: bool = False,
    pretrained_path: Path | None = None,
) -> nn.Module:
    """Create a timm model, optionally loading local weights.

    Args:
        name: timm model name.
        in_chans: Input channels.
        num_classes: Classifier outputs; 0 drops the classifier (pooled features out).
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth; only for backbones that support it.
        pretrained: Load weights; requires ``pretrained_path`` since nothing is downloaded.
        pretrained_path: Local state dict (``.pth``/``.bin``/``.safetensors``); given
            alone it also loads.

    Raises:
        ValueError: Unknown backbone, ``pretrained`` without a path, or a
            ``drop_path_rate`` the backbone cannot use.
    """
    check_backbone(name)
    if pretrained and pretrained_path is None:
        raise ValueError(
            f"pretrained=True for {name!r} needs pretrained_path (a local weights file); "
            "nothing is downloaded at run time"
        )
    kwargs = dict(in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate)
    if drop_path_rate > 0:
        # Only passed when used: older CNNs (VGG, DenseNet) reject the keyword outright.
        kwargs["drop_path_rate"] = drop_path_rate
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as err:
        if "drop_path_rate" not in str(err):
            raise
        raise ValueError(
            f"Backbone {name!r} does not support drop_path_rate={drop_path_rate}; "
            "set drop_path_rate to 0 for it"
        ) from err
    if pretrained_path is not None:
        load_backbone_weights(model, Path(pretrained_path), in_chans=in_chans)
    return model


def load_backbone_weights(model: nn.Module, path: Path, *, in_chans: int) -> list[str]:
    """Load a local state dict into a timm model, keeping what fits.

    Not timm's ``pretrained_cfg_overlay=dict(file=...)``: that drops the classifier
    whenever ``num_classes`` differs from the config's 1000, even when the file was
    saved from the same arflare model. Here tensors are matched by name and shape;
    a first conv with another channel count is adapted with timm's
    ``adapt_input_conv`` (RGB -> 1 channel sums), other mismatches (a classifier of
    another width) are skipped. A ``backbone.`` prefix (a whole arflare model's
    checkpoint) is stripped and its other entries ignored. Missing and unexpected
    keys are logged.

    Args:
        model: The freshly created timm model.
        path: Checkpoint file; timm unwraps ``state_dict``/``model``/EMA entries.
        in_chans: The model's input channels.

    Returns:
        Names of model tensors left at their initial values.

    Raises:
        FileNotFoundError: No such file.
        ValueError: No tensor of the file matches the model.
    """
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_path {str(path)!r} is not a file; pass a saved state dict")
    state = _strip_prefix(load_state_dict(str(path)), "backbone.")
    skipped = _fit_shapes(state, model, in_chans=in_chans)
    result = model.load_state_dict(state, strict=False)
    if len(state) == len(result.unexpected_keys):
        raise ValueError(
            f"No tensor in {str(path)!r} matches backbone {type(model).__name__}; "
            "was it saved from another architecture?"
        )
    _report(path, skipped, result.missing_keys, result.unexpected_keys)
    return list(result.missing_keys)


def _fit_shapes(state: dict[str, torch.Tensor], model: nn.Module, *, in_chans: int) -> list[str]:
    """Adapt the first conv to ``in_chans`` and drop other tensors whose shape differs; return those dropped."""
    own = model.state_dict()
    first_convs = getattr(model, "pretrained_cfg", {}).get("first_conv") or ()
    first_convs = {f"{name}.weight" for name in ([first_convs] if isinstance(first_convs, str) else first_convs)}
    skipped = []
    for key, value in list(state.items()):
        if key not in own or value.shape == own[key].shape:
            continue
        if key in first_convs and value.ndim == 4:
            value = adapt_input_conv(in_chans, value, base_chans=value.shape[1])
        if value.shape == own[key].shape:
            state[key] = value
        else:
            skipped.append(key)
            del state[key]
    return skipped


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if not any(key.startswith(prefix) for key in state):
        return state
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def _report(path: Path, skipped: list[str], missing: list[str], unexpected: list[str]) -> None:
    for what, keys in (("shape mismatch, skipped", skipped), ("missing, left at init", missing),
                       ("unexpected, ignored", unexpected)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            _logger.warning("Loading %s: %s: %s", path, what, shown)
