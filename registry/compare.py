"""Rank tracked configurations by a metric: groups of seeds, sweep trials, intervals, statuses.

Pure Python over :class:`~registry.tracking.RunRecord` (the store is read elsewhere) and
generic: tag names, the seed param and the domain's notes come from the caller. Rendering is
in :mod:`registry._compare_render`.

The unit of ranking is a *configuration*: the runs of one experiment that share a configuration
hash (they differ only in the seed). A configuration of several finished runs gets one row
with the mean ± sample std over them and n, followed by its runs. A sweep is ranked as one block
headed by its study, with one row per trial and never a mean (trials are different
configurations chosen by the sampler). Only FINISHED runs (and COMPLETE trials) that logged the
ranking metric are ranked; the rest are listed after them with their status, or counted.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from registry.tracking import TAG_EXPERIMENT, TAG_PARENT, RunRecord

GROUP, RUN, STUDY, TRIAL = "group", "run", "study", "trial"  # row kinds


@dataclass(frozen=True)
class MetricColumn:
    """A metric shown as a column.

    Attributes:
        name: Machine name, the JSON/CSV key (``"test_tss"``).
        label: Header (``"test TSS"``).
        key: Logged metric key (``"test/tss"``).
        fallback: Key read when ``key`` is missing (older runs); such rows get ``fallback_note``.
        interval: Keys of the interval's ends (``("test/tss_lo", "test/tss_hi")``), if logged.
        higher_is_better: Direction, used when this column ranks.
        narrow: Shown in the default terminal table (others need ``--wide``).
    """

    name: str
    label: str
    key: str
    fallback: str | None = None
    interval: tuple[str, str] | None = None
    higher_is_better: bool = True
    narrow: bool = True


@dataclass(frozen=True)
class Conventions:
    """Where the comparison finds what it needs on a run (tags and params)."""

    experiment_tag: str = TAG_EXPERIMENT
    config_tag: str = "arflare.config_hash"
    fingerprint_tag: str = "arflare.data_fingerprint"
    commit_tag: str = "arflare.git_commit"
    dirty_tag: str = "arflare.git_dirty"
    parent_tag: str = TAG_PARENT
    study_tag: str = "arflare.study"  # on a sweep's parent run, which is a heading, not a run to rank
    trial_state_tag: str = "arflare.trial_state"
    trial_number_tag: str = "optuna.trial_number"
    seed_param: str = "train.seed"
    # Params that say where things are or how fast they run, never what a run computes.
    ignore_params: Collection[str] = ()
    not_ranked_trial_states: Collection[str] = ("PRUNED", "FAIL", "RUNNING")
    fallback_note: str = "last-val"


@dataclass
class Comparison:
    """What :func:`compare_runs` found: rows in display order and what was left out.

    Attributes:
        rows: One dict per row, keyed by machine names (see :func:`compare_runs`).
        columns: The metric columns, the ranking one first.
        rank_by: The ranking column.
        n_ranked: Configurations (and sweep trials) that were ranked.
        hidden: Status -> count of runs not ranked and not listed (without ``show_all``).
        notes: Code -> meaning of the codes that appear in the rows' ``notes``.
    """

    rows: list[dict[str, Any]]
    columns: list[MetricColumn]
    rank_by: MetricColumn
    n_ranked: int
    n_trials: int
    hidden: Counter = field(default_factory=Counter)
    notes: dict[str, str] = field(default_factory=dict)


NoteFn = Callable[[RunRecord], Mapping[str, str]]  # run -> {code: meaning}
NotMeasurableFn = Callable[[RunRecord, MetricColumn], str | None]  # reason a value is n/a, or None


def compare_runs(records: Sequence[RunRecord], *, rank_by: MetricColumn, columns: Sequence[MetricColumn] = (),
                 conventions: Conventions = Conventions(), top: int | None = None, show_all: bool = False,
                 run_notes: NoteFn | None = None, not_measurable: NotMeasurableFn | None = None) -> Comparison:
    """Rank the configurations of ``records`` by ``rank_by``.

    Args:
        records: Runs in any order; sweep parents are recognised (others point at them).
        rank_by: The ranking metric column.
        columns: Further metric columns; one equal to ``rank_by`` (same name) is not repeated.
        conventions: Tag and param names.
        top: Keep only the first ``top`` ranked configurations.
        show_all: List unranked runs after the ranked ones instead of only counting them.
        run_notes: Domain flags of a run (e.g. ``{"dirty": "git tree was dirty"}``).
        not_measurable: Says when a run's value of a column cannot be measured (shown n/a).

    Returns:
        A :class:`Comparison`. Row keys: ``rank``, ``kind`` (group/run/study/trial), ``group``
        (configuration label), ``experiment``, ``config_hash``, ``run_id``, ``run_name``,
        ``status``, ``n_runs``, ``seed``, per column ``<name>`` (group rows: the mean),
        ``<name>_std`` (group rows), ``<name>_lo``/``<name>_hi`` (runs with a logged interval),
        ``notes``, ``git_commit``, ``git_dirty``.
    """
    if top is not None and top < 0:
        raise ValueError(f"top must be a number of configurations >= 0, got {top!r}; use None to keep all")
    shown = [rank_by, *[c for c in columns if c.name != rank_by.name]]
    build = _Builder(records, rank_by=rank_by, shown=shown, conv=conventions, run_notes=run_notes,
                     not_measurable=not_measurable)
    return build.comparison(top=top, show_all=show_all)


def config_hash(record: RunRecord, conv: Conventions) -> str:
    """The run's configuration hash tag, or for older runs a hash of its params without the
    seed and the ignored (location/speed) params, plus its data fingerprint."""
    tagged = record.tags.get(conv.config_tag)
    if tagged:
        return tagged
    return _params_hash(_config_params(record, conv), record.tags.get(conv.fingerprint_tag, ""))


def _params_hash(params: Mapping[str, str], fingerprint: str) -> str:
    payload = json.dumps({"params": dict(sorted(params.items())), "data": fingerprint}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _config_params(record: RunRecord, conv: Conventions) -> dict[str, str]:
    skip = {conv.seed_param, *conv.ignore_params}
    return {k: v for k, v in record.params.items() if k not in skip}


def metric_value(record: RunRecord, column: MetricColumn) -> tuple[float | None, bool]:
    """``(value, from_fallback)``: the column's value on a run (None when missing or NaN)."""
    for key, fallback in ((column.key, False), (column.fallback, True)):
        if key is not None and key in record.metrics:
            value = record.metrics[key]
            return (None if math.isnan(value) else float(value)), fallback
    return None, False


