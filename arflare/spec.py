"""The run spec: every knob of an arflare run, typed, described and defaulted here only.

A spec is parsed once at the edge (``experiments.yaml`` + profile + ``--set``) and then
passed inward as a frozen object; nothing below the CLI reads raw dicts. Each field's
``description`` says what it means and when to change it; ``arflare show NAME`` prints the
resolved values. This module imports pydantic only (no torch), so ``validate``/``show`` stay fast.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from arflare.data.modes import INPUT_MODES, InputMode, describe_modes
from arflare.metrics import monitor_choices, threshold_choices
from arflare.models.variants import VARIANTS
from arflare.tables import NamedTable
from registry.errors import did_you_mean


def _known(table: NamedTable, *, also: tuple[str, ...] = ()) -> Callable[[str], str]:
    """A field validator accepting a name of ``table`` (looked up at validation time) or one of ``also``."""
    def check(name: str) -> str:
        if name not in also:
            table[name]  # raises UsageError (a ValueError) listing the known names
        return name
    return check


def _one_of(choices: Callable[[], tuple[str, ...]], what: str) -> Callable[[str], str]:
    """A field validator accepting one of ``choices()``, computed from the metric table when validating."""
    def check(name: str) -> str:
        allowed = choices()
        if name not in allowed:
            raise ValueError(f"Unknown {what} {name!r}; available: {', '.join(allowed)}{did_you_mean(name, allowed)}")
        return name
    return check


# Names validated against the tables when a spec is parsed, so rows registered later count too.
InputModeName = Annotated[str, AfterValidator(_known(INPUT_MODES))]
VariantName = Annotated[str, AfterValidator(_known(VARIANTS, also=("auto",)))]
MonitorName = Annotated[str, AfterValidator(_one_of(monitor_choices, "eval.monitor value"))]
ThresholdMetricName = Annotated[str, AfterValidator(_one_of(threshold_choices, "eval.threshold_metric value"))]


def _auto_variants() -> str:
    by_variant: dict[str, list[str]] = {}
    for mode in INPUT_MODES.rows():
        by_variant.setdefault(mode.default_variant, []).append(mode.name)
    return ", ".join(f"{'/'.join(modes)} -> {variant}" for variant, modes in by_variant.items())


# Fields that change where things are or how fast a run goes, not what it computes: left out of
# the hash. The data itself is identified by the index fingerprint passed to spec_hash, so the
# same shards in another checkout or on a cluster hash the same.
_NOT_HASHED = {("data", "root"), ("data", "flow_root"), ("data", "generate_if_missing"), ("data", "num_workers"),
               ("data", "cache_dir"), ("train", "device"), ("train", "compile"), ("eval", "plots")}
# The same fields as dotted param keys: `arflare compare` never shows or groups by them.
LOCATION_KEYS = frozenset(f"{section}.{key}" for section, key in _NOT_HASHED)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentSpec(_Spec):
    """Training-time augmentations, drawn once per sample and applied to every frame and the flow."""

    hflip: bool = Field(False, description="Random horizontal flip (flow u is negated too). Physically safe.")
    vflip: bool = Field(False, description="Random vertical flip; breaks hemispheric (Joy's law) tilt, so off by default.")
    rotate_deg: float = Field(0.0, ge=0, le=180, description="Random rotation in [-deg, deg]; flow vectors rotate with the image.")
    scale: float = Field(0.0, ge=0, lt=1, description="Random zoom factor in [1-scale, 1+scale]; 0 = off.")
    polarity_flip: bool = Field(False, description="Randomly negate the field (swap polarities); flares do not care about sign.")
    noise: int = Field(0, ge=0, le=32, description="Uniform integer noise in 8-bit units added to the PNG values; 0 = off.")

    @property
    def enabled(self) -> bool:
        return any((self.hflip, self.vflip, self.rotate_deg, self.scale, self.polarity_flip, self.noise))


class HardNegativesSpec(_Spec):
    """Negatives that earlier models called flares, mined from their runs and over-sampled in training."""

    # "from" is a Python keyword: the YAML key is `from`, the attribute `from_`.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    from_: tuple[str, ...] = Field((), alias="from", description="Source runs: run ids or experiment names (= that experiment's best FINISHED run of the same profile by eval.monitor on validation). Their hard negatives are mined with `arflare mine` when missing (tracked, reused) and merged: union by key, highest score kept. Empty = off.")
    weight: float = Field(5.0, gt=0, description="A hard negative is drawn this many times as often as an ordinary negative, and never dropped by balance prob/fixed.")
    min_score: float | None = Field(None, ge=0, le=1, description="Keep training negatives the source model scores at least this high; null (and no top_fraction) = the source run's own validation threshold.")
    top_fraction: float | None = Field(None, gt=0, le=1, description="Instead of a score, keep this fraction of the training negatives with the highest source scores.")

    @model_validator(mode="after")
    def _check_rule(self) -> HardNegativesSpec:
        if self.min_score is not None and self.top_fraction is not None:
            raise ValueError("data.hard_negatives: set min_score or top_fraction, not both")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.from_)


class DataSpec(_Spec):
    """Where the shards are and how samples are built from them."""

    root: Path = Field(Path("data/synthetic/magnetograms"), description="Folder holding {train,val,test}/*.tar magnetogram shards. Relative paths resolve against experiments.yaml.")
    flow_root: Path | None = Field(None, description="Folder holding {train,val,test}/*.tar optical-flow shards (<key>.flow.npz); needed by input_mode 'flow'.")
    generate_if_missing: bool = Field(False, description="When root is missing, generate the synthetic data set in its parent folder first (for the shipped synthetic default; keep false for real data).")
    image_size: int = Field(112, ge=16, le=1024, description="Frames are resized to this many pixels square before the model sees them.")
    input_mode: InputModeName = Field("frame", description=describe_modes() + ".")
    offsets_min: tuple[int, ...] = Field((0, -60, -360), min_length=1, description="Past offsets in minutes for 'sequence' and 'multiscale' (12-minute cadence); history comes from the same AR only.")
    require_complete_history: bool = Field(False, description="Drop samples whose history frames are missing instead of padding with the AR's earliest frame.")
    min_flare_class: Literal["C", "M"] = Field("C", description="Positive when the largest flare in the next 24 h is at least this GOES class.")
    balance: Literal["none", "prob", "fixed", "weights"] = Field("none", description="Training-set balancing: prob = keep each negative with keep_negative_prob, redrawn every epoch; fixed = one deterministic subset; weights = sample by inverse class frequency. Val and test are never balanced.")
    keep_negative_prob: float = Field(1.0, gt=0, le=1, description="Fraction of negatives kept per epoch by balance 'prob' or 'fixed'.")
    augment: AugmentSpec = Field(default_factory=AugmentSpec, description="Training augmentations.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes; 0 reads in the training process.")
    strict: bool = Field(False, description="Fail on the first corrupt sample instead of skipping it and counting it in one summary line.")
    hard_negatives: HardNegativesSpec = Field(default_factory=HardNegativesSpec, description="Hard-negative mining from earlier runs (off unless `from` names sources).")
    cache_dir: Path | None = Field(None, description="Where the sample index is cached (default $ARFLARE_CACHE or ~/.cache/arflare); data roots may be read-only.")

    @model_validator(mode="after")
    def _check_offsets(self) -> DataSpec:
        if any(offset > 0 for offset in self.offsets_min):
            raise ValueError(f"data.offsets_min {list(self.offsets_min)} looks into the future; offsets must be <= 0 minutes")
        wanted = self.mode.exact_offsets
        if wanted is not None and len(self.offsets_min) != wanted:
            default = list(DataSpec.model_fields["offsets_min"].default)
            example = f", e.g. {default}" if len(default) == wanted else ""
            raise ValueError(f"data.input_mode {self.input_mode!r} stacks exactly {wanted} frames; set data.offsets_min "
                             f"to {wanted} offsets{example}")
        return self

    @property
    def mode(self) -> InputMode:
        """The input mode's row (:mod:`arflare.data.modes`)."""
        return INPUT_MODES[self.input_mode]

    @property
    def flow_input(self) -> Path | None:
        """The flow root the run reads: ``flow_root`` when the input mode reads flow, else None."""
        return self.flow_root if self.mode.reads_flow else None


