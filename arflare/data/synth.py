"""A physically motivated synthetic AR-flares data set, written in the real shard format.

Each active region (AR) is a set of bipoles: Gaussian flux concentrations in pairs of
opposite polarity, on a spatially correlated quiet-Sun background. Bipoles emerge
(flux grows over hours while the footpoints separate), rotate (shear along the polarity
inversion line, PIL), decay and drift. Flares (>= C1.0) follow a non-homogeneous Poisson
process whose rate rises with an R-value-like quantity (flux of opposite polarities close
together, i.e. a strong-gradient PIL) and with recent flux emergence (the increase of
unsigned flux over the last 6 h, which no single frame shows). GOES magnitudes follow a
power law whose scale grows with the rate. Labels follow the real data exactly: the
largest flare whose peak lies in (t, t + 24 h].

Some ARs are hard negatives: large and bright but simple (well separated bipoles, no
emergence), so total flux alone misleads. Physics uses its own random stream per AR, so
labels do not depend on the image ``size``; ``ars=N`` gives the first N ARs of a bigger set.

Run ``arflare synth --out data/synth`` (or ``python -m arflare.data.synth --out ...``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from arflare.data.shards import SPLITS, ShardWriter, make_key

VERSION = 1
CADENCE_H = 0.2  # 12-minute frames, as HMI's 720 s magnetograms
STEPS_PER_DAY = 120
HISTORY_STEPS = 31  # 6 h (30 frames) of history for the emergence term, plus one for the flow
GAUSS_PER_LEVEL = 6000.0 / 127.0  # PNG level 128 = 0 G; 1 and 255 = -/+6000 G
QUIET_SUN_G = 30.0  # rms of the correlated quiet-Sun field
NOISE_G = 8.0  # per-frame, per-pixel instrument noise
FLOW_WEIGHT_G = 50.0  # below this field the flow fades to 0 (no flux elements to track)
# Flare rate (>= C1.0 per day) = productivity * (floor + R-value term + emergence term), tuned so
# that ~20% of frames are positive and a forecaster that sees flux change beats one that does not.
RATE_QUIET = 0.02  # floor: a small quiet AR has a few % of its frames positive
RATE_R = 0.06  # per day per R0 of R-value (a compact delta-spot region has R ~ 3 R0)
R0 = 10.0  # R-value unit (G * FOV^2 of opposite-polarity flux in contact)
RATE_EMERGENCE = 3.0  # per day per EMERGENCE_SCALE of flux increase over the last 6 h
EMERGENCE_SCALE = 10.0  # a strong new bipole adds ~5-20 in 6 h
RATE_MAX = 3.0  # per day: the rate saturates softly towards this
PRODUCTIVITY_SPREAD = 0.2  # log-normal per-AR factor no magnetogram shows (twist, free energy)
TAU_EMERGE = (24, 60)  # hours an emergence episode takes
GOES_INDEX = 2.0  # peak-flux power law dN/dF ~ F^-2 (observed: 1.8-2.1)
MAGNITUDE_RATE = 1.0  # above this rate (per day), magnitudes scale up ...
MAGNITUDE_POWER = 0.5  # ... as (rate / MAGNITUDE_RATE) ** MAGNITUDE_POWER
START = datetime(2011, 1, 1)
WINDOW_H = (36, 60)  # observed hours per AR (1.5-2.5 days)
DEFAULT_ARS = 60  # ~14k frames at 64 px: the smallest set whose baselines are stable; a CPU demo


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


# ----------------------------------------------------------------------------- physics


@dataclass(frozen=True)
class _Morphology:
    """How one kind of AR looks and evolves (fields in G, sizes in fields of view, times in h)."""

    share: float  # share of ARs of this kind, exact in every block of KIND_BLOCK ARs
    bipoles: tuple[int, int]  # pre-existing bipoles, inclusive range
    layout: str  # "cluster" (near the centre), "delta" (alternating, + against -), "side" (like against like)
    field: tuple[float, float]  # peak field of a leading spot
    sigma: tuple[float, float]  # Gaussian width of a leading spot (trailing spots are 1.5x wider)
    sep: tuple[float, float]  # footpoint separation in leading-spot widths
    omega: float  # rms rotation rate (rad / h): shear along the PIL
    episodes: float  # emergence episodes per 72 h
    episode_field: tuple[float, float] = (0.0, 0.0)
    episode_tilt: float = 0.3  # rms deviation of new bipoles from the AR's tilt (pi: any orientation)
    min_episodes: int = 0


MORPHOLOGIES = {
    "quiet": _Morphology(0.35, (1, 1), "cluster", (400, 1100), (0.03, 0.045), (3.0, 4.5), 0.005, 0.2, (500, 1500)),
    # Hard negatives: big bright spots, well separated, no emergence.
    "simple_large": _Morphology(0.20, (1, 2), "side", (1800, 3000), (0.045, 0.06), (4.5, 5.5), 0.002, 0.0),
    "emerging": _Morphology(0.25, (1, 1), "cluster", (800, 2000), (0.035, 0.05), (3.0, 4.0), 0.01, 0.6, (1200, 2800),
                           min_episodes=1),
    "complex": _Morphology(0.20, (2, 3), "delta", (1500, 3000), (0.03, 0.045), (1.5, 2.8), 0.03, 0.5, (1000, 2500),
                           episode_tilt=np.pi, min_episodes=1),
}
HARD_NEGATIVE_KIND = "simple_large"
EPISODE_SCATTER = 0.1  # rms distance of a new bipole from the AR centre
KIND_BLOCK = 20  # kinds are dealt in shuffled blocks so that even a small set has the intended mix


def _kind(index: int, *, seed: int) -> str:
    """The kind of AR ``index``: every block of KIND_BLOCK ARs holds each kind in its exact share."""
    deck = [kind for kind, m in MORPHOLOGIES.items() for _ in range(round(m.share * KIND_BLOCK))]
    block = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**30, index // KIND_BLOCK)))
    return deck[block.permutation(len(deck))[index % KIND_BLOCK]]


def _draw_bipoles(rng: np.random.Generator, kind: str, *, window_h: float, horizon_h: float) -> dict:
    """Draw the bipoles of one AR: pre-existing ones, then emergence episodes up to ``horizon_h``."""
    m = MORPHOLOGIES[kind]
    tilt = rng.uniform(-0.5, 0.5)  # Joy's-law-like tilt of the whole AR (radians)
    n = int(rng.integers(m.bipoles[0], m.bipoles[1] + 1))
    rows = []
    for j in range(n):
        flip = np.pi * (j % 2) + rng.normal(0, 0.4) if m.layout == "delta" else 0.0
        row = _bipole(rng, t_e=None, b=m.field, sigma=m.sigma, sep=m.sep, tilt=tilt + flip,
                      omega=m.omega, near=0.08 if m.layout == "delta" else 0.03)
        if m.layout == "side":  # stacked across the axis: like polarities face each other, no PIL between
            offset = 0.15 * (j - (n - 1) / 2)
            row["cx"], row["cy"] = row["cx"] - offset * np.sin(tilt), row["cy"] + offset * np.cos(tilt)
        rows.append(row)
    for j in range(max(m.min_episodes, rng.poisson(m.episodes * horizon_h / 72))):
        # The guaranteed episodes start while the AR is observed, the others at any time.
        start = rng.uniform(-12, window_h) if j < m.min_episodes else rng.uniform(-6, horizon_h)
        rows.append(_bipole(rng, t_e=start, b=m.episode_field, sigma=(0.03, 0.045),
                            sep=(2.0, 3.5), tilt=tilt + rng.normal(0, m.episode_tilt), omega=0.02,
                            near=EPISODE_SCATTER))
    return {name: np.array([row[name] for row in rows]) for name in rows[0]}


def _bipole(rng, *, t_e: float | None, b, sigma, sep, tilt, omega, near) -> dict[str, float]:
    """One bipole: emergence start ``t_e`` (h), lead peak field ``b`` (G), size, separation in sigmas."""
    s = rng.uniform(*sigma)
    tau_e = rng.uniform(*TAU_EMERGE)
    half_sep = 0.5 * rng.uniform(*sep) * s * 1.25  # trailing spots are 1.5x wider
    return {
        "cx": 0.5 + rng.normal(0, near), "cy": 0.5 + rng.normal(0, near),
        "theta": tilt + rng.normal(0, 0.15), "omega": rng.normal(0, omega),  # rad / h
        "h0": 0.6 * half_sep, "h1": half_sep, "sigma": s,
        "flux": 2 * np.pi * s**2 * rng.uniform(*b),  # G * FOV^2, per pole
        "t_e": t_e if t_e is not None else -tau_e - rng.uniform(6, 90), "tau_e": tau_e,
        "tau_d": rng.uniform(72, 200),
    }


def _pole_tracks(bp: dict[str, np.ndarray], t: np.ndarray, drift: np.ndarray) -> dict[str, np.ndarray]:
    """Positions, widths and signed fluxes of every pole at times ``t`` (h); arrays (T, 2 * bipoles)."""
    tt = t[:, None]
    grow = np.clip((tt - bp["t_e"]) / bp["tau_e"], 0, 1)
    grow = grow * grow * (3 - 2 * grow)  # smoothstep: emergence starts and ends gently
    decay = np.exp(-np.clip(tt - bp["t_e"] - bp["tau_e"], 0, None) / bp["tau_d"])
    flux = bp["flux"] * grow * decay
    half = bp["h0"] + (bp["h1"] - bp["h0"]) * grow  # footpoints separate as the bipole emerges
    theta = bp["theta"] + bp["omega"] * tt
    cx, cy = bp["cx"] + drift[0] * tt, bp["cy"] + drift[1] * tt
    ox, oy = half * np.cos(theta), half * np.sin(theta)
    sigma = bp["sigma"] * (1 + 0.5 * (1 - decay))  # decaying spots spread out
    return {
        "x": np.concatenate([cx + ox, cx - ox], axis=1),
        "y": np.concatenate([cy + oy, cy - oy], axis=1),
        "sigma": np.concatenate([sigma, 1.5 * sigma], axis=1),
        "flux": np.concatenate([flux, -flux], axis=1),  # the leading pole of every bipole is positive
    }


def _flare_rate(tracks: dict[str, np.ndarray], productivity: float) -> dict[str, np.ndarray]:
    """Flare rate (>= C per day) from the R-value proxy and the 6 h increase of unsigned flux."""
    x, y, s, f = tracks["x"], tracks["y"], tracks["sigma"], tracks["flux"]
    d2 = (x[:, :, None] - x[:, None, :]) ** 2 + (y[:, :, None] - y[:, None, :]) ** 2
    s2 = s[:, :, None] ** 2 + s[:, None, :] ** 2
    opposite = (f[:, :, None] * f[:, None, :]) < 0
    pair = np.sqrt(np.abs(f[:, :, None] * f[:, None, :])) * np.exp(-d2 / (2 * s2))
    r_value = 0.5 * np.where(opposite, pair, 0).sum(axis=(1, 2))  # each pair counted twice
    unsigned = np.abs(f).sum(axis=1)
    increase = np.zeros_like(unsigned)
    increase[30:] = np.clip(unsigned[30:] - unsigned[:-30], 0, None)
    raw = productivity * (RATE_QUIET + RATE_R * r_value / R0 + RATE_EMERGENCE * increase / EMERGENCE_SCALE)
    rate = RATE_MAX * -np.expm1(-raw / RATE_MAX)  # soft saturation: even a monster AR has a finite rate
    return {"rate": rate, "r_value": r_value, "unsigned_flux": unsigned, "flux_increase_6h": increase}


def _draw_flares(rng: np.random.Generator, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson flares per 12-min step: (step index, peak second within (t_k, t_k + 720], peak flux)."""
    counts = rng.poisson(rate / STEPS_PER_DAY)
    steps = np.repeat(np.arange(rate.size), counts)
    seconds = rng.integers(1, 721, size=steps.size)
    scale = np.maximum(1.0, (rate[steps] / MAGNITUDE_RATE) ** MAGNITUDE_POWER)
    flux = 1e-6 * scale * rng.random(steps.size) ** (-1 / (GOES_INDEX - 1))
    return steps, seconds, np.array([_quantize_goes(v) for v in flux])


