"""The papers' networks: parameter counts, shapes, receptive fields (measured),
tiled exactness through the engine, shift equivariance of learned upsampling,
serialisation, and that a few Adam steps fit a tiny synthetic volume."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mrisr.archs import from_preset
from mrisr.archs.critics import LyuCritic, SRGANCritic
from mrisr.archs.georgescu import Georgescu, GeorgescuStage
from mrisr.archs.lyu import CIRCLE_WIDTHS, GANCircle, GANCircleGenerator, GanCpceGenerator
from mrisr.archs.mdcsrn import MDCSRN
from mrisr.archs.receptive import lr_radius
from mrisr.archs.recnn import ReCNN
from mrisr.archs.rrlsrn import RRLSRN, up_kernel
from mrisr.archs.shuffle import pixel_shuffle_3d
from mrisr.archs.srcnn3d import SRCNN3D
from mrisr.errors import MrisrError
from mrisr.inference.engine import enhance, whole_volume
from mrisr.inference.model_card import LoadedModel, architecture_name, example_card, instantiate, save_model
from mrisr.training.gan import super_resolve

FP32 = dict(device="cpu", precision="fp32")


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def conv_params(cin: int, cout: int, kernel_voxels: int) -> int:
    return cin * cout * kernel_voxels + cout


# ----------------------------------------------------------------------------- parameter counts


def test_pham_presets_match_the_formula():
    for preset, depth in (("pham-10l", 10), ("pham-20l", 20)):
        expected = conv_params(1, 64, 27) + (depth - 2) * conv_params(64, 64, 27) + conv_params(64, 1, 27)
        net = from_preset("recnn", preset)
        assert n_params(net) == expected and net.receptive_radius == depth
    assert n_params(from_preset("recnn", "pham-10l")) == 888_769
    srcnn = from_preset("srcnn3d", "pham")  # f = 9, 1, 5; n = 64, 32
    assert n_params(srcnn) == conv_params(1, 64, 729) + conv_params(64, 32, 1) + conv_params(32, 1, 125) == 52_801


def mdcsrn_formula(b: int, u: int, k: int) -> int:
    """Our reading of Chen et al. section 3.3, counted by hand."""
    total = conv_params(1, 2 * k, 27)  # stem
    block_out = 2 * k + u * k
    for i in range(b):
        total += conv_params(2 * k + i * block_out, 2 * k, 1)  # compressor
        for j in range(u):
            cin = 2 * k + j * k
            if cin > 4 * k:  # DenseNet-BC bottleneck
                total += conv_params(cin, 4 * k, 1) + conv_params(4 * k, k, 27)
            else:
                total += conv_params(cin, k, 27)
    return total + conv_params(b * block_out, 1, 1)  # direct combination


@pytest.mark.parametrize("blocks, units, growth, paper", [
    (4, 4, 12, 0.22e6), (8, 4, 12, 0.49e6), (6, 4, 12, 0.35e6), (4, 4, 8, 0.10e6), (4, 4, 16, 0.41e6)])
def test_mdcsrn_parameter_counts_match_the_paper(blocks, units, growth, paper):
    net = MDCSRN(blocks, units, growth)
    assert n_params(net) == mdcsrn_formula(blocks, units, growth)
    assert abs(n_params(net) / paper - 1) < 0.05  # Chen et al. Table 1 rounds to 0.01M; all within 4%


def test_mdcsrn_presets():
    assert n_params(from_preset("mdcsrn", "b4u4")) == 227_809
    assert n_params(from_preset("mdcsrn", "b8u4")) == 482_593
    assert from_preset("mdcsrn", "b4u4").receptive_radius == 17
    assert from_preset("mdcsrn", "b8u4").receptive_radius == 33


def test_rrlsrn_parameter_count():
    for scale in ((2, 2, 2), (1, 1, 4)):
        kvox = int(np.prod([up_kernel(s)[0] for s in scale]))
        expected = (conv_params(1, 64, 27) + 11 * conv_params(64, 64, 27) + conv_params(64, 64, kvox)
                    + conv_params(1, 1, kvox) + conv_params(64, 1, 27))
        assert n_params(from_preset("rrlsrn", "song", scale=scale)) == expected
    assert n_params(from_preset("rrlsrn", "song", scale=(2, 2, 2))) == 1_483_010


def georgescu_stage_formula(shuffle_channels: int, w: int = 32) -> int:
    """Georgescu et al. section III.A: 10 slice-wise 3x3 layers (9 weights per input channel)."""
    return (conv_params(1, w, 9) + 4 * conv_params(w, w, 9) + conv_params(w, shuffle_channels, 9)
            + conv_params(1, w, 9) + 2 * conv_params(w, w, 9) + conv_params(w, 1, 9))


def test_georgescu_parameter_counts():
    assert n_params(Georgescu((2, 2, 2))) == georgescu_stage_formula(4) + georgescu_stage_formula(2) == 114_568
    assert n_params(Georgescu((1, 1, 4))) == georgescu_stage_formula(4)  # in-plane stage left out
    assert n_params(Georgescu((2, 2, 1))) == georgescu_stage_formula(4)
    assert [type(s) for s in Georgescu((2, 2, 2)).stages] == [GeorgescuStage, GeorgescuStage]


def test_lyu_parameter_counts():
    w = 32
    encoder = conv_params(1, w, 27) + 3 * conv_params(w, w, 27)
    decoder = 3 * conv_params(w, w, 27) + 3 * conv_params(2 * w, w, 1) + conv_params(w, 1, 27)  # with conveying paths
    cpce = encoder + decoder
    assert n_params(from_preset("gan-cpce", "lyu")) == cpce == 174_081
    chans = [1, *CIRCLE_WIDTHS]
    total = sum(CIRCLE_WIDTHS)
    circle = sum(conv_params(a, b, 27) for a, b in zip(chans[:-1], chans[1:])) + conv_params(total, 64, 1) \
        + conv_params(total, 32, 1) + conv_params(32, 32, 27) + conv_params(96, 1, 27)
    assert len(CIRCLE_WIDTHS) == 12
    assert n_params(from_preset("gan-circle-generator", "lyu")) == circle
    assert n_params(from_preset("gan-circle", "lyu")) == 2 * circle


def test_critic_shapes_and_flattened_head():
    assert SRGANCritic(width=2)(torch.zeros(2, 1, 9, 7, 8)).shape == (2,)
    flat = SRGANCritic(width=2, patch_size=[16, 16, 8])
    assert flat.dense.in_features == 16  # 512/32 filters x (16 -> 1, 16 -> 1, 8 -> 1 voxels)
    assert flat(torch.zeros(1, 1, 16, 16, 8)).shape == (1,)
    with pytest.raises(ValueError, match="patches of"):
        flat(torch.zeros(1, 1, 8, 8, 8))
    assert LyuCritic("cpce", width=2, patch_size=8).dense.in_features == 8 * 1  # 8 -> 4 -> 2 -> 1 voxels
    assert LyuCritic("cpce", width=2)(torch.zeros(3, 1, 6, 6, 6)).shape == (3,)
    with pytest.raises(MrisrError, match="critic kind"):
        LyuCritic("vgg")


# ----------------------------------------------------------------------------- shapes


INTERPOLATED_PRESETS = [("recnn", "pham-10l"), ("recnn", "pham-20l"), ("srcnn3d", "pham"), ("mdcsrn", "b4u4"),
                        ("mdcsrn", "b8u4"), ("gan-cpce", "lyu"), ("gan-circle-generator", "lyu"), ("gan-circle", "lyu")]


@pytest.mark.parametrize("arch, preset", INTERPOLATED_PRESETS)
def test_interpolated_presets_keep_the_shape(arch, preset):
    net = from_preset(arch, preset).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 5, 6, 7)).shape == (1, 1, 5, 6, 7)
    assert net.upsampling is None and net.in_channels == 1 and isinstance(net.receptive_radius, int)


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4), (2, 2, 1), (3, 1, 2)])
def test_learned_upsampling_output_shapes(scale):
    lr = torch.rand(2, 1, 4, 3, 5)
    expected = (2, 1, 4 * scale[0], 3 * scale[1], 5 * scale[2])
    song = RRLSRN(scale, depth=3, width=4)
    geo = Georgescu(scale, width=4)
    with torch.no_grad():
        assert song(lr).shape == expected
        mid, out = geo.forward_with_intermediate(lr)
        assert mid.shape == out.shape == expected and torch.equal(out, geo(lr))
    assert song.upsampling == geo.upsampling == scale


def test_learned_upsampling_presets_run():
    with torch.no_grad():
        assert from_preset("rrlsrn", "song", scale=(2, 2, 2))(torch.rand(1, 1, 3, 3, 3)).shape == (1, 1, 6, 6, 6)
        geo = from_preset("georgescu", "georgescu", scale=(1, 1, 4))
        assert geo(torch.rand(1, 1, 3, 3, 3)).shape == (1, 1, 3, 3, 12)


def test_pixel_shuffle_3d_matches_torch_in_2d_and_fills_blocks():
    x = torch.randn(2, 3 * 4, 4, 5, 2)
    ours = pixel_shuffle_3d(x, (2, 2, 1))
    for z in range(2):  # with no factor on the third axis it is torch's 2D shuffle, slice by slice
        torch.testing.assert_close(ours[..., z], F.pixel_shuffle(x[..., z], 2))
    y = torch.randn(1, 2 * 12, 2, 3, 2)
    out = pixel_shuffle_3d(y, (3, 2, 2))
    assert out.shape == (1, 2, 6, 6, 4)
    for c, i, j, k in itertools.product(range(2), range(3), range(2), range(2)):
        torch.testing.assert_close(out[0, c, i::3, j::2, k::2], y[0, c * 12 + (i * 2 + j) * 2 + k])
    with pytest.raises(ValueError, match="multiple"):
        pixel_shuffle_3d(torch.zeros(1, 3, 1, 1, 1), (2, 1, 1))


# ----------------------------------------------------------------------------- receptive fields


def positive_linear(net: nn.Module) -> nn.Module:
    """float64, positive weights, zero biases: every path from a positive input voxel adds a positive
    amount and nothing else moves (a zero input gives exactly zero), so the support of the response to
    one voxel is exactly the receptive field, with no cancellation and no dead units."""
    net = net.double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                m.weight.abs_()
                m.bias.zero_()
    return net


def response_extent(net: nn.Module, shape, axis: int, scale: int = 1) -> int:
    """Farthest output block (in input voxels) along ``axis`` that one input voxel changes."""
    x = torch.zeros((1, 1, *shape), dtype=torch.float64)
    centre = shape[axis] // 2
    idx = [s // 2 for s in shape]
    with torch.no_grad():
        base = net(x)
        x[(0, 0, *idx)] = 1.0
        changed = (net(x) - base) != 0
    assert torch.equal(base, torch.zeros_like(base))
    other = tuple(d for d in (2, 3, 4) if d != axis + 2)
    hits = changed[0, 0].permute(axis, *[d - 2 for d in other]).flatten(1).any(dim=1).nonzero().flatten()
    blocks = hits // scale
    return int(max(centre - blocks.min(), blocks.max() - centre))


RF_CASES = [  # the presets' topology (depth, kernels) with narrow layers
    ("srcnn3d", lambda: SRCNN3D(widths=(3, 2))),
    ("pham-10l", lambda: ReCNN(10, 3)),
    ("pham-20l", lambda: ReCNN(20, 3)),
    ("b4u4", lambda: MDCSRN(4, 4, 2)),
    ("b8u4", lambda: MDCSRN(8, 4, 2)),
    ("gan-cpce", lambda: GanCpceGenerator(width=3)),
    ("gan-circle", lambda: GANCircle(widths=[2] * 12, recon=[2, 2])),
]


@pytest.mark.parametrize("name, build", RF_CASES, ids=[c[0] for c in RF_CASES])
def test_receptive_radius_is_measured_exactly(name, build):
    torch.manual_seed(0)
    net = positive_linear(build())
    r = net.receptive_radius
    for axis in range(3):
        shape = [9, 9, 9]
        shape[axis] = 2 * r + 7
        assert response_extent(net, shape, axis) == r, (name, axis)
    assert r == {"srcnn3d": 6, "pham-10l": 10, "pham-20l": 20, "b4u4": 17, "b8u4": 33, "gan-cpce": 8,
                 "gan-circle": 14}[name]


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4), (3, 1, 2)])
def test_learned_upsampling_receptive_radius_is_measured_exactly(scale):
    torch.manual_seed(0)
    for net in (RRLSRN(scale, depth=4, width=2), Georgescu(scale, width=2)):
        net = positive_linear(net)
        per_axis = []
        for axis in range(3):
            shape = [5, 5, 5]
            shape[axis] = 2 * net.receptive_radius + 5
            per_axis.append(response_extent(net, shape, axis, scale[axis]))
        assert max(per_axis) == net.receptive_radius
        if isinstance(net, Georgescu):
            assert per_axis == [lr_radius([st.up_stages(a) for st in net.stages]) for a in range(3)]
    assert RRLSRN(scale).receptive_radius == 13


# ----------------------------------------------------------------------------- tiled exactness


def random_biases(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-zero biases: zero biases would hide border mistakes."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


def loaded(net: nn.Module) -> LoadedModel:
    card = example_card(receptive_radius=net.receptive_radius,
                        architecture={"name": architecture_name(net), "params": net.config()})
    return LoadedModel("test", card, net, "0" * 64, None)


TILE_CASES = [
    ("srcnn3d", lambda: SRCNN3D(widths=(4, 3))),
    ("recnn", lambda: ReCNN(6, 4)),
    ("mdcsrn", lambda: MDCSRN(2, 2, 3)),
    ("mdcsrn-skip", lambda: MDCSRN(2, 2, 3, global_skip=True)),
    ("gan-cpce", lambda: GanCpceGenerator(width=3)),
    ("gan-circle-generator", lambda: GANCircleGenerator(widths=[3, 3, 2, 2], recon=[2, 2])),
    ("gan-circle", lambda: GANCircle(widths=[3, 2], recon=[2, 2])),
]


@pytest.mark.parametrize("name, build", TILE_CASES, ids=[c[0] for c in TILE_CASES])
def test_tiled_inference_equals_a_whole_volume_pass(name, build):
    net = random_biases(build())
    r = net.receptive_radius
    n = 2 * r + 13
    x = np.random.default_rng(0).uniform(0.2, 1.0, (n, n - 2, 11)).astype(np.float32) * 300
    out, stats = enhance(x, loaded(net), patch_size=(2 * r + 8, 2 * r + 8, 64), **FP32)
    assert stats.n_patches >= 4 and not stats.blended and stats.halo == r
    np.testing.assert_allclose(out, whole_volume(x, net), atol=1e-5 * stats.scale, rtol=0)


def test_conditioned_network_through_the_engine():
    net = random_biases(MDCSRN(1, 2, 3, cond_dim=3))
    x = np.random.default_rng(1).uniform(0.2, 1.0, (20, 9, 9)).astype(np.float32) * 100
    out, stats = enhance(x, loaded(net), patch_size=(14, 64, 64), factors=(1, 1, 4), **FP32)
    assert stats.n_patches > 1
    np.testing.assert_allclose(out, whole_volume(x, net, factors=(1, 1, 4)), atol=1e-5 * stats.scale, rtol=0)
    other, _ = enhance(x, loaded(net), factors=(2, 2, 2), **FP32)
    assert np.abs(other - out).max() > 0
    with pytest.raises(ValueError, match="pass cond"):
        net(torch.zeros(1, 1, 4, 4, 4))


# ----------------------------------------------------------------------------- learned upsampling


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4), (3, 1, 2)])
def test_shifting_the_input_shifts_the_output_by_the_scale(scale):
    torch.manual_seed(0)
    for net in (random_biases(RRLSRN(scale, depth=3, width=3)), random_biases(Georgescu(scale, width=3))):
        r = net.receptive_radius
        n = 2 * r + 4
        lr = torch.rand(1, 1, n, n, n)
        with torch.no_grad():
            out = net(lr)
            for axis in range(3):
                s = scale[axis]
                shifted = net(lr.narrow(axis + 2, 1, n - 1))  # drop the first voxel: a shift by one
                # Outputs of blocks r+1 .. n-r-2 of the original see no border in either pass.
                a = out.narrow(axis + 2, (r + 1) * s, (n - 2 * r - 2) * s)
                b = shifted.narrow(axis + 2, r * s, (n - 2 * r - 2) * s)
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_georgescu_stage_validates_its_plane():
    with pytest.raises(ValueError, match="outside plane"):
        GeorgescuStage((1, 1, 2), plane=(0, 1))
    with pytest.raises(ValueError, match="scale"):
        Georgescu((1, 1, 1))
    with pytest.raises(ValueError, match="scale"):
        RRLSRN((2, 2))
    with pytest.raises(ValueError, match="scale"):
        RRLSRN((2, 1.5, 1))


def test_rrlsrn_starts_near_linear_interpolation():
    torch.manual_seed(0)
    net = RRLSRN((2, 2, 2), depth=3, width=4)
    lr = torch.ones(1, 1, 6, 6, 6)
    with torch.no_grad():
        image = net.up_image(lr)
    torch.testing.assert_close(image[..., 1:-1, 1:-1, 1:-1], torch.ones(1, 1, 10, 10, 10))  # weights sum to 1


# ----------------------------------------------------------------------------- serialisation


ALL_TINY = [
    lambda: SRCNN3D(widths=(2, 2), cond_dim=3),
    lambda: MDCSRN(1, 2, 2, global_skip=True),
    lambda: GanCpceGenerator(width=2),
    lambda: GANCircleGenerator(widths=[2, 2], recon=[2, 2], dropout=0.1),
    lambda: GANCircle(widths=[2], recon=[1, 1]),
    lambda: RRLSRN((1, 2, 3), depth=2, width=2),
    lambda: Georgescu((2, 2, 3), width=2),
]


@pytest.mark.parametrize("build", ALL_TINY)
def test_config_round_trips_through_a_model_card(build, tmp_path):
    net = build()
    card = save_model(net, tmp_path / "m", training={"data": "none", "input_spacing_mm": [1, 3], "factor": [1, 3]})
    assert card.architecture["params"] == json.loads(json.dumps(net.config()))
    back = instantiate(card).network
    assert type(back) is type(net) and back.config() == net.config() and back.receptive_radius == card.receptive_radius
    for (k, a), (_, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k


def test_from_preset_errors_name_the_presets():
    with pytest.raises(MrisrError, match="b4u4"):
        from_preset("mdcsrn", "b4u5")
    with pytest.raises(ValueError, match="cond_dim"):
        MDCSRN(cond_dim=2)


# ----------------------------------------------------------------------------- training


def blobs(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random blobs on a bright ball, ``(1, 1, n, n, n)``, values in about [0, 1.5]."""
    g = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n)] * 3, indexing="ij"))
    rng = np.random.default_rng(seed)
    vol = torch.sigmoid(8 * (0.8 - g.pow(2).sum(0)))  # a smooth ball
    for _ in range(8):
        c = torch.tensor(rng.uniform(-0.6, 0.6, 3), dtype=torch.float32)[:, None, None, None]
        vol += float(rng.uniform(-0.5, 0.5)) * torch.exp(-((g - c) ** 2).sum(0) / float(rng.uniform(0.01, 0.05)))
    return vol.clamp(min=0)[None, None]


