"""The geometry contract: where every output voxel sits.

Input affine ``A`` (voxel index -> RAS mm, voxel centres), spatial shape ``N``,
voxel sizes ``s_i = |A[:3, i]|``. Target spacing ``s'`` is given per voxel axis
(i, j, k as stored). Per axis::

    N'_i = max(1, round(N_i * s_i / s'_i))
    r_i  = s'_i / s_i
    c0_i = ((N_i - 1) - r_i * (N'_i - 1)) / 2
    A'   = A @ [[diag(r), c0], [0, 1]]

Output voxel ``j`` on axis ``i`` samples the input at continuous voxel
coordinate ``c0_i + r_i * j``. Columns keep their direction (oblique and sheared
affines stay so), the field of view keeps its centre, and when
``N_i * s_i / s'_i`` is whole the outer voxel edges coincide with the input's.
See ``docs/geometry.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrisr.errors import GeometryError, GridTooLargeError, VoxelTooLargeError

#: Largest output a single call may produce unless the caller raises it (voxels).
DEFAULT_MAX_VOXELS = 2_000_000_000
#: Largest output voxel size (mm, 1 km): coarser spacings describe no image (and overflow float32 headers).
MAX_SPACING_MM = 1e6


@dataclass(frozen=True)
class TargetGrid:
    """The output grid of the contract and how it maps onto the input grid.

    Attributes:
        shape: Output spatial shape ``N'``.
        affine: Output affine ``A'`` (4x4, RAS, voxel centres).
        ratios: ``r`` per axis: output step in input voxels.
        offsets: ``c0`` per axis: input voxel coordinate of output voxel 0.
        spacing: Output voxel sizes ``s'`` in mm.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    ratios: tuple[float, float, float]
    offsets: tuple[float, float, float]
    spacing: tuple[float, float, float]

    def positions(self, axis: int) -> np.ndarray:
        """Input voxel coordinates sampled along ``axis`` (float64)."""
        return self.offsets[axis] + self.ratios[axis] * np.arange(self.shape[axis], dtype=np.float64)

    @property
    def n_voxels(self) -> int:
        """Number of output voxels (spatial)."""
        return int(np.prod(self.shape, dtype=np.int64))


def check_affine(affine: np.ndarray, what: str = "affine") -> np.ndarray:
    """Validate a 4x4 voxel-to-world affine and return it as float64.

    Raises:
        GeometryError: if it is not 4x4, not finite, has a zero voxel size or a
            singular 3x3 part, or its last row is not ``0 0 0 1``.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise GeometryError(f"{what} must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError(f"{what} holds NaN or Inf values")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise GeometryError(f"{what} last row must be 0 0 0 1, got {a[3].tolist()}")
    sizes = np.linalg.norm(a[:3, :3], axis=0)
    if np.any(sizes <= 0):
        raise GeometryError(f"{what} has a zero voxel size: {sizes.tolist()}")
    # Scale-free singularity test: determinant of the column-normalised matrix.
    if abs(np.linalg.det(a[:3, :3] / sizes)) < 1e-6:
        raise GeometryError(f"{what} is singular (its voxel axes are parallel): {a[:3, :3].tolist()}")
    return a


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes in mm: the norms of the columns of ``affine[:3, :3]``.

    Example:
        >>> voxel_sizes(np.diag([2.0, 1.0, 3.0, 1.0])).tolist()
        [2.0, 1.0, 3.0]
    """
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def parse_spacing(values: float | Sequence[float], what: str = "spacing") -> tuple[float, float, float]:
    """Turn one value (isotropic) or three values into a validated 3-tuple.

    Raises:
        GeometryError: for a wrong count, or values that are not finite and > 0.

    Example:
        >>> parse_spacing(1)
        (1.0, 1.0, 1.0)
        >>> parse_spacing([1, 1, 3])
        (1.0, 1.0, 3.0)
    """
    vals: list[Any] = [values] if np.isscalar(values) else list(values)  # type: ignore[arg-type]
    if len(vals) not in (1, 3):
        raise GeometryError(f"{what} takes 1 or 3 values, got {len(vals)}: {vals}")
    out = []
    for v in vals:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise GeometryError(f"{what} value {v!r} is not a number") from None
        if not math.isfinite(f) or f <= 0:
            raise GeometryError(f"{what} values must be finite and > 0, got {v!r}")
        out.append(f)
    if len(out) == 1:
        out *= 3
    return (out[0], out[1], out[2])


def spacing_from_factor(affine: np.ndarray, factor: float | Sequence[float]) -> tuple[float, float, float]:
    """Target spacing that divides each voxel size by ``factor`` (>1 refines).

    Example:
        >>> spacing_from_factor(np.diag([2.0, 2.0, 4.0, 1.0]), [2, 2, 4])
        (1.0, 1.0, 1.0)
    """
    f = parse_spacing(factor, what="factor")
    s = voxel_sizes(affine)
    return (float(s[0] / f[0]), float(s[1] / f[1]), float(s[2] / f[2]))