class BoostingSpec(_Spec):
    """Gradient-boosted trees of the physics and hybrid kinds (scikit-learn's HistGradientBoostingClassifier)."""

    learning_rate: float = Field(0.05, gt=0, le=1, description="Shrinkage of each tree; lower needs more rounds but overfits less.")
    max_depth: int | None = Field(None, ge=1, description="Depth limit of each tree; null = limited by max_leaf_nodes only.")
    l2_regularization: float = Field(0.0, ge=0, description="L2 penalty on leaf values; raise it when validation lags training.")
    max_leaf_nodes: int = Field(31, ge=2, description="Leaves per tree.")
    min_samples_leaf: int = Field(20, ge=1, description="Fewest samples in a leaf; raise it on small or noisy data.")
    trees_per_round: int = Field(20, ge=1, description="Trees added per round. A round is these kinds' epoch: validation is scored, the threshold chosen and early stopping checked after each; train.epochs caps the rounds.")
    class_weight: Literal["balanced", "none"] = Field("balanced", description="balanced weighs each class by its inverse frequency (flares are rare); none weighs samples equally.")
    importance_repeats: int = Field(5, ge=1, description="Shuffles per feature for the permutation importances on validation.")


class ModelSpec(_Spec):
    """The model: by default a timm backbone, optionally inside a two-stream / temporal / attention variant."""

    kind: Literal["cnn", "physics", "hybrid"] = Field("cnn", description="cnn: the timm network below on the images; physics: gradient-boosted trees (model.boosting) on the physical features of each frame and their 1 h / 6 h changes (arflare/physics); hybrid: the same trees on those features plus the penultimate embedding of the CNN run named by embedding_from. The network fields apply to cnn only.")
    embedding_from: str | None = Field(None, description="hybrid only: the source CNN run, as a run id or an experiment name (its best FINISHED run on the same data by its own eval.monitor). `arflare run` pins the run id before starting and says which command creates a missing source.")
    boosting: BoostingSpec = Field(default_factory=BoostingSpec, description="Gradient-boosted trees (physics and hybrid kinds).")
    backbone: str = Field("convnext_atto", description="Any timm model name (timm.list_models('convnext*') lists them).")
    variant: VariantName = Field("auto", description=f"auto picks from data.input_mode: {_auto_variants()}.")
    temporal_pool: Literal["mean", "attention"] = Field("mean", description="How the temporal variant pools per-frame features over time.")
    pretrained: bool = Field(False, description="Load pretrained weights. Nothing is downloaded at run time: use with pretrained_path.")
    pretrained_path: Path | None = Field(None, description="Local weights file (state dict) for the backbone.")
    drop_rate: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier head.")
    drop_path_rate: float = Field(0.0, ge=0, lt=1, description="Stochastic depth rate of the backbone (ConvNeXt, ViT).")

    @model_validator(mode="after")
    def _check_pretrained(self) -> ModelSpec:
        if self.pretrained and self.pretrained_path is None:
            raise ValueError("model.pretrained: true needs model.pretrained_path (nothing can be downloaded at run time)")
        if self.kind == "hybrid" and not self.embedding_from:
            raise ValueError("model.kind 'hybrid' needs model.embedding_from: a CNN run id or experiment name, e.g. exp2_basic_aug")
        if self.kind != "hybrid" and self.embedding_from is not None:
            raise ValueError(f"model.embedding_from is read by model.kind 'hybrid' only (this is {self.kind!r}); remove it")
        return self