def fit(net: nn.Module, loss_fn, steps: int = 12, lr: float = 3e-3) -> tuple[float, float]:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


INTERP_TRAIN = [
    lambda: SRCNN3D(widths=(4, 3), kernels=(5, 1, 3)),
    lambda: MDCSRN(2, 2, 3),
    lambda: GanCpceGenerator(width=4),
    lambda: GANCircle(widths=[4, 3, 2], recon=[2, 2]),
]


@pytest.mark.parametrize("build", INTERP_TRAIN)
def test_a_few_adam_steps_reduce_the_loss_interpolated(build):
    torch.manual_seed(0)
    hr = blobs()
    x = F.interpolate(F.avg_pool3d(hr, (1, 1, 4)), size=hr.shape[2:], mode="trilinear", align_corners=False)
    net = build()
    first, last = fit(net, lambda: (super_resolve(net, x) - hr).abs().mean())
    assert last < 0.9 * first


@pytest.mark.parametrize("kind", ["rrlsrn", "georgescu"])
def test_a_few_adam_steps_reduce_the_loss_learned_upsampling(kind):
    torch.manual_seed(0)
    hr = blobs()
    lr = F.avg_pool3d(hr, 2)
    if kind == "rrlsrn":
        net = RRLSRN((2, 2, 2), depth=3, width=4)
        loss = lambda: (net(lr) - hr).abs().mean()  # noqa: E731
    else:
        net = Georgescu((2, 2, 2), width=4)

        def loss():  # Georgescu et al. Eq. 5: final plus intermediate loss
            mid, out = net.forward_with_intermediate(lr)
            return (out - hr).abs().mean() + (mid - hr).abs().mean()
    first, last = fit(net, loss)
    assert last < 0.9 * first
