"""Rendering of the synthetic ARs into magnetogram levels and flow, and their PNG/npz encoding.

Private: :mod:`arflare.data.synth` re-exports :func:`png_levels_to_gauss` and writes the data set.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from arflare.data._synth_physics import HISTORY_STEPS, Region

GAUSS_PER_LEVEL = 6000.0 / 127.0  # PNG level 128 = 0 G; 1 and 255 = -/+6000 G
QUIET_SUN_G = 30.0  # rms of the correlated quiet-Sun field
NOISE_G = 8.0  # per-frame, per-pixel instrument noise
FLOW_WEIGHT_G = 50.0  # below this field the flow fades to 0 (no flux elements to track)


def _quiet_sun(rng: np.random.Generator, size: int) -> np.ndarray:
    """Two spatially correlated unit-rms noise patterns (size, size) for the quiet-Sun network."""
    white = rng.normal(size=(2, size, size))
    k = np.fft.fftfreq(size) * size  # cycles per field of view
    corr = 0.02 * 2 * np.pi  # correlation length ~2% of the field of view (supergranules)
    kernel = np.exp(-0.5 * (k[:, None] ** 2 + k[None, :] ** 2) * corr**2)
    smooth = np.fft.ifft2(np.fft.fft2(white) * kernel).real
    return smooth / smooth.std(axis=(1, 2), keepdims=True)


def render(region: Region, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def png_bytes(levels: np.ndarray) -> bytes:
    """Encode one frame's levels (S, S) uint8 as a PNG."""
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


def flow_bytes(u: np.ndarray, v: np.ndarray) -> bytes:
    """Quantise one frame's flow to int8 with a float scale each: u = u8 * su."""
    out = {}
    for name, comp in (("u", u), ("v", v)):
        peak = float(np.abs(comp).max())
        scale = peak / 127 if peak > 0 else 1.0
        out[f"{name}8"] = np.clip(np.rint(comp / scale), -127, 127).astype(np.int8)
        out[f"s{name}"] = np.float32(scale)
    return _npz_bytes(out)
