"""Overlapping patch tiling and stitching that reproduce whole-volume inference.

The output grid is cut into *cores* that partition it. Each tile reads a
fixed-size window (core plus ``halo`` voxels of context on every side) from
the input and writes back only its core. With ``halo`` >= the network's
receptive radius every core voxel sees exactly the context it would see in a
single whole-volume pass.

Windows never leave the volume: near an edge the window slides inward (its
size stays fixed, so patches batch together) and where it reaches the edge the
network's own zero padding acts exactly as in the whole-volume pass. Zero-
filling the input past the edge would *not* be equivalent: the first layer's
biases make the hidden features there non-zero, whereas the whole-volume pass
pads every layer with zeros.

For a network whose output grid is ``scale`` times finer per axis (a
learned-upsampling network), the tiles are planned on the input grid and
:meth:`Tile.scaled` puts them on the output grid: the cores still partition it.
This module splits and stitches; :mod:`mrisr.inference.runner` runs the network
in between.

Where a halo smaller than the receptive radius must be used, :class:`Stitcher`
can instead *blend*: every tile writes its whole window with separable weights
that are 1 on its core and fall linearly towards a floor (> 0) at the window
edge; the weights of all tiles are normalised per axis, so no full-size weight
array is needed.

Example:
    >>> tiles = plan_tiles((10, 7, 5), core=4, halo=1)
    >>> len(tiles), tiles[0].shape
    (12, (6, 6, 5))
    >>> x = np.random.rand(10, 7, 5).astype(np.float32)
    >>> bool(np.array_equal(apply_tiled(x, lambda p: p + 1, core=4, halo=1), x + 1))
    True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from mrisr.errors import MrisrError

Slices = tuple[slice, slice, slice]
#: Default lowest blending weight, relative to a core's weight of 1.
BLEND_FLOOR = 0.05


@dataclass(frozen=True)
class Tile:
    """Where one patch is read and where its result goes.

    Attributes:
        read: Input window (inside the volume) fed to the network.
        core: Output region this tile owns; the cores of a plan partition the grid.
        inner: The core's position within the patch (``read`` shifted to 0).
        index: Position of the tile in the grid of tiles.
    """

    read: Slices
    core: Slices
    inner: Slices
    index: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Patch shape (the ``read`` window's)."""
        return tuple(s.stop - s.start for s in self.read)  # type: ignore[return-value]

    @property
    def core_shape(self) -> tuple[int, int, int]:
        """Shape of the owned output region."""
        return tuple(s.stop - s.start for s in self.core)  # type: ignore[return-value]

    def scaled(self, scale: Sequence[int]) -> Tile:
        """The same tile on a grid ``scale`` times finer per axis (voxel ``i`` -> voxels ``[i*s, (i+1)*s)``).

        Example:
            >>> t = plan_tiles((6, 4, 4), core=(3, 4, 4), halo=1)[1].scaled((2, 1, 1))
            >>> t.read[0], t.core[0], t.inner[0]
            (slice(2, 12, None), slice(6, 12, None), slice(4, 10, None))
        """
        def up(slices: Slices) -> Slices:
            return tuple(slice(r.start * s, r.stop * s) for r, s in zip(slices, scale))  # type: ignore[return-value]

        return Tile(read=up(self.read), core=up(self.core), inner=up(self.inner), index=self.index)


@dataclass(frozen=True)
class Plan:
    """A tiling plan: tiles, their halo and batch size, and whether to blend."""

    tiles: list[Tile]
    halo: int
    batch_size: int
    blend: bool

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        """Shape of every patch of the plan."""
        return self.tiles[0].shape


def _triple(value: int | Sequence[int], what: str, minimum: int) -> tuple[int, int, int]:
    if isinstance(value, (int, np.integer)):
        vals = [value] * 3
    elif isinstance(value, (list, tuple)):
        vals = list(value)
    else:
        raise MrisrError(f"{what} must be an integer >= {minimum} or three of them, got {value!r}")
    if len(vals) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum
                             for v in vals):
        raise MrisrError(f"{what} must be an integer >= {minimum} or three of them, got {value!r}")
    return int(vals[0]), int(vals[1]), int(vals[2])


def plan_axis(n: int, core: int, halo: int) -> list[tuple[slice, slice]]:
    """``(read, core)`` spans along one axis of length ``n``.

    Cores of ``core`` voxels (the last may be shorter) partition ``[0, n)``;
    every read window has ``min(n, core + 2 * halo)`` voxels, contains its core
    widened by ``halo`` (clipped to the axis) and stays inside ``[0, n)``.

    Example:
        >>> [(r.start, r.stop, c.start, c.stop) for r, c in plan_axis(10, 4, 1)]
        [(0, 6, 0, 4), (3, 9, 4, 8), (4, 10, 8, 10)]
    """
    patch = min(n, core + 2 * halo)
    spans = []
    for start in range(0, n, core):
        stop = min(start + core, n)
        r0 = min(max(start - halo, 0), n - patch)
        spans.append((slice(r0, r0 + patch), slice(start, stop)))
    return spans


