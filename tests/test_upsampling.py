"""Learned-upsampling inference (mrisr.inference.upsampling): refined grid, exact tiling, the pipeline branch."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

import mrisr
from mrisr.archs.georgescu import Georgescu
from mrisr.archs.rrlsrn import RRLSRN
from mrisr.errors import MrisrError
from mrisr.evaluation.masks import network_mask
from mrisr.geometry.grid import target_grid
from mrisr.geometry.resample import resample_to_grid
from mrisr.inference.engine import BACKGROUND
from mrisr.inference.intensity import robust_scale
from mrisr.inference.model_card import LoadedModel, example_card
from mrisr.inference.upsampling import (
    grid_on_refined,
    placed_scale,
    placement,
    refined_grid,
    replicate,
    upsample,
    whole_volume_upsample,
)

OBLIQUE = np.array([[1.8, 0.3, 0.0, -20.0], [-0.2, 1.9, 0.4, 10.0], [0.1, -0.3, 3.1, 5.0], [0, 0, 0, 1.0]])


class Replicate(nn.Module):
    """An identity-like learned-upsampling network: nearest-neighbour replication by ``scale``."""

    in_channels, cond_dim, receptive_radius = 1, 0, 0

    def __init__(self, scale: tuple[int, int, int]) -> None:
        super().__init__()
        self.upsampling = scale

    def forward(self, lr: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        for axis, s in enumerate(self.upsampling):
            lr = lr.repeat_interleave(s, dim=2 + axis)
        return lr


def _loaded(net: nn.Module, name: str = "up") -> LoadedModel:
    card = example_card(name=name, receptive_radius=int(net.receptive_radius))
    return LoadedModel(name, card, net.eval(), "0" * 64, None)


def _jittered(net: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net.eval()


def test_refined_grid_is_the_edge_aligned_contract_grid() -> None:
    scale = (2, 3, 1)
    g = refined_grid(OBLIQUE, (7, 5, 4), scale)
    assert g.shape == (14, 15, 4)
    s = np.asarray(scale, float)
    # Refined voxel k sits at input coordinate (1/s - 1)/2 + k/s: blocks [i*s, (i+1)*s) tile input voxel i.
    expected = OBLIQUE @ np.block([[np.diag(1 / s), ((1 / s - 1) / 2)[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])
    np.testing.assert_allclose(g.affine, expected, atol=1e-12)
    np.testing.assert_allclose(np.asarray(g.offsets) - np.asarray(g.ratios) / 2, -0.5, atol=1e-12)  # shared outer edge


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.45, 2.0), (0.9, 0.6, 3.1)])
def test_the_final_grid_is_the_same_contract_grid_as_every_method(spacing) -> None:
    shape, scale = (7, 5, 4), (2, 3, 1)
    grid = target_grid(OBLIQUE, shape, spacing)
    ref = refined_grid(OBLIQUE, shape, scale)
    on_ref = grid_on_refined(grid, scale)
    direct = target_grid(ref.affine, ref.shape, spacing)  # the contract applied to the refined volume
    assert on_ref.shape == direct.shape == grid.shape
    np.testing.assert_allclose(on_ref.affine, grid.affine)
    for axis in range(3):
        np.testing.assert_allclose(on_ref.positions(axis), direct.positions(axis), atol=1e-9)
    # Every output voxel's world position, through the refined grid, is where the contract puts it (1e-5 voxel).
    j = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    q = np.stack([on_ref.positions(a)[j[:, a]] for a in range(3)], 1)
    world_via_refined = (ref.affine @ np.c_[q, np.ones(len(q))].T)[:3]
    world = (grid.affine @ np.c_[j, np.ones(len(j))].T)[:3]
    voxel = np.linalg.solve(OBLIQUE[:3, :3], world_via_refined - world)
    assert np.abs(voxel).max() < 1e-5


@pytest.mark.parametrize("net, shape", [(RRLSRN((2, 2, 1), depth=3, width=4), (21, 17, 11)),
                                        (RRLSRN((1, 1, 3), depth=2, width=4), (9, 10, 13)),
                                        (Georgescu((2, 2, 2), width=3), (33, 30, 9))])
def test_tiles_equal_a_whole_volume_pass(net: nn.Module, shape) -> None:
    net = _jittered(net)
    data = (np.random.default_rng(0).random(shape) + 0.5).astype(np.float32)
    whole = whole_volume_upsample(data, net)
    out, stats = upsample(data, _loaded(net), device="cpu", precision="fp32",
                          patch_size=2 * net.receptive_radius + 3)
    assert stats.n_patches > 1 and stats.n_skipped == 0
    assert out.shape == tuple(n * s for n, s in zip(shape, net.upsampling))
    np.testing.assert_allclose(out, whole, atol=1e-5 * float(np.abs(whole).max()))


def test_transposed_tiles_equal_a_whole_volume_pass_of_the_transposed_input() -> None:
    net = _jittered(RRLSRN((1, 1, 3), depth=2, width=4))
    data = (np.random.default_rng(0).random((13, 9, 10)) + 0.5).astype(np.float32)
    axes, side = (1, 2, 0), 2 * net.receptive_radius + 3
    whole = whole_volume_upsample(np.ascontiguousarray(data.transpose(axes)), net).transpose(2, 0, 1)
    out, stats = upsample(data, _loaded(net), device="cpu", precision="fp32", patch_size=(side + 2, side, side + 1),
                          axes=axes)
    assert out.shape == (39, 9, 10) and stats.n_patches > 1
    assert stats.patch_size == (side + 2, side, side + 1)  # per input axis, as asked
    np.testing.assert_allclose(out, whole, atol=1e-5 * float(np.abs(whole).max()))
    with pytest.raises(MrisrError, match="permutation"):
        upsample(data, _loaded(net), axes=(0, 0, 1))


def test_background_tiles_repeat_the_input() -> None:
    net = _jittered(RRLSRN((2, 2, 2), depth=2, width=2))
    data = np.zeros((12, 12, 12), np.float32)
    data[:4, :4, :4] = 1.0
    out, stats = upsample(data, _loaded(net), device="cpu", precision="fp32", patch_size=7)
    assert stats.n_skipped > 0
    assert np.all(out[16:, 16:, 16:] == 0.0)


def test_outside_the_head_mask_blocks_repeat_the_input_whatever_the_tiling() -> None:
    net = _jittered(RRLSRN((2, 2, 1), depth=2, width=3))
    rng = np.random.default_rng(2)
    data = np.abs(rng.normal(0, 0.03, (24, 22, 12))).astype(np.float32)  # noisy background
    data[6:15, 5:14, 3:9] += rng.uniform(0.5, 1.0, (9, 9, 6)).astype(np.float32)
    mask = network_mask(data, net.receptive_radius, floor=BACKGROUND * robust_scale(data))
    assert 0.1 < mask.mean() < 0.9
    outside = ~replicate(mask, net.upsampling)
    expected = np.where(outside, replicate(data, net.upsampling), whole_volume_upsample(data, net))
    side = 2 * net.receptive_radius + 3
    for patch in (side, side + 3, (side, 30, side + 1), None):
        out, stats = upsample(data, _loaded(net), device="cpu", precision="fp32", patch_size=patch)
        assert patch is None or stats.n_skipped > 0
        np.testing.assert_allclose(out, expected, atol=1e-5 * float(np.abs(expected).max()), rtol=0)
        assert np.array_equal(out[outside], expected[outside])


def _image(shape=(10, 8, 6), affine=OBLIQUE) -> nib.Nifti1Image:
    rng = np.random.default_rng(1)
    return nib.Nifti1Image((rng.random(shape) * 100 + 50).astype(np.float32), affine)


@pytest.mark.parametrize("factor", [(2, 2, 1), (2.5, 2, 1.5), (3, 4.2, 1)])
def test_upscale_is_network_then_spline_on_the_contract_grid(factor) -> None:
    img, scale = _image(), (2, 2, 1)
    model = _loaded(Replicate(scale))
    out = mrisr.upscale(img, factor=factor, model=model, precision="fp32")
    spline = mrisr.upscale(img, factor=factor, method="spline")
    assert out.shape == spline.shape
    np.testing.assert_allclose(out.affine, spline.affine)
    vol = np.asarray(img.dataobj, np.float32)
    grid = target_grid(img.affine, vol.shape, spline.header.get_zooms()[:3])
    composed = resample_to_grid(replicate(vol, scale), grid_on_refined(grid, scale))
    np.testing.assert_allclose(np.asarray(out.dataobj), composed, rtol=1e-5, atol=1e-3)
    report = out.extra["mrisr_report"]
    assert report.model == "up" and report.patches_run >= 1


def test_at_the_networks_scale_each_output_voxel_lies_in_the_input_voxel_it_copies() -> None:
    img, scale = _image(), (2, 2, 1)
    out = mrisr.upscale(img, factor=scale, model=_loaded(Replicate(scale)), precision="fp32")
    vol, res = np.asarray(img.dataobj), np.asarray(out.dataobj)
    np.testing.assert_allclose(res, replicate(vol, scale), rtol=1e-6)  # the spline step is the identity
    j = np.stack(np.meshgrid(*[np.arange(n) for n in res.shape], indexing="ij"), -1).reshape(-1, 3)
    world = out.affine @ np.c_[j, np.ones(len(j))].T
    coord = (np.linalg.inv(img.affine) @ world)[:3].T
    copied = j // np.asarray(scale)
    assert np.abs(coord - copied).max() <= 0.5 - 0.25 + 1e-5  # inside the copied voxel (block centres at +-1/4)


def test_refuses_a_factor_below_the_scale() -> None:
    model = _loaded(Replicate((2, 2, 2)), "x2")
    with pytest.raises(MrisrError, match=r"refines voxel axis 2 by 2 .* factor along it is 1\.5"):
        mrisr.upscale(_image(), factor=(2, 2, 1.5), model=model)


@pytest.mark.parametrize(("scale", "factors", "axes"), [
    ((1, 1, 4), (4, 4, 4), (0, 1, 2)),      # fits as stored: never transposed
    ((1, 1, 4), (1, 1, 5.5), (0, 1, 2)),
    ((1, 1, 4), (4, 1, 1), (1, 2, 0)),      # slices thick along axis 0 (sagittal)
    ((1, 1, 4), (1, 4.5, 1), (0, 2, 1)),    # along axis 1 (coronal)
    ((2, 2, 1), (1, 2, 2), (1, 2, 0)),
    ((2, 2, 2), (2, 2.5, 3), (0, 1, 2)),
])
def test_placement_puts_the_refined_axes_where_the_factors_allow(scale, factors, axes) -> None:
    assert placement(scale, factors) == axes
    placed = placed_scale(scale, axes)
    assert sorted(placed) == sorted(scale)
    assert all(f >= s - 1e-9 for s, f in zip(placed, factors))


@pytest.mark.parametrize(("scale", "factors"), [((2, 2, 2), (2, 2, 1.5)), ((1, 1, 4), (2, 3, 3.9)),
                                                ((2, 2, 1), (2, 1, 1))])
def test_placement_refuses_factors_no_order_of_the_axes_fits(scale, factors) -> None:
    with pytest.raises(MrisrError, match="refines voxel axis"):
        placement(scale, factors)


def test_thick_slices_along_another_axis_run_through_the_transposed_network() -> None:
    net = _jittered(Georgescu(scale=(1, 1, 2), width=4))
    img = _image((6, 7, 5), OBLIQUE[:, [1, 0, 2, 3]])  # a left-handed, sheared grid
    vol = np.asarray(img.dataobj, np.float32)
    out = mrisr.upscale(img, factor=(2, 1, 1), model=_loaded(net), precision="fp32", consistency=False)
    on_axis_2 = whole_volume_upsample(np.ascontiguousarray(vol.transpose(1, 2, 0)), net)
    expected = on_axis_2.transpose(2, 0, 1)  # back to the stored axes: the scale now refines axis 0
    assert expected.shape == (12, 7, 5)
    np.testing.assert_allclose(np.asarray(out.dataobj), expected, rtol=1e-4, atol=1e-2)
    spline = mrisr.upscale(img, factor=(2, 1, 1), method="spline")
    np.testing.assert_allclose(out.affine, spline.affine, atol=1e-12)  # the contract grid of every method


@pytest.mark.parametrize("ensemble", [None, "median"])
def test_upscaling_a_transposed_image_is_the_transposed_upscale(ensemble) -> None:
    net = _jittered(Georgescu(scale=(1, 1, 2), width=4))
    img = _image((6, 7, 5))
    perm = (2, 0, 1)  # stored axis i of the transposed image is axis perm[i] of the original
    vol = np.asarray(img.dataobj, np.float32)
    moved = nib.Nifti1Image(np.ascontiguousarray(vol.transpose(perm)), img.affine[:, [*perm, 3]])
    kw = {"model": _loaded(net), "precision": "fp32", "ensemble": ensemble}
    as_stored = mrisr.upscale(img, factor=(1, 1, 2), **kw)
    transposed = mrisr.upscale(moved, factor=(2, 1, 1), **kw)  # the refined axis is stored first there
    np.testing.assert_allclose(np.asarray(transposed.dataobj), np.asarray(as_stored.dataobj).transpose(perm),
                               rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(transposed.affine, as_stored.affine[:, [*perm, 3]], atol=1e-9)


def test_a_transposed_replication_copies_the_input_voxel_each_output_voxel_lies_in() -> None:
    img = _image()
    out = mrisr.upscale(img, factor=(1, 2, 1), model=_loaded(Replicate((1, 1, 2))), precision="fp32")
    vol, res = np.asarray(img.dataobj), np.asarray(out.dataobj)
    np.testing.assert_allclose(res, replicate(vol, (1, 2, 1)), rtol=1e-6)
    j = np.stack(np.meshgrid(*[np.arange(n) for n in res.shape], indexing="ij"), -1).reshape(-1, 3)
    coord = (np.linalg.inv(img.affine) @ out.affine @ np.c_[j, np.ones(len(j))].T)[:3].T
    assert np.abs(coord - j // np.array([1, 2, 1])).max() <= 0.25 + 1e-5  # block centres at +-1/4 of the voxel


def test_flip_ensemble_of_a_learned_network_is_the_median_of_its_flipped_passes() -> None:
    torch.manual_seed(0)
    net = Georgescu(scale=(1, 1, 2), width=4).eval()
    img, scale = _image(), (1, 1, 2)
    vol = np.asarray(img.dataobj, np.float32)
    intensity = float(mrisr.inference.intensity.robust_scale(vol))
    passes = []
    for axes in [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]:
        x = np.ascontiguousarray(np.flip(vol, axes))
        passes.append(np.flip(whole_volume_upsample(x, net, intensity), axes))
    out = mrisr.upscale(img, factor=scale, model=_loaded(net), ensemble="median", uncertainty=True,
                        precision="fp32", consistency=False)
    np.testing.assert_allclose(np.asarray(out.dataobj), np.median(passes, axis=0), rtol=1e-4, atol=1e-3)
    std = np.asarray(out.extra["mrisr_std"].dataobj)
    np.testing.assert_allclose(std, np.std(passes, axis=0), rtol=1e-3, atol=1e-3)
    assert std.max() > 0  # Georgescu's slice-wise filters are not flip-symmetric: the passes differ
    report = out.extra["mrisr_report"]
    assert report.uncertainty["passes"] == 8 and report.uncertainty["ensemble"] == "median"
    # At a factor above the scale, combined and std are resampled by the spline onto the contract grid.
    wider = mrisr.upscale(img, factor=(1.5, 1, 2.5), model=_loaded(net), uncertainty=True, precision="fp32")
    spline = mrisr.upscale(img, factor=(1.5, 1, 2.5), method="spline")
    assert wider.shape == spline.shape and np.asarray(wider.extra["mrisr_std"].dataobj).min() >= 0
