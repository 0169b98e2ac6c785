"""One table of every sample in a shard set, built in one pass and cached.

``build_index(root)`` reads the tar headers and the small ``<key>.json`` members of
``<root>/{train,val,test}/*.tar`` (and of parallel flow shards), checks the data for
the mistakes that silently ruin a flare study (an active region in two splits, empty
splits, unreadable samples) and returns a :class:`DataIndex`: a pandas table with the
byte offsets the datasets read from. PNGs are not decoded here; that would take hours
on the full 950k-image set, so undecodable images are reported at read time.

The table is cached as parquet *outside* the data root (roots may be read-only) with a
manifest of shard sizes and mtimes; an unchanged shard set loads without opening a tar.
This module must not import torch: the CLI and the registry use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from arflare.data.index_report import skipped_text
from arflare.data.shards import SPLITS, Member, ShardFormatError, iter_members, parse_key
from arflare.errors import DataError

_CACHE_FORMAT = 1  # bump when the table's columns change, so old caches are rebuilt
COLUMNS = (
    "split", "shard", "key", "ar", "timestamp", "label", "reg_label", "png_offset",
    "png_size", "has_flow", "flow_shard", "flow_offset", "flow_size", "meta",
)  # fmt: skip


@dataclass(frozen=True)
class Skipped:
    """A sample (or whole shard, ``member == "*"``) left out of the index, and why.

    ``source`` is ``"magnetogram"`` (the sample is not in the index) or ``"flow"`` (a damaged
    flow shard, relative to the flow root: its samples stay, with ``has_flow = False``).
    """

    split: str
    shard: str
    member: str
    reason: str
    source: str = "magnetogram"


@dataclass(frozen=True, eq=False)
class DataIndex:
    """Every usable sample of a shard set.

    Attributes:
        root: the magnetogram root holding ``train/``, ``val/``, ``test/``.
        flow_root: the optical-flow root with the same layout, or None.
        table: one row per sample, sorted by split (train, val, test), AR, timestamp.
            Columns: split, shard (path relative to ``root``), key, ar, timestamp,
            label (json ``label``), reg_label, png_offset, png_size, has_flow,
            flow_shard (relative to ``flow_root``), flow_offset, flow_size (-1 when
            absent) and meta (the json's other keys, as a json string).
        fingerprint: content hash, equal for the same data copied elsewhere.
        skipped: samples left out, with the reason.
    """

    root: Path
    flow_root: Path | None
    table: pd.DataFrame
    fingerprint: str
    skipped: tuple[Skipped, ...]

    def summary(self) -> pd.DataFrame:
        """One row per split (train, val, test) with columns split, samples, positives,
        ars, first, last, with_flow and skipped."""
        rows = []
        for split in SPLITS:
            part = self.table[self.table["split"] == split]
            rows.append(
                {
                    "split": split,
                    "samples": len(part),
                    "positives": int(part["label"].sum()),
                    "ars": part["ar"].nunique(),
                    "first": part["timestamp"].min(),
                    "last": part["timestamp"].max(),
                    "with_flow": int(part["has_flow"].sum()),
                    "skipped": sum(s.split == split and s.source == "magnetogram" for s in self.skipped),
                }
            )
        return pd.DataFrame(rows)


def build_index(
    root: Path,
    *,
    flow_root: Path | None = None,
    cache_dir: Path | None = None,
    strict: bool = False,
    progress: bool = True,
    report_skipped: bool = True,
) -> DataIndex:
    """Index ``<root>/{train,val,test}/*.tar``, loading a cached table when no shard changed.

    Args:
        root: magnetogram shard root.
        flow_root: optional optical-flow shard root; samples without flow get
            ``has_flow = False``.
        cache_dir: where the parquet cache goes; default ``$ARFLARE_CACHE`` or
            ``~/.cache/arflare``.
        strict: raise on the first bad sample instead of skipping and recording it.
        progress: show a tqdm bar on stderr while reading shards.
        report_skipped: print one line to stderr when samples were skipped, pointing at
            ``arflare index`` (which lists them itself and turns this off).

    Raises:
        DataError: a split folder is missing or empty, a split has no usable sample,
            an AR appears in two splits, or (strict) any sample is bad. The message lists
            every problem found in the pass, bad samples first.
    """
    root = Path(root).resolve()
    flow_root = Path(flow_root).resolve() if flow_root is not None else None
    shards = _list_shards(root, required=True)
    flow_shards = _list_shards(flow_root, required=False) if flow_root else {}
    manifest = {
        "format": _CACHE_FORMAT,
        "root": str(root),
        "flow_root": str(flow_root) if flow_root else None,
        "shards": _stat_shards(root, shards),
        "flow_shards": _stat_shards(flow_root, flow_shards) if flow_root else {},
    }
    cache = _cache_paths(cache_dir, manifest)
    index = _load_cache(cache, manifest, root=root, flow_root=flow_root)
    if index is None:
        index = _build(root, flow_root, shards, flow_shards, manifest, strict=strict, progress=progress)
        _save_cache(cache, manifest, index)
    if strict and index.skipped:
        _raise_skipped(index.skipped[0])
    if report_skipped and index.skipped:
        print(f"arflare: {len(index.skipped)} bad samples/shards under {root} are left out; "
              f"`arflare index {root}` lists them", file=sys.stderr)
    return index


def _list_shards(root: Path, *, required: bool) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for split in SPLITS:
        folder = root / split
        names = sorted(p.name for p in folder.glob("*.tar")) if folder.is_dir() else []
        if required and not folder.is_dir():
            raise DataError(
                f"Split folder {folder} is missing; a data root needs {', '.join(SPLITS)} "
                f"folders of .tar shards (check --root / data.root)"
            )
        if required and not names:
            raise DataError(f"Split folder {folder} holds no .tar shards; add shards or fix the root")
        found[split] = [f"{split}/{name}" for name in names]
    return found


def _stat_shards(root: Path, shards: dict[str, list[str]]) -> dict[str, list[int]]:
    stats = {}
    for rels in shards.values():
        for rel in rels:
            st = (root / rel).stat()
            stats[rel] = [st.st_size, st.st_mtime_ns]
    return stats


def _build(root, flow_root, shards, flow_shards, manifest, *, strict, progress) -> DataIndex:
    work = [(split, rel) for split in SPLITS for rel in shards[split]]
    work_flow = [(split, rel) for split in SPLITS for rel in flow_shards.get(split, [])]
    bar = tqdm(total=len(work) + len(work_flow), desc="indexing shards", unit="shard",
               file=sys.stderr, disable=not progress)  # fmt: skip
    with bar:
        rows, skipped = _scan_magnetograms(root, work, bar=bar, strict=strict)
        flow: dict[tuple[str, str], tuple[str, Member]] = {}
        for split, rel in work_flow:
            found, problem = _scan_flow_shard(flow_root / rel)
            for key, member in found.items():
                flow.setdefault((split, key), (rel, member))
            if problem:
                skipped.append(Skipped(split, rel, "*", f"{problem}; its samples get has_flow=False", source="flow"))
            bar.update()
    table = _make_table(rows, flow)
    problems = _split_problems(table, skipped, root)
    if problems:
        listing = skipped_text(skipped, more="once the problems below are fixed, `arflare index --format json` lists all")
        raise DataError(f"the data under {root} cannot be used; every problem found:\n"
                        + (f"{listing}\n\n" if listing else "") + "\n".join(problems))
    fingerprint = _fingerprint(table, manifest)
    return DataIndex(root=root, flow_root=flow_root, table=table,
                     fingerprint=fingerprint, skipped=tuple(skipped))  # fmt: skip


def _scan_magnetograms(root: Path, work, *, bar, strict: bool) -> tuple[list[dict], list[Skipped]]:
    rows: list[dict] = []
    skipped: list[Skipped] = []
    seen: dict[str, tuple[str, str]] = {}  # key -> (split, shard) holding it, to catch a sample written twice
    for split, rel in work:
        found, bad = _scan_shard(root / rel, split=split, shard=rel)
        keep = []
        for row in found:
            first_split, first_shard = seen.setdefault(row["key"], (split, rel))
            if first_shard == rel:
                keep.append(row)
            elif first_split != split:  # a copy in another split is leakage, never a skippable duplicate:
                keep.append(row)  # kept, so the AR shows in both splits and _check_splits names it
            else:
                bad.append(Skipped(split, rel, f"{row['key']}.png", f"duplicate key, also in {first_shard}"))
        rows.extend(keep)
        if strict and bad:
            _raise_skipped(bad[0])
        skipped.extend(bad)
        bar.update()
    return rows, skipped


def _scan_shard(path: Path, *, split: str, shard: str) -> tuple[list[dict], list[Skipped]]:
    """Rows for every good sample of one shard, and the bad ones."""
    groups: dict[str, dict[str, Member]] = {}
    skipped: list[Skipped] = []
    try:
        for member in iter_members(path):
            groups.setdefault(member.key, {})[member.ext] = member
    except ShardFormatError as exc:
        # Keep the samples read before the damage; one cut in half lacks a member
        # and is skipped below like any incomplete sample.
        skipped.append(Skipped(split, shard, "*", str(exc)))
    rows = []
    with open(path, "rb") as handle:
        for key, members in groups.items():
            row, reason = _sample_row(handle.fileno(), key, members)
            if reason is None:
                rows.append({"split": split, "shard": shard, **row})
            else:
                skipped.append(Skipped(split, shard, *reason))
    return rows, skipped


def _sample_row(fd: int, key: str, members: dict[str, Member]) -> tuple[dict, tuple | None]:
    png, meta = members.get("png"), members.get("json")
    if png is None:
        return {}, (f"{key}.*", "sample has no .png member")
    if png.size == 0:
        return {}, (f"{key}.png", "empty .png member (0 bytes)")
    if meta is None:
        return {}, (f"{key}.png", "sample has no .json member (each needs <key>.json with a 'label')")
    try:
        info = json.loads(os.pread(fd, meta.size, meta.offset))
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, (f"{key}.json", f"invalid json ({exc})")
    if not isinstance(info, dict) or info.get("label") not in (0, 1):
        return {}, (f"{key}.json", "json needs \"label\": 0 or 1")
    ar, when = parse_key(key)
    if when is None:
        return {}, (f"{key}.png", "key has no YYYYMMDD_HHMMSS timestamp")
    extra = {k: v for k, v in info.items() if k not in ("label", "reg_label")}
    row = {"key": key, "ar": ar, "timestamp": when, "label": int(info["label"]),
           "reg_label": str(info.get("reg_label", "0")), "png_offset": png.offset,
           "png_size": png.size, "meta": json.dumps(extra, sort_keys=True)}  # fmt: skip
    return row, None


def _scan_flow_shard(path: Path) -> tuple[dict[str, Member], str | None]:
    """The usable ``<key>.flow.npz`` members of a flow shard (a damaged one gives what it can), and its damage."""
    found: dict[str, Member] = {}
    try:
        for member in iter_members(path):
            if member.ext == "flow.npz" and member.size > 0:
                found[member.key] = member
    except ShardFormatError as exc:
        return found, str(exc)
    return found, None


def _raise_skipped(item: Skipped) -> None:
    raise DataError(
        f"{item.split} shard {item.shard}, member {item.member!r}: {item.reason}. "
        f"Fix or remove it, or index with strict=False to skip it"
    )


def _make_table(rows: list[dict], flow: dict) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if not c.startswith(("has_", "flow_"))])
    matches = [flow.get((s, k)) for s, k in zip(table["split"], table["key"], strict=True)]
    table["has_flow"] = pd.Series([m is not None for m in matches], dtype=bool)
    table["flow_shard"] = pd.Series([m[0] if m else None for m in matches], dtype="str")
    table["flow_offset"] = pd.Series([m[1].offset if m else -1 for m in matches], dtype="int64")
    table["flow_size"] = pd.Series([m[1].size if m else -1 for m in matches], dtype="int64")
    table["timestamp"] = pd.to_datetime(table["timestamp"]).astype("datetime64[ns]")
    for col in ("label", "png_offset", "png_size"):
        table[col] = table[col].astype("int64")
    for col in ("split", "shard", "key", "ar", "reg_label", "meta"):
        table[col] = table[col].astype("str")
    rank = table["split"].map({s: i for i, s in enumerate(SPLITS)})
    table = table.assign(_rank=rank).sort_values(["_rank", "ar", "timestamp", "key"], kind="stable")
    return table.drop(columns="_rank").reset_index(drop=True)[list(COLUMNS)]


def _split_problems(table: pd.DataFrame, skipped: list[Skipped], root: Path) -> list[str]:
    """Every problem that makes the index unusable: empty splits and ARs in more than one split (leakage)."""
    problems = []
    for split in SPLITS:
        if not (table["split"] == split).any():
            problems.append(f"Split {split!r} ({root / split}) has no usable sample after skipping "
                            f"{sum(s.split == split for s in skipped)} bad ones; fix those shards")
    splits_per_ar = table.groupby("ar")["split"].unique()
    leaked = splits_per_ar[splits_per_ar.map(len) > 1]
    if len(leaked):
        shards = table[table["ar"].isin(leaked.index)].groupby(["ar", "split"], sort=False)["shard"].first()
        where = "; ".join(f"AR {ar!r} in {', '.join(f'{split} ({shards[ar, split]})' for split in splits)}"
                          for ar, splits in leaked.items())
        problems.append(f"{len(leaked)} AR(s) appear in more than one split: {where}. train/val/test must be "
                        f"split by active region to avoid leakage; move all samples of each AR into one split")
    return problems


def _fingerprint(table: pd.DataFrame, manifest: dict) -> str:
    digest = hashlib.sha256()
    for group in ("shards", "flow_shards"):
        for rel, (size, _mtime) in sorted(manifest[group].items()):
            digest.update(f"{group}\t{rel}\t{size}\n".encode())
    cols = [table[c].astype(str) for c in ("split", "key", "label", "reg_label", "has_flow")]
    for start in range(0, len(table), 65536):  # chunks keep memory flat on 950k rows
        lines = ("\t".join(v) + "\n" for v in zip(*(c.iloc[start : start + 65536] for c in cols)))
        digest.update("".join(lines).encode())
    return digest.hexdigest()[:16]


def cache_root(cache_dir: Path | None = None) -> Path:
    """The folder for tables derived from shards: ``cache_dir``, else ``$ARFLARE_CACHE``, else
    ``~/.cache/arflare`` (never the data root, which may be read-only)."""
    return Path(cache_dir or os.environ.get("ARFLARE_CACHE") or Path.home() / ".cache" / "arflare")


def _cache_paths(cache_dir: Path | None, manifest: dict) -> tuple[Path, Path]:
    base = cache_root(cache_dir)
    name = hashlib.sha256(f"{manifest['root']}\n{manifest['flow_root']}".encode()).hexdigest()[:16]
    return Path(base) / f"index-{name}.parquet", Path(base) / f"index-{name}.json"


def _load_cache(cache, manifest, *, root, flow_root) -> DataIndex | None:
    table_path, manifest_path = cache
    try:
        saved = json.loads(manifest_path.read_text())
        if {k: saved.get(k) for k in manifest} != manifest:
            return None
        table = pd.read_parquet(table_path)
    except (OSError, ValueError):  # no cache yet, or a damaged one: rebuild
        return None
    skipped = tuple(Skipped(**item) for item in saved["skipped"])
    return DataIndex(root=root, flow_root=flow_root, table=table,
                     fingerprint=saved["fingerprint"], skipped=skipped)  # fmt: skip


def _save_cache(cache, manifest, index: DataIndex) -> None:
    table_path, manifest_path = cache
    saved = {**manifest, "fingerprint": index.fingerprint,
             "skipped": [vars(s) for s in index.skipped]}  # fmt: skip
    suffix = f".{os.getpid()}.tmp"  # parallel ranks may build at once; rename is atomic
    try:
        table_path.parent.mkdir(parents=True, exist_ok=True)
        index.table.to_parquet(table_path.with_name(table_path.name + suffix), index=False)
        manifest_path.with_name(manifest_path.name + suffix).write_text(json.dumps(saved))
        table_path.with_name(table_path.name + suffix).replace(table_path)
        manifest_path.with_name(manifest_path.name + suffix).replace(manifest_path)
    except OSError as exc:
        warnings.warn(f"Could not write the index cache in {table_path.parent} ({exc}); "
                      f"set ARFLARE_CACHE to a writable folder", stacklevel=3)  # fmt: skip
