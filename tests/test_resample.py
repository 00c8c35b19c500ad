"""Separable B-spline resampling onto the contract grid: values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mrisr.errors import MrisrError
from mrisr.geometry.grid import block_average_affine, target_grid, voxel_sizes
from mrisr.geometry.resample import antialias_sigma, reflect_index, resample_to_grid

RNG = np.random.default_rng(1234)


def block_average(hr: np.ndarray, f) -> np.ndarray:
    """LR voxel j = mean of HR voxels f*j .. f*j + f - 1 (per axis)."""
    n = [s // k for s, k in zip(hr.shape, f)]
    hr = hr[: n[0] * f[0], : n[1] * f[1], : n[2] * f[2]]
    return hr.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5))


def ramp(shape, coeffs=(3.0, 0.5, -0.25, 0.75)) -> np.ndarray:
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return (coeffs[0] + coeffs[1] * x + coeffs[2] * y + coeffs[3] * z).astype(np.float32)


def oblique_affine() -> np.ndarray:
    c, s = np.cos(0.4), np.sin(0.4)
    a = np.eye(4)
    a[:3, :3] = [[c, -s, 0.1], [s, c, 0.0], [0.0, 0.0, -1.0]]  # rotated, sheared, left-handed
    a[:3, 3] = [10.0, -20.0, 30.0]
    return a


@pytest.mark.parametrize("f", [(2, 2, 2), (1, 2, 3), (3, 3, 3)])
@pytest.mark.parametrize("affine", [np.eye(4), oblique_affine()], ids=["axis-aligned", "oblique"])
def test_block_average_round_trip_recovers_hr_grid_and_ramp(f, affine):
    hr_shape = (12, 12, 12) if f != (1, 2, 3) else (7, 10, 15)
    hr = ramp(hr_shape)
    lr = block_average(hr, f)
    a_lr = block_average_affine(affine, f)
    grid = target_grid(a_lr, lr.shape, voxel_sizes(affine))
    assert grid.shape == hr_shape
    np.testing.assert_allclose(grid.affine, affine, atol=1e-5)
    out = resample_to_grid(lr, grid, order=1)
    assert out.shape == hr_shape and out.dtype == np.float32
    # The block average of a ramp is the ramp at the LR centres; linear
    # interpolation reproduces it exactly wherever no tap reaches past an edge.
    m = [k for k in f]
    inner = tuple(slice(k, n - k) for k, n in zip(m, hr_shape))
    np.testing.assert_allclose(out[inner], hr[inner], atol=1e-4)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4, 5])
def test_matches_map_coordinates_reflect(order):
    data = RNG.normal(size=(10, 9, 8)).astype(np.float32)
    affine = np.diag([1.0, 1.2, 2.0, 1.0])
    grid = target_grid(affine, data.shape, (0.73, 1.7, 0.9))  # up, down and up; no ties for order 0
    coords = np.meshgrid(*[grid.positions(i) for i in range(3)], indexing="ij")
    expected = ndimage.map_coordinates(data.astype(np.float64), coords, order=order, mode="reflect")
    out = resample_to_grid(data, grid, order=order, antialias=False)
    assert out.shape == grid.shape
    np.testing.assert_allclose(out, expected, atol=2e-5)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_linear_ramp_is_exact_in_the_interior(order):
    lr = ramp((48, 3, 3), (1.0, 2.0, 0.0, 0.0))  # ramp along axis 0, constant elsewhere
    grid = target_grid(np.eye(4), lr.shape, (0.5, 1.0, 1.0))
    out = resample_to_grid(lr, grid, order=order)
    positions = grid.positions(0)
    expected = 1.0 + 2.0 * positions
    inner = slice(40, -40)  # 20 LR voxels from each edge: boundary effects have decayed
    np.testing.assert_allclose(out[inner, 1, 1], expected[inner], rtol=1e-5)
    np.testing.assert_allclose(out[:, 0, 0], out[:, 2, 2], atol=1e-5)  # constant axes stay constant


def test_constant_image_stays_constant_everywhere():
    # Axes of >= 12 voxels: on shorter ones scipy's reflect-mode prefilter
    # (which map_coordinates shares) is off by up to ~1e-4 for orders 4-5.
    data = np.full((12, 13, 14), 3.5, np.float32)
    grid = target_grid(oblique_affine(), data.shape, (0.4, 2.5, 0.7))
    for order in range(6):
        np.testing.assert_allclose(resample_to_grid(data, grid, order=order), 3.5, rtol=1e-5)


def test_checkerboard_downsampled_is_nearly_constant_with_antialias():
    idx = np.indices((30, 30, 30)).sum(axis=0)
    checker = np.where(idx % 2 == 0, 1.0, -1.0).astype(np.float32)
    grid = target_grid(np.eye(4), checker.shape, 3.0)
    assert grid.shape == (10, 10, 10) and grid.offsets == (1.0, 1.0, 1.0)  # samples land on voxel centres
    smooth = resample_to_grid(checker, grid, order=3, antialias=True)
    aliased = resample_to_grid(checker, grid, order=3, antialias=False)
    assert np.abs(smooth).max() < 0.01
    assert np.abs(aliased).max() > 0.9  # without smoothing the pattern aliases to +-1


def test_antialias_only_on_downsampled_axes():
    assert antialias_sigma(1.0) == 0.0 and antialias_sigma(0.5) == 0.0
    # sigma widens a 1-voxel FWHM to r voxels: FWHM^2 = 1 + (2.3548 sigma)^2 = r^2
    fwhm = 2 * np.sqrt(2 * np.log(2)) * antialias_sigma(3.0)
    assert 1 + fwhm**2 == pytest.approx(9.0)
    data = RNG.normal(size=(8, 8, 8)).astype(np.float32)
    up = target_grid(np.eye(4), data.shape, 0.5)
    np.testing.assert_array_equal(resample_to_grid(data, up, antialias=True),
                                  resample_to_grid(data, up, antialias=False))


def test_4d_equals_each_volume():
    data = RNG.normal(size=(6, 5, 4, 3)).astype(np.float32)
    grid = target_grid(np.diag([1.0, 1.0, 2.0, 1.0]), data.shape[:3], (0.5, 1.5, 1.0))
    out = resample_to_grid(data, grid, order=3)
    assert out.shape == grid.shape + (3,)
    for t in range(3):
        np.testing.assert_allclose(out[..., t], resample_to_grid(data[..., t], grid, order=3), atol=1e-6)


def test_identity_grid_returns_input():
    data = RNG.normal(size=(4, 5, 6)).astype(np.float32)
    grid = target_grid(np.diag([1.0, 2.0, 3.0, 1.0]), data.shape, (1.0, 2.0, 3.0))
    np.testing.assert_array_equal(resample_to_grid(data, grid, order=3), data)


def test_progress_called_once_per_axis():
    calls = []
    grid = target_grid(np.eye(4), (4, 4, 4), 0.5)
    resample_to_grid(np.zeros((4, 4, 4), np.float32), grid, progress=calls.append)
    assert calls == [1, 1, 1]


def test_reflect_index_is_half_sample_symmetric():
    assert reflect_index(np.arange(-4, 8), 4).tolist() == [3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]


def test_bad_order_is_refused():
    grid = target_grid(np.eye(4), (4, 4, 4), 0.5)
    with pytest.raises(MrisrError, match="order"):
        resample_to_grid(np.zeros((4, 4, 4), np.float32), grid, order=6)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7])
@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_short_axes_keep_constants_exactly(n, order):
    from mrisr.geometry.resample import resample_axis

    x = np.full((n, 3), 7.0, np.float32)
    y = resample_axis(x, 0, np.linspace(-0.5, n - 0.5, 11), order)
    np.testing.assert_allclose(y, 7.0, atol=5e-6)
