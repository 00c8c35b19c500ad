"""Simulated low-resolution acquisitions on the geometry contract.

``degrade`` turns a high-resolution volume into the volume a scanner would
have measured at a coarser ``spacing``. The low-resolution grid is the
contract's grid (:func:`mrisr.geometry.grid.target_grid`) for that spacing, so an LR
voxel sits over the HR voxels it integrates, edge-aligned when the factor
divides the shape, and ``mrisr upscale`` of the result back to the HR spacing
lands exactly on the HR grid.

The point-spread functions (``box``, ``gaussian``, ``kspace``, ``slice``) and their per-axis matrices are in
:mod:`mrisr.acquisition.psf`.

Rician noise (``noise`` = sigma as a fraction of the image's robust maximum)
is added last, as on a magnitude image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mrisr.acquisition.psf import axis_operators
from mrisr.errors import GeometryError, look_up_option
from mrisr.geometry.grid import parse_spacing, target_grid
from mrisr.inference.intensity import robust_scale
from mrisr.options import PSFS


def apply_axis(data: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """``matrix`` (rows: new samples, columns: ``data``'s along ``axis``) applied along one axis, in float32."""
    out = np.tensordot(matrix.astype(np.float32), data, axes=([1], [axis]))
    return np.moveaxis(out, 0, axis)


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
            out = apply_axis(out, op, axis)
    if noise > 0:
        rng = np.random.default_rng(seed)
        out = add_rician_noise(out, noise * robust_scale(out), rng)
    return np.ascontiguousarray(out, dtype=np.float32), grid.affine
