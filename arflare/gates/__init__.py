"""Preflight gates: checks of the data and the input pipeline run before any compute is spent.

``run_gates(spec, index, folder)`` runs every gate of :mod:`arflare.gates.checks` (integrity,
balance, split integrity, shortcut, physics baseline) and :mod:`arflare.gates.inputs` (sample
grid, normalisation), writes the report (JSON, markdown) and figures into ``folder`` and
returns a :class:`~arflare.gates.report.GateReport`. ``arflare check`` prints and records it;
``arflare run`` refuses to train when a gate FAILs. Thresholds come from the spec's ``gates:``
section.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from arflare.gates.report import GateReport, GateResult

__all__ = ["GateReport", "GateResult", "gates_hash", "run_gates"]

# The data fields that change what the gates see (the input gates build the run's datasets).
_PIPELINE = ("input_mode", "image_size", "offsets_min", "require_complete_history", "min_flare_class")
GATED_KEYS = frozenset(f"data.{key}" for key in _PIPELINE)  # spec keys (besides gates.*) a check's verdict depends on


def gates_hash(spec, data_fingerprint: str) -> str:
    """Identity of a check: the data, the gate settings and the input pipeline; same hash, same report."""
    payload = {"data": data_fingerprint, "gates": spec.gates.model_dump(mode="json"),
               "pipeline": {k: getattr(spec.data, k) for k in _PIPELINE}, "version": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:16]


def run_gates(spec, index, folder: Path, *, progress: bool = True) -> GateReport:
    """Run every gate on ``index`` with ``spec``'s settings; write the report and figures to ``folder``.

    Args:
        spec: the resolved run spec (its ``gates`` and ``data`` sections are read).
        index: the indexed shard set (leakage has already been refused there).
        folder: where ``report.json``, ``report.md`` and the figures go (created).
        progress: progress bars on stderr for the decoding pass.
    """
    from arflare.gates import checks, inputs
    from arflare.gates.baseline import physics_features
    from arflare.gates.scan import scan

    g, data = spec.gates, spec.data
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = scan(index, cache_dir=data.cache_dir, progress=progress)
    results = [
        checks.integrity(table, index.skipped, max_bad_fraction=g.max_bad_fraction, max_saturated=g.max_saturated),
        checks.balance(index.table, min_flare_class=data.min_flare_class, min_positives=g.min_positives,
                       max_base_rate_ratio=g.max_base_rate_ratio),
        checks.split_integrity(index.table),
        checks.shortcut(table, min_flare_class=data.min_flare_class, json_keys=g.shortcut_json_keys,
                        folds=g.cv_folds, max_samples=g.max_samples, max_auc=g.shortcut_max_auc,
                        permutations=g.shortcut_permutations, alpha=g.shortcut_alpha),
        checks.physics_baseline(*physics_features(index, max_samples=g.max_samples, cache_dir=data.cache_dir,
                                                  progress=progress),
                                min_flare_class=data.min_flare_class, folds=g.cv_folds, max_samples=g.max_samples),
    ]
    datasets = inputs.model_inputs(spec, index)
    results.append(inputs.samples_grid(datasets, folder, per_class=g.grid_per_class, input_mode=data.input_mode))
    results.append(inputs.normalisation(datasets, samples=g.normalisation_samples, max_mean_shift=g.max_mean_shift))
    report = GateReport(gates=tuple(results), data_fingerprint=index.fingerprint,
                        gates_hash=gates_hash(spec, index.fingerprint))
    report.write(folder)
    return report