def _value(record: RunRecord, key: str) -> float | None:
    value = record.metrics.get(key)
    return None if value is None or math.isnan(value) else float(value)


class _Builder:
    """Sorts runs into configurations and studies and turns them into rows."""

    def __init__(self, records, *, rank_by, shown, conv, run_notes, not_measurable) -> None:
        self.rank_by, self.shown, self.conv = rank_by, shown, conv
        self.run_notes = run_notes or (lambda record: {})
        self.not_measurable = not_measurable or (lambda record, column: None)
        self.notes: dict[str, str] = {}
        parents = {r.tags[conv.parent_tag] for r in records if r.tags.get(conv.parent_tag)}
        parents |= {r.run_id for r in records if r.tags.get(conv.study_tag) and not r.tags.get(conv.parent_tag)}
        self.parents = {r.run_id: r for r in records if r.run_id in parents}
        self.runs = sorted((r for r in records if r.run_id not in parents),
                           key=lambda r: (r.start_time is None, r.start_time or 0))
        self.labels = _labels([r for r in self.runs if not self._is_trial(r)], conv)

    def _is_trial(self, record: RunRecord) -> bool:
        return bool(record.tags.get(self.conv.parent_tag))

    def status(self, record: RunRecord) -> str:
        """FINISHED unless the run ended otherwise; a sweep trial's Optuna state wins (PRUNED)."""
        state = record.tags.get(self.conv.trial_state_tag)
        if record.status == "FINISHED" and state in self.conv.not_ranked_trial_states:
            return state
        return record.status

    def rankable(self, record: RunRecord) -> bool:
        return self.status(record) == "FINISHED" and metric_value(record, self.rank_by)[0] is not None

    def comparison(self, *, top: int | None, show_all: bool) -> Comparison:
        units = self._units()
        ranked = sorted((u for u in units if u.members), key=self._unit_order)
        kept = ranked[:top] if top is not None else ranked
        rows: list[dict[str, Any]] = []
        for rank, unit in enumerate(kept, start=1):
            rows += self._unit_rows(unit, rank)
        leftovers = [r for u in units for r in u.others]
        hidden: Counter = Counter()
        for record in sorted(leftovers, key=lambda r: (r.start_time is None, r.start_time or 0)):
            if show_all:
                rows.append(self._run_row(record, kind=TRIAL if self._is_trial(record) else RUN, rank=None,
                                          label=self._label(record)))
            else:
                hidden[self._unranked_status(record)] += 1
        n_trials = sum(len(u.members) for u in kept if u.study is not None)
        n_ranked = sum(len(u.members) if u.study is not None else 1 for u in kept)
        return Comparison(rows, self.shown, self.rank_by, n_ranked, n_trials, hidden, self.notes)

    def _unranked_status(self, record: RunRecord) -> str:
        status = self.status(record)
        return f"FINISHED without {self.rank_by.label}" if status == "FINISHED" else status

    def _units(self) -> list[_Unit]:
        units: dict[tuple, _Unit] = {}
        for record in self.runs:
            if self._is_trial(record):
                parent_id = record.tags[self.conv.parent_tag]
                key = ("study", parent_id)
                parent = self.parents.get(parent_id)
                label = parent.run_name if parent is not None else record.run_name.rsplit("/", 1)[0]
                unit = units.setdefault(key, _Unit(label=label, experiment=record.tags.get(self.conv.experiment_tag, ""),
                                                   config=None, study=parent_id))
            else:
                experiment = record.tags.get(self.conv.experiment_tag, "")
                config = config_hash(record, self.conv)
                unit = units.setdefault(("config", experiment, config),
                                        _Unit(label=self.labels.get(record.run_id, experiment), experiment=experiment,
                                              config=config, study=None))
            (unit.members if self.rankable(record) else unit.others).append(record)
        return list(units.values())

    def _unit_order(self, unit: _Unit) -> float:
        """Sort key, best first: a configuration by its mean, a study by its best trial."""
        values = [metric_value(r, self.rank_by)[0] for r in unit.members]
        sign = -1 if self.rank_by.higher_is_better else 1
        if unit.study is not None:
            return min(sign * v for v in values)
        return sign * statistics.fmean(values)

    def _sorted_members(self, unit: _Unit) -> list[RunRecord]:
        sign = -1 if self.rank_by.higher_is_better else 1
        return sorted(unit.members, key=lambda r: sign * metric_value(r, self.rank_by)[0])

    def _label(self, record: RunRecord) -> str:
        if self._is_trial(record):
            parent = self.parents.get(record.tags[self.conv.parent_tag])
            return parent.run_name if parent is not None else record.run_name.rsplit("/", 1)[0]
        return self.labels.get(record.run_id, record.tags.get(self.conv.experiment_tag, ""))

    def _unit_rows(self, unit: _Unit, rank: int) -> list[dict[str, Any]]:
        members = self._sorted_members(unit)
        if unit.study is not None:
            head = {**_blank(self.shown), "rank": rank, "kind": STUDY, "group": unit.label, "experiment": unit.experiment,
                    "run_id": unit.study, "n_runs": len(members), "status": None}
            others = Counter(self.status(r) for r in unit.others)
            head["notes"] = ", ".join(f"{n} {s.lower()}" for s, n in sorted(others.items())) or None
            return [head, *(self._member(self._run_row(r, kind=TRIAL, rank=None, label=unit.label)) for r in members)]
        if len(members) == 1:
            return [self._run_row(members[0], kind=RUN, rank=rank, label=unit.label, config=unit.config)]
        group = self._group_row(unit, members, rank)
        return [group, *(self._member(self._run_row(r, kind=RUN, rank=None, label=unit.label, config=unit.config))
                         for r in members)]

    @staticmethod
    def _member(row: dict[str, Any]) -> dict[str, Any]:
        row["_member"] = True  # shown indented under its group or study
        return row

    def _group_row(self, unit: _Unit, members: list[RunRecord], rank: int) -> dict[str, Any]:
        row = {**_blank(self.shown), "rank": rank, "kind": GROUP, "group": unit.label, "experiment": unit.experiment,
               "config_hash": unit.config, "n_runs": len(members), "status": "FINISHED"}
        for column in self.shown:
            values = [v for r in members if not self.not_measurable(r, column)
                      and (v := metric_value(r, column)[0]) is not None]
            if values:
                row[column.name] = statistics.fmean(values)
                row[f"{column.name}_std"] = statistics.stdev(values) if len(values) > 1 else None
                row[f"{column.name}_n"] = len(values)
            elif any(self.not_measurable(r, column) for r in members):
                row["_na"].add(column.name)
        codes = sorted({code for r in members for code in self._notes(r)})
        row["notes"] = ", ".join(codes) or None
        commits = {r.tags.get(self.conv.commit_tag) for r in members}
        row["git_commit"] = commits.pop() if len(commits) == 1 else None
        row["git_dirty"] = any(r.tags.get(self.conv.dirty_tag) == "true" for r in members)
        return row

    def _notes(self, record: RunRecord) -> dict[str, str]:
        found = dict(self.run_notes(record))
        if any(metric_value(record, c)[1] for c in self.shown):
            found[self.conv.fallback_note] = "ranked by the last logged value (the run predates best-checkpoint metrics)"
        self.notes.update(found)
        return found

    def _run_row(self, record: RunRecord, *, kind: str, rank: int | None, label: str,
                 config: str | None = None) -> dict[str, Any]:
        row = {**_blank(self.shown), "rank": rank, "kind": kind, "group": label,
               "experiment": record.tags.get(self.conv.experiment_tag, ""),
               "config_hash": config or config_hash(record, self.conv), "run_id": record.run_id,
               "run_name": record.run_name, "status": self.status(record), "n_runs": 1,
               "seed": record.params.get(self.conv.seed_param), "trial": record.tags.get(self.conv.trial_number_tag),
               "git_commit": record.tags.get(self.conv.commit_tag),
               "git_dirty": record.tags.get(self.conv.dirty_tag) == "true"}
        for column in self.shown:
            if self.not_measurable(record, column):
                row["_na"].add(column.name)
                continue
            row[column.name] = metric_value(record, column)[0]
            if column.interval is not None:
                row[f"{column.name}_lo"] = _value(record, column.interval[0])
                row[f"{column.name}_hi"] = _value(record, column.interval[1])
        row["notes"] = ", ".join(sorted(self._notes(record))) or None
        return row


