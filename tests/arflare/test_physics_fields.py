"""Physics features on constructed fields whose answers are known analytically."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from arflare.data.synth import png_levels_to_gauss
from arflare.physics.fields import FEATURE_NAMES, FEATURES, FLUX_THRESHOLD_G, frame_features

SIZE = 160
_C = (np.arange(SIZE) + 0.5) / SIZE
X, Y = np.meshgrid(_C, _C)  # pixel centres in FOV units; X varies along columns


def gaussian(x0: float, y0: float, peak: float, sigma: float) -> np.ndarray:
    return peak * np.exp(-((X - x0) ** 2 + (Y - y0) ** 2) / (2 * sigma**2))


def features(field: np.ndarray) -> dict[str, float]:
    return {name: float(values[0]) for name, values in frame_features(field).items()}


def test_every_feature_is_documented_and_computed():
    assert all(f.unit and f.definition for f in FEATURES)
    assert set(frame_features(np.zeros((2, 8, 8)))) == set(FEATURE_NAMES)


def test_separated_bipole_flux_area_gradient_and_separation():
    peak, sigma, sep = 2000.0, 0.04, 0.4
    got = features(gaussian(0.5 - sep / 2, 0.5, peak, sigma) - gaussian(0.5 + sep / 2, 0.5, 0.5 * peak, sigma))
    t = FLUX_THRESHOLD_G
    # A Gaussian pole's flux above a threshold t is 2 pi s^2 (B0 - t); its area 2 pi s^2 ln(B0 / t).
    flux = [2 * np.pi * sigma**2 * (b - t) for b in (peak, 0.5 * peak)]
    area = [2 * np.pi * sigma**2 * np.log(b / t) for b in (peak, 0.5 * peak)]
    assert got["unsigned_flux"] == pytest.approx(sum(flux), rel=0.01)
    assert got["net_flux"] == pytest.approx(flux[0] - flux[1], rel=0.01)
    assert got["area"] == pytest.approx(sum(area), rel=0.02)
    assert got["max_gradient"] == pytest.approx(peak / sigma * np.exp(-0.5), rel=0.01)  # at r = sigma
    # Mean |grad B| over |B| > t: integral of the radial profile over both discs / their area.
    def disc(b):
        radius = sigma * np.sqrt(2 * np.log(b / t))
        slope = lambda r: b * r / sigma**2 * np.exp(-(r**2) / (2 * sigma**2)) * 2 * np.pi * r  # noqa: E731
        return integrate.quad(slope, 0, radius)[0]
    assert got["mean_gradient"] == pytest.approx((disc(peak) + disc(0.5 * peak)) / sum(area), rel=0.02)
    # Flux-weighted centroids of symmetric poles are their centres.
    assert got["bipole_separation"] == pytest.approx(sep, abs=1e-3)
    # Far apart: no polarity inversion line between strong fields.
    assert got["r_value"] == got["pil_length"] == got["gwpil"] == 0.0


@pytest.mark.parametrize(
    ("name", "distance", "length"),
    [
        ("straight", lambda: X - 0.5 - 0.3 / SIZE, 1.0),
        ("30 degrees", lambda: (X - 0.5) * np.cos(np.pi / 6) + (Y - 0.5) * np.sin(np.pi / 6), 1 / np.cos(np.pi / 6)),
        ("circle", lambda: np.hypot(X - 0.5, Y - 0.5) - 0.25, 2 * np.pi * 0.25),
    ],
)
def test_pil_length_and_gradient_weighted_length(name, distance, length):
    # B = B0 tanh(d / w): the zero line is d = 0 and |grad B| on it is B0 / w everywhere.
    peak, width = 1500.0, 0.02
    got = features(peak * np.tanh(distance() / width))
    assert got["pil_length"] == pytest.approx(length, rel=0.02), name
    assert got["gwpil"] == pytest.approx(length * peak / width, rel=0.03), name
    assert got["r_value"] > 0


def test_pil_survives_png_quantisation():
    field = 1500.0 * np.tanh((np.hypot(X - 0.5, Y - 0.5) - 0.25) / 0.02)
    levels = np.clip(np.rint(128 + field / (6000 / 127)), 0, 255).astype(np.uint8)
    got = features(png_levels_to_gauss(levels))
    assert got["pil_length"] == pytest.approx(2 * np.pi * 0.25, rel=0.02)
    assert got["gwpil"] == pytest.approx(2 * np.pi * 0.25 * 1500 / 0.02, rel=0.03)


def test_r_value_grows_as_opposite_poles_approach():
    r = [features(gaussian(0.5 - d / 2, 0.5, 2000, 0.03) - gaussian(0.5 + d / 2, 0.5, 2000, 0.03))["r_value"]
         for d in (0.3, 0.12, 0.08)]  # fmt: skip
    assert r[0] == 0.0 < r[1] < r[2]


def test_unipolar_and_empty_frames():
    got = features(gaussian(0.5, 0.5, 1000, 0.05))
    assert got["r_value"] == got["pil_length"] == 0.0
    assert got["net_flux"] == pytest.approx(got["unsigned_flux"])
    assert np.isnan(got["bipole_separation"])  # one polarity only
    quiet = features(np.zeros((SIZE, SIZE)))
    assert quiet["unsigned_flux"] == quiet["area"] == quiet["max_gradient"] == 0.0
    assert np.isnan(quiet["mean_gradient"])


def test_units_do_not_depend_on_image_size():
    def at(size):
        c = (np.arange(size) + 0.5) / size
        xx, yy = np.meshgrid(c, c)
        return features(2000 * np.exp(-((xx - 0.45) ** 2 + (yy - 0.5) ** 2) / (2 * 0.04**2))
                        - 2000 * np.exp(-((xx - 0.55) ** 2 + (yy - 0.5) ** 2) / (2 * 0.04**2)))  # fmt: skip
    # The PIL features are left out: their mask is at least 3 px wide, wider in FOV at 64 px.
    small, large = at(64), at(224)
    for name in ("unsigned_flux", "area", "bipole_separation"):
        assert small[name] == pytest.approx(large[name], rel=0.05), name
    # Central differences over 2 px flatten the steepest gradient at 64 px: equal within 10 %.
    for name in ("max_gradient", "mean_gradient"):
        assert small[name] == pytest.approx(large[name], rel=0.1), name


def test_a_batch_equals_its_frames_one_by_one():
    frames = np.stack([gaussian(0.3, 0.6, 1800, 0.04) - gaussian(0.45, 0.5, 1200, 0.03), np.zeros((SIZE, SIZE))])
    batch = frame_features(frames)
    for i, frame in enumerate(frames):
        one = frame_features(frame)
        for name in FEATURE_NAMES:
            np.testing.assert_allclose(batch[name][i], one[name][0], rtol=1e-6, err_msg=name)


def test_non_square_frames_are_refused():
    with pytest.raises(ValueError, match="square"):
        frame_features(np.zeros((1, 8, 9)))


def test_readme_documents_every_feature():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Physics features") :]
    assert all(f"| `{f.name}` | {f.unit} |" in section for f in FEATURES)