def _quantize_goes(flux: float) -> float:
    """Round a peak flux down to the 0.1 resolution of its GOES class, so class and flux agree."""
    base = 10.0 ** min(math.floor(math.log10(flux) + 1e-9), -4)
    return math.floor(flux / base * 10 + 1e-6) / 10 * base


def goes_class(peak_flux: float) -> str:
    """GOES class string of a peak X-ray flux in W/m^2 (``3.4e-6`` -> ``"C3.4"``); 0 -> ``"0"``."""
    if peak_flux <= 0:
        return "0"
    for letter, base in (("X", 1e-4), ("M", 1e-5), ("C", 1e-6), ("B", 1e-7), ("A", 1e-8)):
        if peak_flux >= base * (1 - 1e-9):
            return f"{letter}{math.floor(peak_flux / base * 10 + 1e-6) / 10:.1f}"
    return "A0.0"


def _labels(n_frames: int, rate: np.ndarray, steps: np.ndarray, flux: np.ndarray) -> dict[str, np.ndarray]:
    """Largest flare in (t, t + 24 h] per frame, and its true probability under the latent rate."""
    step_max = np.zeros(rate.size)
    np.maximum.at(step_max, steps, flux)
    window = np.lib.stride_tricks.sliding_window_view(step_max, STEPS_PER_DAY)[:n_frames]
    largest = window.max(axis=1)
    hazard = np.concatenate([[0.0], np.cumsum(rate / STEPS_PER_DAY)])
    integral = hazard[STEPS_PER_DAY : STEPS_PER_DAY + n_frames] - hazard[:n_frames]
    scale = np.maximum(1.0, (rate / MAGNITUDE_RATE) ** MAGNITUDE_POWER)
    m_rate = rate * np.minimum(1.0, (scale / 10) ** (GOES_INDEX - 1)) / STEPS_PER_DAY
    m_hazard = np.concatenate([[0.0], np.cumsum(m_rate)])
    m_integral = m_hazard[STEPS_PER_DAY : STEPS_PER_DAY + n_frames] - m_hazard[:n_frames]
    return {"largest": largest, "p_label": 1 - np.exp(-integral), "p_label_m": 1 - np.exp(-m_integral)}


