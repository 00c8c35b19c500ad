"""Data consistency: make the output agree with the input under an acquisition model.

The network adds detail to the spline-interpolated image, but nothing forces
the result to explain the measured input: simulating the acquisition of the
output (blurring and sampling it onto the input grid) need not give the input
back. :class:`Projector` corrects that. With the acquisition operator ``A``
(output grid -> input grid, the one :mod:`mrisr.acquisition.degrade` uses to make
training data), the input ``y`` and an output ``x``::

    x' = x + A^+ (y - A x)

is the orthogonal projection of ``x`` onto the set ``{z : A z = y}`` of
images whose simulated acquisition equals the input: the smallest (L2)
change to ``x`` that makes it consistent. Every point-spread function of
:mod:`mrisr.acquisition.degrade` is separable, ``A = A0 (x) A1 (x) A2`` (one small
``(N_in, N_out)`` matrix per voxel axis), and the pseudo-inverse of a
Kronecker product is the Kronecker product of the pseudo-inverses, so
``A^+`` is applied one axis at a time with the per-axis pseudo-inverses.
When every ``A_k`` has full row rank (``A_k A_k^+ = I``, the case for every
PSF on an upsampled axis), ``A x' = y`` exactly: one step suffices, no
iteration, step size or stopping rule. Further ``iterations`` only remove
float32 rounding.

Two things make the exact projection unsafe on real inputs, and
:class:`ConsistencyTracker` (what ``--consistency`` runs) handles both:

- **The acquisition is unknown.** Projecting with the wrong PSF forces the
  output to explain the input through the wrong blur (a box projection of a
  k-space-truncated input loses dB). With ``psf="auto"`` (the default),
  :func:`select_psf` simulates the acquisition of the output with every PSF
  of :data:`mrisr.options.PSFS` and keeps the one under which it best
  explains the input (smallest consistency error).
- **The input is noisy.** Being exactly consistent with a noisy input means
  reproducing its noise. The residual ``r = y - A x`` is then the input's
  noise (white) plus the part of the output's error that the input sees.
  :func:`residual_noise` measures the noise sigma of ``r`` (the MAD of its
  second differences), and :func:`weigh_residual` keeps, frequency by
  frequency, only the part of ``r`` that stands above that noise: the
  Wiener gain ``W = max(0, 1 - (NOISE_FACTOR sigma)^2 / P)`` with ``P`` the
  smoothed power spectrum of ``r``. The step ``x + A^+ W r``
  (:meth:`Projector.project_above_noise`) leaves the residual ``(1 - W) r``:
  at the noise level where ``r`` is noise (the discrepancy principle, per
  frequency), near zero where it is signal. Without noise, ``W = 1`` and the
  step is the exact projection.

Geometry: the output grid of ``upscale`` is the contract's grid
(:func:`mrisr.geometry.grid.target_grid`), on which output voxel ``j`` samples
input coordinate ``c0 + r j``; so input voxel ``i`` sits at output coordinate
``(i - c0) / r`` and spans ``1 / r`` output voxels. :func:`input_grid` states
that inverse map as a :class:`~mrisr.geometry.grid.TargetGrid` of the input seen
from the output, and :func:`acquisition_operators` feeds it to
:func:`mrisr.acquisition.psf.axis_operators`: when the factor divides the shape
the matrices are exactly those :func:`mrisr.acquisition.degrade.degrade` applies to
the output to simulate the input.

Consistency error: ``RMS(y - A x) / (P99.5(y) - P0.5(y))`` over all input
voxels (:func:`consistency_error`).

Example:
    >>> import numpy as np
    >>> from mrisr.geometry.grid import target_grid
    >>> grid = target_grid(np.eye(4), (4, 4, 4), 0.5)      # factor 2 upscaling
    >>> p = Projector(grid, (4, 4, 4))                       # box PSF
    >>> y = np.random.default_rng(0).random((4, 4, 4)).astype(np.float32)
    >>> x = p.project(np.zeros(grid.shape, np.float32), y)
    >>> bool(np.abs(p.degrade(x) - y).max() < 1e-5)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.fft
from scipy import ndimage

from mrisr.acquisition.psf import axis_operators
from mrisr.errors import MrisrError, look_up_option
from mrisr.geometry.grid import TargetGrid, voxel_sizes
from mrisr.options import PSF_CHOICES, PSFS
from mrisr.trust.ood import noise_sigma

#: Singular values below this fraction of the largest are dropped from each
#: per-axis pseudo-inverse (none are, for the PSFs of mrisr on upsampled axes).
RCOND = 1e-6
#: Percentiles of the input whose difference is the "robust range" errors are relative to.
RANGE_PERCENTILES = (0.5, 99.5)
#: Largest number of voxels used to estimate the robust range (a strided subsample).
_MAX_SAMPLES = 2_000_000
#: A frequency of the residual is left uncorrected when its smoothed power is at most
#: ``(NOISE_FACTOR * sigma)^2`` (sigma: :func:`residual_noise`). Above 1 because the network
#: absorbs part of the input's noise, so the residual's sigma reads low (1.0 to 2.0 measured
#: within 0.06 dB of each other on the noisy validation cases, ``docs/trust.md``).
NOISE_FACTOR = 1.5
#: Side (frequency bins per axis) of the box that smooths the residual's periodogram.
SPECTRUM_SMOOTHING = 5
#: Residual noise below this fraction of the input's robust range counts as none: exact projection.
NOISE_FREE = 1e-6


def input_grid(grid: TargetGrid, input_shape: Sequence[int]) -> TargetGrid:
    """The input grid seen from the output grid: the contract's map, inverted.

    Args:
        grid: The upscale grid (:func:`mrisr.geometry.grid.target_grid` of the input).
        input_shape: The input's spatial shape.

    Returns:
        A :class:`TargetGrid` of ``input_shape`` whose ``positions(axis)`` are
        the output coordinates ``(i - c0) / r`` of the input voxels, with
        ratios ``1 / r`` and the input's affine and spacing.

    Example:
        >>> from mrisr.geometry.grid import target_grid
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
            (:mod:`mrisr.acquisition.degrade`).
        fwhm: PSF width per axis in input voxels (gaussian FWHM, slice thickness).

    Returns:
        Three float64 matrices, ``None`` where the output axis equals the input axis.

    Example:
        >>> from mrisr.geometry.grid import target_grid
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


