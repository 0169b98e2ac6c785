"""What ``arflare index`` prints: per-split counts and every skipped sample, grouped so a user can act.

A data set with damaged members should be fixed in one go, so the report lists every bad
sample, grouped by shard and reason (the table shows the first few member names of each
group and how many there are; ``--format json`` lists all of them), and the same listing
precedes any error (such as leakage) that stops the index. Functions here read only the
attributes of :class:`arflare.data.index.DataIndex` and ``Skipped``, so the index module can
use them for its error messages without an import cycle. No torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

MEMBERS_SHOWN = 3  # member names per group in the table; JSON lists all


def skipped_groups(skipped: Sequence) -> pd.DataFrame:
    """One row per (source, split, shard, reason) with the number of entries and their member names.

    Args:
        skipped: ``Skipped`` records (``split``, ``shard``, ``member``, ``reason``, ``source``).

    Returns:
        Columns source, split, shard, reason, count and members (a list), in first-seen order.
    """
    columns = ["source", "split", "shard", "reason", "count", "members"]
    if not skipped:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame([{"source": s.source, "split": s.split, "shard": s.shard, "reason": s.reason,
                           "member": s.member} for s in skipped])
    grouped = frame.groupby(["source", "split", "shard", "reason"], sort=False)["member"]
    out = grouped.agg(count="size", members=list).reset_index()
    return out[columns]


def skipped_text(skipped: Sequence, *, more: str = "`--format json` lists every member") -> str:
    """The table of skipped samples grouped by shard and reason, with a title line; '' when none.

    Args:
        skipped: ``Skipped`` records.
        more: Where the user finds the members a group does not show (ends the title line).
    """
    if not skipped:
        return ""
    groups = skipped_groups(skipped)
    rows = [(g.split, g.shard + (f" ({g.source})" if g.source != "magnetogram" else ""), str(g.count), g.reason,
             ", ".join(g.members[:MEMBERS_SHOWN]) + (f" (+{len(g.members) - MEMBERS_SHOWN} more)"
                                                      if len(g.members) > MEMBERS_SHOWN else ""))
            for g in groups.itertuples()]
    samples = sum(s.source == "magnetogram" for s in skipped)
    flows = len(skipped) - samples
    title = (f"Left out {samples} bad sample(s) or shard(s)" + (f" and {flows} flow problem(s)" if flows else "")
             + f" in {groups['shard'].nunique()} shard(s); fix or remove them ({more}):")
    return f"{title}\n{_left_aligned(('split', 'shard', 'count', 'reason', 'members (* = whole shard)'), rows)}"


def _left_aligned(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Plain left-aligned columns; the last one is not padded (member lists are long)."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in (header, *rows))


def format_report(index, *, fmt: str) -> str:
    """``arflare index``'s output for a built index: per-split counts, fingerprint, skipped samples.

    Args:
        index: A :class:`arflare.data.index.DataIndex`.
        fmt: ``"table"`` or ``"json"`` (every skipped member, one record each).
    """
    summary = index.summary()
    if fmt == "json":
        return json.dumps({
            "root": str(index.root), "fingerprint": index.fingerprint,
            "splits": json.loads(summary.to_json(orient="records", date_format="iso")),
            "skipped": [{"source": s.source, "split": s.split, "shard": s.shard, "member": s.member, "reason": s.reason}
                        for s in index.skipped],
        }, indent=2)
    skipped = skipped_text(index.skipped)
    return f"{summary.to_string(index=False)}\nfingerprint {index.fingerprint}" + (f"\n\n{skipped}" if skipped else "")