class MixupSpec(_Spec):
    """timm Mixup/CutMix; on when either alpha is above 0 (targets become soft)."""

    mixup_alpha: float = Field(0.0, ge=0, description="Mixup Beta(alpha, alpha); 0 = off. 0.8 is the usual choice.")
    cutmix_alpha: float = Field(0.0, ge=0, description="CutMix Beta(alpha, alpha); 0 = off. 1.0 is the usual choice.")
    prob: float = Field(1.0, ge=0, le=1, description="Probability that a batch is mixed at all.")
    switch_prob: float = Field(0.5, ge=0, le=1, description="When both are on, probability of CutMix instead of Mixup.")

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


class EarlyStoppingSpec(_Spec):
    """Stop when the monitored validation metric stops improving."""

    patience: int | None = Field(None, ge=1, description="Epochs without improvement before stopping; null = never stop early.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")
    min_epochs: int = Field(1, ge=1, description="Never stop before this many epochs.")


class TrainSpec(_Spec):
    """Optimisation: AdamW with warmup + cosine, loss, regularisation, seeds."""

    epochs: int = Field(10, ge=1, description="Passes over the (balanced) training set.")
    batch_size: int = Field(64, ge=1, description="Samples per step.")
    lr: float = Field(1e-4, gt=0, description="Peak AdamW learning rate after warmup.")
    min_lr: float = Field(1e-6, ge=0, description="Learning rate at the end of the cosine schedule.")
    weight_decay: float = Field(0.05, ge=0, description="AdamW decoupled weight decay.")
    warmup_epochs: float = Field(1.0, ge=0, description="Linear warmup length in epochs (fractions allowed).")
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this; null = no clipping.")
    seed: int = Field(0, description="Seeds python, numpy, torch and the data order.")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="Cap the steps of an epoch (smoke tests, quick looks); null = full epoch.")
    loss: Literal["bce", "ce", "focal"] = Field("bce", description="bce: one logit; ce: two logits (soft-target CE under Mixup); focal: sigmoid focal loss on one logit.")
    class_weights: tuple[float, float] | None = Field(None, description="(negative, positive) loss weights for bce/ce; null = equal.")
    focal_alpha: float = Field(0.25, ge=0, le=1, description="Focal loss weight of the positive class.")
    focal_gamma: float = Field(2.0, ge=0, description="Focal loss focusing exponent.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Label smoothing; with Mixup it is applied by Mixup.")
    mixup: MixupSpec = Field(default_factory=MixupSpec, description="Mixup / CutMix.")
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec, description="Early stopping on eval.monitor.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available (bf16 autocast, channels_last, pinned memory), else cpu (fp32).")
    compile: bool = Field(False, description="torch.compile the training step's model: worth it on a GPU for long runs (the first steps wait for the compile, about a minute); rarely on a CPU. Speed only: not part of the spec hash.")


