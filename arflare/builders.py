"""Translate a ``RunSpec`` into config-free components (the detectron2 split).

Datasets, models, losses and samplers take plain keyword arguments and never see a spec;
this module is the one place that knows both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from arflare.calibration import training_keep_rate
from arflare.data.augment import AugmentParams
from arflare.data.datasets import FlareDataset
from arflare.data.index import DataIndex
from arflare.data.sampling import BalancedSampler
from arflare.distributed import Ranks
from arflare.hardneg import hard_flags
from arflare.losses import build_loss, build_mixup, num_outputs_for
from arflare.models import build_model
from arflare.spec import RunSpec


def build_datasets(spec: RunSpec, index: DataIndex) -> dict[str, FlareDataset]:
    """Train/val/test datasets; only train is augmented."""
    data = spec.data
    augment = AugmentParams(**data.augment.model_dump()) if data.augment.enabled else None
    common = {"mode": data.input_mode, "image_size": data.image_size, "offsets_min": data.offsets_min,
              "require_complete_history": data.require_complete_history, "min_flare_class": data.min_flare_class,
              "skip_corrupt": not data.strict}
    return {split: FlareDataset(index, split, augment=augment if split == "train" else None, seed=spec.train.seed, **common)
            for split in ("train", "val", "test")}


def build_sampler(spec: RunSpec, dataset: FlareDataset, hard_table=None, ranks: Ranks = Ranks()) -> BalancedSampler:
    """The training sampler: balancing as the spec says, seeded, reshuffled per epoch, this rank's slice.

    ``hard_table`` (an :mod:`arflare.hardneg` table) flags hard negatives, which are always kept
    and drawn ``data.hard_negatives.weight`` times as often as an ordinary negative.
    """
    keys = list(dataset.frame_table["key"])
    hard = None if hard_table is None else hard_flags(keys, dataset.labels, hard_table)
    return BalancedSampler(dataset.labels, mode=spec.data.balance, keep_negative_prob=spec.data.keep_negative_prob,
                           seed=spec.train.seed, keys=keys, hard=hard, hard_weight=spec.data.hard_negatives.weight,
                           num_replicas=ranks.world_size, rank=ranks.rank)


def build_model_from_spec(spec: RunSpec) -> torch.nn.Module:
    """The network for ``spec`` (variant and input channels follow the input mode)."""
    model = spec.model
    return build_model(backbone=model.backbone, variant=spec.variant, in_chans=spec.in_chans,
                       num_outputs=num_outputs_for(spec.train.loss), drop_rate=model.drop_rate,
                       drop_path_rate=model.drop_path_rate, pretrained=model.pretrained,
                       pretrained_path=model.pretrained_path, temporal_pool=model.temporal_pool)


def build_loss_from_spec(spec: RunSpec) -> torch.nn.Module:
    """The training loss; with Mixup the label smoothing is applied by Mixup, not twice."""
    train = spec.train
    smoothing = 0.0 if train.mixup.enabled else train.label_smoothing
    return build_loss(train.loss, class_weights=train.class_weights, focal_alpha=train.focal_alpha,
                      focal_gamma=train.focal_gamma, label_smoothing=smoothing)


def build_mixup_from_spec(spec: RunSpec):
    """timm Mixup/CutMix producing soft targets, or None when off."""
    mix = spec.train.mixup
    return build_mixup(mixup_alpha=mix.mixup_alpha, cutmix_alpha=mix.cutmix_alpha, prob=mix.prob,
                       switch_prob=mix.switch_prob, label_smoothing=spec.train.label_smoothing)


def build_optimizer(spec: RunSpec, model: torch.nn.Module, *, steps_per_epoch: int):
    """AdamW (no decay on norms and biases) with per-step linear warmup then cosine, both from timm."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    train = spec.train
    optimizer = create_optimizer_v2(model, opt="adamw", lr=train.lr, weight_decay=train.weight_decay)
    total = max(train.epochs * steps_per_epoch, 1)
    warmup = min(int(train.warmup_epochs * steps_per_epoch), total - 1)
    # warmup_prefix: the cosine starts after warmup, so it spans the remaining steps and ends at min_lr.
    scheduler = CosineLRScheduler(optimizer, t_initial=max(total - warmup, 1), lr_min=train.min_lr, warmup_t=warmup,
                                  warmup_lr_init=train.lr * 0.01, warmup_prefix=True, t_in_epochs=False)
    return optimizer, scheduler


