"""Tiling and stitching: plans partition the grid, stitching is exact."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from mrisr.errors import MrisrError
from mrisr.inference.tiling import Stitcher, apply_tiled, batches, choose_core, network_voxels, plan_axis, plan_tiles

SHAPES = [(1, 1, 1), (7, 5, 3), (13, 9, 11), (10, 16, 4)]
CORES = [1, 3, 4, 7, 50]


def mean3(x: np.ndarray) -> np.ndarray:
    """3x3x3 mean with zero padding (what a conv3d with padding=1 does)."""
    return ndimage.uniform_filter(x.astype(np.float64), size=3, mode="constant", cval=0.0).astype(np.float32)


def volume(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 1.0, shape).astype(np.float32)


@pytest.mark.parametrize("n,core,halo", list(itertools.product([1, 2, 5, 9, 16], [1, 2, 4, 7, 20], [0, 1, 3])))
def test_axis_plan_partitions_and_holds_halo(n, core, halo):
    spans = plan_axis(n, core, halo)
    covered = np.zeros(n, int)
    sizes = set()
    for read, c in spans:
        covered[c] += 1
        sizes.add(read.stop - read.start)
        assert 0 <= read.start and read.stop <= n
        # the window holds the core widened by the halo, clipped to the axis
        assert read.start <= max(0, c.start - halo) and read.stop >= min(n, c.stop + halo)
    assert np.all(covered == 1)
    assert sizes == {min(n, core + 2 * halo)}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("core", CORES)
def test_tiles_cover_once_with_consistent_slices(shape, core):
    tiles = plan_tiles(shape, core, 2)
    hits = np.zeros(shape, int)
    for t in tiles:
        hits[t.core] += 1
        for r, c, i in zip(t.read, t.core, t.inner):
            assert i.start == c.start - r.start and i.stop == c.stop - r.start
        assert t.shape == tiles[0].shape
    assert np.all(hits == 1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("core", CORES)
def test_stitch_plus_one_is_exact(shape, core):
    x = volume(shape)
    out = apply_tiled(x, lambda p: p + 1, core, 1)
    assert np.array_equal(out, x + 1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("core", CORES)
def test_stitch_mean_filter_equals_whole_volume(shape, core):
    x = volume(shape, seed=1)
    assert np.allclose(apply_tiled(x, mean3, core, 1), mean3(x), atol=1e-6, rtol=0)


def test_halo_matters_for_mean_filter():
    x = volume((13, 9, 11), seed=2)
    assert not np.allclose(apply_tiled(x, mean3, 4, 0), mean3(x), atol=1e-3)


def test_patch_larger_than_volume_is_one_tile():
    tiles = plan_tiles((5, 6, 7), 100, 8)
    assert len(tiles) == 1 and tiles[0].shape == (5, 6, 7)


def test_windows_never_leave_the_volume():
    for t in plan_tiles((11, 4, 9), 3, 5):
        assert all(0 <= s.start and s.stop <= n for s, n in zip(t.read, (11, 4, 9)))


def test_blend_weights_normalise_and_reproduce_constant_offsets():
    x = volume((13, 9, 11), seed=3)
    out = apply_tiled(x, lambda p: p + 1, 4, 2, blend=True)
    assert np.allclose(out, x + 1, atol=1e-5)
    ones = apply_tiled(x, np.ones_like, 3, 2, blend=True)
    assert np.allclose(ones, 1.0, atol=1e-6)


def test_blend_with_short_halo_stays_close():
    x = volume((13, 9, 11), seed=4)
    exact = mean3(x)
    blended = apply_tiled(x, mean3, 3, 1, blend=True)
    assert np.abs(blended - exact).max() < 0.2
    assert np.isfinite(blended).all()


def test_blend_weights_never_reach_zero():
    out = np.empty((9, 9, 9), np.float32)
    tiles = plan_tiles(out.shape, 3, 3)
    st = Stitcher(out, tiles, blend=True)
    assert all(w.min() > 0 for w in st._weights.values())


def test_stitcher_rejects_wrong_shapes_and_types():
    tiles = plan_tiles((4, 4, 4), 2, 1)
    with pytest.raises(MrisrError, match="float32"):
        Stitcher(np.zeros((4, 4, 4)), tiles)
    st = Stitcher(np.zeros((4, 4, 4), np.float32), tiles)
    with pytest.raises(MrisrError, match="expected"):
        st.add(tiles[0], np.zeros((2, 2, 2), np.float32))


@pytest.mark.parametrize("bad", [dict(core=0, halo=1), dict(core=2, halo=-1), dict(core=(2, 2), halo=1),
                                 dict(core=2.5, halo=1)])
def test_bad_plan_arguments_are_refused(bad):
    with pytest.raises(MrisrError):
        plan_tiles((4, 4, 4), **bad)


def test_choose_core_prefers_least_work():
    assert choose_core((40, 30, 20), 4, 10**6) == (40, 30, 20)
    core = choose_core((40, 30, 20), 4, 40 * 30 * 14)
    assert network_voxels((40, 30, 20), core, 4) == 2 * 40 * 30 * 14
    assert choose_core((40, 30, 20), 4, 5**3 - 1) is None  # 1 + 2 * 4 = 9 > 5 sides... none fit


def test_batches_group_in_order():
    tiles = plan_tiles((6, 6, 6), 2, 0)
    groups = list(batches(tiles, 4))
    assert [t for g in groups for t in g] == tiles and max(map(len, groups)) == 4
