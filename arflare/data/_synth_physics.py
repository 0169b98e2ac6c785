"""Physics of the synthetic AR-flares data set: regions, bipoles, tracks, flare rate, flares, labels.

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

Private: :mod:`arflare.data.synth` re-exports the public names and writes the data set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

CADENCE_H = 0.2  # 12-minute frames, as HMI's 720 s magnetograms
STEPS_PER_DAY = 120
HISTORY_STEPS = 31  # 6 h (30 frames) of history for the emergence term, plus one for the flow
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


def _draw_bipoles(rng: np.random.Generator, kind: str, *, window_h: float, horizon_h: float,
                  reverse: np.ndarray | None = None) -> dict:
    """Draw the bipoles of one AR: pre-existing ones, then emergence episodes up to ``horizon_h``.

    ``reverse[j]`` (uniform draws from their own stream) < 0 marks episode ``j`` to run backwards;
    see :func:`simulate`'s ``decaying_share``. None: every episode emerges.
    """
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
        rows[-1]["reverse"] = float(reverse is not None and reverse[j % len(reverse)] < 0)
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
        "reverse": 0.0,  # 1: the episode runs backwards (see simulate's decaying_share)
    }


def _pole_tracks(bp: dict[str, np.ndarray], t: np.ndarray, drift: np.ndarray) -> dict[str, np.ndarray]:
    """Positions, widths and signed fluxes of every pole at times ``t`` (h); arrays (T, 2 * bipoles)."""
    tt = t[:, None]
    grow = np.clip((tt - bp["t_e"]) / bp["tau_e"], 0, 1)
    grow = np.where(bp["reverse"] > 0, 1 - grow, grow)  # a reversed episode: full flux that sinks and converges
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


def _flare_rate(tracks: dict[str, np.ndarray], productivity: float,
                emergence_gain: float = 1.0) -> dict[str, np.ndarray]:
    """Flare rate (>= C per day) from the R-value proxy and the 6 h increase of unsigned flux (x ``emergence_gain``)."""
    x, y, s, f = tracks["x"], tracks["y"], tracks["sigma"], tracks["flux"]
    d2 = (x[:, :, None] - x[:, None, :]) ** 2 + (y[:, :, None] - y[:, None, :]) ** 2
    s2 = s[:, :, None] ** 2 + s[:, None, :] ** 2
    opposite = (f[:, :, None] * f[:, None, :]) < 0
    pair = np.sqrt(np.abs(f[:, :, None] * f[:, None, :])) * np.exp(-d2 / (2 * s2))
    r_value = 0.5 * np.where(opposite, pair, 0).sum(axis=(1, 2))  # each pair counted twice
    unsigned = np.abs(f).sum(axis=1)
    increase = np.zeros_like(unsigned)
    increase[30:] = np.clip(unsigned[30:] - unsigned[:-30], 0, None)
    static = productivity * (RATE_QUIET + RATE_R * r_value / R0)  # what the configuration at t alone implies
    raw = static + productivity * emergence_gain * RATE_EMERGENCE * increase / EMERGENCE_SCALE
    rate = RATE_MAX * -np.expm1(-raw / RATE_MAX)  # soft saturation: even a monster AR has a finite rate
    return {"rate": rate, "rate_no_change": RATE_MAX * -np.expm1(-static / RATE_MAX), "r_value": r_value,
            "unsigned_flux": unsigned, "flux_increase_6h": increase}


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


def _m_rate(rate: np.ndarray) -> np.ndarray:
    """Rate of >= M1.0 flares per day implied by the >= C rate (the magnitude law of :func:`_draw_flares`)."""
    scale = np.maximum(1.0, (rate / MAGNITUDE_RATE) ** MAGNITUDE_POWER)
    return rate * np.minimum(1.0, (scale / 10) ** (GOES_INDEX - 1))


def oracle_probabilities(rate: np.ndarray, n_frames: int, rate_no_change: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The two oracles' probabilities of a >= C (and >= M) flare in (t, t + 24 h] for every frame.

    ``*_future`` is the upper bound that knows the future: 1 - exp(-integral of the latent
    rate over (t, t + 24 h]), so it knows how the rate will evolve, including bipoles that have
    not emerged yet. ``*_present`` may know only what is determined at t: the latent rate at t
    (the AR's R-value and its 6 h flux increase up to t, times its hidden productivity), held
    constant for 24 h: 1 - exp(-rate(t) * 1 day). It never reads ``rate`` after frame t.
    ``p_label_present_no_change`` (when ``rate_no_change`` is given) is the same oracle without
    the emergence term: what the configuration at t (R-value, productivity) implies, blind to
    change. The gap between the two present oracles is the skill within reach that needs time
    order: the strength of the set's temporal signal.

    Args:
        rate: Latent >= C flare rate per day at every step from the first frame on; at least
            ``n_frames + STEPS_PER_DAY`` steps for the future oracle.
        rate_no_change: The same rate without its emergence term (``_flare_rate``'s ``rate_no_change``).
        n_frames: Frames to score.
    """
    out = {}
    for suffix, per_day in (("", rate), ("_m", _m_rate(rate))):
        hazard = np.concatenate([[0.0], np.cumsum(per_day / STEPS_PER_DAY)])
        integral = hazard[STEPS_PER_DAY : STEPS_PER_DAY + n_frames] - hazard[:n_frames]
        out[f"p_label{suffix}_future"] = -np.expm1(-integral)
        out[f"p_label{suffix}_present"] = -np.expm1(-per_day[:n_frames])  # 24 h = 1 day at the present rate
    if rate_no_change is not None:
        out["p_label_present_no_change"] = -np.expm1(-rate_no_change[:n_frames])
    return out


