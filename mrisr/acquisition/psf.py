"""The point-spread functions of simulated acquisitions (:data:`PSFS`), as one ``(N', N)`` matrix per axis.

Every PSF is separable and linear, so each axis is one matrix built from the exact integral of the PSF over each HR
voxel (HR voxels are treated as boxes; outside the volume the image is mirrored about its edges, as in
:mod:`mrisr.geometry.resample`):

- ``box``: the LR voxel averages the HR volume under it (block averaging;
  exact overlaps for non-integer factors).
- ``gaussian``: a Gaussian PSF of ``fwhm`` LR voxels (default 1).
- ``kspace``: truncation of k-space to the central ``N'`` frequencies (the LR
  image is the band-limited interpolant of the truncated spectrum, sampled at
  the LR voxel centres): partial-Fourier / low-resolution acquisitions.
- ``slice``: a 2D multi-slice acquisition: k-space truncation in-plane and a
  slice profile (a box of ``fwhm`` LR voxels, default 1, with Gaussian edges)
  through-plane along the axis with the largest factor.

Each PSF is one row of :data:`AXIS_PROFILES` (what runs on the slice axis and on the others) and each profile one
row of :data:`PROFILES` (its integral and its reach): no chain of ``if psf == ...``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from mrisr.geometry.grid import TargetGrid
from mrisr.geometry.resample import reflect_index

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
#: Width of the Gaussian edge of the ``slice`` profile, as a fraction of the slice thickness.
SLICE_EDGE = 0.15


def _norm_pdf(u: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)


def _psi(u: np.ndarray) -> np.ndarray:
    """Antiderivative of the standard normal CDF: u * Phi(u) + phi(u)."""
    return u * ndtr(u) + _norm_pdf(u)


def _box_cdf(t: np.ndarray, width: float) -> np.ndarray:
    return np.clip(t / width + 0.5, 0.0, 1.0)


def _gaussian_cdf(t: np.ndarray, width: float) -> np.ndarray:
    return ndtr(t / (width * _FWHM_TO_SIGMA))


def _slice_cdf(t: np.ndarray, width: float) -> np.ndarray:
    """A box of ``width`` convolved with a Gaussian of sigma ``SLICE_EDGE * width``."""
    s = SLICE_EDGE * width
    return s * (_psi((t + width / 2) / s) - _psi((t - width / 2) / s)) / width


@dataclass(frozen=True)
class Profile:
    """A unit-area PSF profile along one axis, of a width in HR voxels.

    Attributes:
        cdf: ``cdf(t, width)``: the integral of the profile from -inf to ``t``.
        reach: ``reach(width)``: how far from its centre (HR voxels) the profile can touch a voxel.
        sized: Whether the profile's width follows ``fwhm`` (else it is the LR voxel).
    """

    cdf: Callable[[np.ndarray, float], np.ndarray]
    reach: Callable[[float], float]
    sized: bool


#: The profiles :func:`profile_matrix` integrates (``kspace`` is not a profile: :func:`kspace_matrix`).
PROFILES: dict[str, Profile] = {
    "box": Profile(_box_cdf, lambda width: width / 2 + 1, sized=False),
    "gaussian": Profile(_gaussian_cdf, lambda width: 5 * width * _FWHM_TO_SIGMA + 1, sized=True),
    "slice": Profile(_slice_cdf, lambda width: width / 2 + 5 * SLICE_EDGE * width + 1, sized=True),
}

#: PSF -> (its operator on the slice axis, the axis with the largest factor; its operator on the other axes).
AXIS_PROFILES: dict[str, tuple[str, str]] = {
    "box": ("box", "box"),
    "gaussian": ("gaussian", "gaussian"),
    "kspace": ("kspace", "kspace"),
    "slice": ("slice", "kspace"),
}


def profile_matrix(n: int, positions: np.ndarray, kind: str, width: float) -> np.ndarray:
    """``(len(positions), n)`` matrix integrating a PSF over each HR voxel.

    Row ``j`` holds, for every HR voxel ``i`` (a box ``[i - 0.5, i + 0.5]``),
    the integral of the PSF centred at ``positions[j]`` over that box; voxels
    outside ``[0, n)`` are folded back by mirroring about the volume's edges.

    Example:
        >>> profile_matrix(4, np.array([0.5, 2.5]), "box", 2.0).tolist()
        [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    """
    profile = PROFILES[kind]
    reach = int(math.ceil(profile.reach(width)))
    lo = int(math.floor(positions.min())) - reach
    hi = int(math.ceil(positions.max())) + reach + 1
    idx = np.arange(lo, hi)
    edges_lo = idx[None, :] - 0.5 - positions[:, None]
    w = profile.cdf(edges_lo + 1.0, width) - profile.cdf(edges_lo, width)
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
        kind = AXIS_PROFILES[psf][0 if axis == slice_axis else 1]
        if kind == "kspace":
            ops.append(kspace_matrix(n, pos, grid.shape[axis]))
        else:
            width = r * (fwhm[axis] if PROFILES[kind].sized else 1.0)
            ops.append(profile_matrix(n, pos, kind, width))
    return ops