class EvalSpec(_Spec):
    """How runs are judged: threshold on validation only, test once with the best checkpoint."""

    monitor: MonitorName = Field("tss", description="Validation metric that picks the best checkpoint and drives early stopping (loss is minimised, the rest maximised).")
    threshold_metric: ThresholdMetricName = Field("tss", description="The decision threshold maximises this on validation and is applied unchanged to test.")
    min_recall: float | None = Field(None, gt=0, le=1, description="Only consider thresholds with at least this validation recall.")
    min_precision: float | None = Field(None, gt=0, le=1, description="Only consider thresholds with at least this validation precision.")
    plots: bool = Field(True, description="Write ROC, PR, confusion, reliability and training-curve PNGs, and the strata and failure-grid PNGs (their tables are written either way).")


class GatesSpec(_Spec):
    """Preflight gates (``arflare check``, and before every ``arflare run``): what WARNs and what FAILs."""

    shortcut_max_auc: float = Field(0.65, gt=0.5, le=1, description="FAIL when a logistic regression on nuisance features (border ring, image mean/std, fractional year, hour of day, AR number, shortcut_json_keys) reaches a higher AR-grouped cross-validated AUC on train: the labels leak through something non-physical. Raise it only with a reason.")
    shortcut_permutations: int = Field(39, ge=0, le=999, description="AR permutations (features of whole ARs swapped) giving the chance distribution of the shortcut AUC; with few ARs an AR-level feature reaches 0.65 by chance. 0 = judge the AUC alone.")
    shortcut_alpha: float = Field(0.05, gt=0, lt=1, description="The shortcut gate FAILs only when its AUC is above shortcut_max_auc and beaten by fewer than this share of the permutations (p-value); above the AUC but not significant WARNs.")
    shortcut_json_keys: tuple[str, ...] = Field((), description="Numeric json keys of the samples that should carry no signal (instrument ids, quality flags, positions) and join the shortcut gate's features.")
    cv_folds: int = Field(5, ge=2, le=20, description="AR-grouped cross-validation folds of the shortcut gate and the physics baseline (fewer when train has fewer ARs).")
    max_samples: int = Field(20000, ge=100, description="Train frames (a fixed random subset) the shortcut gate and the physics baseline fit on; bounds their cost on the full data set.")
    max_bad_fraction: float = Field(0.001, ge=0, le=1, description="Integrity: undecodable, constant or non-finite samples WARN up to this fraction of all samples and FAIL above it.")
    max_saturated: float = Field(0.01, ge=0, le=1, description="Integrity: WARN when this share of all pixels or more sits at 0 or 255 (clipped field values: rescale the magnetograms).")
    min_positives: int = Field(10, ge=0, description="Balance: WARN when a split has fewer positives than this (its TSS is noise), or none at all (its TSS, AUC and threshold are undefined).")
    max_base_rate_ratio: float = Field(2.0, ge=1, description="Balance: WARN when the positive rates of two splits differ by more than this factor (their skill scores are not comparable).")
    grid_per_class: int = Field(4, ge=1, le=16, description="Samples gate: frames per class per split in the grid figure.")
    normalisation_samples: int = Field(256, ge=16, description="Normalisation gate: model inputs per split (train, val) whose per-channel mean and std are reported.")
    max_mean_shift: float = Field(0.5, gt=0, description="Normalisation: WARN when a channel's val mean is more than this many train standard deviations from its train mean.")