@dataclass
class _Region:
    """One simulated AR: its latent history and its frames' labels (index 0 = first frame)."""

    ar: str
    kind: str
    start: datetime
    n_frames: int
    tracks: dict[str, np.ndarray]  # pole arrays over all steps, from -HISTORY_STEPS
    latent: dict[str, np.ndarray]  # rate etc. per frame step from the first frame on
    labels: dict[str, np.ndarray]
    flares: list[tuple[datetime, float]]
    noise_seed: np.random.SeedSequence
    split: str = ""


def _simulate(index: int, *, seed: int, hours: float | None, activity: float = 1.0) -> _Region:
    """Simulate AR number ``index``: morphology, evolution, flare rate, flares and labels."""
    phys_seq, noise_seq = np.random.SeedSequence(seed, spawn_key=(index,)).spawn(2)
    rng = np.random.default_rng(phys_seq)
    kind = _kind(index, seed=seed)
    n_frames = round((hours if hours is not None else rng.uniform(*WINDOW_H)) / CADENCE_H)
    n_steps = n_frames + STEPS_PER_DAY  # labels of the last frame need the following 24 h
    t = np.arange(-HISTORY_STEPS, n_steps) * CADENCE_H
    bipoles = _draw_bipoles(rng, kind, window_h=n_frames * CADENCE_H, horizon_h=t[-1])
    tracks = _pole_tracks(bipoles, t, drift=rng.normal(0, 0.0015, size=2))
    productivity = activity * float(rng.lognormal(0, PRODUCTIVITY_SPREAD))
    latent = {k: v[HISTORY_STEPS:] for k, v in _flare_rate(tracks, productivity).items()}
    steps, seconds, flux = _draw_flares(rng, latent["rate"])
    start = START + timedelta(minutes=12 * (index * 2 * STEPS_PER_DAY + int(rng.integers(0, STEPS_PER_DAY))))
    flares = [(start + timedelta(minutes=12 * int(k), seconds=int(s)), float(f))
              for k, s, f in zip(steps, seconds, flux)]
    labels = _labels(n_frames, latent["rate"], steps, flux)
    return _Region(ar=str(11000 + index), kind=kind, start=start, n_frames=n_frames, tracks=tracks,
                   latent=latent, labels=labels, flares=flares, noise_seed=noise_seq)


