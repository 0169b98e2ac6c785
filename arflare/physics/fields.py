"""Per-frame physical parameters of line-of-sight magnetograms, on batches of frames.

Units are per *field of view* (FOV, the side of the image), because the shards do not carry
a pixel scale: the real data's 224 px images are resized SHARP cutouts of different physical
sizes. A flux in G·FOV² becomes Maxwell when multiplied by the cutout's area in cm²; a
gradient in G/FOV becomes G/Mm when divided by its side in Mm. These units do not depend on
the image size, so the synthetic 64 px set and the real 224 px set give comparable numbers.

:data:`FEATURES` is the one list of what is computed (name, unit, definition); the history
changes in :mod:`arflare.physics.table` and the documentation derive from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FLUX_THRESHOLD_G = 100.0  # |B| above ~2 PNG levels (47 G each): an active pixel, not quiet Sun or noise
STRONG_FIELD_G = 150.0  # Schrijver (2007): strong-field threshold of the R-value's PIL masks
PIL_DILATION_FOV = 0.01  # strong + and - fields closer than ~2 x this meet at a PIL (>= 1 px)
R_SIGMA_FOV = 0.025  # Gaussian weight around the PIL; Schrijver's 15 Mm FWHM on a ~250 Mm cutout


@dataclass(frozen=True)
class Feature:
    """One per-frame physical parameter.

    Attributes:
        name: column name in the feature table.
        unit: unit, with FOV = the image's side (see the module docstring).
        definition: what is computed, in one sentence.
    """

    name: str
    unit: str
    definition: str


FEATURES = (
    Feature("unsigned_flux", "G·FOV²", f"sum of |B| dA over pixels with |B| > {FLUX_THRESHOLD_G:g} G"),
    Feature("net_flux", "G·FOV²", f"sum of B dA over pixels with |B| > {FLUX_THRESHOLD_G:g} G (signed)"),
    Feature("area", "FOV²", f"area of the pixels with |B| > {FLUX_THRESHOLD_G:g} G"),
    Feature("mean_gradient", "G/FOV",
            f"mean horizontal gradient |∇B| (central differences) over pixels with |B| > {FLUX_THRESHOLD_G:g} G; "
            "NaN when there is none"),
    Feature("max_gradient", "G/FOV", "largest horizontal gradient |∇B| in the frame"),
    Feature("r_value", "G·FOV²",
            f"Schrijver (2007) R: sum of |B| W dA, W = the strong-field PIL mask (pixels within "
            f"{PIL_DILATION_FOV:g} FOV of both B > {STRONG_FIELD_G:g} G and B < -{STRONG_FIELD_G:g} G) "
            f"smoothed by a unit-sum Gaussian of sigma {R_SIGMA_FOV:g} FOV"),
    Feature("pil_length", "FOV", "length of the zero line of B inside the strong-field PIL mask"),
    Feature("gwpil", "G",
            "Falconer et al. (2008)-style gradient-weighted PIL length: integral of |∇B| dl along the "
            "zero line of B inside the strong-field PIL mask"),
    Feature("bipole_separation", "FOV",
            f"distance between the flux-weighted centroids of B > {FLUX_THRESHOLD_G:g} G and "
            f"B < -{FLUX_THRESHOLD_G:g} G; NaN when a polarity is absent"),
)  # fmt: skip
FEATURE_NAMES = tuple(f.name for f in FEATURES)


def unsigned_flux(field: np.ndarray) -> np.ndarray:
    """``unsigned_flux`` of :data:`FEATURES` alone, for batches ``(N, S, S)`` or one frame (G·FOV²).

    The strata of a run's evaluation read it from the gates' decoding pass, which cannot afford
    every feature of every frame.
    """
    magnitude = np.abs(np.asarray(field, dtype=np.float32))
    return (magnitude * (magnitude > FLUX_THRESHOLD_G)).sum(axis=(-2, -1), dtype=np.float64) / magnitude.shape[-1] ** 2


def frame_features(field: np.ndarray) -> dict[str, np.ndarray]:
    """Every feature of :data:`FEATURES` for a batch of square magnetograms.

    Args:
        field: line-of-sight field in Gauss, shape ``(N, S, S)`` (or one ``(S, S)`` frame).

    Returns:
        Feature name -> float64 array of shape ``(N,)``.

    Raises:
        ValueError: the frames are not square.
    """
    field = np.asarray(field, dtype=np.float32)
    field = field[None] if field.ndim == 2 else field
    if field.ndim != 3 or field.shape[1] != field.shape[2]:
        raise ValueError(f"frame_features needs square frames (N, S, S); got shape {field.shape}")
    size = field.shape[-1]
    da = 1.0 / size**2  # pixel area in FOV²
    magnitude = np.abs(field)
    active = magnitude > FLUX_THRESHOLD_G
    n_active = active.sum(axis=(1, 2))
    gy, gx = np.gradient(field, axis=(1, 2))
    gx, gy = gx * size, gy * size  # G per pixel -> G per FOV
    gradient = np.hypot(gx, gy)
    pil = _pil_mask(field, size)
    r_value = np.zeros(field.shape[0])
    near = pil.any(axis=(1, 2))  # most frames have no PIL: skip their (costly) smoothing
    if near.any():
        weight = ndimage.gaussian_filter(pil[near].astype(np.float32), mode="constant",
                                         sigma=(0, R_SIGMA_FOV * size, R_SIGMA_FOV * size))  # fmt: skip
        r_value[near] = (magnitude[near] * weight).sum(axis=(1, 2), dtype=np.float64) * da
    length, weighted = _zero_line(field, pil, gx, gy, size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_gradient = np.where(n_active > 0, (gradient * active).sum(axis=(1, 2)) / n_active, np.nan)
    out = {
        "unsigned_flux": unsigned_flux(field),
        "net_flux": (field * active).sum(axis=(1, 2), dtype=np.float64) * da,
        "area": n_active * da,
        "mean_gradient": mean_gradient,
        "max_gradient": gradient.max(axis=(1, 2)),
        "r_value": r_value,
        "pil_length": length,
        "gwpil": weighted,
        "bipole_separation": _bipole_separation(field, size),
    }
    return {name: np.asarray(out[name], dtype=np.float64) for name in FEATURE_NAMES}


def _pil_mask(field: np.ndarray, size: int) -> np.ndarray:
    """Pixels within the dilation radius of both strong positive and strong negative field."""
    width = 2 * max(1, round(PIL_DILATION_FOV * size)) + 1
    # maximum_filter on uint8 is a separable square dilation: much cheaper than binary_dilation.
    near = [ndimage.maximum_filter(mask.view(np.uint8), size=(1, width, width), mode="constant")
            for mask in (field > STRONG_FIELD_G, field < -STRONG_FIELD_G)]  # fmt: skip
    return (near[0] & near[1]).astype(bool)


def _zero_line(field, pil, gx, gy, size) -> tuple[np.ndarray, np.ndarray]:
    """Length (FOV) and |∇B|-weighted length (G) of the zero line of B inside ``pil``.

    Every pair of neighbouring pixels of opposite sign is one crossing of the zero line. A
    straight line of length L with unit normal n crosses L·|n_x| horizontal and L·|n_y|
    vertical pixel pairs, so weighting each crossing by ``pixel / (|n_x| + |n_y|)`` (n from
    the local gradient) measures L at any orientation, not the staircase length.
    """
    pixel = 1.0 / size
    length = np.zeros(field.shape[0])
    weighted = np.zeros(field.shape[0])
    positive = field >= 0  # a pixel at exactly 0 G (PNG level 128) counts once, on the + side
    for axis, tangential in ((2, gy), (1, gx)):  # horizontal pairs, then vertical pairs
        lo = tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))
        hi = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
        crossing = (positive[lo] != positive[hi]) & pil[lo] & pil[hi]
        frame = np.nonzero(crossing)[0]  # crossings are sparse: evaluate only there
        across = (field[hi][crossing] - field[lo][crossing]) * size  # the difference across the pair
        along = 0.5 * (tangential[lo][crossing] + tangential[hi][crossing])
        norm = np.hypot(across, along)
        step = pixel * norm / (np.abs(across) + np.abs(along))  # > 0: a crossing has across != 0
        length += np.bincount(frame, weights=step, minlength=field.shape[0])
        weighted += np.bincount(frame, weights=step * norm, minlength=field.shape[0])
    return length, weighted


def _bipole_separation(field: np.ndarray, size: int) -> np.ndarray:
    """Distance (FOV) between the flux-weighted centroids of the two polarities."""
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    centroids = []
    for sign in (1.0, -1.0):
        flux = np.where(sign * field > FLUX_THRESHOLD_G, np.abs(field), 0.0)
        total = flux.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            x = flux.sum(axis=1) @ coords / total
            y = flux.sum(axis=2) @ coords / total
        centroids.append((np.where(total > 0, x, np.nan), np.where(total > 0, y, np.nan)))
    (xp, yp), (xn, yn) = centroids
    return np.hypot(xp - xn, yp - yn)