def _labels(n_frames: int, latent: dict[str, np.ndarray], steps: np.ndarray, flux: np.ndarray) -> dict[str, np.ndarray]:
    """Largest flare in (t, t + 24 h] per frame, and the oracles' probabilities of it."""
    rate = latent["rate"]
    step_max = np.zeros(rate.size)
    np.maximum.at(step_max, steps, flux)
    window = np.lib.stride_tricks.sliding_window_view(step_max, STEPS_PER_DAY)[:n_frames]
    return {"largest": window.max(axis=1), **oracle_probabilities(rate, n_frames, latent["rate_no_change"])}


@dataclass
class Region:
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


def simulate(index: int, *, seed: int, hours: float | None, activity: float = 1.0,
             decaying_share: float = 0.0, emergence_gain: float = 1.0) -> Region:
    """Simulate AR number ``index``: morphology, evolution, flare rate, flares and labels.

    ``decaying_share`` is the probability that an emergence episode runs backwards: its
    bipole starts at full flux and separation, then sinks (flux to 0, footpoints converging)
    over the same time. Frame by frame such a bipole looks like an emerging one, but a
    falling flux adds no flare rate, so only the direction of change tells a flaring AR from
    a quiet one: the knob sets how much of the skill needs time order. The draws come from
    their own stream, so everything else about the AR is the same for every share, and 0
    reproduces the default data set byte for byte. ``emergence_gain`` multiplies the flare
    rate's emergence term (the 6 h flux increase), the part of the rate only change shows.
    """
    phys_seq, noise_seq = np.random.SeedSequence(seed, spawn_key=(index,)).spawn(2)
    rng = np.random.default_rng(phys_seq)
    kind = _kind(index, seed=seed)
    n_frames = round((hours if hours is not None else rng.uniform(*WINDOW_H)) / CADENCE_H)
    n_steps = n_frames + STEPS_PER_DAY  # labels of the last frame need the following 24 h
    t = np.arange(-HISTORY_STEPS, n_steps) * CADENCE_H
    reverse = None
    if decaying_share > 0:
        flips = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, 2**29)))
        reverse = flips.random(64) - decaying_share  # < 0 with probability decaying_share
    bipoles = _draw_bipoles(rng, kind, window_h=n_frames * CADENCE_H, horizon_h=t[-1], reverse=reverse)
    tracks = _pole_tracks(bipoles, t, drift=rng.normal(0, 0.0015, size=2))
    productivity = activity * float(rng.lognormal(0, PRODUCTIVITY_SPREAD))
    latent = {k: v[HISTORY_STEPS:] for k, v in _flare_rate(tracks, productivity, emergence_gain).items()}
    steps, seconds, flux = _draw_flares(rng, latent["rate"])
    start = START + timedelta(minutes=12 * (index * 2 * STEPS_PER_DAY + int(rng.integers(0, STEPS_PER_DAY))))
    flares = [(start + timedelta(minutes=12 * int(k), seconds=int(s)), float(f))
              for k, s, f in zip(steps, seconds, flux)]
    labels = _labels(n_frames, latent, steps, flux)
    return Region(ar=str(11000 + index), kind=kind, start=start, n_frames=n_frames, tracks=tracks,
                  latent=latent, labels=labels, flares=flares, noise_seed=noise_seq)