# ----------------------------------------------------------------------------- rendering


def _quiet_sun(rng: np.random.Generator, size: int) -> np.ndarray:
    """Two spatially correlated unit-rms noise patterns (size, size) for the quiet-Sun network."""
    white = rng.normal(size=(2, size, size))
    k = np.fft.fftfreq(size) * size  # cycles per field of view
    corr = 0.02 * 2 * np.pi  # correlation length ~2% of the field of view (supergranules)
    kernel = np.exp(-0.5 * (k[:, None] ** 2 + k[None, :] ** 2) * corr**2)
    smooth = np.fft.ifft2(np.fft.fft2(white) * kernel).real
    return smooth / smooth.std(axis=(1, 2), keepdims=True)


def _render(region: _Region, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render frames: PNG levels (T, S, S) uint8 and the flow u, v in pixels per frame (T, S, S)."""
    rng = np.random.default_rng(region.noise_seed)
    now = slice(HISTORY_STEPS, HISTORY_STEPS + region.n_frames)
    before = slice(HISTORY_STEPS - 1, HISTORY_STEPS - 1 + region.n_frames)
    x, y, sigma = (region.tracks[k][now] for k in ("x", "y", "sigma"))
    peak = region.tracks["flux"][now] / (2 * np.pi * sigma**2)  # Gaussian of this flux: peak field in G
    coords = (np.arange(size) + 0.5) / size
    gx = np.exp(-((coords - x[..., None]) ** 2) / (2 * sigma[..., None] ** 2))
    gy = np.exp(-((coords - y[..., None]) ** 2) / (2 * sigma[..., None] ** 2))
    field = np.einsum("tp,tpy,tpx->tyx", peak, gy, gx)
    pattern = _quiet_sun(rng, size)
    phase = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(region.n_frames) / rng.uniform(80, 200)
    field += QUIET_SUN_G * (np.cos(phase)[:, None, None] * pattern[0] + np.sin(phase)[:, None, None] * pattern[1])
    field += rng.normal(0, NOISE_G, size=field.shape)
    levels = np.clip(np.rint(128 + field / GAUSS_PER_LEVEL), 0, 255).astype(np.uint8)
    # Flow: flux-weighted mean velocity of the poles, i.e. the true motion of the flux elements.
    weight = np.abs(peak)
    dx = (x - region.tracks["x"][before]) * size
    dy = (y - region.tracks["y"][before]) * size
    total = np.einsum("tp,tpy,tpx->tyx", weight, gy, gx) + FLOW_WEIGHT_G
    u = np.einsum("tp,tpy,tpx->tyx", weight * dx, gy, gx) / total
    v = np.einsum("tp,tpy,tpx->tyx", weight * dy, gy, gx) / total
    return levels, u, v


def png_levels_to_gauss(levels: np.ndarray) -> np.ndarray:
    """Decode 8-bit magnetogram levels to Gauss (128 = 0 G, linear over about +-6000 G)."""
    return (np.asarray(levels, dtype=np.float32) - 128.0) * np.float32(GAUSS_PER_LEVEL)


def _png_bytes(levels: np.ndarray) -> bytes:
    from PIL import Image  # local: only generation needs Pillow

    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Like ``np.savez_compressed`` but byte-identical across runs (fixed zip timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, npy.getvalue())
    return buffer.getvalue()


def _flow_bytes(u: np.ndarray, v: np.ndarray) -> bytes:
    """Quantise one frame's flow to int8 with a float scale each: u = u8 * su."""
    out = {}
    for name, comp in (("u", u), ("v", v)):
        peak = float(np.abs(comp).max())
        scale = peak / 127 if peak > 0 else 1.0
        out[f"{name}8"] = np.clip(np.rint(comp / scale), -127, 127).astype(np.int8)
        out[f"s{name}"] = np.float32(scale)
    return _npz_bytes(out)


# ----------------------------------------------------------------------------- writing


def _assign_splits(regions: list[_Region], *, seed: int) -> None:
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


def _frame_rows(region: _Region, size: int) -> list[dict]:
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
            "p_label": float(region.labels["p_label"][i]), "p_label_m": float(region.labels["p_label_m"][i]),
            "flare_rate": float(region.latent["rate"][i]),  # true >= C flares per day at this frame
            **{name: float(region.latent[name][i]) for name in ("r_value", "unsigned_flux", "flux_increase_6h")},
        })
    return rows


