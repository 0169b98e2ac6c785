"""The outcome of the preflight gates: one row per gate, a verdict, and the report files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["PASS", "WARN", "FAIL"]
_ORDER = {"PASS": 0, "WARN": 1, "FAIL": 2}
EXIT_PASS, EXIT_FAIL = 0, 1  # bad input (leakage, unreadable data) is exit 2 and never gets this far


@dataclass(frozen=True)
class GateResult:
    """What one gate found.

    Attributes:
        name: the gate (integrity, balance, split, samples, normalisation, shortcut, physics_baseline).
        status: PASS, WARN or FAIL.
        summary: one line with the numbers behind the status and the threshold it was held to.
        details: everything a reader needs to act (problem lists, per-split tables), JSON-able.
        figures: figure files the gate wrote, relative to the report folder.
    """

    name: str
    status: Status
    summary: str
    details: dict = field(default_factory=dict)
    figures: tuple[str, ...] = ()


def worst(statuses) -> Status:
    """The most severe of ``statuses`` (PASS when empty)."""
    return max(statuses, key=_ORDER.__getitem__, default="PASS")


@dataclass(frozen=True)
class GateReport:
    """Every gate of one data set + input pipeline.

    Attributes:
        gates: the results, in the order they ran.
        data_fingerprint: the shard set's content fingerprint.
        gates_hash: identity of this check (data, gate settings and input pipeline): equal hash, equal report.
        check_run_id: the tracked ``check`` run that recorded this report, if any.
    """

    gates: tuple[GateResult, ...]
    data_fingerprint: str
    gates_hash: str
    check_run_id: str | None = None

    @property
    def status(self) -> Status:
        """The worst status of any gate."""
        return worst(g.status for g in self.gates)

    @property
    def exit_code(self) -> int:
        """0 when no gate FAILs, 1 when one does."""
        return EXIT_FAIL if self.status == "FAIL" else EXIT_PASS

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the gates that FAILed."""
        return tuple(g.name for g in self.gates if g.status == "FAIL")

    def table(self) -> str:
        """The PASS/WARN/FAIL table printed on the terminal."""
        width = max(len(g.name) for g in self.gates)
        lines = [f"{'gate':<{width}}  status  summary"]
        lines += [f"{g.name:<{width}}  {g.status:<6}  {g.summary}" for g in self.gates]
        lines.append(f"{'overall':<{width}}  {self.status:<6}  data {self.data_fingerprint}, check {self.gates_hash}")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The report as markdown: the table, then each gate's details and figures."""
        out = ["# Preflight gates", "", f"data fingerprint `{self.data_fingerprint}`, check `{self.gates_hash}`: "
               f"**{self.status}**", "", "| gate | status | summary |", "|---|---|---|"]
        out += [f"| {g.name} | {g.status} | {g.summary} |" for g in self.gates]
        for g in self.gates:
            out += ["", f"## {g.name}: {g.status}", "", g.summary]
            out += [line for fig in g.figures for line in ("", f"![{g.name}]({fig})")]
            if g.details:
                out += ["", "```json", json.dumps(g.details, indent=2, default=str)[:20000], "```"]
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict:
        """JSON-able form (``report.json``); :meth:`from_dict` reads it back."""
        return {"status": self.status, "data_fingerprint": self.data_fingerprint, "gates_hash": self.gates_hash,
                "check_run_id": self.check_run_id, "gates": [asdict(g) for g in self.gates]}

    @classmethod
    def from_dict(cls, data: dict) -> GateReport:
        """Rebuild a report written by :meth:`to_dict`."""
        gates = tuple(GateResult(**{**g, "figures": tuple(g.get("figures", ()))}) for g in data["gates"])
        return cls(gates=gates, data_fingerprint=data["data_fingerprint"], gates_hash=data["gates_hash"],
                   check_run_id=data.get("check_run_id"))

    def write(self, folder: Path) -> list[Path]:
        """Write ``report.json`` and ``report.md`` into ``folder``; return both paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        json_path, md_path = folder / "report.json", folder / "report.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        md_path.write_text(self.markdown())
        return [json_path, md_path]
