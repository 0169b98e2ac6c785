"""The AR-flares shard format: WebDataset-style tar files, read and written.

A sample is several tar members sharing one *key* (the basename): ``<key>.png``,
``<key>.json`` and, in parallel flow shards, ``<key>.flow.npz``. Keys contain dots
(``1069_hmi.M_720s.20100505_000000_TAI.1.magnetogram_224``), so the key of a member
is found by stripping a *known* extension from the end; never by splitting at the
first dot.

This module is deliberately free of torch so that indexing and the CLI stay light.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from arflare.errors import DataError

SPLITS = ("train", "val", "test")
# Longest first so that ``.flow.npz`` wins over a hypothetical ``.npz``.
KNOWN_EXTENSIONS = ("flow.npz", "png", "json")
_TIME_RE = re.compile(r"(\d{8}_\d{6})")


class ShardFormatError(DataError):
    """A shard or one of its members does not follow the format; the message names both."""


def split_member_name(name: str) -> tuple[str, str]:
    """Split a tar member name into ``(key, extension)``.

    Known multi-part extensions (``flow.npz``) are matched first; anything else is
    split at the *last* dot, because keys themselves contain dots.
    """
    base = name.rsplit("/", 1)[-1]
    for ext in KNOWN_EXTENSIONS:
        if base.endswith("." + ext):
            return base[: -len(ext) - 1], ext
    key, dot, ext = base.rpartition(".")
    if not dot:
        return base, ""
    return key, ext


def parse_key(key: str) -> tuple[str, datetime | None]:
    """Return ``(ar, time)`` encoded in a basename; the AR is the part before the first ``_``."""
    ar = key.split("_", 1)[0]
    match = _TIME_RE.search(key)
    when = datetime.strptime(match.group(1), "%Y%m%d_%H%M%S") if match else None
    return ar, when


def make_key(ar: str, when: datetime, *, size: int) -> str:
    """Build a basename in the real data set's naming scheme."""
    return f"{ar}_hmi.M_720s.{when:%Y%m%d_%H%M%S}_TAI.1.magnetogram_{size}"


@dataclass(frozen=True)
class Member:
    """Where one tar member's bytes lie inside its shard."""

    key: str
    ext: str
    offset: int  # byte offset of the member's data in the tar file
    size: int


def iter_members(path: Path) -> Iterator[Member]:
    """Yield every regular-file member of a tar shard with its data offset.

    A truncated shard yields the members that lie wholly inside the file and then
    raises, so callers can keep what was readable.

    Raises:
        ShardFormatError: the file is not a tar, or is truncated.
    """
    file_size = os.path.getsize(path)
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if info.offset_data + info.size > file_size:
                    raise ShardFormatError(
                        f"{path}: truncated tar file: member {info.name!r} ends past the end of the file"
                    )
                if not info.isfile():
                    continue
                key, ext = split_member_name(info.name)
                yield Member(key=key, ext=ext, offset=info.offset_data, size=info.size)
            _check_end_of_archive(path, tar.offset, file_size)
    except tarfile.ReadError as exc:
        raise ShardFormatError(f"{path}: not a readable tar file ({exc})") from exc
    except EOFError as exc:
        raise ShardFormatError(f"{path}: truncated tar file ({exc})") from exc


def _check_end_of_archive(path: Path, offset: int, file_size: int) -> None:
    # tarfile stops silently at a cut-off header, so a truncated shard would look like
    # a shorter valid one; a complete tar ends with two zero blocks (1024 bytes).
    with open(path, "rb") as handle:
        handle.seek(offset)
        tail = handle.read(1024)
    if len(tail) < 1024 or tail.strip(b"\0"):
        raise ShardFormatError(
            f"{path}: truncated tar file: no end-of-archive marker after byte {offset}"
        )


def read_member(path: Path, offset: int, size: int) -> bytes:
    """Read one member's bytes by offset (what the index records)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(size)
    if len(data) != size:
        raise ShardFormatError(f"{path}: member at offset {offset} is truncated")
    return data


class ShardWriter:
    """Write samples to a tar shard in WebDataset layout.

    Example:
        >>> with ShardWriter(path) as sink:
        ...     sink.write(key, {"png": png_bytes, "json": json_bytes})
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_suffix(self.path.suffix + ".partial")
        self._tar = tarfile.open(self._tmp, mode="w", format=tarfile.USTAR_FORMAT)
        self.count = 0

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        """Add one sample: ``members`` maps extension (``png``, ``json``, ``flow.npz``) to bytes."""
        for ext, payload in members.items():
            info = tarfile.TarInfo(name=f"{key}.{ext}")
            info.size = len(payload)
            info.mode = 0o644
            self._tar.addfile(info, io.BytesIO(payload))
        self.count += 1

    def close(self) -> None:
        """Finish the tar and move it into place atomically."""
        self._tar.close()
        self._tmp.replace(self.path)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._tar.close()
            self._tmp.unlink(missing_ok=True)