@dataclass
class _Unit:
    label: str
    experiment: str
    config: str | None
    study: str | None  # the parent run id of a sweep's block
    members: list[RunRecord] = field(default_factory=list)  # ranked runs
    others: list[RunRecord] = field(default_factory=list)  # not ranked (status, no metric)


def _blank(columns: Iterable[MetricColumn]) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(("rank", "kind", "group", "experiment", "config_hash", "run_id", "run_name",
                                         "status", "n_runs", "seed", "trial"))
    for column in columns:
        row.update(dict.fromkeys((column.name, f"{column.name}_std", f"{column.name}_n",
                                  f"{column.name}_lo", f"{column.name}_hi")))
    row.update(notes=None, git_commit=None, git_dirty=None, _na=set(), _member=False)
    return row


def _labels(records: Sequence[RunRecord], conv: Conventions) -> dict[str, str]:
    """Run id -> ``experiment [key=value, ...]`` naming what sets its configuration apart from the
    experiment's other configurations (nothing when the experiment has one)."""
    by_experiment: dict[str, dict[str, RunRecord]] = {}
    for record in records:
        experiment = record.tags.get(conv.experiment_tag, "")
        by_experiment.setdefault(experiment, {}).setdefault(config_hash(record, conv), record)
    config_of = {r.run_id: config_hash(r, conv) for r in records}
    labels_by_config: dict[tuple[str, str], str] = {}
    for experiment, configs in by_experiment.items():
        params = {c: _config_params(r, conv) for c, r in configs.items()}
        fingerprints = {c: r.tags.get(conv.fingerprint_tag, "") for c, r in configs.items()}
        keys = sorted({k for p in params.values() for k in p})
        differing = [k for k in keys if len({p.get(k) for p in params.values()}) > 1]
        for config in configs:
            parts = [f"{k}={short_value(params[config].get(k))}" for k in differing]
            if len(set(fingerprints.values())) > 1:
                parts.append(f"data={fingerprints[config][:8] or '?'}")
            labels_by_config[experiment, config] = f"{experiment} [{', '.join(parts)}]" if parts else experiment
    return {r.run_id: labels_by_config[r.tags.get(conv.experiment_tag, ""), config_of[r.run_id]] for r in records}


def short_value(value: str | None) -> str:
    """A param value as short as it stays exact: ``"0.0003"`` -> ``"3e-4"``, ``"True"`` stays."""
    if value is None:
        return "-"
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number) or number == int(number) and abs(number) < 1e6:
        return value
    plain = f"{number:.12g}"
    mantissa, _, exponent = f"{number:.12e}".partition("e")
    scientific = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return min(plain, scientific, key=len)
