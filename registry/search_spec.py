"""The ``search:`` block of an experiment: what Optuna searches and how.

Kept apart from ``registry.sweep`` so that validating a registry never imports Optuna.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ParamSpec", "PrunerSpec", "SamplerSpec", "SearchSpec"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Spec):
    """One searched hyper-parameter: the distribution Optuna samples it from."""

    type: Literal["float", "int", "categorical"] = Field(description="float/int: a range [low, high]; categorical: one of choices.")
    low: float | None = Field(None, description="Smallest value of a float/int range.")
    high: float | None = Field(None, description="Largest value of a float/int range (inclusive).")
    log: bool = Field(False, description="Sample on a log scale, for ranges spanning orders of magnitude (learning rate, weight decay). Needs low > 0.")
    step: float | None = Field(None, gt=0, description="Grid spacing of a float/int range; int defaults to 1. Cannot be combined with log.")
    choices: tuple[bool | int | float | str | None, ...] | None = Field(None, description="Values a categorical param takes, e.g. [0.0, 1.0].")

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "categorical":
            extra = [name for name in ("low", "high", "step") if getattr(self, name) is not None] + ["log"] * self.log
            if not self.choices:
                raise ValueError("a categorical param needs a non-empty 'choices' list, e.g. choices: [0.0, 1.0]")
            if extra:
                raise ValueError(f"a categorical param takes only 'choices'; remove {extra}")
            return self
        if self.choices is not None:
            raise ValueError(f"'choices' is for type categorical; a {self.type} param takes low and high")
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} param needs low < high; got low={self.low}, high={self.high}")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError(f"log: true needs low > 0 and no step; got low={self.low}, step={self.step}")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError(f"an int param needs whole low/high/step; got low={self.low}, high={self.high}, step={self.step}")
        return self


class SamplerSpec(_Spec):
    """How trial parameters are chosen."""

    name: Literal["tpe", "random"] = Field("tpe", description="tpe: model good vs bad trials after 10 random ones; random: independent draws (a baseline).")
    seed: int | None = Field(None, description="Seed for reproducible suggestions; every worker and every resumed run derives its own stream from it, so they do not repeat each other.")


# Which PrunerSpec fields each pruner reads: setting another one is an error, not a silent no-op.
_PRUNER_FIELDS = {"median": {"n_startup_trials", "n_warmup_steps"}, "hyperband": {"min_resource", "reduction_factor"}, "none": set()}


class PrunerSpec(_Spec):
    """When a trial is stopped early because its per-epoch objective lags behind."""

    name: Literal["median", "hyperband", "none"] = Field("none", description="median: stop a trial worse than the median of earlier trials at the same epoch; hyperband: successive halving over epochs; none: always train to the end.")
    n_startup_trials: int = Field(5, ge=0, description="median: trials that always finish before any is pruned (the median needs data).")
    n_warmup_steps: int = Field(0, ge=0, description="median: epochs a trial always runs before it can be pruned; raise it when early epochs are noisy.")
    min_resource: int = Field(1, ge=1, description="hyperband: epochs every trial gets before the first halving.")
    reduction_factor: int = Field(3, ge=2, description="hyperband: keep 1 in this many trials at each halving.")

    @model_validator(mode="after")
    def _check_fields(self) -> PrunerSpec:
        # Defaults are allowed anywhere, so a dumped spec (every field written out) validates again.
        unread = self.model_fields_set - _PRUNER_FIELDS[self.name] - {"name"}
        foreign = sorted(key for key in unread if getattr(self, key) != type(self).model_fields[key].default)
        if foreign:
            raise ValueError(f"pruner {self.name!r} does not read {foreign}; it reads {sorted(_PRUNER_FIELDS[self.name]) or 'nothing'}")
        return self


class SearchSpec(_Spec):
    """The ``search:`` block of an experiment: what a sweep optimizes and over which params."""

    objective: str = Field(description="Per-epoch metric the trainer reports (e.g. 'val/tss'); the study optimizes it and pruners watch it.")
    direction: Literal["maximize", "minimize"] = Field(description="maximize for scores (TSS, AUC), minimize for losses.")
    n_trials: int = Field(20, ge=1, description="Total trials over every run of the sweep command; rerunning resumes and stops at this total.")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec, description="How parameters are chosen.")
    pruner: PrunerSpec = Field(default_factory=PrunerSpec, description="Whether and when lagging trials stop early.")
    params: dict[str, ParamSpec] = Field(min_length=1, description="Dotted spec key (e.g. 'model.drop_rate') -> distribution it is sampled from.")


