"""Anatomical and intensity variety for training crops drawn from a few average heads.

- :func:`random_warp`: where a crop samples its subject: a random rotation
  about every axis (up to ``rotation`` degrees), a scaling per axis in
  ``zoom``, a left-right asymmetry (the scaling differs between the two ends
  of voxel axis 0 by up to ``asymmetry``) and a smooth elastic displacement
  (a random coarse field of up to ``elastic`` voxels, cubic-upsampled). The
  crop is then read with :func:`sample_crop` (cubic for images, linear for
  tissue maps).
- :func:`reach`: how far outside its box such a crop can read, so that the
  held-out slab stays untouched.
- :func:`brighten` and :func:`saturate`: wider dynamic ranges than the
  templates have: the brightest tissue (scalp fat on a T1) boosted to 1-3x
  its level, and 8-bit inputs clipped at a bright level and quantised.

Example:
    >>> rng = np.random.default_rng(0)
    >>> coords = random_warp(8, rng, rotation=30, zoom=(0.8, 1.2), asymmetry=0.1, elastic=2.0)
    >>> coords.shape
    (3, 8, 8, 8)
    >>> reach(8, rotation=30, zoom=(0.8, 1.2), asymmetry=0.1, elastic=2.0) >= 0
    True
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

#: Control points per axis of the elastic field.
ELASTIC_POINTS = 4


def rotation_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation by ``angles_deg`` about voxel axes 0, 1 and 2, in that order.

    Example:
        >>> bool(np.allclose(rotation_matrix(np.array([0.0, 0.0, 90.0])) @ [1, 0, 0], [0, 1, 0]))
        True
    """
    out = np.eye(3)
    for axis, a in enumerate(np.deg2rad(angles_deg)):
        c, s = math.cos(a), math.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = r @ out
    return out


def random_warp(size: int, rng: np.random.Generator, *, rotation: float, zoom: tuple[float, float],
                asymmetry: float, elastic: float) -> np.ndarray:
    """Sampling coordinates (3, size, size, size), relative to the crop's origin, of one random warp
    about the crop's centre (see the module docstring)."""
    centre = (size - 1) / 2.0
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32) - centre] * 3, indexing="ij"))
    scales = rng.uniform(zoom[0], zoom[1], 3)
    m = rotation_matrix(rng.uniform(-rotation, rotation, 3)) @ np.diag(1.0 / scales)
    coords = np.tensordot(m.astype(np.float32), grid, axes=1)
    if asymmetry > 0:  # one half of axis 0 stretched more than the other
        a = rng.uniform(-asymmetry, asymmetry)
        coords[0] *= 1.0 + a * np.tanh(grid[0] / max(centre, 1.0))
    if elastic > 0:
        coarse = rng.uniform(-elastic, elastic, (3, ELASTIC_POINTS, ELASTIC_POINTS, ELASTIC_POINTS))
        coords += np.stack([upsample_field(c, size) for c in coarse]).astype(np.float32)
    return coords + np.float32(centre)


def upsample_field(coarse: np.ndarray, size: int) -> np.ndarray:
    """``ndimage.zoom(coarse, size / n, order=3, mode="nearest")[:size, :size, :size]`` of an (n, n, n) field,
    computed as the separable product it is (one 1-D cubic zoom matrix per axis: ~20x faster).

    Example:
        >>> c = np.random.default_rng(0).uniform(-1, 1, (4, 4, 4))
        >>> ref = ndimage.zoom(c, 10 / 4, order=3, mode="nearest")[:10, :10, :10]
        >>> bool(np.allclose(upsample_field(c, 10), ref, atol=1e-9))
        True
    """
    n = coarse.shape[0]
    w = np.stack([ndimage.zoom(e, size / n, order=3, mode="nearest")[:size] for e in np.eye(n)], axis=1)
    return np.einsum("ai,bj,ck,ijk->abc", w, w, w, coarse, optimize=True)


def reach(size: int, *, rotation: float, zoom: tuple[float, float], asymmetry: float, elastic: float) -> int:
    """Voxels a warped crop of ``size`` may read beyond its own box on any side (an upper bound)."""
    half = (size - 1) / 2.0
    radius = half * math.sqrt(3) if rotation > 0 else half
    radius = radius / min(zoom) * (1.0 + asymmetry)
    return int(math.ceil(radius + elastic + 2 - half))


def sample_crop(volume: np.ndarray, origin: tuple[int, int, int], coords: np.ndarray, order: int) -> np.ndarray:
    """``volume`` read at ``origin + coords`` (zero outside the volume: air), float32.

    ``order`` 3 expects a volume already passed through :func:`scipy.ndimage.spline_filter`.
    """
    pts = coords + np.asarray(origin, np.float32).reshape(3, 1, 1, 1)
    return ndimage.map_coordinates(volume, pts, order=order, mode="constant", cval=0.0,
                                   prefilter=False).astype(np.float32)


def brighten(x: np.ndarray, boost: float, level: float) -> np.ndarray:
    """Intensities above ``level`` made up to ``boost`` times brighter (a smooth step of width 5 % of ``level``).

    Example:
        >>> x = np.linspace(0, 2, 1000, dtype=np.float32)
        >>> y = brighten(x, 2.0, 1.5)
        >>> bool(y[-1] > 3.5 and abs(y[400] - x[400]) < 1e-3)
        True
    """
    width = max(0.05 * level, 1e-6)
    step = 1.0 / (1.0 + np.exp(-(x.astype(np.float64) - level) / width))
    return (x * (1.0 + (boost - 1.0) * step)).astype(np.float32)


def saturate(x: np.ndarray, top: float) -> np.ndarray:
    """An 8-bit export: clipped at ``top`` and quantised to 256 levels (same scale).

    Example:
        >>> x = np.linspace(0, 2, 1000, dtype=np.float32)
        >>> y = saturate(x, 1.5)
        >>> len(np.unique(y)) <= 256, float(y.max())
        (True, 1.5)
    """
    if top <= 0:
        return x
    return (np.round(np.clip(x, 0, top) / top * 255.0) * (top / 255.0)).astype(np.float32)
