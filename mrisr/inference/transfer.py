"""Reference detail transfer: guided super-resolution without a network (``method="transfer"``).

A thick-slice input has lost the detail along its coarse axes; a finer scan of the same head (the reference,
already on the output grid: :mod:`mrisr.trust.reference`) still has it. With ``I`` the spline of the input on the
output grid, ``R`` the reference there and ``D`` the input's acquisition (``R`` integrated onto the input's grid
with the slice profile, then the same spline back onto the output grid, so ``D(R)`` is blurred exactly as ``I``)::

    result = I + s_I * a * (R - D(R)) / s_R

``R - D(R)`` is the detail the acquisition removed from the reference. ``a`` is the local gain between the two
contrasts: the guided-filter fit (He et al., 2013) of ``I`` against ``D(R)``, both blurred the same way, in windows
of ``window`` voxels, ``a = cov(I, D(R)) / (var(D(R)) + eps**2)`` in units of each image's foreground median
(``s_I``, ``s_R``), then averaged over the same window. A T2 guided by a T1 gets a negative gain where their
contrasts are inverted; where the reference does not explain the input (no correlation), ``a`` falls to 0 and the
result is the spline. The result is equivariant to the input's intensity scale and invariant to the reference's.

**The window and ``eps`` are chosen per scan by an internal test made from the input alone** (as ``--adapt``'s
pairs, SMORE / ECLARE): each fine axis of an anisotropic input is thickened to the largest factor with the slice
profile (an isotropic input is degraded by its factor again), the reference is taken onto the input's grid the
same way, and every candidate of :data:`CANDIDATES` is scored by its PSNR against the input over the input's head
mask. The best one runs if it beats the result without the reference by :data:`MARGIN_DB`; else the result is
what the run would give without a reference, and the report says so (a reference that does not match the input,
as the real PD guided by a T1 measured in docs/guided.md, costs nothing).

The pipeline (``mrisr upscale --reference``, :mod:`mrisr.pipeline.upscale`) runs :class:`ReferenceTransfer`: the
internal test also scores the single-input network, with and without the reference's detail, so a reference that
does not help leaves the default network's result. The pipeline registers the reference rigidly first by default:
the internal test sees the thick axis only at the input's own scale, so it cannot catch a reference a fraction of
a slice off along it (measured in docs/guided.md: unregistered, a reference one slice or 3 degrees off was worse
than the default).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mrisr.acquisition.degrade import add_rician_noise, apply_axis
from mrisr.acquisition.psf import axis_operators
from mrisr.geometry.grid import TargetGrid, target_grid
from mrisr.geometry.resample import resample_axis, resample_to_grid
from mrisr.inference.adapt import FINE, internal_factors
from mrisr.inference.intensity import normalising_scale
from mrisr.trust.consistency import input_grid


@dataclass(frozen=True)
class Candidate:
    """One setting of the transfer: the fit's window (output voxels, odd) and its regularisation ``eps`` (in units
    of the foreground median: a reference contrast below ``eps`` gets little gain)."""

    window: int
    eps: float


#: The settings the internal test chooses from (windows of 3 to 9 voxels, eps from 1% to 30% of the median).
CANDIDATES: tuple[Candidate, ...] = tuple(Candidate(w, e) for w in (3, 5, 9) for e in (0.01, 0.03, 0.1, 0.3))
#: How much truer (dB, on the internal test) the reference's detail must make the result to be used: less is
#: within the choice's own noise (an unrelated head gains a few thousandths of a dB by chance).
MARGIN_DB = 0.1


def coarse_factors(grid: TargetGrid) -> tuple[float, float, float]:
    """The upsampling factor per voxel axis (input voxel size over output voxel size)."""
    return tuple(1.0 / r for r in grid.ratios)  # type: ignore[return-value]


def acquisition_psf(factors: Sequence[float]) -> str:
    """The acquisition model of an input upscaled by ``factors``: ``slice`` (thick slices: the slice profile along
    the thickest axis) when some axis keeps its detail, else ``gaussian``.

    Example:
        >>> acquisition_psf((1, 1, 4)), acquisition_psf((2, 2, 2))
        ('slice', 'gaussian')
    """
    return "gaussian" if min(factors) > FINE else "slice"


def acquire(data: np.ndarray, grid: TargetGrid, input_shape: Sequence[int], psf: str) -> np.ndarray:
    """``data`` (on ``grid``) as the input's acquisition measured it: integrated with ``psf`` onto the input's grid
    along the axes the output refines, sampled by the spline along the others."""
    inv = input_grid(grid, input_shape)
    ops = axis_operators(data.shape, inv, psf)
    out = np.asarray(data, np.float32)
    for axis, factor in enumerate(coarse_factors(grid)):
        op = ops[axis]
        if factor > FINE and op is not None:
            out = apply_axis(out, op, axis)
        elif out.shape[axis] != inv.shape[axis] or not np.allclose(inv.positions(axis), np.arange(out.shape[axis])):
            out = resample_axis(out, axis, inv.positions(axis))
    return np.ascontiguousarray(out, np.float32)


def _windows(window: int, steps: Sequence[float]) -> tuple[int, ...]:
    """``window`` output voxels as odd window sizes on a grid whose voxels are ``steps`` output voxels."""
    return tuple(max(1, 2 * int(round((window / s - 1) / 2)) + 1) for s in steps)


class _Fit:
    """The window statistics of ``image`` against ``guide`` (normalised), reused by every ``eps``."""

    def __init__(self, image: np.ndarray, guide: np.ndarray, size: tuple[int, ...]) -> None:
        self.size = size
        mean_i, mean_g = self._box(image), self._box(guide)
        self.cov = self._box(image * guide) - mean_i * mean_g
        self.var = np.maximum(self._box(guide * guide) - mean_g * mean_g, 0.0)

    def _box(self, x: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(x, self.size, mode="reflect")

    def gain(self, eps: float) -> np.ndarray:
        return self._box(self.cov / (self.var + np.float32(eps) ** 2))


def _normalised(x: np.ndarray) -> tuple[np.ndarray, float]:
    s = normalising_scale(x, "foreground_median")
    return np.asarray(x, np.float32) / np.float32(s), s


def detail(spline: np.ndarray, reference: np.ndarray, degraded: np.ndarray, candidate: Candidate,
           steps: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """The reference's detail in the input's contrast: ``a * (reference - degraded)`` with the gain ``a`` fitted
    locally between ``spline`` and ``degraded`` (see the module docstring); ``spline`` plus this is the transfer.

    Args:
        spline: The input's spline on the output grid.
        reference: The reference on the same grid.
        degraded: ``D(reference)`` (:meth:`ReferenceTransfer.degraded`).
        candidate: The fit's window and eps.
        steps: The grid's voxel size in output voxels per axis (1 on the output grid; the internal test's input
            grid is coarser), so that a window covers the same millimetres on both.

    Returns:
        float32, ``spline``'s shape.
    """
    return next(details(spline, reference, degraded, [candidate], steps))[1]


def details(spline: np.ndarray, reference: np.ndarray, degraded: np.ndarray, candidates: Sequence[Candidate],
            steps: Sequence[float] = (1.0, 1.0, 1.0)) -> Iterator[tuple[Candidate, np.ndarray]]:
    """:func:`detail` for each candidate, one at a time, the window statistics computed once per window."""
    image, s_i = _normalised(spline)
    ref, s_r = _normalised(reference)
    low = np.asarray(degraded, np.float32) / np.float32(s_r)
    lost = ref - low
    del ref
    for window in dict.fromkeys(c.window for c in candidates):
        fit = _Fit(image, low, _windows(window, steps))
        for c in candidates:
            if c.window == window:
                yield c, (np.float32(s_i) * fit.gain(c.eps) * lost).astype(np.float32)


def _back_grid(shape: Sequence[int], factors: tuple[float, float, float]) -> tuple[TargetGrid, tuple[int, int, int]]:
    """The grid on which a volume of ``shape``, acquired at ``factors`` of its voxels, is splined back (the
    contract's grid for the volume's own spacing), and that acquisition's shape."""
    lr_grid = target_grid(np.eye(4), shape, factors)
    return input_grid(lr_grid, shape), lr_grid.shape


