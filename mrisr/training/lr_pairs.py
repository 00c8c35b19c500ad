"""Training pairs of learned-upsampling networks: (LR patch, HR patch) at an integer scale.

A learned-upsampling network (``rrlsrn``, ``georgescu``) takes the
low-resolution volume itself and has one integer ``scale`` per axis. Its
training examples are made like the interpolated-input ones
(:class:`mrisr.training.data.PatchSampler`: same crops, contrasts, bias,
intensity jitter, PSF, FWHM and noise drawn from ``[degradation]``) except:

* the acquisition's factors are the network's scale (the kind, PSF, FWHM and
  noise are still sampled; only the factors are fixed);
* the HR crop is a whole number of LR voxels along each axis (crop, margin
  and patch are multiples of the scale), so :func:`mrisr.acquisition.degrade.degrade`
  puts LR voxel ``i`` over HR voxels ``[i*s, (i+1)*s)`` (the geometry
  contract's edge alignment) and the LR patch is a plain slice of the LR
  crop: there is no spline;
* axis permutations only exchange axes of equal scale
  (:func:`scale_preserving_permutation`): with ``scale = (2, 2, 2)`` every
  permutation, with ``(1, 1, 4)`` only axes 0 and 1, so an LR patch always
  has the shape the network expects and its thick axis stays the thick axis.
  Flips are unrestricted.

Example:
    >>> pair_margin((2, 2, 2)), pair_margin((1, 1, 4))
    (10, 16)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from mrisr.acquisition.degrade import add_rician_noise, degrade, three_tap_blur
from mrisr.geometry.grid import TargetGrid, block_average_affine, target_grid


def fixed_scale(acquisition, scale: Sequence[int]):
    """``acquisition`` (an :class:`~mrisr.training.data.Acquisition`) with its factors set to ``scale``."""
    return dataclasses.replace(acquisition, factors=tuple(float(s) for s in scale))


def pair_margin(scale: Sequence[int]) -> int:
    """HR voxels of context around the patch: enough for the PSF, a multiple of every scale."""
    step = math.lcm(*(int(s) for s in scale))
    return step * math.ceil((3 * max(scale) + 4) / step)


def scale_preserving_permutation(scale: Sequence[int], rng: np.random.Generator) -> tuple[int, int, int]:
    """A random axis permutation that exchanges only axes of equal scale.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> {scale_preserving_permutation((1, 1, 4), rng)[2] for _ in range(20)}
        {2}
    """
    scale = [int(s) for s in scale]
    perm = list(range(3))
    for value in sorted(set(scale)):
        axes = [a for a in range(3) if scale[a] == value]
        for a, b in zip(axes, rng.permutation(axes)):
            perm[a] = int(b)
    return tuple(perm)  # type: ignore[return-value]


def degrade_to_lr(hr: np.ndarray, acquisition, rng: np.random.Generator) -> np.ndarray:
    """The LR volume of ``hr`` under ``acquisition`` (its factors, PSF, noise and input blur): the
    acquisition step of every training pair (:func:`mrisr.training.data.simulate` interpolates it back)."""
    lr, _ = degrade(hr, np.eye(4), acquisition.factors, psf=acquisition.psf, fwhm=acquisition.fwhm)
    if acquisition.noise > 0:
        lr = add_rician_noise(lr, acquisition.noise, rng)
    return three_tap_blur(lr, acquisition.blur)


def centre_pair(hr: np.ndarray, lr: np.ndarray, margin: int, patch: int,
                scale: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The LR patch and the HR patch it covers: HR ``[margin, margin + patch)`` per axis.

    Example:
        >>> x, y = centre_pair(np.zeros((8, 8, 8)), np.zeros((4, 4, 8)), 2, 4, (2, 2, 1))
        >>> x.shape, y.shape
        ((2, 2, 4), (4, 4, 4))
    """
    lr_sl = tuple(slice(margin // s, (margin + patch) // s) for s in scale)
    return lr[lr_sl], hr[(slice(margin, margin + patch),) * 3]


def crop_to_scale(volume: np.ndarray, scale: Sequence[int]) -> np.ndarray:
    """``volume`` without its last voxels along each axis, down to a multiple of ``scale``.

    Example:
        >>> crop_to_scale(np.zeros((5, 4, 7)), (2, 2, 3)).shape
        (4, 4, 6)
    """
    return volume[tuple(slice(0, n - n % int(s)) for n, s in zip(volume.shape, scale))]


def hr_grid_of_lr(lr_shape: Sequence[int], scale: Sequence[int]) -> TargetGrid:
    """The HR grid (1 mm voxels) of an LR volume made by :func:`degrade_to_lr`, as ``upscale`` computes it.

    Example:
        >>> g = hr_grid_of_lr((3, 3, 2), (2, 2, 1))
        >>> g.shape, bool(np.allclose(g.affine, np.eye(4)))
        ((6, 6, 2), True)
    """
    return target_grid(block_average_affine(np.eye(4), scale), lr_shape, 1.0)