def target_grid(affine: np.ndarray, shape: Sequence[int], spacing: float | Sequence[float],
                max_voxels: int = DEFAULT_MAX_VOXELS) -> TargetGrid:
    """Compute the output grid of the geometry contract.

    Args:
        affine: Input 4x4 affine (RAS, voxel centres).
        shape: Input spatial shape (3 values).
        spacing: Target voxel size per voxel axis, or one value for isotropic.
        max_voxels: Refuse grids larger than this (before any work is done).

    Returns:
        The :class:`TargetGrid`.

    Raises:
        GeometryError: for an invalid affine, shape or spacing.
        GridTooLargeError: (a GeometryError) for a grid that would exceed
            ``max_voxels``; the message gives the shape, voxels and GB.

    Example:
        >>> a = np.diag([2.0, 2.0, 2.0, 1.0])
        >>> g = target_grid(a, (10, 10, 10), 1.0)
        >>> g.shape, g.offsets
        ((20, 20, 20), (-0.25, -0.25, -0.25))
    """
    a = check_affine(affine)
    n = [int(v) for v in shape][:3]
    if len(n) != 3 or min(n) < 1:
        raise GeometryError(f"spatial shape must have 3 positive sizes, got {tuple(shape)}")
    sp = parse_spacing(spacing)
    s = voxel_sizes(a)
    new_shape = _grid_shape(n, s, sp, max_voxels)
    r = tuple(float(sp[i] / s[i]) for i in range(3))
    c0 = tuple(((n[i] - 1) - r[i] * (new_shape[i] - 1)) / 2.0 for i in range(3))
    m = np.eye(4)
    m[:3, :3] = np.diag(r)
    m[:3, 3] = c0
    return TargetGrid(shape=new_shape, affine=a @ m, ratios=r, offsets=c0, spacing=sp)  # type: ignore[arg-type]


def _grid_shape(n: Sequence[int], s: np.ndarray, sp: tuple[float, float, float],
                max_voxels: int) -> tuple[int, int, int]:
    """``N'`` of the contract, refusing (before any integer conversion) sizes out of range.

    Raises:
        VoxelTooLargeError: a target voxel size above :data:`MAX_SPACING_MM`.
        GridTooLargeError: more than ``max_voxels`` voxels (also when the count
            overflows a float, as for a spacing of 1e-320).
    """
    if max(sp) > MAX_SPACING_MM:
        raise VoxelTooLargeError(f"spacing {_fmt_values(sp)} mm asks for voxels larger than "
                                 f"{MAX_SPACING_MM:g} mm (1 km); choose a smaller spacing (or a larger factor)")
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        extents = np.maximum(1.0, np.round(np.asarray(n, dtype=np.float64) * s / np.asarray(sp)))
        total = float(np.prod(extents))
    if not math.isfinite(total) or total > max_voxels:
        shown = "(" + ", ".join(_fmt_count(v, sep="") for v in extents) + ")"
        raise GridTooLargeError(f"spacing {_fmt_values(sp)} would give an output of shape {shown} "
                                f"({_fmt_size(total)}), above the limit of {max_voxels:,} voxels")
    return (int(extents[0]), int(extents[1]), int(extents[2]))


def _fmt_size(total: float) -> str:
    """Voxels and float32 gigabytes of a grid, readable however large."""
    if not math.isfinite(total):
        return "more voxels than a float can count"
    gb = total * 4 / 1e9
    return f"{_fmt_count(total)} voxels, {gb:.1f} GB as float32" if gb < 1e12 else \
        f"{_fmt_count(total)} voxels, {gb:.3g} GB as float32"


def _fmt_values(values: Sequence[float]) -> str:
    """A spacing as a tuple of plain floats (``repr`` precision)."""
    return "(" + ", ".join(repr(float(v)) for v in values) + ")"


def _fmt_count(value: float, sep: str = ",") -> str:
    """A whole count (with thousands separators ``sep``), in scientific notation when huge, or ``inf``."""
    if not math.isfinite(value):
        return "inf"
    return (f"{int(value):,}".replace(",", sep)) if value < 1e30 else f"{value:.3g}"


def block_average_affine(affine: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Affine of a volume block-averaged by integer ``factors`` (edge-aligned).

    LR voxel ``j`` covers HR voxels ``f*j .. f*j + f - 1``, so its centre is at
    HR coordinate ``f*j + (f - 1)/2``.

    Example:
        >>> block_average_affine(np.eye(4), [2, 2, 2])[:3, 3].tolist()
        [0.5, 0.5, 0.5]
    """
    f = np.asarray(factors, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = np.diag(f)
    m[:3, 3] = (f - 1) / 2
    return np.asarray(affine, dtype=np.float64) @ m
