"""Body of ``arflare diff A B``: why two runs (or a run and a registry entry) differ.

A side is a run id, an experiment name (its best FINISHED run by the val metric) or, with
``--profile``, an experiment name resolved from the registry without any run. The output is
the resolved-spec keys whose values differ (location-only keys listed apart), the data
fingerprint, the git commit and the headline metrics side by side. Never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from arflare.comparing import SPLITS, conventions, display_name, headline, metric_key, resolve_run, unmeasurable
from registry.tracking import flatten_params

_MAX_VALUE = 40  # longer values (lists as JSON) are cut in the table


@dataclass(frozen=True)
class _Side:
    title: str
    params: Mapping[str, str]
    fingerprint: str | None = None
    commit: str | None = None
    dirty: bool | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)


def diff(registry, a: str, b: str, *, profile: str | None = None, metric: str = "tss") -> str:
    """Describe what differs between ``a`` and ``b`` (see the module docstring for what a side is)."""
    from arflare.commands import open_tracker

    records = None

    def side(ref: str) -> _Side:
        nonlocal records
        if profile is not None and ref in registry.experiments:
            return _registry_side(registry, ref, profile)
        if records is None:
            records = open_tracker(registry).search()
        run, how = resolve_run(records, ref, metric=metric)
        return _Side(title=f"run {run.run_id[:8]}  {run.run_name}  ({how}, {run.status})", params=run.params,
                     fingerprint=run.tags.get("arflare.data_fingerprint"), commit=run.tags.get("arflare.git_commit"),
                     dirty=run.tags.get("arflare.git_dirty") == "true", metrics=run.metrics)

    left, right = side(a), side(b)
    lines = [f"A  {left.title}", f"B  {right.title}", ""]
    lines += _spec_lines(left.params, right.params)
    lines += ["", *_grid([("data fingerprint", left.fingerprint or "-", right.fingerprint or "-"),
                          ("git commit", _commit(left), _commit(right))], mark_same=True)]
    metric_rows = [(display_name_for(split, name), _value(left, split, name), _value(right, split, name))
                   for split in SPLITS for name in headline()]
    if any(row[1] != "-" or row[2] != "-" for row in metric_rows):
        lines += ["", "headline metrics (val: best checkpoint; test: [95% CI] AR cluster bootstrap)"]
        lines += _grid(metric_rows, mark_same=False)
    return "\n".join(lines) + "\n"


def display_name_for(split: str, name: str) -> str:
    return f"{split} {display_name(name)}"


def _registry_side(registry, name: str, profile: str) -> _Side:
    runs = registry.expand(name, profile=profile)
    note = f"; expands to {len(runs)} runs, showing {runs[0].name}" if len(runs) > 1 else ""
    params = flatten_params(runs[0].spec.model_dump(mode="json"))
    return _Side(title=f"registry {name} --profile {profile}  (resolved spec, not run{note})", params=params)


def _spec_lines(left: Mapping[str, str], right: Mapping[str, str]) -> list[str]:
    location = conventions().ignore_params
    keys = sorted(set(left) | set(right))
    differing = [k for k in keys if left.get(k) != right.get(k)]
    spec = [k for k in differing if k not in location]
    where = [k for k in differing if k in location]
    if not spec:
        lines = [f"resolved spec: identical ({len(keys)} keys)"]
    else:
        lines = [f"resolved spec: {len(spec)} of {len(keys)} keys differ"]
        lines += _grid([(k, _cut(left.get(k)), _cut(right.get(k))) for k in spec], mark_same=False)
    if where:
        lines.append(f"location/speed only (not part of the configuration): {', '.join(where)}")
    return lines


def _cut(value: str | None) -> str:
    if value is None:
        return "(absent)"
    return value if len(value) <= _MAX_VALUE else value[: _MAX_VALUE - 1] + "…"


def _commit(side: _Side) -> str:
    if side.commit is None:
        return "-"
    return side.commit[:10] + (" (dirty)" if side.dirty else "")


def _value(side: _Side, split: str, name: str) -> str:
    metrics = side.metrics
    value = metrics.get(metric_key(split, name), metrics.get(f"{split}/{name}"))
    if value is None:
        return "-"
    tn, fp = (metrics.get(metric_key(split, n), metrics.get(f"{split}/{n}")) for n in ("tn", "fp"))
    if tn is not None and fp is not None and unmeasurable(name, negatives=tn + fp, split=split):
        return "n/a"
    lo, hi = metrics.get(f"{split}/{name}_lo"), metrics.get(f"{split}/{name}_hi")
    return f"{value:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if split == "test" and lo is not None and hi is not None else "")


def _grid(rows: list[tuple[str, str, str]], *, mark_same: bool) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = []
    for key, a, b in rows:
        same = "  (same)" if mark_same and a == b and a != "-" else ""
        out.append(f"  {key.ljust(widths[0])}  {a.ljust(widths[1])}  {b}{same}".rstrip())
    return out