def plan_tiles(shape: Sequence[int], core: int | Sequence[int], halo: int | Sequence[int]) -> list[Tile]:
    """Tiles covering a volume of ``shape``: cores of ``core`` voxels, ``halo`` context.

    Args:
        shape: Spatial shape of the volume.
        core: Core size (one value, or one per axis), >= 1.
        halo: Context voxels each side (one value, or one per axis), >= 0.

    Returns:
        Tiles in C order of their grid index; all have the same patch shape.

    Raises:
        MrisrError: for a non-positive shape or core, or a negative halo.

    Example:
        >>> len(plan_tiles((5, 5, 5), core=100, halo=8))  # patch larger than the volume
        1
    """
    shp = _triple(tuple(shape), "shape", 1)
    cores = _triple(core, "core size", 1)
    halos = _triple(halo, "halo", 0)
    axes = [plan_axis(n, c, h) for n, c, h in zip(shp, cores, halos)]
    tiles = []
    for index in itertools.product(*(range(len(a)) for a in axes)):
        spans = [axes[k][i] for k, i in enumerate(index)]
        read = tuple(r for r, _ in spans)
        corev = tuple(c for _, c in spans)
        inner = tuple(slice(c.start - r.start, c.stop - r.start) for r, c in spans)
        tiles.append(Tile(read=read, core=corev, inner=inner, index=index))  # type: ignore[arg-type]
    return tiles


def network_voxels(shape: Sequence[int], core: Sequence[int], halo: int) -> int:
    """Voxels the network processes for a plan (all patches, halos included).

    Example:
        >>> network_voxels((10, 10, 10), (10, 10, 10), 3)
        1000
    """
    total = 1
    for n, c in zip(shape, core):
        total *= math.ceil(n / c) * min(n, c + 2 * halo)
    return total


def _axis_cores(n: int) -> list[int]:
    """Distinct core sizes ``ceil(n / k)`` for k = 1..n, largest first."""
    return sorted({math.ceil(n / k) for k in range(1, n + 1)}, reverse=True)


def choose_core(shape: Sequence[int], halo: int, max_patch_voxels: int) -> tuple[int, int, int] | None:
    """Core sizes whose patches fit ``max_patch_voxels`` with the least total work.

    Minimises :func:`network_voxels` (halo overhead) over cores
    ``ceil(N_i / k_i)``, so a volume that fits is one patch and a slightly too
    large one is split along one axis only.

    Returns:
        The core per axis, or ``None`` if not even a one-voxel core fits.

    Example:
        >>> choose_core((100, 100, 100), 8, 10**9)
        (100, 100, 100)
        >>> choose_core((100, 100, 100), 8, 100 * 100 * 66)
        (100, 100, 50)
    """
    options = []
    for n in shape:
        opts = [(c, min(n, c + 2 * halo), math.ceil(n / c)) for c in _axis_cores(int(n))]
        options.append(opts)
    best: tuple | None = None
    for combo in itertools.product(*options):
        patch = combo[0][1] * combo[1][1] * combo[2][1]
        if patch > max_patch_voxels:
            continue
        tiles = combo[0][2] * combo[1][2] * combo[2][2]
        key = (tiles * patch, tiles)
        if best is None or key < best[0]:
            best = (key, tuple(c[0] for c in combo))
    return None if best is None else best[1]  # type: ignore[return-value]


def _blend_weights(read: slice, core: slice, floor: float) -> np.ndarray:
    """1 on the core, falling linearly to ``floor`` at the window's edges."""
    pos = np.arange(read.start, read.stop, dtype=np.float64)
    w = np.ones(pos.size)
    left, right = core.start - read.start, read.stop - core.stop
    if left > 0:
        d = core.start - pos
        w = np.where(d > 0, 1.0 - (1.0 - floor) * d / left, w)
    if right > 0:
        d = pos - (core.stop - 1)
        w = np.where(d > 0, 1.0 - (1.0 - floor) * d / right, w)
    return w


