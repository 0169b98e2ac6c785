"""A physically motivated synthetic AR-flares data set, written in the real shard format.

The physics (bipoles that emerge, shear and decay; a flare rate driven by an R-value proxy and
recent flux emergence; GOES magnitudes; 24 h labels) lives in :mod:`arflare.data._synth_physics`,
the rendering of magnetograms and flow and their PNG/npz encoding in
:mod:`arflare.data._synth_render`. This module writes the data set and re-exports the few of
their names its users need (``simulate``, ``goes_class``, ``oracle_probabilities``,
``png_levels_to_gauss``); ``synth.json`` records every constant.

Run ``arflare synth --out data/synth`` (or ``python -m arflare.data.synth --out ...``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from arflare.data import _synth_physics, _synth_render
from arflare.data._synth_physics import (
    CADENCE_H, HARD_NEGATIVE_KIND, MORPHOLOGIES, Region, goes_class, oracle_probabilities, simulate,
)
from arflare.data._synth_render import flow_bytes, png_bytes, png_levels_to_gauss, render
from arflare.data.shards import SPLITS, ShardWriter, make_key

__all__ = [
    "generate", "ensure_generated", "main", "SynthSummary", "SplitSummary", "goes_class", "png_levels_to_gauss",
    "simulate", "VERSION", "DEFAULT_ARS", "ORACLE_COLUMNS", "oracle_probabilities",
]

VERSION = 3  # 2: the oracle columns p_label(_m)_future (was p_label(_m)) and p_label(_m)_present; 3: p_label_present_no_change
# ground_truth.parquet's oracle columns: "future" is an upper bound that knows the next 24 h of the
# latent rate; "present" knows only the rate at t (see _synth_physics.oracle_probabilities).
# "present_no_change" is the present oracle without the emergence term (blind to change).
ORACLE_COLUMNS = ("p_label_future", "p_label_present", "p_label_m_future", "p_label_m_present", "p_label_present_no_change")
# ~48k frames at 64 px, 40 test ARs: enough for AR-bootstrap intervals that separate a good model
# from a poor one (60 ARs left 12 test ARs and TSS intervals ~0.9 wide); generated in about a minute
DEFAULT_ARS = 200


@dataclass(frozen=True)
class SplitSummary:
    """Counts for one split."""

    split: str
    ars: int
    frames: int
    positives: int
    m_positives: int  # frames whose label flare is M1.0 or larger


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote: one row per split; ``str()`` gives a table."""

    out_dir: Path
    splits: tuple[SplitSummary, ...]

    def split(self, name: str) -> SplitSummary:
        """Return the summary of split ``name``."""
        for row in self.splits:
            if row.split == name:
                return row
        raise KeyError(f"Unknown split {name!r}; available: {', '.join(r.split for r in self.splits)}")

    def __str__(self) -> str:
        lines = [f"synthetic AR-flares data set in {self.out_dir}",
                 f"{'split':<6} {'ARs':>5} {'frames':>7} {'>=C':>6} {'rate':>6} {'>=M':>5}"]
        for r in self.splits:
            rate = r.positives / max(r.frames, 1)
            lines.append(f"{r.split:<6} {r.ars:>5} {r.frames:>7} {r.positives:>6} {rate:>6.1%} {r.m_positives:>5}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- writing


def _assign_splits(regions: list[Region], *, seed: int) -> None:
    """AR-exclusive ~60/20/20 splits, stratified so that each split gets flaring ARs.

    ARs are ranked by whether they have M-class positives, then by their number of positive
    frames; each block of 5 consecutive ARs gives 3 to train, 1 to val and 1 to test in a
    random order.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31,)))
    positives = np.array([(r.labels["largest"] >= 1e-6).sum() for r in regions])
    has_m = np.array([(r.labels["largest"] >= 1e-5).any() for r in regions])
    order = np.lexsort((rng.random(len(regions)), -positives, ~has_m))
    for start in range(0, len(order), 5):
        pattern = rng.permutation(["train", "train", "train", "val", "test"])
        for region_index, split in zip(order[start : start + 5], pattern):
            regions[region_index].split = str(split)


def _frame_rows(region: Region, size: int) -> list[dict]:
    """Ground-truth rows (one per frame) of one AR."""
    rows = []
    for i in range(region.n_frames):
        when = region.start + timedelta(minutes=12 * i)
        largest = float(region.labels["largest"][i])
        rows.append({
            "key": make_key(region.ar, when, size=size), "ar": region.ar, "split": region.split,
            "timestamp": when, "frame": i, "kind": region.kind,
            "hard_negative": region.kind == HARD_NEGATIVE_KIND,
            "label": int(largest >= 1e-6), "reg_label": goes_class(largest), "peak_flux": largest,
            **{name: float(region.labels[name][i]) for name in ORACLE_COLUMNS},
            "flare_rate": float(region.latent["rate"][i]),  # true >= C flares per day at this frame
            **{name: float(region.latent[name][i]) for name in ("r_value", "unsigned_flux", "flux_increase_6h")},
        })
    return rows


def _samples(regions: list[Region], *, size: int, rows: dict[str, dict], progress):
    """Yield ``(key, magnetogram members, flow members)`` for every frame of ``regions``."""
    for region in regions:
        levels, u, v = render(region, size)
        for i in range(region.n_frames):
            key = make_key(region.ar, region.start + timedelta(minutes=12 * i), size=size)
            row = rows[key]
            meta = {"ar": region.ar, "label": row["label"], "reg_label": row["reg_label"],
                    "time": row["timestamp"].isoformat(), "size": size}
            yield (key, {"png": png_bytes(levels[i]), "json": json.dumps(meta, sort_keys=True).encode()},
                   {"flow.npz": flow_bytes(u[i], v[i])})
        progress.update(1)


def _write_split(root: Path, split: str, samples, *, samples_per_shard: int) -> int:
    """Write magnetogram and flow shards in parallel (same keys, same shard boundaries)."""
    writers: list[ShardWriter] = []
    count = 0
    for count, (key, magnetogram, flow) in enumerate(samples, start=1):
        if (count - 1) % samples_per_shard == 0:
            for writer in writers:
                writer.close()
            name = f"shard-{(count - 1) // samples_per_shard:06d}.tar"
            writers = [ShardWriter(root / "magnetograms" / split / name), ShardWriter(root / "flow" / split / name)]
        writers[0].write(key, magnetogram)
        writers[1].write(key, flow)
    for writer in writers:
        writer.close()
    return count


def _write_all(root: Path, regions: list[Region], *, size: int, samples_per_shard: int, progress: bool,
               params: dict) -> tuple[SplitSummary, ...]:
    """Write shards, ground truth, the flare list and finally synth.json into ``root``."""
    import pandas as pd  # local: keeps `import arflare.data.synth` light for the CLI
    from tqdm import tqdm

    rows = [row for region in regions for row in _frame_rows(region, size)]
    by_key = {row["key"]: row for row in rows}
    with tqdm(total=len(regions), desc="synth ARs", unit="AR", disable=not progress) as bar:
        for split in SPLITS:
            members = [r for r in regions if r.split == split]
            _write_split(root, split, _samples(members, size=size, rows=by_key, progress=bar),
                         samples_per_shard=samples_per_shard)
    truth = pd.DataFrame(rows)
    truth.to_parquet(root / "ground_truth.parquet", index=False)
    flares = pd.DataFrame(
        [{"ar": r.ar, "split": r.split, "peak_time": when, "peak_flux": flux, "goes_class": goes_class(flux)}
         for r in regions for when, flux in r.flares],
        columns=["ar", "split", "peak_time", "peak_flux", "goes_class"])
    flares.to_parquet(root / "flares.parquet", index=False)
    summary = tuple(_split_summary(truth[truth["split"] == split], split) for split in SPLITS)
    physics = {name: value for namespace in (vars(_synth_physics), vars(_synth_render), globals())
               for name, value in namespace.items() if name.isupper() and isinstance(value, (int, float))}
    physics["MORPHOLOGIES"] = {kind: asdict(m) for kind, m in MORPHOLOGIES.items()}
    info = {"format": "arflare-synth", "version": VERSION, "params": params, "physics": physics,
            "summary": [asdict(row) for row in summary]}
    (root / "synth.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return summary


def _split_summary(frame, split: str) -> SplitSummary:
    return SplitSummary(split=split, ars=int(frame["ar"].nunique()), frames=len(frame),
                        positives=int(frame["label"].sum()), m_positives=int((frame["peak_flux"] >= 1e-5).sum()))


def _move_into_place(tmp: Path, out_dir: Path, *, overwrite: bool) -> None:
    """Rename the finished temp folder to ``out_dir`` (replacing an empty or, with overwrite, any folder)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists and is not empty; delete it or pass overwrite=True (--overwrite)")
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        out_dir.rename(old / "data")
        tmp.rename(out_dir)
        shutil.rmtree(old)
        return
    if out_dir.exists():
        out_dir.rmdir()
    tmp.rename(out_dir)


def generate(out_dir: Path, *, ars: int = DEFAULT_ARS, size: int = 64, seed: int = 0, samples_per_shard: int = 500,
             hours: float | None = None, activity: float = 1.0, decaying_share: float = 0.0,
             emergence_gain: float = 1.0, progress: bool = True, overwrite: bool = False) -> SynthSummary:
    """Simulate ``ars`` active regions and write them as a data set in the AR-flares format.

    Writes ``magnetograms/{train,val,test}/shard-*.tar`` (``<key>.png`` + ``<key>.json``),
    ``flow/{split}/shard-*.tar`` (``<key>.flow.npz``: ``u8``, ``v8``, ``su``, ``sv``; the flux
    elements' motion from the previous frame to this one, in pixels per frame, u along columns,
    v along rows), ``ground_truth.parquet`` (per frame: latent ``flare_rate`` per day, the
    oracles ``p_label_future`` = 1 - exp(-integral of the rate over (t, t+24 h]), an upper bound
    that knows the future, and ``p_label_present`` = 1 - exp(-rate(t) * 1 day), which knows only
    the present rate, both also for >= M as ``p_label_m_*``, and ``p_label_present_no_change``,
    the present oracle blind to change (without the emergence term); ``label``, ``reg_label``,
    ``hard_negative``, ...), ``flares.parquet`` (every flare's peak time and flux) and
    ``synth.json`` (parameters and summary). Everything is written to a hidden temp folder
    beside ``out_dir`` and renamed at the end, so an interrupted run leaves no data set.

    Args:
        out_dir: Where the data set goes; must not exist or be empty unless ``overwrite``.
        ars: Number of active regions (AR numbers 11000, 11001, ...); at least 3 (one per split).
            The default (60 ARs, 1.5-2.5 days each) gives about 14k frames, a CPU demo.
        size: Image side in pixels; only the rendering depends on it, not the flares or labels.
        seed: Same seed, same bytes; the first N ARs are the same for any ``ars >= N``.
        samples_per_shard: Frames per tar shard.
        hours: Observed window of every AR in hours (for tiny tests); default: 36-60 h each.
        activity: Multiplies every AR's flare rate (before it saturates), like the solar cycle;
            raise it (e.g. 10) for tiny test sets that must contain flares.
        decaying_share: Probability that an emergence episode runs backwards (flux that sinks and
            converges, looking like emergence frame by frame but adding no flare rate); with
            ``emergence_gain`` it sets how much of the skill needs time order. 0 (default) and
            gain 1 give the default set; ``0.5`` and ``3`` give the temporal-study set.
        emergence_gain: Multiplies the flare rate's emergence term (the 6 h flux increase).
        progress: Show a progress bar on stderr.
        overwrite: Replace an existing non-empty ``out_dir``.

    Returns:
        Per-split counts of ARs, frames, positives (>= C1.0) and M-class positives.
    """
    out_dir = Path(out_dir)
    if ars < 3 or size < 8 or samples_per_shard < 1 or (hours is not None and hours < CADENCE_H):
        raise ValueError(f"Need ars >= 3 (got {ars}), size >= 8 (got {size}), samples_per_shard >= 1 "
                         f"(got {samples_per_shard}) and hours >= {CADENCE_H} (got {hours})")
    if not 0 <= decaying_share <= 1 or emergence_gain < 0:
        raise ValueError(f"Need 0 <= decaying_share <= 1 (got {decaying_share}) and emergence_gain >= 0 "
                         f"(got {emergence_gain})")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; delete it or pass overwrite=True (--overwrite)")
    regions = [simulate(i, seed=seed, hours=hours, activity=activity, decaying_share=decaying_share,
                        emergence_gain=emergence_gain) for i in range(ars)]
    _assign_splits(regions, seed=seed)
    params = {"ars": ars, "size": size, "seed": seed, "samples_per_shard": samples_per_shard,
              "hours": hours, "activity": activity, "decaying_share": decaying_share,
              "emergence_gain": emergence_gain}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        splits = _write_all(tmp, regions, size=size, samples_per_shard=samples_per_shard,
                            progress=progress, params=params)
        _move_into_place(tmp, out_dir, overwrite=overwrite)
    except BaseException:  # also KeyboardInterrupt: never leave a half data set behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SynthSummary(out_dir=out_dir, splits=splits)


def ensure_generated(out_dir: Path, **kwargs) -> bool:
    """Generate the data set unless ``<out_dir>/synth.json`` exists; return whether it generated.

    Args:
        out_dir: The data set folder.
        **kwargs: Passed to :func:`generate` (``ars``, ``size``, ``seed``, ...).
    """
    out_dir = Path(out_dir)
    if (out_dir / "synth.json").exists():
        return False
    shown = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()) if k != "progress") or "defaults"
    print(f"arflare: no synthetic data set at {out_dir} (synth.json missing); generating one ({shown})",
          file=sys.stderr)
    generate(out_dir, **kwargs)
    return True