def select_psf(grid: TargetGrid, input_shape: Sequence[int], y: np.ndarray, x: np.ndarray,
               candidates: Sequence[str] = PSFS) -> tuple[str, dict[str, float]]:
    """The PSF under which ``x`` best explains the input ``y`` (``psf="auto"``).

    Simulates the acquisition of ``x`` with each candidate PSF (FWHM one
    input voxel) and keeps the smallest consistency error, the first
    candidate on a tie. The input's noise adds the same amount to every
    candidate's error, so it does not bias the choice.

    Args:
        grid: The upscale grid (:func:`mrisr.geometry.grid.target_grid` of the input).
        input_shape: The input's spatial shape.
        y: The input volume (3D).
        x: An output-grid volume (the network result, or the spline).
        candidates: PSFs to try (default: all of :data:`mrisr.options.PSFS`).

    Returns:
        ``(psf, errors)``: the chosen PSF and every candidate's consistency
        error (:func:`consistency_error`).

    Example:
        >>> from mrisr.geometry.grid import target_grid
        >>> g = target_grid(np.eye(4), (8, 8, 8), 0.5)
        >>> truth = np.random.default_rng(0).random(g.shape).astype(np.float32)
        >>> y = Projector(g, (8, 8, 8), "gaussian").degrade(truth)
        >>> psf, errors = select_psf(g, (8, 8, 8), y, truth)
        >>> psf, errors["gaussian"] < 1e-6 < errors["box"]
        ('gaussian', True)
    """
    if not candidates:
        raise MrisrError("select_psf needs at least one candidate PSF")
    for c in candidates:
        look_up_option(c, PSFS, "consistency psf")
    shape = tuple(int(v) for v in input_shape)[:3]
    scale = robust_range(y)
    errors = {}
    for psf in candidates:
        ops = [None if a is None else a.astype(np.float32) for a in acquisition_operators(grid, shape, psf)]
        errors[psf] = consistency_error(y, apply_separable(x, ops), scale)
    return min(candidates, key=errors.__getitem__), errors


def residual_noise(residual: np.ndarray) -> float:
    """Noise sigma of a consistency residual ``y - A x`` (input units; 0.0 when it cannot be measured).

    The MAD of second differences over all voxels, least over the voxel axes
    (:func:`mrisr.trust.ood.noise_sigma`). On the residual, rather than on the
    input, the anatomy is gone: what is left is the input's noise (white),
    which second differences keep, and the part of the output's error that
    the input sees, which is sparse (edges) and mostly zero in the background.

    Example:
        >>> r = np.random.default_rng(1).normal(0, 2.0, (30, 30, 30))
        >>> round(residual_noise(r), 1)
        2.0
    """
    sigma = noise_sigma(np.asarray(residual, dtype=np.float32))
    return float(sigma) if math.isfinite(sigma) else 0.0