class RunSpec(_Spec):
    """Everything one training run needs; what ``experiments.yaml`` resolves to."""

    data: DataSpec = Field(default_factory=DataSpec, description="Data and sampling.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Network.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Optimisation.")
    eval: EvalSpec = Field(default_factory=EvalSpec, description="Evaluation.")
    gates: GatesSpec = Field(default_factory=GatesSpec, description="Preflight gates run by arflare check and before arflare run.")

    @model_validator(mode="after")
    def _check_combination(self) -> RunSpec:
        mode, variant = self.data.mode, self.model.variant
        if variant != "auto" and mode.layout not in VARIANTS[variant].accepts:
            raise ValueError(f"model.variant {variant!r} cannot read data.input_mode {mode.name!r}; use one of "
                             f"{compatible_variants(mode)} or 'auto'")
        if self.train.mixup.enabled and not mode.mixup:
            raise ValueError(f"not supported yet: Mixup/CutMix with data.input_mode {mode.name!r} (it mixes the image "
                             f"only, not the {'flow' if mode.reads_flow else 'history'}); set train.mixup alphas to 0")
        if self.train.mixup.enabled and self.train.batch_size % 2:
            raise ValueError(f"Mixup/CutMix pairs samples within a batch; train.batch_size must be even, got {self.train.batch_size}")
        if self.train.loss == "focal" and self.train.class_weights is not None:
            raise ValueError("train.loss 'focal' weighs classes with train.focal_alpha; remove train.class_weights")
        if mode.reads_flow and self.data.flow_root is None:
            raise ValueError(f"data.input_mode {mode.name!r} needs data.flow_root (the folder of <key>.flow.npz shards)")
        return self

    @property
    def variant(self) -> str:
        """The model variant after resolving 'auto' from the input mode."""
        return self.data.mode.default_variant if self.model.variant == "auto" else self.model.variant

    @property
    def in_chans(self) -> int:
        """Channels of the image tensor the backbone sees per frame."""
        return self.data.mode.image_channels(self.data.offsets_min) // VARIANTS[self.variant].channel_groups

    def spec_hash(self, data_fingerprint: str = "") -> str:
        """Identity of a run: the resolved spec (minus location and speed knobs) plus what it reads.

        Args:
            data_fingerprint: Identifies the inputs: the shard index's content fingerprint, plus
                the pretrained weights' digest when there are any (see ``arflare.lifecycle.input_fingerprint``).
        """
        dumped = self.model_dump(mode="json")
        for section, key in _NOT_HASHED:
            dumped[section].pop(key, None)
        if not self.data.hard_negatives.enabled:  # runs from before the field existed keep their hash
            dumped["data"].pop("hard_negatives")
        dumped.pop("gates")  # gates decide whether a run starts, never what it computes
        payload = json.dumps({"spec": dumped, "data": data_fingerprint}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def compatible_variants(mode: InputMode) -> list[str]:
    """Variants that can read ``mode``: its default first, then the others in table order."""
    others = [v.name for v in VARIANTS.rows() if mode.layout in v.accepts and v.name != mode.default_variant]
    return [mode.default_variant, *others]
