"""Tests for the procedural ultrasound phantoms: determinism, shapes, field of view, texture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from annot_denoise.phantom import field_of_view, make_phantom, write_phantoms


def _phantom(seed: int, height: int = 96, width: int = 128, **kwargs) -> np.ndarray:
    return make_phantom(height, width, np.random.default_rng(seed), **kwargs)


def _detail(image: np.ndarray, mask: np.ndarray, sigma: float) -> tuple[float, float]:
    """Std of the fine residual (speckle) and of the smoothed image (structure) inside mask."""
    image = image.astype(np.float32)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    fine = image - cv2.GaussianBlur(image, (0, 0), sigma)
    coarse = cv2.GaussianBlur(image, (0, 0), min(image.shape) / 40)
    return float(fine[inner].std()), float(coarse[inner].std())


@pytest.mark.parametrize("geometry", ["sector", "linear", "auto"])
@pytest.mark.parametrize("color", [False, True])
def test_same_seed_same_bytes(geometry: str, color: bool) -> None:
    kwargs = {"geometry": geometry, "color": color, "vendor_text": True}
    first, second = _phantom(7, **kwargs), _phantom(7, **kwargs)
    assert first.tobytes() == second.tobytes()
    assert not np.array_equal(first, _phantom(8, **kwargs))


def test_uses_only_the_given_generator() -> None:
    np.random.seed(0)
    first = _phantom(3)
    np.random.seed(1)
    assert np.array_equal(first, _phantom(3))


@pytest.mark.parametrize(
    ("height", "width"), [(32, 32), (33, 47), (47, 33), (8, 8), (1, 1), (257, 129), (1200, 900)]
)
@pytest.mark.parametrize("geometry", ["sector", "linear"])
def test_shape_and_dtype(height: int, width: int, geometry: str) -> None:
    grey = _phantom(0, height, width, geometry=geometry)
    assert grey.shape == (height, width) and grey.dtype == np.uint8
    rgb = _phantom(0, height, width, geometry=geometry, color=True, vendor_text=True)
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("height", "width"), [(33, 47), (336, 544), (400, 300)])
def test_sector_corners_are_black(seed: int, height: int, width: int) -> None:
    for color in (False, True):
        image = _phantom(seed, height, width, geometry="sector", color=color)
        for corner in (image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]):
            assert np.all(corner == 0)
        assert image.max() > 0


@pytest.mark.parametrize("geometry", ["sector", "linear"])
@pytest.mark.parametrize("seed", range(4))
def test_outside_field_of_view_is_exactly_zero(geometry: str, seed: int) -> None:
    # With geometry and gain fixed, make_phantom draws its field of view first.
    fov = field_of_view(150, 200, geometry, np.random.default_rng(seed))
    image = _phantom(seed, 150, 200, geometry=geometry, gain=1.0)
    assert fov.mask.any()
    assert np.all(image[~fov.mask] == 0)
    assert np.mean(image[fov.mask] == 0) < 0.05  # the scan itself is not black


def test_vendor_text_only_outside_field_of_view() -> None:
    for seed in range(4):
        fov = field_of_view(336, 544, "sector", np.random.default_rng(seed), reserve_margin=True)
        image = _phantom(seed, 336, 544, geometry="sector", gain=1.0, vendor_text=True)
        corners = np.concatenate([image[:40, :120].ravel(), image[:40, -120:].ravel()])
        assert corners.max() > 100  # grey read-outs in the top corners
        assert np.count_nonzero(image[~fov.mask]) > 50


@pytest.mark.parametrize("geometry", ["sector", "linear"])
@pytest.mark.parametrize(("height", "width"), [(336, 544), (1200, 900)])
def test_speckle_and_structure(geometry: str, height: int, width: int) -> None:
    for seed in range(3):
        fov = field_of_view(height, width, geometry, np.random.default_rng(seed))
        image = _phantom(seed, height, width, geometry=geometry, gain=1.0)
        fine, coarse = _detail(image, fov.mask, max(1.0, min(height, width) / 150))
        assert fine > 3.0  # speckle grains
        assert coarse > 12.0  # tissue structure, so a large scan is not just noise


def test_speckle_is_elongated_laterally() -> None:
    image = _phantom(2, 336, 544, geometry="linear").astype(np.float32)
    residual = (image - cv2.GaussianBlur(image, (0, 0), 6.0))[60:-60, 60:-60]

    def correlation(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    lateral = correlation(residual[:, :-2], residual[:, 2:])
    axial = correlation(residual[:-2], residual[2:])
    assert lateral > axial + 0.1


def test_color_is_grey_or_gently_tinted() -> None:
    tinted = 0
    for seed in range(12):
        grey = _phantom(seed, geometry="linear", gain=1.0)
        rgb = _phantom(seed, geometry="linear", gain=1.0, color=True).astype(np.int16)
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            assert np.array_equal(rgb[..., 0], grey)
        else:
            tinted += 1
            assert np.abs(rgb - grey[..., None]).max() < 80
    assert 0 < tinted < 12


def test_gain_scales_brightness() -> None:
    dim = _phantom(4, geometry="linear", gain=0.7).astype(np.float32)
    bright = _phantom(4, geometry="linear", gain=1.3).astype(np.float32)
    assert bright.mean() > 1.5 * dim.mean()


def test_write_phantoms(tmp_path) -> None:
    paths = write_phantoms(tmp_path / "out", 3, seed=5, size=(65, 81))
    assert [p.name for p in paths] == [f"phantom_{i:04d}.png" for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in paths]
    images = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths]
    assert all(im is not None and im.shape == (65, 81) and im.dtype == np.uint8 for im in images)
    rng = np.random.default_rng(np.random.SeedSequence([5, 1]))
    assert np.array_equal(images[1], make_phantom(65, 81, rng))

    # Image i does not depend on how many images were asked for.
    fewer = write_phantoms(tmp_path / "fewer", 2, seed=5, size=(65, 81))
    assert fewer[1].read_bytes() == paths[1].read_bytes()


def test_write_phantoms_color_is_rgb_on_disk(tmp_path) -> None:
    (path,) = write_phantoms(tmp_path, 1, seed=0, size=(48, 64), color=True)
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    rng = np.random.default_rng(np.random.SeedSequence([0, 0]))
    assert np.array_equal(bgr[..., ::-1], make_phantom(48, 64, rng, color=True))


def test_unknown_geometry_is_an_error() -> None:
    with pytest.raises(ValueError, match="geometry"):
        _phantom(0, geometry="convex")