@dataclass
class Components:
    """Everything a run trains with, built once from the spec by :func:`build_components`.

    ``generators`` are the loaders' own random generators (saved in ``last.pt`` to resume).
    ``keep_rate`` is the odds factor of the training mix (sampler and loss weights), with which
    calibration metrics correct the probabilities; None when training saw the true class mix.
    """

    model: torch.nn.Module
    datasets: dict[str, FlareDataset]
    loaders: dict[str, DataLoader]
    generators: dict[str, torch.Generator]
    loss: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object  # timm CosineLRScheduler (state_dict / load_state_dict / step_update)
    mixup: object | None
    steps_per_epoch: int
    keep_rate: float | None = None


def build_components(spec: RunSpec, index: DataIndex, device: torch.device, *, hard_table=None,
                     ranks: Ranks = Ranks()) -> Components:
    """Model, datasets, loaders, loss, optimizer, scheduler and Mixup for ``spec``, placed on ``device``."""
    datasets = build_datasets(spec, index)
    loaders, generators = build_loaders(spec, datasets, pin_memory=device.type == "cuda", hard_table=hard_table,
                                        ranks=ranks)
    model = build_model_from_spec(spec).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    datasets["train"].set_epoch(1)
    loaders["train"].sampler.set_epoch(1)
    # Balanced epochs vary a little in length: the schedule is sized from epoch 1's draw and
    # stepped by a running update count, so it never skips or repeats a step.
    steps = len(loaders["train"])
    if spec.train.max_steps_per_epoch is not None:
        steps = min(steps, spec.train.max_steps_per_epoch)
    optimizer, scheduler = build_optimizer(spec, model, steps_per_epoch=steps)
    return Components(model=model, datasets=datasets, loaders=loaders, generators=generators,
                      loss=build_loss_from_spec(spec).to(device), optimizer=optimizer, scheduler=scheduler,
                      mixup=build_mixup_from_spec(spec), steps_per_epoch=steps,
                      keep_rate=training_keep_rate(loaders["train"].sampler.negative_keep_rate(), spec.train.class_weights))


def build_loaders(spec: RunSpec, datasets: dict[str, FlareDataset], *, pin_memory: bool, hard_table=None,
                  ranks: Ranks = Ranks()) -> tuple[dict[str, DataLoader], dict[str, torch.Generator]]:
    """The three loaders (train sampled and balanced, val/test in order) and their generators.

    Under DDP ``train.batch_size`` stays the global batch: each rank loads its share of it from
    its slice of the sampler's draw, and val/test are split between ranks without padding
    (:meth:`arflare.distributed.Ranks.eval_indices`; the scores are gathered back in order).
    """
    common = {"num_workers": spec.data.num_workers, "pin_memory": pin_memory,
              "persistent_workers": spec.data.num_workers > 0}
    # Each loader draws its worker seeds from its own generator, not torch's global one, so the
    # dropout/drop-path masks (global RNG) are the same whatever data.num_workers is.
    generators = {split: torch.Generator().manual_seed(spec.train.seed) for split in ("train", "val", "test")}
    sampler = build_sampler(spec, datasets["train"], hard_table, ranks)
    batch = spec.train.batch_size // ranks.world_size  # divisible: checked by arflare.ddp_checks.check_spec
    loaders = {"train": DataLoader(datasets["train"], batch_size=batch, sampler=sampler, generator=generators["train"],
                                   drop_last=spec.train.mixup.enabled or len(sampler) > batch, **common)}
    for split in ("val", "test"):
        loaders[split] = DataLoader(datasets[split], batch_size=batch * 2, sampler=ranks.eval_indices(len(datasets[split])),
                                    generator=generators[split], **common)
    return loaders, generators