def noise_weights(residual: np.ndarray, sigma: float, factor: float = NOISE_FACTOR,
                  size: int = SPECTRUM_SMOOTHING) -> np.ndarray:
    """Per-frequency Wiener gain of ``residual`` (FFT layout): ``max(0, 1 - (factor sigma)^2 / P)``.

    ``P`` is the periodogram ``|FFT(r)|^2 / N`` (the noise variance, for
    white noise) averaged over a box of ``size`` bins per axis (periodic).
    Where ``r`` is noise, ``P`` is about ``sigma^2`` and the gain is 0; where
    it is mostly signal, the gain is close to 1.

    Example:
        >>> r = np.zeros((8, 8, 8)); r[0, 0, 0] = 80.0
        >>> w = noise_weights(r, 1.0, factor=1.0)   # P = 80^2 / 512 = 12.5 at every frequency
        >>> round(float(w.min()), 5), round(float(w.max()), 5)
        (0.92, 0.92)
    """
    spectrum = scipy.fft.fftn(np.asarray(residual, dtype=np.float32))
    return _gain(spectrum, sigma, factor, size)


def _gain(spectrum: np.ndarray, sigma: float, factor: float, size: int) -> np.ndarray:
    # The gain depends on power / sigma^2 only: both in units of sigma, so that no square overflows
    # float32 for images near its limit (1e30 is accepted input).
    unit = np.float32(sigma) if sigma > 0 else np.float32(1.0)
    re, im = spectrum.real / unit, spectrum.imag / unit
    power = (re * re + im * im) / np.float32(spectrum.size)
    smooth = ndimage.uniform_filter(power.astype(np.float32), size=size, mode="wrap")
    floor = np.float32(factor ** 2)
    return np.clip(1.0 - floor / np.maximum(smooth, np.finfo(np.float32).tiny), 0.0, 1.0).astype(np.float32)


def weigh_residual(residual: np.ndarray, sigma: float, factor: float = NOISE_FACTOR,
                   size: int = SPECTRUM_SMOOTHING) -> np.ndarray:
    """The part of ``residual`` that stands above noise of std ``sigma`` (:func:`noise_weights` applied).

    Returns:
        float32 array of the residual's shape; ``residual`` itself (as float32)
        when ``sigma <= 0``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> r = 5.0 + rng.normal(0, 1.0, (16, 16, 16))       # an offset (signal) in white noise
        >>> w = weigh_residual(r, 1.0)
        >>> round(float(w.mean()), 1), bool(w.std() < 0.2 < r.std())
        (5.0, True)
    """
    r = np.asarray(residual, dtype=np.float32)
    if sigma <= 0:
        return r.copy()
    spectrum = scipy.fft.fftn(r)
    spectrum *= _gain(spectrum, sigma, factor, size)
    return np.ascontiguousarray(scipy.fft.ifftn(spectrum, overwrite_x=True).real, dtype=np.float32)