def main(argv: list[str] | None = None) -> int:
    """``arflare synth --out DIR [--ars N] [--size PX] [--seed S]``: write a synthetic data set."""
    parser = argparse.ArgumentParser(prog="arflare synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    parser.add_argument("--ars", type=int, default=DEFAULT_ARS, help=f"active regions (default {DEFAULT_ARS})")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    parser.add_argument("--hours", type=float, default=None, help="observed hours per AR (default 36-60)")
    parser.add_argument("--activity", type=float, default=1.0, help="flare-rate multiplier (default 1)")
    parser.add_argument("--decaying-share", type=float, default=0.0,
                        help="share of emergence episodes that run backwards: they look like emergence in one "
                             "frame but add no flare rate, so only time order tells (default 0; 0.5 for a "
                             "temporal study)")
    parser.add_argument("--emergence-gain", type=float, default=1.0,
                        help="multiplies the flare rate's flux-emergence term (default 1; 3 for a temporal study)")
    parser.add_argument("--samples-per-shard", type=int, default=500, help="frames per tar shard")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        summary = generate(args.out, ars=args.ars, size=args.size, seed=args.seed, hours=args.hours,
                           activity=args.activity, decaying_share=args.decaying_share,
                           emergence_gain=args.emergence_gain, samples_per_shard=args.samples_per_shard,
                           progress=not args.quiet, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        print(f"arflare synth: {exc}", file=sys.stderr)
        return 2
    print(summary)
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
