"""Separable B-spline resampling onto a :class:`~mrisr.geometry.grid.TargetGrid`.

The contract's grid is axis-aligned in input voxel coordinates (output voxel
``j`` samples input coordinate ``c0 + r * j`` on each axis independently), so a
tensor-product B-spline of any order is evaluated one axis at a time: ``order + 1``
taps per axis instead of ``(order + 1) ** 3`` per voxel. Values equal
``scipy.ndimage.map_coordinates(..., mode="reflect")`` (half-sample symmetric
extension: the image mirrored about its outer voxel edges), which the tests
check.

Along any axis that is being made coarser (``r > 1``) the input is first
smoothed with a Gaussian so that the result does not alias.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from mrisr.errors import MrisrError
from mrisr.geometry.grid import TargetGrid


def bspline_basis(t: np.ndarray, order: int) -> np.ndarray:
    """Centred B-spline of degree ``order`` evaluated at ``t``.

    Example:
        >>> float(bspline_basis(np.array([0.0]), 3)[0])  # 2/3 at the centre
        0.6666666666666666
    """
    t = np.asarray(t, dtype=np.float64)
    if order == 0:
        return ((t >= -0.5) & (t < 0.5)).astype(np.float64)
    out = np.zeros_like(t)
    half = (order + 1) / 2.0
    for k in range(order + 2):
        out += (-1) ** k * math.comb(order + 1, k) * np.maximum(0.0, t + half - k) ** order
    return out / math.factorial(order)


def reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Fold integer indices into ``[0, n)`` by half-sample symmetric reflection.

    Example:
        >>> reflect_index(np.array([-2, -1, 0, 3, 4]), 4).tolist()
        [1, 0, 0, 3, 3]
    """
    period = 2 * n
    m = np.mod(idx, period)
    return np.where(m < n, m, period - 1 - m)


def interpolation_taps(positions: np.ndarray, n: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights of the ``order + 1`` B-spline taps of each position.

    Returns:
        ``(index, weight)``, each of shape ``(order + 1, len(positions))``;
        indices are already folded into ``[0, n)``.
    """
    x = np.asarray(positions, dtype=np.float64)
    if order == 0:
        start = np.floor(x + 0.5).astype(np.int64)
        return reflect_index(start, n)[None], np.ones((1, x.size))
    start = np.floor(x - (order + 1) / 2.0).astype(np.int64) + 1
    ks = start[None, :] + np.arange(order + 1)[:, None]
    w = bspline_basis(x[None, :] - ks, order)
    return reflect_index(ks, n), w


#: Axes shorter than this are mirror-padded before the spline prefilter, whose
#: built-in boundary handling is inexact on very short signals.
_SHORT_AXIS = 32


def spline_coefficients(data: np.ndarray, axis: int, order: int) -> np.ndarray:
    """B-spline coefficients along ``axis`` for half-sample symmetric extension.

    Short axes are first extended by mirroring about the edges (the same
    extension, written out) so the prefilter's boundary treatment is exact to
    float32 precision, then cropped back.
    """
    n = data.shape[axis]
    if n >= _SHORT_AXIS:
        return ndimage.spline_filter1d(data, order=order, axis=axis, mode="reflect", output=np.float32)
    pad = [(0, 0)] * data.ndim
    pad[axis] = (_SHORT_AXIS, _SHORT_AXIS)
    padded = np.pad(np.asarray(data, dtype=np.float32), pad, mode="symmetric")
    full = ndimage.spline_filter1d(padded, order=order, axis=axis, mode="reflect", output=np.float32)
    return np.take(full, np.arange(_SHORT_AXIS, _SHORT_AXIS + n), axis=axis)


def resample_axis(data: np.ndarray, axis: int, positions: np.ndarray, order: int = 3) -> np.ndarray:
    """Sample ``data`` along one axis at continuous voxel ``positions``.

    Args:
        data: Array of any dimensionality (float32 or float64).
        axis: Axis to resample.
        positions: Continuous input voxel coordinates (voxel centres at integers).
        order: B-spline order, 0 (nearest) to 5.

    Returns:
        float32 array, ``data.shape`` with ``axis`` replaced by ``len(positions)``.

    Example:
        >>> resample_axis(np.arange(4.0), 0, np.array([0.5, 1.5]), order=1).tolist()
        [0.5, 1.5]
    """
    if not 0 <= order <= 5:
        raise MrisrError(f"interpolation order must be 0..5, got {order}")
    n = data.shape[axis]
    coeffs = data
    if order >= 2 and n > 1:
        coeffs = spline_coefficients(data, axis, order)
    idx, w = interpolation_taps(positions, n, order)
    shape = [1] * data.ndim
    shape[axis] = len(positions)
    out = np.zeros(tuple(data.shape[:axis]) + (len(positions),) + tuple(data.shape[axis + 1:]), np.float32)
    for m in range(idx.shape[0]):
        out += np.take(coeffs, idx[m], axis=axis) * w[m].reshape(shape).astype(np.float32)
    return out


def antialias_sigma(ratio: float) -> float:
    """Gaussian sigma (input voxels) applied before sampling with step ``ratio``.

    Zero when not downsampling; otherwise the sigma that widens a one-voxel
    FWHM to ``ratio`` voxels.
    """
    if ratio <= 1.0:
        return 0.0
    return math.sqrt(ratio * ratio - 1.0) / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def antialias_axis(data: np.ndarray, axis: int, sigma: float) -> np.ndarray:
    """Gaussian smoothing of ``data`` along ``axis`` (sigma in voxels, mirrored edges), float32.

    Example:
        >>> float(antialias_axis(np.ones((5, 3, 3), np.float32), 0, 1.2).min())
        1.0
    """
    return ndimage.gaussian_filter1d(data, sigma, axis=axis, mode="reflect", truncate=4.0).astype(np.float32)


def resample_to_grid(data: np.ndarray, grid: TargetGrid, order: int = 3, antialias: bool = True,
                     progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Resample a 3D (or 4D, volumes last) array onto ``grid``.

    Args:
        data: Input array; the first three axes are spatial.
        grid: Target grid from :func:`mrisr.geometry.grid.target_grid` for this input.
        order: B-spline order (3 = cubic, the default).
        antialias: Smooth along axes that are being downsampled.
        progress: Called with 1 after each axis pass (for progress bars).

    Returns:
        float32 array of shape ``grid.shape + data.shape[3:]``.

    Example:
        >>> from mrisr.geometry.grid import target_grid
        >>> g = target_grid(np.eye(4), (4, 4, 4), 0.5)
        >>> resample_to_grid(np.ones((4, 4, 4), np.float32), g).shape
        (8, 8, 8)
    """
    out = np.asarray(data, dtype=np.float32)
    # Downsampled axes first: they shrink the array the other passes touch.
    axes = sorted(range(3), key=lambda a: grid.shape[a] / max(out.shape[a], 1))
    for axis in axes:
        r = grid.ratios[axis]
        sigma = antialias_sigma(r) if antialias else 0.0
        if sigma > 0:
            out = antialias_axis(out, axis, sigma)
        positions = grid.positions(axis)
        identity = out.shape[axis] == len(positions) and np.allclose(positions, np.arange(len(positions)), atol=1e-9)
        if not identity:
            out = resample_axis(out, axis, positions, order)
        if progress is not None:
            progress(1)
    return np.ascontiguousarray(out, dtype=np.float32)
