"""Data consistency: make the output agree with the input under an acquisition model.

The network adds detail to the spline-interpolated image, but nothing forces
the result to explain the measured input: simulating the acquisition of the
output (blurring and sampling it onto the input grid) need not give the input
back. :class:`Projector` corrects that. With the acquisition operator ``A``
(output grid -> input grid, the one :mod:`mrisr.degradation` uses to make
training data), the input ``y`` and an output ``x``::

    x' = x + A^+ (y - A x)

is the orthogonal projection of ``x`` onto the set ``{z : A z = y}`` of
images whose simulated acquisition equals the input: the smallest (L2)
change to ``x`` that makes it consistent. Every point-spread function of
:mod:`mrisr.degradation` is separable, ``A = A0 (x) A1 (x) A2`` (one small
``(N_in, N_out)`` matrix per voxel axis), and the pseudo-inverse of a
Kronecker product is the Kronecker product of the pseudo-inverses, so
``A^+`` is applied one axis at a time with the per-axis pseudo-inverses.
When every ``A_k`` has full row rank (``A_k A_k^+ = I``, the case for every
PSF on an upsampled axis), ``A x' = y`` exactly: one step suffices, no
iteration, step size or stopping rule. Further ``iterations`` only remove
float32 rounding.

Geometry: the output grid of ``upscale`` is the contract's grid
(:func:`mrisr.geometry.target_grid`), on which output voxel ``j`` samples
input coordinate ``c0 + r j``; so input voxel ``i`` sits at output coordinate
``(i - c0) / r`` and spans ``1 / r`` output voxels. :func:`input_grid` states
that inverse map as a :class:`~mrisr.geometry.TargetGrid` of the input seen
from the output, and :func:`acquisition_operators` feeds it to
:func:`mrisr.degradation.axis_operators`: when the factor divides the shape
the matrices are exactly those :func:`mrisr.degradation.degrade` applies to
the output to simulate the input.

Consistency error: ``RMS(y - A x) / (P99.5(y) - P0.5(y))`` over all input
voxels (:func:`consistency_error`).

Example:
    >>> import numpy as np
    >>> from mrisr.geometry import target_grid
    >>> grid = target_grid(np.eye(4), (4, 4, 4), 0.5)      # factor 2 upscaling
    >>> p = Projector(grid, (4, 4, 4))                       # box PSF
    >>> y = np.random.default_rng(0).random((4, 4, 4)).astype(np.float32)
    >>> x = p.project(np.zeros(grid.shape, np.float32), y)
    >>> bool(np.abs(p.degrade(x) - y).max() < 1e-5)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .degradation import PSFS, axis_operators
from .errors import MrisrError, look_up_option
from .geometry import TargetGrid, voxel_sizes

#: Singular values below this fraction of the largest are dropped from each
#: per-axis pseudo-inverse (none are, for the PSFs of mrisr on upsampled axes).
RCOND = 1e-6
#: Percentiles of the input whose difference is the "robust range" errors are relative to.
RANGE_PERCENTILES = (0.5, 99.5)
#: Largest number of voxels used to estimate the robust range (a strided subsample).
_MAX_SAMPLES = 2_000_000


def input_grid(grid: TargetGrid, input_shape: Sequence[int]) -> TargetGrid:
    """The input grid seen from the output grid: the contract's map, inverted.

    Args:
        grid: The upscale grid (:func:`mrisr.geometry.target_grid` of the input).
        input_shape: The input's spatial shape.

    Returns:
        A :class:`TargetGrid` of ``input_shape`` whose ``positions(axis)`` are
        the output coordinates ``(i - c0) / r`` of the input voxels, with
        ratios ``1 / r`` and the input's affine and spacing.

    Example:
        >>> from mrisr.geometry import target_grid
        >>> g = target_grid(np.diag([2.0, 2.0, 2.0, 1.0]), (3, 3, 3), 1.0)
        >>> inv = input_grid(g, (3, 3, 3))
        >>> inv.ratios, inv.positions(0).tolist()
        ((2.0, 2.0, 2.0), [0.5, 2.5, 4.5])
        >>> np.allclose(inv.affine, np.diag([2.0, 2.0, 2.0, 1.0]))
        True
    """
    shape = tuple(int(v) for v in input_shape)[:3]
    if len(shape) != 3 or min(shape) < 1:
        raise MrisrError(f"input shape must have 3 positive sizes, got {tuple(input_shape)}")
    r = np.asarray(grid.ratios, dtype=np.float64)
    c0 = np.asarray(grid.offsets, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = np.diag(1.0 / r)
    m[:3, 3] = -c0 / r
    affine = np.asarray(grid.affine, dtype=np.float64) @ m
    return TargetGrid(shape=shape, affine=affine,  # type: ignore[arg-type]
                      ratios=tuple(float(v) for v in 1.0 / r),  # type: ignore[arg-type]
                      offsets=tuple(float(v) for v in -c0 / r),  # type: ignore[arg-type]
                      spacing=tuple(float(v) for v in voxel_sizes(affine)))  # type: ignore[arg-type]


def acquisition_operators(grid: TargetGrid, input_shape: Sequence[int], psf: str = "box",
                          fwhm: Sequence[float] = (1.0, 1.0, 1.0)) -> list[np.ndarray | None]:
    """Per-axis ``(N_in, N_out)`` matrices simulating the input from an output on ``grid``.

    Args:
        grid: The upscale grid (output grid of the contract for this input).
        input_shape: The input's spatial shape.
        psf: ``box`` (default), ``gaussian``, ``kspace`` or ``slice``
            (:mod:`mrisr.degradation`).
        fwhm: PSF width per axis in input voxels (gaussian FWHM, slice thickness).

    Returns:
        Three float64 matrices, ``None`` where the output axis equals the input axis.

    Example:
        >>> from mrisr.geometry import target_grid
        >>> g = target_grid(np.eye(4), (2, 1, 1), (0.5, 1, 1))
        >>> [None if a is None else a.tolist() for a in acquisition_operators(g, (2, 1, 1))]
        [[[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]], None, None]
    """
    look_up_option(psf, PSFS, "consistency psf")
    return axis_operators(grid.shape, input_grid(grid, input_shape), psf, tuple(float(v) for v in fwhm))


def apply_separable(data: np.ndarray, matrices: Sequence[np.ndarray | None]) -> np.ndarray:
    """Apply one matrix per spatial axis (``None``: leave the axis), most shrinking first.

    Returns:
        float32 array; axis ``k`` has ``matrices[k].shape[0]`` entries.
    """
    out = np.asarray(data, dtype=np.float32)
    order = sorted((k for k in range(3) if matrices[k] is not None),
                   key=lambda k: matrices[k].shape[0] / matrices[k].shape[1])  # type: ignore[union-attr]
    for k in order:
        m = matrices[k]
        out = np.moveaxis(np.tensordot(m, out, axes=([1], [k])), 0, k)  # type: ignore[arg-type]
    return np.ascontiguousarray(out, dtype=np.float32)


def robust_range(data: np.ndarray) -> float:
    """``P99.5 - P0.5`` of the finite values (a strided subsample); max - min, then 1.0, as fallbacks.

    Example:
        >>> robust_range(np.linspace(0, 100, 1001))
        99.0
    """
    flat = np.asarray(data, dtype=np.float32).ravel()
    sample = flat[::max(1, flat.size // _MAX_SAMPLES)]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 1.0
    lo, hi = np.percentile(sample, RANGE_PERCENTILES)
    span = float(hi - lo)
    if span <= 0:
        span = float(sample.max() - sample.min())
    return span if span > 0 else 1.0


def consistency_error(y: np.ndarray, simulated: np.ndarray, scale: float | None = None) -> float:
    """``RMS(y - simulated) / robust_range(y)``: how far an output's simulated acquisition is from the input.

    Example:
        >>> y = np.linspace(0, 100, 1001)
        >>> round(consistency_error(y, y + 0.99), 6)
        0.01
    """
    y = np.asarray(y)
    diff = np.asarray(y, dtype=np.float64) - np.asarray(simulated, dtype=np.float64)
    rms = float(np.sqrt(np.mean(diff * diff)))
    return rms / (robust_range(y) if scale is None else float(scale))


class Projector:
    """Exact projection of outputs on ``grid`` onto the images consistent with the input.

    Args:
        grid: The upscale grid (:func:`mrisr.geometry.target_grid` of the input).
        input_shape: The input's spatial shape.
        psf: Acquisition PSF: ``box`` (edge-aligned block averaging, the
            default), ``gaussian``, ``kspace`` or ``slice``.
        fwhm: PSF width per axis in input voxels (gaussian and slice).
        rcond: Relative cut-off of the per-axis pseudo-inverses.

    Attributes:
        operators: The per-axis acquisition matrices ``A_k`` (``None``: identity).
        inverses: Their pseudo-inverses ``A_k^+``.
        exact: Whether every ``A_k A_k^+`` is the identity (one step is exact).
    """

    def __init__(self, grid: TargetGrid, input_shape: Sequence[int], psf: str = "box",
                 fwhm: Sequence[float] = (1.0, 1.0, 1.0), rcond: float = RCOND) -> None:
        self.grid, self.psf = grid, psf
        self.input_shape = tuple(int(v) for v in input_shape)[:3]
        ops = acquisition_operators(grid, self.input_shape, psf, fwhm)
        pinvs = [None if a is None else np.linalg.pinv(a, rcond=rcond) for a in ops]
        self.exact = all(a is None or np.allclose(a @ p, np.eye(a.shape[0]), atol=1e-6)  # type: ignore[operator]
                         for a, p in zip(ops, pinvs))
        self.operators = [None if a is None else a.astype(np.float32) for a in ops]
        self.inverses = [None if p is None else p.astype(np.float32) for p in pinvs]

    def degrade(self, x: np.ndarray) -> np.ndarray:
        """``A x``: the input an acquisition of the output ``x`` would give."""
        self._check(x, self.grid.shape, "output")
        return apply_separable(x, self.operators)

    def back_project(self, residual: np.ndarray) -> np.ndarray:
        """``A^+ r``: the least-norm output-grid image whose acquisition is ``r``."""
        self._check(residual, self.input_shape, "input")
        return apply_separable(residual, self.inverses)

    def project(self, x: np.ndarray, y: np.ndarray, iterations: int = 1,
                degraded: np.ndarray | None = None) -> np.ndarray:
        """``x + A^+ (y - A x)``, ``iterations`` times (1 is exact; more remove rounding).

        Args:
            x: Output-grid volume (3D).
            y: The input volume (3D, ``input_shape``).
            iterations: Projection steps (>= 1).
            degraded: ``A x`` if already computed (saves one pass).

        Returns:
            The projected float32 volume.
        """
        if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise MrisrError(f"consistency iterations must be a positive integer, got {iterations!r}")
        self._check(y, self.input_shape, "input")
        out = np.array(x, dtype=np.float32, copy=True)
        y32 = np.asarray(y, dtype=np.float32)
        for it in range(int(iterations)):
            ax = degraded if (it == 0 and degraded is not None) else self.degrade(out)
            out += self.back_project(y32 - ax)
        return out

    def error(self, x: np.ndarray, y: np.ndarray, scale: float | None = None) -> float:
        """Consistency error of ``x`` (:func:`consistency_error` of ``y`` and ``A x``)."""
        return consistency_error(y, self.degrade(x), scale)

    @staticmethod
    def _check(a: np.ndarray, shape: Sequence[int], what: str) -> None:
        if tuple(np.shape(a)) != tuple(shape):
            raise MrisrError(f"the {what} volume has shape {tuple(np.shape(a))}, expected {tuple(shape)}")


class ConsistencyTracker:
    """Projects every volume of an upscale and keeps the consistency errors.

    Used by :func:`mrisr.pipeline.upscale_volume` (``consistency=True``):
    for each 3D volume, :meth:`__call__` gets the input, the spline result and
    the network result (``None`` for the spline method), returns the projected
    volume and records the three errors; :meth:`summary` gives them for the
    report, combined over volumes as the root mean square.
    """

    def __init__(self, grid: TargetGrid, input_shape: Sequence[int], psf: str = "box", iterations: int = 1) -> None:
        self.projector = Projector(grid, input_shape, psf)
        self.iterations = iterations
        self.errors: dict[str, list[float]] = {"spline": [], "network": [], "projected": []}

    def __call__(self, y: np.ndarray, spline: np.ndarray, network: np.ndarray | None = None) -> np.ndarray:
        p = self.projector
        scale = robust_range(y)
        self.errors["spline"].append(p.error(spline, y, scale))
        x = spline if network is None else network
        ax = p.degrade(x)
        if network is not None:
            self.errors["network"].append(consistency_error(y, ax, scale))
        out = p.project(x, y, self.iterations, degraded=ax)
        self.errors["projected"].append(p.error(out, y, scale))
        return out

    def summary(self) -> dict:
        """``{"psf", "iterations", "exact", "error_spline", "error_network", "error_projected"}``.

        Errors are relative to the input's robust range (``None`` when not measured).
        """
        def rms(values: list[float]) -> float | None:
            return float(np.sqrt(np.mean(np.square(values)))) if values else None

        return {"psf": self.projector.psf, "iterations": self.iterations, "exact": bool(self.projector.exact),
                "error_spline": rms(self.errors["spline"]), "error_network": rms(self.errors["network"]),
                "error_projected": rms(self.errors["projected"])}


__all__ = ["Projector", "ConsistencyTracker", "input_grid", "acquisition_operators", "apply_separable",
           "consistency_error", "robust_range", "RCOND"]