def _samples(regions: list[_Region], *, size: int, rows: dict[str, dict], progress):
    """Yield ``(key, magnetogram members, flow members)`` for every frame of ``regions``."""
    for region in regions:
        levels, u, v = _render(region, size)
        for i in range(region.n_frames):
            key = make_key(region.ar, region.start + timedelta(minutes=12 * i), size=size)
            row = rows[key]
            meta = {"ar": region.ar, "label": row["label"], "reg_label": row["reg_label"],
                    "time": row["timestamp"].isoformat(), "size": size}
            yield (key, {"png": _png_bytes(levels[i]), "json": json.dumps(meta, sort_keys=True).encode()},
                   {"flow.npz": _flow_bytes(u[i], v[i])})
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


def _write_all(root: Path, regions: list[_Region], *, size: int, samples_per_shard: int, progress: bool,
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
    physics = {name: value for name, value in globals().items() if name.isupper() and isinstance(value, (int, float))}
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
             hours: float | None = None, activity: float = 1.0, progress: bool = True,
             overwrite: bool = False) -> SynthSummary:
    """Simulate ``ars`` active regions and write them as a data set in the AR-flares format.

    Writes ``magnetograms/{train,val,test}/shard-*.tar`` (``<key>.png`` + ``<key>.json``),
    ``flow/{split}/shard-*.tar`` (``<key>.flow.npz``: ``u8``, ``v8``, ``su``, ``sv``; the flux
    elements' motion from the previous frame to this one, in pixels per frame, u along columns,
    v along rows), ``ground_truth.parquet`` (per frame: latent ``flare_rate`` per day,
    ``p_label`` = 1 - exp(-integral of the rate over (t, t+24 h]), ``label``, ``reg_label``,
    ``hard_negative``, ...), ``flares.parquet`` (every flare's peak time and flux) and
    ``synth.json`` (parameters and summary). Everything is written to a hidden temp folder
    beside ``out_dir`` and renamed at the end, so an interrupted run leaves no data set.

    Args:
        out_dir: Where the data set goes; must not exist or be empty unless ``overwrite``.
        ars: Number of active regions (AR numbers 11000, 11001, ...); at least 3 (one per split).
            The default (24 ARs, 1.5-2.5 days each) gives about 5800 frames, a CPU demo.
        size: Image side in pixels; only the rendering depends on it, not the flares or labels.
        seed: Same seed, same bytes; the first N ARs are the same for any ``ars >= N``.
        samples_per_shard: Frames per tar shard.
        hours: Observed window of every AR in hours (for tiny tests); default: 36-60 h each.
        activity: Multiplies every AR's flare rate (before it saturates), like the solar cycle;
            raise it (e.g. 10) for tiny test sets that must contain flares.
        progress: Show a progress bar on stderr.
        overwrite: Replace an existing non-empty ``out_dir``.

    Returns:
        Per-split counts of ARs, frames, positives (>= C1.0) and M-class positives.
    """
    out_dir = Path(out_dir)
    if ars < 3 or size < 8 or samples_per_shard < 1 or (hours is not None and hours < CADENCE_H):
        raise ValueError(f"Need ars >= 3 (got {ars}), size >= 8 (got {size}), samples_per_shard >= 1 "
                         f"(got {samples_per_shard}) and hours >= {CADENCE_H} (got {hours})")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; delete it or pass overwrite=True (--overwrite)")
    regions = [_simulate(i, seed=seed, hours=hours, activity=activity) for i in range(ars)]
    _assign_splits(regions, seed=seed)
    params = {"ars": ars, "size": size, "seed": seed, "samples_per_shard": samples_per_shard,
              "hours": hours, "activity": activity}
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
    parser.add_argument("--samples-per-shard", type=int, default=500, help="frames per tar shard")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        summary = generate(args.out, ars=args.ars, size=args.size, seed=args.seed, hours=args.hours,
                           activity=args.activity, samples_per_shard=args.samples_per_shard,
                           progress=not args.quiet, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        print(f"arflare synth: {exc}", file=sys.stderr)
        return 2
    print(summary)
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
