"""Where the network runs (mrisr.evaluation.masks.network_mask): the head of a noisy or clean background, holes filled,
dilated by the receptive radius on the output grid, decided on a coarse grid of the factors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mrisr.evaluation.masks import background_threshold, block_mean, coarse_block, drop_specks, network_mask


def ball(shape, radius, centre=None) -> np.ndarray:
    centre = [(n - 1) / 2 for n in shape] if centre is None else centre
    grid = np.indices(shape, dtype=np.float32)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def within(mask: np.ndarray, core: np.ndarray, radius: int) -> np.ndarray:
    """``core`` grown by ``radius`` voxels (a box, like the network's receptive field)."""
    return ndimage.maximum_filter(core.view(np.uint8), size=2 * radius + 1, mode="constant").view(bool)


@pytest.mark.parametrize("noise", [0.0, 5.0, 15.0])
def test_head_in_a_noisy_background_dilated_by_the_radius(noise):
    rng = np.random.default_rng(0)
    head = ball((36, 32, 28), 9)
    x = np.abs(head * rng.uniform(200, 300, head.shape) + rng.normal(0, noise, head.shape)).astype(np.float32)
    mask = network_mask(x, 3, floor=2.5)
    assert mask[within(mask, head, 3)].all()           # the head and the network's reach around it
    assert not mask[~within(mask, head, 6)].any()      # no background beyond the smoothing's extra reach


def test_holes_are_filled_and_specks_dropped():
    x = np.zeros((30, 30, 30), np.float32)
    x[ball(x.shape, 11)] = 300.0
    x[ball(x.shape, 6)] = 0.0        # a dark cavity inside the head (ventricles)
    x[1, 1, 1] = 300.0               # a speck far from it
    mask = network_mask(x, 1, floor=3.0)
    assert mask[ball(x.shape, 6)].all() and not mask[:3, :3, :3].any()


def test_a_coarse_block_gives_a_block_constant_mask_that_still_covers_the_reach():
    rng = np.random.default_rng(1)
    head = ball((40, 36, 30), 10)
    x = np.abs(head * 250 + rng.normal(0, 8, head.shape)).astype(np.float32)
    mask = network_mask(x, 5, block=(2, 2, 3), floor=2.5)
    assert mask.shape == x.shape and mask[within(mask, head, 5)].all()
    blocks = mask[:40, :36, :30].reshape(20, 2, 18, 2, 10, 3)
    assert (blocks.all(axis=(1, 3, 5)) == blocks.any(axis=(1, 3, 5))).all()


def test_no_background_means_everywhere_and_nothing_above_the_floor_means_nowhere():
    x = np.random.default_rng(2).uniform(60, 300, (12, 11, 10)).astype(np.float32)
    assert network_mask(x, 2).all() and network_mask(np.full((6, 6, 6), 5.0, np.float32), 2).all()
    assert not network_mask(np.zeros((6, 7, 8), np.float32), 2, floor=0.01).any()
    assert not network_mask(np.full((6, 7, 8), 1e-3, np.float32), 2, floor=0.01).any()


def test_the_threshold_stays_above_the_background_noise():
    rng = np.random.default_rng(3)
    smooth = np.concatenate([rng.normal(20, 2, 5000), rng.normal(400, 30, 5000)]).astype(np.float32)
    threshold = background_threshold(smooth)
    assert 20 + 4 * 2 < threshold < 400 - 3 * 30  # half of Otsu (29 here: the gap's low end) would be 15


@pytest.mark.parametrize("shape,factors,block", [
    ((100, 100, 100), (2.0, 2.0, 2.0), (2, 2, 2)), ((100, 100, 100), (1.0, 1.0, 3.7), (1, 1, 3)),
    ((100, 100, 100), (0.5, 1.0, 1.0), (1, 1, 1)), ((100, 100, 100), None, (1, 1, 1)),
    ((400, 400, 400), None, (4, 4, 4)),
])
def test_coarse_block_follows_the_factors_and_caps_the_grid(shape, factors, block):
    assert coarse_block(shape, factors) == block


def test_block_mean_and_drop_specks():
    x = np.arange(27.0, dtype=np.float32).reshape(3, 3, 3) - 13
    assert block_mean(x, (3, 3, 3)).item() == pytest.approx(np.abs(x).mean())
    assert block_mean(x, (2, 2, 2)).shape == (2, 2, 2) and block_mean(x, (2, 2, 2))[1, 1, 1] == 13.0
    m = np.zeros((20, 20, 20), bool)
    m[:8, :8, :8] = m[12:16, 12:16, 12:16] = True   # 512 and 64 voxels: both kept
    m[19, 0, 19] = True                             # 1 voxel: dropped
    assert drop_specks(m).sum() == 512 + 64