class Stitcher:
    """Writes patch results into one preallocated float32 output array.

    Args:
        out: The output array (float32, the volume's shape); written in place.
        tiles: The plan (needed for blending, to normalise the weights).
        blend: ``False``: copy each tile's core (exact with a full halo).
            ``True``: weighted average of whole windows (for halos smaller
            than the receptive radius); ``out`` is zeroed first.
        floor: Lowest blending weight (> 0), relative to 1 on a core.

    Example:
        >>> out = np.empty((6, 6, 6), np.float32)
        >>> tiles = plan_tiles(out.shape, 4, 1)
        >>> st = Stitcher(out, tiles, blend=True)
        >>> for t in tiles:
        ...     st.add(t, np.full(t.shape, 2.0, np.float32))
        >>> bool(np.allclose(out, 2.0))
        True
    """

    def __init__(self, out: np.ndarray, tiles: Sequence[Tile] = (), blend: bool = False,
                 floor: float = BLEND_FLOOR) -> None:
        if out.dtype != np.float32 or out.ndim != 3:
            raise MrisrError(f"output must be a 3D float32 array, got {out.dtype} of shape {out.shape}")
        if not 0 < floor <= 1:
            raise MrisrError(f"blend floor must be in (0, 1], got {floor}")
        self.out = out
        self.blend = blend
        self._weights: dict[tuple[int, int, int], np.ndarray] = {}
        if blend:
            out[...] = 0.0
            self._weights = _normalised_weights(out.shape, tiles, floor)

    def add(self, tile: Tile, patch: np.ndarray) -> None:
        """Write one patch result (shape ``tile.shape``) into the output."""
        if tuple(patch.shape) != tile.shape:
            raise MrisrError(f"patch result has shape {tuple(patch.shape)}, expected {tile.shape}")
        if not self.blend:
            self.out[tile.core] = patch[tile.inner]
            return
        r = tile.read
        wx = self._weights[(0, r[0].start, tile.index[0])]
        wy = self._weights[(1, r[1].start, tile.index[1])]
        wz = self._weights[(2, r[2].start, tile.index[2])]
        self.out[r] += patch * (wx[:, None, None] * wy[None, :, None] * wz[None, None, :])


def _normalised_weights(shape: Sequence[int], tiles: Sequence[Tile], floor: float) -> dict:
    """Per-axis blending weights divided by their sum over the axis' spans.

    The tiles form a Cartesian grid and each tile's weight is a product of
    per-axis weights, so the sum over tiles factorises per axis too.
    """
    if not tiles:
        raise MrisrError("blending needs the list of tiles")
    out: dict[tuple[int, int, int], np.ndarray] = {}
    for axis in range(3):
        spans = {(t.index[axis], t.read[axis].start): (t.read[axis], t.core[axis]) for t in tiles}
        raw = {key: _blend_weights(r, c, floor) for key, (r, c) in spans.items()}
        total = np.zeros(int(shape[axis]))
        for key, (r, _c) in spans.items():
            total[r] += raw[key]
        for key, (r, _c) in spans.items():
            out[(axis, key[1], key[0])] = (raw[key] / total[r]).astype(np.float32)
    return out


def batches(tiles: Sequence[Tile], size: int) -> Iterator[list[Tile]]:
    """Consecutive groups of at most ``size`` tiles.

    Example:
        >>> [len(b) for b in batches(plan_tiles((9, 9, 9), 3, 0), 10)]
        [10, 10, 7]
    """
    if size < 1:
        raise MrisrError(f"batch size must be >= 1, got {size}")
    for i in range(0, len(tiles), size):
        yield list(tiles[i:i + size])


def replicate(block: np.ndarray, scale: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour refinement: each voxel repeated ``scale`` times per axis (``block`` itself for a scale
    of 1 everywhere).

    Example:
        >>> replicate(np.arange(2.0).reshape(2, 1, 1), (2, 1, 2)).ravel().tolist()
        [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    """
    for axis, s in enumerate(scale):
        if s != 1:
            block = np.repeat(block, s, axis=axis)
    return block


def apply_tiled(data: np.ndarray, predict: Callable[[np.ndarray], np.ndarray], core: int | Sequence[int],
                halo: int | Sequence[int], *, blend: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """Apply a patch-wise ``predict`` over ``data`` and stitch the results.

    A reference implementation (one patch at a time, no skipping) used by
    tests and small jobs; :func:`mrisr.inference.runner.run_tiles` batches on its own.

    Args:
        data: 3D input volume.
        predict: Maps a patch to a same-shape result.
        core: Core size (see :func:`plan_tiles`).
        halo: Context voxels each side.
        blend: Use blending instead of core copying.
        out: Preallocated float32 output (allocated if ``None``).

    Returns:
        The stitched float32 volume.
    """
    tiles = plan_tiles(data.shape, core, halo)
    out = np.empty(data.shape, np.float32) if out is None else out
    stitcher = Stitcher(out, tiles, blend=blend)
    for tile in tiles:
        stitcher.add(tile, np.asarray(predict(data[tile.read]), dtype=np.float32))
    return out
