"""Automatic head masks: for evaluation (``mrisr evaluate --mask auto``, :func:`head_mask`) and for where
the network runs (:func:`network_mask`, used by :mod:`mrisr.inference.engine`).

:func:`head_mask` separates the head from the background of a magnitude image
in five 3D steps (scipy.ndimage only):

1. light Gaussian smoothing (``sigma`` voxels) so that background noise does
   not speckle the mask;
2. a global Otsu threshold of the smoothed image (the intensity that best
   splits its histogram into two classes: background and head);
3. the largest connected component (face connectivity), which drops noise
   specks and detached objects (markers, a second coil element...);
4. hole filling, which puts enclosed dark structures (ventricles, sinuses,
   dark CSF) back into the mask;
5. a small *conditional* dilation (``dilate`` voxels) into the partial-volume
   rim: a voxel next to the mask joins it only if its (unsmoothed) intensity
   is above half the threshold, so the rim is kept while background is not.

Example:
    >>> import numpy as np
    >>> z, y, x = np.mgrid[:24, :24, :24]
    >>> ball = ((x - 11.5) ** 2 + (y - 11.5) ** 2 + (z - 11.5) ** 2 < 8 ** 2).astype(np.float32)
    >>> m = head_mask(100 * ball)
    >>> int(m.sum()) == int(ball.sum())
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from mrisr.errors import MrisrError

#: Number of histogram bins of the Otsu threshold.
OTSU_BINS = 256
#: Largest number of voxels used to build the histogram (a strided subsample).
_MAX_SAMPLES = 2_000_000


def otsu_threshold(values: np.ndarray, bins: int = OTSU_BINS) -> float:
    """Otsu's threshold: the cut maximising the between-class variance.

    Args:
        values: Intensities (any shape; NaN/Inf are ignored).
        bins: Histogram bins between the minimum and the maximum.

    Returns:
        The threshold (the upper edge of the last background bin); the
        minimum itself for a constant input.

    Example:
        >>> otsu_threshold(np.array([0.0] * 50 + [10.0] * 50)) < 10.0
        True
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[:: max(1, flat.size // _MAX_SAMPLES)]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        raise MrisrError("cannot threshold an image without finite values")
    lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(flat, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1].astype(np.float64)
    w1 = flat.size - w0
    s0 = np.cumsum(counts * centres)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = (np.sum(counts * centres) - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[1 + int(np.argmax(between))])


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of a boolean mask (empty stays empty).

    Example:
        >>> m = np.zeros((5, 5, 5), bool); m[0, 0, 0] = True; m[2:5, 2:5, 2:5] = True
        >>> int(largest_component(m).sum())
        27
    """
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def head_mask(ref: np.ndarray, sigma: float = 1.0, dilate: int = 1) -> np.ndarray:
    """Automatic head mask of a magnitude image (see the module docstring).

    Args:
        ref: 3D image (a 4D image is averaged over its last axis first).
        sigma: Gaussian smoothing before thresholding, in voxels (0: none).
        dilate: Conditional dilation into the partial-volume rim, in voxels.

    Returns:
        Boolean array of the spatial shape of ``ref``. A constant image gives
        an all-True mask (there is nothing to separate).

    Raises:
        MrisrError: if ``ref`` is not 3D/4D or holds no finite value.

    Example:
        >>> img = np.zeros((16, 16, 16), np.float32); img[4:12, 4:12, 4:12] = 50.0
        >>> int(head_mask(img, sigma=0).sum())
        512
    """
    data = np.asarray(ref)
    if data.ndim == 4:
        data = data.mean(axis=3)
    if data.ndim != 3:
        raise MrisrError(f"head_mask needs a 3D or 4D image, got shape {np.shape(ref)}")
    data = np.nan_to_num(data.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    smooth = ndimage.gaussian_filter(data, sigma, mode="nearest") if sigma > 0 else data
    threshold = otsu_threshold(smooth)
    mask = smooth > threshold
    if not mask.any():
        return np.ones(data.shape, dtype=bool)
    mask = ndimage.binary_fill_holes(largest_component(mask))
    if dilate > 0:
        rim = data > (threshold / 2 if threshold > 0 else threshold)
        mask = ndimage.binary_dilation(mask, iterations=int(dilate), mask=rim) | mask
    return mask


# --- where the network runs (mrisr.inference.engine) ------------------------------------------------------------------

#: Largest number of voxels of the coarse grid :func:`network_mask` decides on (a coarser block beyond it).
MASK_MAX_VOXELS = 2**21
#: Smoothing of the coarse image before thresholding, in coarse voxels.
MASK_SIGMA = 1.0
#: Background noise allowance: the threshold is at least the background's median plus this many robust sigmas.
NOISE_SIGMAS = 6.0
#: No background at all when the darker Otsu class's median exceeds this fraction of the brighter one's.
NO_BACKGROUND_RATIO = 0.25
#: Connected pieces smaller than this fraction of the largest are dropped (noise specks).
MIN_PIECE = 0.01


def coarse_block(shape: Sequence[int], factors: Sequence[float] | None = None,
                 max_voxels: int = MASK_MAX_VOXELS) -> tuple[int, int, int]:
    """Block of output voxels per coarse voxel of :func:`network_mask`: the integer part of the upsampling
    factor per axis (so the coarse grid is about the low-resolution input's), coarser while the coarse grid
    holds more than ``max_voxels`` voxels.

    Example:
        >>> coarse_block((196, 232, 188), (2.0, 2.0, 2.0)), coarse_block((40, 40, 40)), coarse_block((300,) * 3)
        ((2, 2, 2), (1, 1, 1), (3, 3, 3))
    """
    block = [max(1, int(math.floor(f + 1e-6))) for f in (factors if factors is not None else (1, 1, 1))]
    while math.prod(math.ceil(n / b) for n, b in zip(shape, block)) > max_voxels:
        block = [b + 1 for b in block]
    return tuple(block)  # type: ignore[return-value]


def block_mean(data: np.ndarray, block: Sequence[int]) -> np.ndarray:
    """Mean of ``|data|`` over blocks of ``block`` voxels (the last blocks padded by edge replication).

    Example:
        >>> block_mean(np.arange(6.0).reshape(3, 2, 1), (2, 2, 1)).ravel().tolist()
        [1.5, 4.5]
    """
    n = [math.ceil(s / b) for s, b in zip(data.shape, block)]
    if tuple(block) == (1, 1, 1):
        return np.abs(data, dtype=np.float32)
    pad = [(0, k * b - s) for k, b, s in zip(n, block, data.shape)]
    full = np.pad(np.abs(data).astype(np.float32, copy=False), pad, mode="edge")
    return full.reshape(n[0], block[0], n[1], block[1], n[2], block[2]).mean(axis=(1, 3, 5), dtype=np.float32)


def background_threshold(smooth: np.ndarray, floor: float = 0.0) -> float | None:
    """Intensity above which a smoothed magnitude image is head, or None when it has no background.

    Half the Otsu threshold (the dark rim of a head is kept), but at least the background's noise (its
    median plus :data:`NOISE_SIGMAS` robust sigmas, so a noisy background stays out) and ``floor``, and at
    most the Otsu threshold. An image whose darker Otsu class is not dark (its median above
    :data:`NO_BACKGROUND_RATIO` of the brighter class's) has no background: None.

    Example:
        >>> img = np.zeros((10, 10, 10), np.float32); img[3:7, 3:7, 3:7] = 100.0
        >>> 0 < background_threshold(img) < 100, background_threshold(img + 200.0) is None
        (True, True)
    """
    otsu = otsu_threshold(smooth)
    low, high = smooth[smooth <= otsu], smooth[smooth > otsu]
    if high.size == 0 or low.size == 0:
        return None if float(np.min(smooth)) > floor else floor
    median = float(np.median(low))
    if median > NO_BACKGROUND_RATIO * float(np.median(high)):
        return None
    sigma = 1.4826 * float(np.median(np.abs(low - median)))
    return min(otsu, max(otsu / 2, median + NOISE_SIGMAS * sigma, floor))


def drop_specks(mask: np.ndarray, fraction: float = MIN_PIECE) -> np.ndarray:
    """``mask`` without the face-connected pieces smaller than ``fraction`` of its largest.

    Example:
        >>> m = np.zeros((9, 9, 9), bool); m[0, 0, 0] = True; m[3:9, 3:9, 3:9] = True
        >>> int(drop_specks(m).sum())
        216
    """
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= fraction * sizes.max()
    keep[0] = False
    return keep[labels]


def network_mask(data: np.ndarray, radius: int, block: Sequence[int] = (1, 1, 1), floor: float = 0.0) -> np.ndarray:
    """Where a network of receptive radius ``radius`` may change ``data``: the head, decided once.

    On the coarse grid of ``block`` voxels (:func:`block_mean`, about the low-resolution input for
    :func:`coarse_block`'s block): Gaussian smoothing (:data:`MASK_SIGMA`), :func:`background_threshold`
    (Otsu, noise-aware), :func:`drop_specks`, hole filling, then a dilation by ``radius`` output voxels
    (``ceil(radius / block)`` coarse voxels, a box), mapped back to the output grid block by block. It
    depends on ``data`` alone, never on a tiling. All True when the image has no background, all False
    when nothing exceeds ``floor``.

    Args:
        data: 3D volume on the output grid.
        radius: Receptive radius of the network, in output voxels.
        block: Output voxels per coarse voxel along each axis.
        floor: Intensity that is background whatever the histogram says (e.g. 1% of the robust scale).

    Returns:
        Boolean array of ``data``'s shape.

    Example:
        >>> x = np.random.default_rng(0).normal(3, 1, (24, 24, 24)).astype(np.float32)
        >>> x[8:16, 8:16, 8:16] += 100
        >>> m = network_mask(x, 2)
        >>> bool(m[6:18, 6:18, 6:18].all()), bool(m[:4].any()), bool(network_mask(x + 500, 2).all())
        (True, False, True)
    """
    coarse = block_mean(data, block)
    smooth = ndimage.gaussian_filter(coarse, MASK_SIGMA, mode="nearest") if MASK_SIGMA > 0 else coarse
    threshold = background_threshold(smooth, floor)
    if threshold is None:
        return np.ones(data.shape, bool)
    head = smooth > threshold
    if head.any():
        head = ndimage.binary_fill_holes(drop_specks(head))
        reach = [2 * math.ceil(radius / b) + 1 for b in block]
        if max(reach) > 1:
            head = ndimage.maximum_filter(head.view(np.uint8), size=reach, mode="constant").view(bool)
    for axis, b in enumerate(block):
        head = np.repeat(head, b, axis=axis) if b > 1 else head
    return np.ascontiguousarray(head[tuple(slice(0, n) for n in data.shape)])