class Projector:
    """Exact projection of outputs on ``grid`` onto the images consistent with the input.

    Args:
        grid: The upscale grid (:func:`mrisr.geometry.grid.target_grid` of the input).
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

    def project_above_noise(self, x: np.ndarray, y: np.ndarray, sigma: float,
                            degraded: np.ndarray | None = None) -> np.ndarray:
        """``x + A^+ W (y - A x)``: correct only the part of the residual above noise of std ``sigma``.

        ``W`` is the Wiener gain of :func:`weigh_residual`; with ``sigma <= 0``
        this is one exact step (:meth:`project`). The residual left is
        ``(1 - W)(y - A x)`` (when ``exact``): about the noise where the
        residual is noise, so the noise is not fitted back.

        Args:
            x: Output-grid volume (3D).
            y: The input volume (3D, ``input_shape``).
            sigma: Noise std of the residual (input units, :func:`residual_noise`).
            degraded: ``A x`` if already computed.

        Returns:
            The corrected float32 volume.
        """
        self._check(y, self.input_shape, "input")
        ax = self.degrade(x) if degraded is None else degraded
        out = np.array(x, dtype=np.float32, copy=True)
        out += self.back_project(weigh_residual(np.asarray(y, dtype=np.float32) - ax, sigma))
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

    Used by :func:`mrisr.pipeline.upscale.upscale_volume` (``consistency=True``):
    for each 3D volume, :meth:`__call__` gets the input, the spline result and
    the network result (``None`` for the spline method), returns the
    corrected volume and records the errors; :meth:`summary` gives them for
    the report, combined over volumes as the root mean square.

    With ``psf="auto"`` the PSF is chosen on the first volume
    (:func:`select_psf` on the network result, else the spline) and kept for
    the others (one acquisition per series). With ``noise=True`` each volume
    is corrected above its residual's noise (:meth:`Projector.project_above_noise`);
    a residual without measurable noise (below :data:`NOISE_FREE` of the
    input's range) gets the exact projection, ``iterations`` steps.

    Args:
        grid: The upscale grid.
        input_shape: The input's spatial shape.
        psf: ``auto`` (default) or a PSF of :mod:`mrisr.acquisition.degrade`.
        iterations: Exact projection steps (noise-free residuals).
        noise: Correct only above the residual's noise (default) instead of
            fitting the input exactly.

    Example:
        >>> from mrisr.geometry.grid import target_grid
        >>> g = target_grid(np.eye(4), (6, 6, 6), 0.5)
        >>> truth = np.zeros(g.shape, np.float32); truth[4:8, 3:9, 2:10] = 100.0
        >>> tracker = ConsistencyTracker(g, (6, 6, 6))
        >>> y = Projector(g, (6, 6, 6), "kspace").degrade(truth)
        >>> out = tracker(y, truth + 1.0, truth + 5.0)  # a spline and a network result
        >>> s = tracker.summary()
        >>> s["psf"], s["noise_level"], s["error_projected"] < 1e-6 < s["error_network"]
        ('kspace', 0.0, True)
    """

    def __init__(self, grid: TargetGrid, input_shape: Sequence[int], psf: str = "auto", iterations: int = 1,
                 noise: bool = True) -> None:
        look_up_option(psf, PSF_CHOICES, "consistency psf")
        self.grid, self.requested, self.iterations, self.noise = grid, psf, iterations, bool(noise)
        self.input_shape = tuple(int(v) for v in input_shape)[:3]
        self.projector: Projector | None = None if psf == "auto" else Projector(grid, self.input_shape, psf)
        self.psf_errors: dict[str, float] | None = None
        self.errors: dict[str, list[float]] = {"spline": [], "network": [], "projected": [], "noise": []}

    def __call__(self, y: np.ndarray, spline: np.ndarray, network: np.ndarray | None = None) -> np.ndarray:
        x = spline if network is None else network
        scale = robust_range(y)
        if self.projector is None:
            psf, self.psf_errors = select_psf(self.grid, self.input_shape, y, x)
            self.projector = Projector(self.grid, self.input_shape, psf)
        p = self.projector
        self.errors["spline"].append(p.error(spline, y, scale))
        ax = p.degrade(x)
        if network is not None:
            self.errors["network"].append(consistency_error(y, ax, scale))
        sigma = residual_noise(np.asarray(y, dtype=np.float32) - ax) if self.noise else 0.0
        if sigma <= NOISE_FREE * scale:
            sigma = 0.0
            out = p.project(x, y, self.iterations, degraded=ax)
        else:
            out = p.project_above_noise(x, y, sigma, degraded=ax)
        self.errors["noise"].append(sigma / scale)
        self.errors["projected"].append(p.error(out, y, scale))
        return out

    def summary(self) -> dict:
        """The ``consistency`` entry of the report.

        Keys: ``psf`` (used), ``psf_requested``, ``psf_errors`` (each
        candidate's error, ``auto`` only), ``iterations``, ``exact``,
        ``noise_weighted``, ``noise_level`` (the residual's noise sigma),
        ``error_spline``, ``error_network``, ``error_projected``. Errors and
        the noise level are relative to the input's robust range (``None``
        when not measured).
        """
        def rms(values: list[float]) -> float | None:
            return float(np.sqrt(np.mean(np.square(values)))) if values else None

        p = self.projector
        return {"psf": None if p is None else p.psf, "psf_requested": self.requested,
                "psf_errors": None if self.psf_errors is None else {k: float(v) for k, v in self.psf_errors.items()},
                "iterations": self.iterations, "exact": None if p is None else bool(p.exact),
                "noise_weighted": self.noise, "noise_level": rms(self.errors["noise"]),
                "error_spline": rms(self.errors["spline"]), "error_network": rms(self.errors["network"]),
                "error_projected": rms(self.errors["projected"])}


__all__ = ["Projector", "ConsistencyTracker", "input_grid", "acquisition_operators", "apply_separable",
           "consistency_error", "robust_range", "select_psf", "residual_noise", "noise_weights", "weigh_residual",
           "RCOND", "PSF_CHOICES", "NOISE_FACTOR", "SPECTRUM_SMOOTHING", "NOISE_FREE"]