#: ``refine(volume, factors)``: the network's result for a splined volume upscaled by ``factors``.
Refine = Callable[[np.ndarray, tuple[float, float, float]], np.ndarray]


@dataclass(frozen=True)
class Choice:
    """What the internal test chose: the network's result or the spline as the base (``network``), with the
    reference's detail added (``candidate``) or not; ``table`` is the test (dB per option)."""

    network: bool
    candidate: Candidate | None
    table: dict

    @property
    def label(self) -> str:
        """``spline``, ``network``, ``spline + detail w5 eps0.01``..."""
        return option_label(self.network, self.candidate)


def option_label(network: bool, candidate: Candidate | None) -> str:
    """The name of one option of the internal test.

    Example:
        >>> option_label(True, Candidate(5, 0.01)), option_label(False, None)
        ('network + detail w5 eps0.01', 'spline')
    """
    base = "network" if network else "spline"
    return base if candidate is None else f"{base} + detail w{candidate.window} eps{candidate.eps:g}"


class ReferenceTransfer:
    """The transfer of one reference onto one output grid, for every volume of an input.

    Args:
        reference: The reference on ``grid`` (:func:`mrisr.trust.reference.resample_reference`).
        grid: The output grid of the contract.
        input_shape: The input's spatial shape.
        order, antialias: How the input's spline is made (``D`` does the same).

    Example:
        >>> from scipy import ndimage
        >>> from mrisr.geometry.grid import target_grid
        >>> noise = np.random.default_rng(0).normal(size=(24, 24, 32))
        >>> truth = (ndimage.gaussian_filter(noise, 1.5) * 8 + 2).astype(np.float32)  # the 1 mm head ...
        >>> grid = target_grid(np.diag([1.0, 1, 4, 1]), (24, 24, 8), 1.0)  # ... and its 4 mm slices
        >>> lr = acquire(truth, grid, (24, 24, 8), "slice")
        >>> rt = ReferenceTransfer(truth * 3, grid, lr.shape)  # the same head in other units, as the reference
        >>> choice = rt.choose(lr)
        >>> spline = resample_to_grid(lr, grid)
        >>> out = rt.apply(spline, spline, choice)
        >>> choice.label, bool(np.abs(out - truth).mean() < 0.3 * np.abs(spline - truth).mean())
        ('spline + detail w9 eps0.01', True)
    """

    def __init__(self, reference: np.ndarray, grid: TargetGrid, input_shape: Sequence[int], *, order: int = 3,
                 antialias: bool = True) -> None:
        self.reference = np.asarray(reference, np.float32)
        self.grid = grid
        self.input_shape = tuple(int(n) for n in input_shape)[:3]
        self.order, self.antialias = order, antialias
        self.psf = acquisition_psf(coarse_factors(grid))
        #: The reference as the input's acquisition sees it, on the input's grid.
        self.low = acquire(self.reference, grid, self.input_shape, self.psf)
        self._degraded: np.ndarray | None = None

    def choose(self, data: np.ndarray, refine: Refine | None = None, *, seed: int = 0,
               candidates: Sequence[Candidate] = CANDIDATES) -> Choice:
        """The option that does best on the input's own internal test (module docstring): the best one with the
        reference's detail if it beats the result without it (the network's, else the spline) by
        :data:`MARGIN_DB`, else that result.

        Args:
            data: The input's first volume (3D, its own grid).
            refine: The network, to score it with and without the reference's detail (None: the spline only).
            seed: Seed of the noise put back into the thickened inputs (their thickening averages it away).
            candidates: The settings of the fit to choose from.
        """
        from mrisr.evaluation.masks import head_mask
        from mrisr.evaluation.metrics import psnr
        from mrisr.trust.ood import noise_sigma

        truth = np.asarray(data, np.float32)
        mask = head_mask(truth)
        if not mask.any():
            return Choice(False, None, {"pairs": [], "db": {}, "reason": "no head found in the input"})
        inside = truth[mask]
        peak = float(np.percentile(inside, 99.5))
        steps = tuple(1.0 / r for r in self.grid.ratios)  # an input voxel, in output voxels
        rng = np.random.default_rng(seed)
        sigma = noise_sigma(truth)
        scores: dict[tuple[bool, Candidate | None], list[float]] = {}
        pairs = []
        for g, psf in internal_factors(coarse_factors(self.grid)):
            back, shape = _back_grid(truth.shape, g)
            sim = resample_to_grid(acquire(truth, back, shape, psf), back)
            lost = sigma * math.sqrt(max(0.0, 1.0 - 1.0 / math.prod(g)))
            sim = add_rician_noise(sim, lost, rng) if lost > 0 else sim
            low = resample_to_grid(acquire(self.low, back, shape, psf), back)
            pairs.append("x".join(f"{v:g}" for v in g) + f" {psf}")
            bases = [(False, sim)] + ([(True, refine(sim, g))] if refine is not None else [])
            for network, base in bases:
                scores.setdefault((network, None), []).append(psnr(base[mask], inside, peak=peak))
            for c, add in details(sim, self.low, low, candidates, steps):
                for network, base in bases:
                    scores.setdefault((network, c), []).append(psnr((base + add)[mask], inside, peak=peak))
        mean = {k: float(np.mean(v)) for k, v in scores.items()}
        plain = (refine is not None, None)  # what the run gives without a reference
        best = max((k for k in mean if k[1] is not None), key=lambda k: mean[k], default=plain)
        if mean[best] < mean[plain] + MARGIN_DB:
            best = plain
        table = {"pairs": pairs, "db": {option_label(*k): round(v, 3) for k, v in mean.items()},
                 "chosen": option_label(*best), "gain_over_spline_db": round(mean[best] - mean[(False, None)], 3),
                 "margin_db": MARGIN_DB}
        return Choice(best[0], best[1], table)

    def degraded(self) -> np.ndarray:
        """``D(R)`` on the output grid (computed once)."""
        if self._degraded is None:
            self._degraded = resample_to_grid(self.low, self.grid, order=self.order, antialias=self.antialias)
        return self._degraded

    def apply(self, spline: np.ndarray, base: np.ndarray, choice: Choice) -> np.ndarray:
        """``base`` (the spline or the network's result) plus the reference's detail the choice asks for, the
        gain fitted on ``spline``."""
        if choice.candidate is None:
            return np.asarray(base, np.float32)
        return (base + detail(spline, self.reference, self.degraded(), choice.candidate)).astype(np.float32)

    def describe(self, choice: Choice) -> dict:
        """The sidecar's ``transfer`` entry."""
        c = choice.candidate
        return {"chosen": choice.label, "network": choice.network, "detail": c is not None,
                "window": None if c is None else c.window, "eps": None if c is None else c.eps,
                "psf": self.psf, "internal_test": choice.table}
