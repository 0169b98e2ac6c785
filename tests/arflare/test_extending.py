"""Adding an input mode, a metric and a model variant touches one place each: this module.

Each test registers a new row (and its function) here only, then takes it through
``arflare validate``, a smoke ``arflare run`` on tiny synthetic data and ``arflare compare``,
in this process so that the registrations are seen. The rows are removed afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from arflare.cli import main
from arflare.data.modes import INPUT_MODES, InputMode, register_input_mode
from arflare.data.synth import generate
from arflare.metrics import METRICS, Metric, compare_choices, register_metric
from arflare.models.variants import VARIANTS, ModelVariant, register_variant
from arflare.spec import RunSpec


def compose_pair(frames: torch.Tensor, flow: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The frame at t and the one 12 minutes earlier, as two channels."""
    return {"image": frames[:, 0]}


def gmean(c) -> np.ndarray:
    """Geometric mean of the true-positive and true-negative rates (vectorised over thresholds)."""
    tpr = np.divide(c.tp, c.tp + c.fn, out=np.zeros(np.shape(c.tp)), where=np.asarray(c.tp + c.fn) != 0)
    tnr = np.divide(c.tn, c.tn + c.fp, out=np.zeros(np.shape(c.tn)), where=np.asarray(c.tn + c.fp) != 0)
    return np.sqrt(tpr * tnr)


class ProbeModel(nn.Module):
    """A linear probe on pooled backbone features."""

    def __init__(self, backbone: nn.Module, num_outputs: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_outputs)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.backbone(inputs["image"]).detach())


def build_probe(make_backbone, *, in_chans: int, num_outputs: int, drop_rate: float, **_: object) -> nn.Module:
    return ProbeModel(make_backbone(in_chans, 0), num_outputs)


@pytest.fixture
def pair_mode():
    row = register_input_mode(InputMode("pair", "t and t-12min as 2 channels", "image", "single", compose_pair,
                                        offsets=(0, -12), channels=2))
    yield row
    INPUT_MODES.unregister(row.name)


@pytest.fixture
def gmean_metric():
    row = register_metric(Metric("gmean", gmean, "threshold", compare=True, monitor=True, selects_threshold=True))
    yield row
    METRICS.unregister(row.name)


@pytest.fixture
def probe_variant():
    row = register_variant(ModelVariant("probe", ("image",), build_probe, "linear probe on frozen features"))
    yield row
    VARIANTS.unregister(row.name)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, ars=8, size=16, hours=10, seed=0, progress=False, overwrite=True)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """One registry folder (and tracking store) for the module: a store is slow to create."""
    return tmp_path_factory.mktemp("ws")


def _registry(folder, synth, name: str, body: str):
    path = folder / "experiments.yaml"
    path.write_text(f"""project: arflare
defaults:
  data: {{root: {synth / 'magnetograms'}, image_size: 32}}
  model: {{backbone: convnext_atto}}
  train: {{epochs: 1, batch_size: 8, max_steps_per_epoch: 2, warmup_epochs: 0, device: cpu}}
  eval: {{plots: false}}
experiments:
  {name}:
    description: a row defined by tests/arflare/test_extending.py
{body}
""")
    return path


def _validate_run_compare(folder, monkeypatch, capsys, synth, name: str, body: str, metric: str = "tss") -> str:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = _registry(folder, synth, name, body)
    assert main(["validate", str(path)]) == 0
    assert main(["run", name, "--file", str(path)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["compare", "--metric", metric, "--format", "csv", "--file", str(path)]) == 0
    table = capsys.readouterr().out
    assert name in table
    return table


def test_a_new_input_mode_is_one_row_and_one_compose_function(folder, monkeypatch, capsys, synth, pair_mode):
    spec = RunSpec.model_validate({"data": {"input_mode": "pair"}})
    assert (spec.variant, spec.in_chans) == ("single", 2)
    with pytest.raises(ValueError, match="cannot read data.input_mode 'pair'; use one of \\['single'\\]"):
        RunSpec.model_validate({"data": {"input_mode": "pair"}, "model": {"variant": "temporal"}})
    _validate_run_compare(folder, monkeypatch, capsys, synth, "pair_run", "    data: {input_mode: pair}")


def test_a_new_metric_is_one_row(folder, monkeypatch, capsys, synth, gmean_metric):
    assert "gmean" in compare_choices()
    body = "    eval: {monitor: gmean, threshold_metric: gmean}"
    table = _validate_run_compare(folder, monkeypatch, capsys, synth, "gmean_run", body, metric="GMEAN")
    assert "gmean" in table.splitlines()[0].lower()  # the ranked column
    with pytest.raises(ValueError, match="Unknown eval.monitor value 'gmaen'.*did you mean 'gmean'"):
        RunSpec.model_validate({"eval": {"monitor": "gmaen"}})


def test_a_new_model_variant_is_one_row_and_one_builder(folder, monkeypatch, capsys, synth, probe_variant):
    spec = RunSpec.model_validate({"model": {"variant": "probe"}})
    assert (spec.variant, spec.in_chans) == ("probe", 1)
    with pytest.raises(ValueError, match="model.variant 'probe' cannot read data.input_mode 'sequence'"):
        RunSpec.model_validate({"data": {"input_mode": "sequence"}, "model": {"variant": "probe"}})
    _validate_run_compare(folder, monkeypatch, capsys, synth, "probe_run", "    model: {variant: probe}")


def test_unknown_names_list_the_table():
    with pytest.raises(ValueError, match="Unknown input mode 'frames'; available: frame, flow.*did you mean 'frame'"):
        RunSpec.model_validate({"data": {"input_mode": "frames"}})
    with pytest.raises(ValueError, match="Unknown model variant 'twostream'.*did you mean 'two_stream'"):
        RunSpec.model_validate({"model": {"variant": "twostream"}})
