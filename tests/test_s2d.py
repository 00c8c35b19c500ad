"""recnn-s2d: the residual network on 2x2x2 blocks; its receptive radius, and tiled inference as exact as
the default's (windows aligned to the blocks, odd volumes padded as the network pads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mrisr.archs.s2d import ReCNNS2D, pixel_unshuffle_3d
from mrisr.archs.shuffle import pixel_shuffle_3d
from mrisr.inference.engine import enhance, make_plan, network_stride, whole_volume
from mrisr.inference.model_card import LoadedModel, example_card
from test_engine import FP32, noisy_head, volume


def random_s2d(depth=3, width=8, tail=4, seed=0, cond_dim=0) -> ReCNNS2D:
    """Non-zero biases and output layers (the initialisation zeroes the refinement's last layer)."""
    torch.manual_seed(seed)
    net = ReCNNS2D(depth, width, tail, cond_dim=cond_dim)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                m.bias.uniform_(-0.3, 0.3)
                if m.weight.abs().max() == 0:
                    m.weight.normal_(0, 0.1)
    return net.eval()


def loaded(net: nn.Module) -> LoadedModel:
    card = example_card(receptive_radius=net.receptive_radius, architecture={"name": "recnn-s2d", "params": {}})
    return LoadedModel("s2d", card, net, "0" * 64, None)


def test_unshuffle_inverts_the_sub_pixel_layer():
    x = torch.randn(2, 3, 4, 6, 8)
    assert pixel_unshuffle_3d(x).shape == (2, 24, 2, 3, 4)
    assert torch.equal(pixel_shuffle_3d(pixel_unshuffle_3d(x), (2, 2, 2)), x)


def test_receptive_radius_is_exact():
    net = random_s2d(depth=3, tail=4)
    x = torch.rand(1, 1, 40, 40, 40)
    y = torch.clone(x)
    y[0, 0, 20, 20, 20] += 1.0
    with torch.no_grad():
        changed = (net(y) - net(x)).abs()[0, 0] > 0
    idx = np.argwhere(changed.numpy())
    reach = int(np.abs(idx - 20).max())
    assert reach <= net.receptive_radius and reach >= net.receptive_radius - 1  # the block's phase: one voxel
    assert ReCNNS2D(8, 32, 8).receptive_radius == 19 and ReCNNS2D(8, 32, 0).receptive_radius == 17


def test_odd_sides_are_padded_like_the_last_slice_repeated():
    net = random_s2d()
    x = torch.rand(1, 1, 9, 10, 7)
    padded = torch.nn.functional.pad(x, (0, 1, 0, 0, 0, 1), mode="replicate")
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), net(padded)[:, :, :9, :10, :7].numpy(), atol=1e-6)


def test_engine_aligns_plans_to_the_blocks():
    net = random_s2d()
    assert network_stride(net) == 2
    plan = make_plan((30, 22, 14), 9, 10**9, patch_size=(15, 22, 9), stride=2)
    assert plan.halo % 2 == 0
    for tile in plan.tiles:
        assert all(s.start % 2 == 0 and (s.stop - s.start) % 2 == 0 for s in tile.read)
        assert all(s.start % 2 == 0 for s in tile.core)


@pytest.mark.parametrize("shape", [(37, 29, 23), (24, 20, 18), (5, 6, 7)])
@pytest.mark.parametrize("patch_size", [23, 26, 31, (24, 64, 30), None])
def test_tiled_matches_whole_volume(shape, patch_size):
    net = random_s2d()
    x = volume(shape)
    out, stats = enhance(x, loaded(net), patch_size=patch_size, **FP32)
    np.testing.assert_allclose(out, whole_volume(x, net), atol=1e-5 * stats.scale, rtol=0)
    assert not stats.blended


def test_output_does_not_depend_on_tiling_with_skipped_tiles():
    net = random_s2d(depth=2, tail=2, cond_dim=3, seed=3)  # receptive radius 7: halo 8
    x = noisy_head((64, 45, 41))
    outs, skipped = [], []
    for patch, batch in [(None, None), (20, 1), (23, 4), (26, 2), ((22, 50, 28), 3)]:
        out, stats = enhance(x, loaded(net), factors=(2, 2, 2), patch_size=patch, batch_size=batch, **FP32)
        outs.append(out)
        skipped.append(stats.n_skipped)
    assert max(skipped[1:]) > 0
    span = float(x.max() - x.min())
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], atol=1e-5 * span, rtol=0)
