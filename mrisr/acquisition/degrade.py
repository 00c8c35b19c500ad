"""Simulated low-resolution acquisitions on the geometry contract.

``degrade`` turns a high-resolution volume into the volume a scanner would
have measured at a coarser ``spacing``. The low-resolution grid is the
contract's grid (:func:`mrisr.geometry.grid.target_grid`) for that spacing, so an LR
voxel sits over the HR voxels it integrates, edge-aligned when the factor
divides the shape, and ``mrisr upscale`` of the result back to the HR spacing
lands exactly on the HR grid.

Every point-spread function is separable and linear, so each axis is one
``(N', N)`` matrix built from the exact integral of the PSF over each HR voxel
(HR voxels are treated as boxes; outside the volume the image is mirrored
about its edges, as in :mod:`mrisr.geometry.resample`):

- ``box``: the LR voxel averages the HR volume under it (block averaging;
  exact overlaps for non-integer factors).
- ``gaussian``: a Gaussian PSF of ``fwhm`` LR voxels (default 1).
- ``kspace``: truncation of k-space to the central ``N'`` frequencies (the LR
  image is the band-limited interpolant of the truncated spectrum, sampled at
  the LR voxel centres): partial-Fourier / low-resolution acquisitions.
- ``slice``: a 2D multi-slice acquisition: k-space truncation in-plane and a
  slice profile (a box of ``fwhm`` LR voxels, default 1, with Gaussian edges)
  through-plane along the axis with the largest factor.

Rician noise (``noise`` = sigma as a fraction of the image's robust maximum)
is added last, as on a magnitude image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import ndtr

from mrisr.errors import GeometryError, look_up_option
from mrisr.geometry.grid import TargetGrid, parse_spacing, target_grid
from mrisr.geometry.resample import reflect_index
from mrisr.inference.intensity import robust_scale

PSFS = ("box", "gaussian", "kspace", "slice")
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
#: Width of the Gaussian edge of the ``slice`` profile, as a fraction of the slice thickness.
SLICE_EDGE = 0.15


def _norm_pdf(u: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)


def _psi(u: np.ndarray) -> np.ndarray:
    """Antiderivative of the standard normal CDF: u * Phi(u) + phi(u)."""
    return u * ndtr(u) + _norm_pdf(u)


def _profile_cdf(kind: str, t: np.ndarray, width: float) -> np.ndarray:
    """Integral from -inf to ``t`` of a unit-area profile of ``width`` voxels."""
    if kind == "box":
        return np.clip(t / width + 0.5, 0.0, 1.0)
    if kind == "gaussian":
        return ndtr(t / (width * _FWHM_TO_SIGMA))
    # slice: box of `width` convolved with a Gaussian of sigma SLICE_EDGE * width
    s = SLICE_EDGE * width
    return s * (_psi((t + width / 2) / s) - _psi((t - width / 2) / s)) / width


def _support(kind: str, width: float) -> float:
    if kind == "box":
        return width / 2 + 1
    if kind == "gaussian":
        return 5 * width * _FWHM_TO_SIGMA + 1
    return width / 2 + 5 * SLICE_EDGE * width + 1


def profile_matrix(n: int, positions: np.ndarray, kind: str, width: float) -> np.ndarray:
    """``(len(positions), n)`` matrix integrating a PSF over each HR voxel.

    Row ``j`` holds, for every HR voxel ``i`` (a box ``[i - 0.5, i + 0.5]``),
    the integral of the PSF centred at ``positions[j]`` over that box; voxels
    outside ``[0, n)`` are folded back by mirroring about the volume's edges.

    Example:
        >>> profile_matrix(4, np.array([0.5, 2.5]), "box", 2.0).tolist()
        [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    """
    reach = int(math.ceil(_support(kind, width)))
    lo = int(math.floor(positions.min())) - reach
    hi = int(math.ceil(positions.max())) + reach + 1
    idx = np.arange(lo, hi)
    edges_lo = idx[None, :] - 0.5 - positions[:, None]
    w = _profile_cdf(kind, edges_lo + 1.0, width) - _profile_cdf(kind, edges_lo, width)
    out = np.zeros((len(positions), n))
    np.add.at(out.T, reflect_index(idx, n), w.T)
    return out / out.sum(axis=1, keepdims=True)


def kspace_matrix(n: int, positions: np.ndarray, m: int) -> np.ndarray:
    """``(len(positions), n)`` matrix keeping the ``m`` lowest frequencies.

    The signal is taken as periodic over the ``n`` HR voxels; its truncated
    Fourier series is evaluated at the continuous ``positions`` (so the LR
    samples sit at the contract's LR voxel centres). For an even ``m`` the
    Nyquist pair is split symmetrically so the result is real.

    Example:
        >>> x = np.cos(2 * np.pi * np.arange(8) / 8)  # one cycle: band-limited
        >>> np.allclose(kspace_matrix(8, np.array([0.5, 2.5]), 4) @ x,
        ...             np.cos(2 * np.pi * np.array([0.5, 2.5]) / 8))
        True
    """
    if m >= n:
        k = np.fft.fftfreq(n) * n
        weights = np.ones(n)
    else:
        k = np.arange(-(m // 2), m // 2 + 1, dtype=np.float64)
        weights = np.ones_like(k)
        if m % 2 == 0:
            weights[0] = weights[-1] = 0.5
    grid = np.arange(n, dtype=np.float64)
    # y_j = 1/n * sum_k w_k * exp(2 pi i k (t_j - i) / n) * x_i  -> real part:
    # cos(a - b) = cos a cos b + sin a sin b, as two (N', m) @ (m, n) products.
    a = 2.0 * np.pi * positions[:, None] * k[None, :] / n
    b = 2.0 * np.pi * k[:, None] * grid[None, :] / n
    return ((np.cos(a) * weights) @ np.cos(b) + (np.sin(a) * weights) @ np.sin(b)) / n


def _apply_axis(data: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    out = np.tensordot(matrix.astype(np.float32), data, axes=([1], [axis]))
    return np.moveaxis(out, 0, axis)


def axis_operators(shape: Sequence[int], grid: TargetGrid, psf: str,
                   fwhm: Sequence[float] = (1.0, 1.0, 1.0)) -> list[np.ndarray | None]:
    """The per-axis matrices of an acquisition (None where the axis is kept).

    Args:
        shape: HR spatial shape.
        grid: LR grid (from :func:`mrisr.geometry.grid.target_grid` on the HR image).
        psf: One of :data:`PSFS`.
        fwhm: PSF width per axis in LR voxels (Gaussian FWHM, slice thickness).
    """
    ratios = np.asarray(grid.ratios)
    slice_axis = int(np.argmax(ratios))
    ops: list[np.ndarray | None] = []
    for axis in range(3):
        n, r = int(shape[axis]), float(ratios[axis])
        pos = grid.positions(axis)
        if abs(r - 1.0) < 1e-9 and grid.shape[axis] == n:
            ops.append(None)
            continue
        kind = psf
        if psf == "slice":
            kind = "slice" if axis == slice_axis else "kspace"
        if kind == "kspace":
            ops.append(kspace_matrix(n, pos, grid.shape[axis]))
        else:
            width = r * (fwhm[axis] if kind != "box" else 1.0)
            ops.append(profile_matrix(n, pos, kind, width))
    return ops


def add_rician_noise(data: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``data`` plus complex Gaussian noise of std ``sigma``."""
    if sigma <= 0:
        return data
    re = data + rng.normal(0.0, sigma, data.shape).astype(np.float32)
    im = rng.normal(0.0, sigma, data.shape).astype(np.float32)
    return np.sqrt(re * re + im * im).astype(np.float32)


def three_tap_blur(data: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of std ``sigma`` voxels with a 3-tap kernel on every axis (edges: nearest).

    Georgescu et al.'s training augmentation (section III.C: a 3x3 kernel,
    random standard deviation in [0, 0.5], half of the images), in 3D.

    Example:
        >>> x = np.zeros((5, 5, 5), np.float32); x[2, 2, 2] = 1
        >>> y = three_tap_blur(x, 0.5)
        >>> round(float(y.sum()), 6), bool(y[2, 2, 2] < 1), float(y[0, 2, 2])  # mass kept, radius 1
        (1.0, True, 0.0)
    """
    if sigma <= 0:
        return data
    from scipy import ndimage

    out = ndimage.gaussian_filter(np.asarray(data, np.float32), sigma, mode="nearest", truncate=1.0 / sigma)
    return out.astype(np.float32)


def degrade(data: np.ndarray, affine: np.ndarray, spacing: float | Sequence[float], psf: str = "box",
            fwhm: float | Sequence[float] | None = None, noise: float = 0.0,
            seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Simulate the acquisition of ``data`` at a coarser ``spacing``.

    Args:
        data: HR volume, 3D (or 4D with volumes last), any real dtype.
        affine: HR affine (RAS, voxel centres).
        spacing: LR voxel size per voxel axis (mm), each >= the HR voxel size.
        psf: ``box``, ``gaussian``, ``kspace`` or ``slice`` (see module doc).
        fwhm: PSF width in LR voxels, 1 or 3 values (default 1).
        noise: Rician noise sigma as a fraction of the LR image's robust maximum.
        seed: Seed of the noise.

    Returns:
        ``(lr_data float32, lr_affine)``, on the contract's grid.

    Raises:
        GeometryError: if a target voxel is smaller than the HR voxel.

    Example:
        >>> hr = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((8, 2, 2), np.float32)
        >>> lr, aff = degrade(hr, np.eye(4), [2, 1, 1], psf="box")
        >>> lr[:, 0, 0].tolist(), float(aff[0, 3])
        ([0.5, 2.5, 4.5, 6.5], 0.5)
    """
    look_up_option(psf, PSFS, "psf")
    grid = target_grid(affine, data.shape[:3], spacing)
    if min(grid.ratios) < 1.0 - 1e-6:
        raise GeometryError(
            f"degrade makes voxels larger: spacing {grid.spacing} is finer than the input on some axis "
            f"(ratios {tuple(round(r, 4) for r in grid.ratios)})")
    widths = (1.0, 1.0, 1.0) if fwhm is None else parse_spacing(fwhm, what="fwhm")
    if not (math.isfinite(noise) and noise >= 0):
        raise GeometryError(f"noise must be a finite number >= 0, got {noise!r}")
    out = np.asarray(data, dtype=np.float32)
    for axis, op in enumerate(axis_operators(out.shape, grid, psf, widths)):
        if op is not None:
            out = _apply_axis(out, op, axis)
    if noise > 0:
        rng = np.random.default_rng(seed)
        out = add_rician_noise(out, noise * robust_scale(out), rng)
    return np.ascontiguousarray(out, dtype=np.float32), grid.affine
