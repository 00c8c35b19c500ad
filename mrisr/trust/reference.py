"""A reference image (the guide of a guided model) resampled onto the output grid.

A guided model takes a second input channel: a finer scan of the same head
(typically a 1 mm T1) sampled on the output grid. The reference may have any
grid (oblique, sheared, left-handed, another field of view), so it is sampled
through world coordinates: output voxel ``v`` lies at world point
``x = A' v`` (the output affine), optionally moved by a rigid world transform
``T`` (output world to reference world, from :mod:`mrisr.trust.registration`), and
falls at reference voxel coordinate ``u = A_ref^-1 T x``. There the
reference's cubic B-spline is evaluated: the coefficients come from
:func:`mrisr.geometry.resample.spline_coefficients` (half-sample symmetric extension,
as everywhere in mrisr) and ``scipy.ndimage.map_coordinates`` evaluates them.
Output voxels outside the reference's field of view (beyond its outer voxel
edges) get 0.

Refused (:class:`~mrisr.errors.InputError` naming the reference):

* a reference coarser than the output: along some output voxel axis its
  voxels span more than the output spacing times ``SPACING_TOLERANCE``
  (:func:`reference_steps`); it cannot guide finer detail;
* a reference covering less than ``MIN_OVERLAP`` of the output's voxels;
* a time series (more than one volume).

Example:
    >>> import numpy as np
    >>> from mrisr.geometry.grid import target_grid
    >>> grid = target_grid(np.diag([2.0, 2.0, 2.0, 1.0]), (8, 8, 8), 1.0)
    >>> ref = Volume(np.ones((16, 16, 16), np.float32), grid.affine)
    >>> guide = resample_reference(ref, grid)
    >>> guide.data.shape, guide.overlap
    ((16, 16, 16), 1.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrisr.errors import InputError
from mrisr.geometry.grid import TargetGrid, check_affine, voxel_sizes
from mrisr.geometry.resample import antialias_axis, antialias_sigma, spline_coefficients
from mrisr.volume import Volume

#: Smallest fraction of the output's voxels the reference must cover.
MIN_OVERLAP = 0.5
#: A reference voxel may be this much larger than the output spacing (along each output axis).
SPACING_TOLERANCE = 1.05
#: Output voxels sampled per ``map_coordinates`` call (bounds the coordinate arrays).
_CHUNK = 1 << 20
#: Reference voxel coordinates this far beyond the outer edges still count as inside.
_EDGE_TOLERANCE = 1e-6


@dataclass
class ResampledReference:
    """A reference on the output grid, and how it got there.

    Attributes:
        data: float32 array of the output grid's shape (0 outside the reference).
        overlap: Fraction of output voxels inside the reference's field of view.
        spacing: The reference's voxel sizes (mm).
        shape: The reference's array shape.
        path: The reference file (``None`` for an in-memory image).
        transform: 4x4 rigid RAS world transform applied (output world to
            reference world), or ``None``.
        extra: More provenance for :meth:`describe` (the pipeline adds the
            registration's summary).
    """

    data: np.ndarray
    overlap: float
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    path: Path | None = None
    transform: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """The provenance record of the reference (JSON-ready).

        Example:
            >>> r = ResampledReference(np.zeros((2, 2, 2), np.float32), 1.0, (1.0, 1.0, 1.0), (2, 2, 2))
            >>> r.describe()["overlap"], r.describe()["transform_ras"] is None
            (1.0, True)
        """
        return {"path": None if self.path is None else str(self.path), "shape": list(self.shape),
                "spacing": [float(v) for v in self.spacing], "overlap": round(float(self.overlap), 4),
                "transform_ras": None if self.transform is None else np.asarray(self.transform).tolist(),
                **self.extra}


def as_reference(volume: Volume) -> Volume:
    """The reference as one 3D volume (a 4D image with one volume is accepted).

    Raises:
        InputError: for a time series, naming the reference.

    Example:
        >>> as_reference(Volume(np.zeros((2, 2, 2, 1), np.float32), np.eye(4))).data.shape
        (2, 2, 2)
    """
    data = np.asarray(volume.data)
    if data.ndim == 4 and data.shape[3] == 1:
        return dataclasses.replace(volume, data=data[..., 0])
    if data.ndim != 3:
        raise InputError(volume.path, f"the reference must be one 3D volume; it holds {data.shape[3]} volumes "
                                      f"(shape {data.shape})")
    return volume


def reference_steps(reference_affine: np.ndarray, output_affine: np.ndarray) -> np.ndarray:
    """The reference's voxel size along each output voxel axis (mm).

    Along a world direction ``u`` (unit), one reference voxel spans
    ``1 / |A_ref^-1 u|`` mm: the voxel size itself when ``u`` is one of the
    reference's axes, and in between its sizes for oblique directions.

    Example:
        >>> reference_steps(np.diag([1.0, 1.0, 3.0, 1.0]), np.eye(4)).tolist()
        [1.0, 1.0, 3.0]
    """
    out = check_affine(output_affine)[:3, :3]
    units = out / np.linalg.norm(out, axis=0)
    inv = np.linalg.inv(check_affine(reference_affine, "reference affine")[:3, :3])
    return 1.0 / np.linalg.norm(inv @ units, axis=0)


def check_reference_spacing(reference_affine: np.ndarray, grid: TargetGrid, path: str | Path | None = None) -> None:
    """Refuse a reference coarser than the output along any output axis.

    Along each output voxel axis the reference's voxel size
    (:func:`reference_steps`) must be at most the output spacing times
    :data:`SPACING_TOLERANCE`, whatever the two grids' orientations.

    Raises:
        InputError: naming the reference and both spacings.

    Example:
        >>> from mrisr.geometry.grid import target_grid
        >>> grid = target_grid(np.diag([2.0, 2.0, 2.0, 1.0]), (8, 8, 8), 1.0)
        >>> check_reference_spacing(np.eye(4), grid)
        >>> check_reference_spacing(np.diag([1.0, 1.0, 3.0, 1.0]), grid)  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        mrisr.errors.InputError: the reference's voxels (1 x 1 x 3 mm) are coarser than the output spacing
        (1 x 1 x 1 mm): along the output's voxel axes they span 1 x 1 x 3 mm; a guide must be at least as fine as the
        output (5% tolerance)
    """
    steps = reference_steps(reference_affine, grid.affine)
    limit = np.asarray(grid.spacing) * SPACING_TOLERANCE
    if np.any(steps > limit):
        raise InputError(path, f"the reference's voxels ({_fmt(voxel_sizes(reference_affine))} mm) are coarser than "
                               f"the output spacing ({_fmt(grid.spacing)} mm): along the output's voxel axes they "
                               f"span {_fmt(steps)} mm; a guide must be at least as fine as the output "
                               f"({SPACING_TOLERANCE - 1:.0%} tolerance)")


def _fmt(values: Sequence[float] | np.ndarray) -> str:
    return " x ".join(f"{float(v):.3g}" for v in values)


def world_to_voxel_map(output_affine: np.ndarray, reference_affine: np.ndarray,
                       transform: np.ndarray | None = None) -> np.ndarray:
    """The 4x4 map from output voxel indices to reference voxel coordinates.

    ``A_ref^-1 @ T @ A_out``, with ``T`` the identity when ``transform`` is None.

    Example:
        >>> float(world_to_voxel_map(np.eye(4), np.diag([0.5, 0.5, 0.5, 1.0]))[0, 0])
        2.0
    """
    t = np.eye(4) if transform is None else np.asarray(transform, dtype=np.float64)
    return np.linalg.inv(check_affine(reference_affine, "reference affine")) @ t @ check_affine(output_affine)


def _coefficients(data: np.ndarray, order: int, sigmas: Sequence[float]) -> np.ndarray:
    """Optional per-axis Gaussian smoothing, then B-spline coefficients along every axis."""
    out = np.asarray(data, dtype=np.float32)
    for axis, sigma in enumerate(sigmas):
        if sigma > 0:
            out = antialias_axis(out, axis, sigma)
    if order >= 2:
        for axis in range(3):
            if out.shape[axis] > 1:
                out = spline_coefficients(out, axis, order)
    return out


def sample_reference(data: np.ndarray, affine: np.ndarray, output_affine: np.ndarray, shape: Sequence[int], *,
                     transform: np.ndarray | None = None, order: int = 3,
                     antialias_spacing: float | None = None) -> tuple[np.ndarray, float]:
    """Sample a 3D image at the voxel centres of another grid, through world coordinates.

    Args:
        data: The reference's 3D array.
        affine: Its voxel-to-RAS affine.
        output_affine: The output grid's affine.
        shape: The output grid's shape.
        transform: Rigid (or any) 4x4 RAS transform from output world to
            reference world; ``None`` for the identity.
        order: B-spline order (3: cubic).
        antialias_spacing: When set, reference axes whose voxels are finer
            than this (mm) are first smoothed so a one-voxel FWHM widens to
            it (:func:`mrisr.geometry.resample.antialias_sigma`).

    Returns:
        ``(values, overlap)``: float32 array of ``shape`` (0 outside the
        reference) and the fraction of output voxels inside it.

    Example:
        >>> x = np.arange(4.0)[:, None, None] * np.ones((4, 4, 4), np.float32)
        >>> v, f = sample_reference(x, np.eye(4), np.diag([0.5, 1, 1, 1]), (9, 4, 4), order=1)
        >>> v[:, 0, 0].tolist(), round(f, 3)   # output voxel 8 (x = 4) is beyond the edge (3.5): 0
        ([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0, 0.0], 0.889)
    """
    shape = tuple(int(n) for n in shape)
    data = np.asarray(data, dtype=np.float32)
    sizes = voxel_sizes(affine)
    sigmas = [antialias_sigma(antialias_spacing / s) if antialias_spacing else 0.0 for s in sizes]
    m = world_to_voxel_map(output_affine, affine, transform)
    if shape == data.shape and not any(sigmas) and np.allclose(m, np.eye(4), rtol=0, atol=1e-9):
        return data.copy(), 1.0  # the same grid: the values themselves
    coeffs = _coefficients(data, order, sigmas)
    out = np.zeros(shape, np.float32)
    inside_total = 0
    rows = max(1, _CHUNK // max(1, shape[1] * shape[2]))
    j, k = np.meshgrid(np.arange(shape[1], dtype=np.float64), np.arange(shape[2], dtype=np.float64),
                       indexing="ij")
    plane = m[:3, 1:2] * j.ravel() + m[:3, 2:3] * k.ravel() + m[:3, 3:4]  # (3, ny * nz)
    hi = np.asarray(data.shape, dtype=np.float64)[:, None] - 0.5 + _EDGE_TOLERANCE
    for start in range(0, shape[0], rows):
        i = np.arange(start, min(start + rows, shape[0]), dtype=np.float64)
        coords = (plane[:, None, :] + m[:3, 0:1, None] * i[None, :, None]).reshape(3, -1)
        inside = np.all((coords >= -0.5 - _EDGE_TOLERANCE) & (coords <= hi), axis=0)
        values = np.zeros(coords.shape[1], np.float32)
        if inside.any():
            values[inside] = ndimage.map_coordinates(coeffs, coords[:, inside], order=order, mode="reflect",
                                                     prefilter=False, output=np.float32)
        out[start:start + len(i)] = values.reshape(len(i), shape[1], shape[2])
        inside_total += int(np.count_nonzero(inside))
    return out, inside_total / float(np.prod(shape))


def resample_reference(reference: Volume, grid: TargetGrid, *, transform: np.ndarray | None = None,
                       order: int = 3, antialias: bool = True,
                       min_overlap: float = MIN_OVERLAP) -> ResampledReference:
    """The reference on the output grid, checked (spacing, one volume, overlap).

    Args:
        reference: The reference image (any geometry; 3D).
        grid: The output grid (:func:`mrisr.geometry.grid.target_grid` of the input).
        transform: 4x4 RAS transform from output world to reference world
            (:func:`mrisr.trust.registration.register_rigid`), or ``None``.
        order: B-spline order (3: cubic).
        antialias: Smooth reference axes much finer than the output first.
        min_overlap: Refuse references covering a smaller fraction of the output.

    Returns:
        The :class:`ResampledReference`.

    Raises:
        InputError: naming the reference: a time series, voxels coarser than
            the output, or too little overlap (saying how much there is).

    Example:
        >>> from mrisr.geometry.grid import target_grid
        >>> grid = target_grid(np.eye(4), (10, 10, 10), 1.0)
        >>> far = np.diag([1.0, 1.0, 1.0, 1.0]); far[:3, 3] = 8
        >>> resample_reference(Volume(np.ones((10, 10, 10), np.float32), far), grid)  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        mrisr.errors.InputError: the reference covers 0.8% of the output's field of view (at least 50% needed): is it a
        scan of the same head, and in the same scanner coordinates? --register rigid aligns small head movements, not
        unrelated positions
    """
    reference = as_reference(reference)
    sizes = voxel_sizes(reference.affine)
    check_reference_spacing(reference.affine, grid, reference.path)
    data, overlap = sample_reference(reference.data, reference.affine, grid.affine, grid.shape,
                                     transform=transform, order=order,
                                     antialias_spacing=min(grid.spacing) if antialias else None)
    if overlap < min_overlap:
        raise InputError(reference.path, f"the reference covers {overlap:.1%} of the output's field of view "
                                          f"(at least {min_overlap:.0%} needed): is it a scan of the same head, and "
                                          "in the same scanner coordinates? --register rigid aligns small head "
                                          "movements, not unrelated positions")
    spacing = (float(sizes[0]), float(sizes[1]), float(sizes[2]))
    shape = reference.data.shape
    return ResampledReference(data=data, overlap=overlap, spacing=spacing, shape=(shape[0], shape[1], shape[2]),
                              path=reference.path, transform=None if transform is None else np.asarray(transform))


__all__ = ["ResampledReference", "as_reference", "check_reference_spacing", "reference_steps", "resample_reference",
           "sample_reference", "world_to_voxel_map", "MIN_OVERLAP", "SPACING_TOLERANCE"]
