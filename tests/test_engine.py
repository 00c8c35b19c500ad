"""The CNN engine: tiled inference equals a whole-volume pass, skipping,
devices and precision, out-of-memory retries, and a tiny end-to-end training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mrisr.archs.recnn import ReCNN
from mrisr.errors import InputError, ModelError, MrisrError
from mrisr.evaluation.masks import network_mask
from mrisr.geometry.grid import block_average_affine, target_grid
from mrisr.geometry.resample import resample_to_grid
from mrisr.inference import device as dev
from mrisr.inference import engine
from mrisr.inference.engine import enhance, make_plan, whole_volume
from mrisr.inference.intensity import robust_scale
from mrisr.inference.model_card import LoadedModel, example_card
from mrisr.inference.tiling import plan_tiles


def loaded(net: nn.Module, radius: int | None = None) -> LoadedModel:
    radius = net.receptive_radius if radius is None else radius
    card = example_card(receptive_radius=radius, architecture={"name": "recnn", "params": {}})
    return LoadedModel("test", card, net.eval(), "0" * 64, None)


def random_net(depth=3, width=4, seed=0) -> ReCNN:
    """A ReCNN with non-zero biases (zero biases would hide border mistakes)."""
    torch.manual_seed(seed)
    net = ReCNN(depth, width)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


def volume(shape, seed=0, low=0.2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, 1.0, shape).astype(np.float32) * 300


FP32 = dict(device="cpu", precision="fp32")


@pytest.mark.parametrize("shape", [(17, 13, 11), (9, 20, 7), (5, 5, 5)])
@pytest.mark.parametrize("patch_size", [8, 11, 16, 64, (8, 64, 11)])
def test_tiled_fp32_matches_whole_volume(shape, patch_size):
    net = random_net()
    x = volume(shape)
    out, stats = enhance(x, loaded(net), patch_size=patch_size, **FP32)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, whole_volume(x, net), atol=1e-5 * stats.scale, rtol=0)
    assert stats.halo == 3 and not stats.blended and stats.n_skipped == 0


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_batch_size_does_not_change_the_result(batch_size):
    net = random_net(depth=4, seed=1)
    x = volume((12, 10, 9), seed=1)
    out, stats = enhance(x, loaded(net), patch_size=12, batch_size=batch_size, **FP32)
    np.testing.assert_allclose(out, whole_volume(x, net), atol=1e-5 * stats.scale, rtol=0)
    assert stats.batch_size == batch_size


def test_zero_filled_halo_would_not_match():
    """Why windows slide inside the volume instead of zero-padding the input:
    with non-zero biases the hidden features past the edge are not zero."""
    net = random_net()
    x = volume((10, 10, 10))
    s = robust_scale(x)
    padded = np.pad(x / s, 3)
    with torch.inference_mode():
        r = net(torch.from_numpy(padded)[None, None])[0, 0, 3:-3, 3:-3, 3:-3].numpy()
    assert np.abs(x + s * r - whole_volume(x, net)).max() > 1e-3 * s


def _expected_with_mask(x, net, mask, reference=None):
    """Whole-volume result inside the mask, the input (bit for bit) outside it."""
    return np.where(mask, whole_volume(x, net, reference=reference), x)


def test_only_the_mask_box_and_its_context_are_run():
    net = random_net()
    x = np.zeros((20, 18, 16), np.float32)
    x[2:9, 3:10, 2:8] = volume((7, 7, 6))
    x[15, 15, 15] = 1e-3 * x.max()  # faint, below the threshold
    out, stats = enhance(x, loaded(net), patch_size=10, **FP32)
    mask = network_mask(x, 3, floor=engine.BACKGROUND * stats.scale)
    near, far = np.zeros(x.shape, bool), np.zeros(x.shape, bool)
    near[0:12, 0:13, 0:11] = True  # the block grown by the receptive radius (3)
    far[0:14, 0:15, 0:13] = True   # ... and by 2 more (the smoothing's reach)
    assert mask[near].all() and not mask[~far].any() and not mask[15, 15, 15]
    assert stats.mask_fraction == pytest.approx(mask.mean())
    window = engine._expand(engine.mask_box(mask), 3, x.shape)  # the mask's box grown by the halo for context
    tiles = plan_tiles(x[window].shape, [p - 2 * stats.halo for p in stats.patch_size], stats.halo)
    assert stats.n_patches == len(tiles)
    np.testing.assert_allclose(out, _expected_with_mask(x, net, mask), atol=1e-5 * stats.scale, rtol=0)
    assert np.array_equal(out[~mask], x[~mask])  # the interpolated values, bit for bit


def test_tiles_outside_the_mask_are_not_run_and_keep_the_interpolated_values():
    net = random_net()
    x = np.zeros((20, 18, 16), np.float32)
    x[1:4, 1:4, 1:4] = volume((3, 3, 3))
    x[15:19, 14:17, 12:15] = volume((4, 3, 3), seed=1)
    out, stats = enhance(x, loaded(net), patch_size=10, **FP32)
    mask = network_mask(x, 3, floor=engine.BACKGROUND * stats.scale)
    tiles = plan_tiles(x.shape, [p - 2 * stats.halo for p in stats.patch_size], stats.halo)
    outside = [t for t in tiles if not mask[t.core].any()]
    assert stats.n_skipped == len(outside) > 0 and stats.n_patches == len(tiles)
    assert stats.patches_run == len(tiles) - len(outside)
    np.testing.assert_allclose(out, _expected_with_mask(x, net, mask), atol=1e-5 * stats.scale, rtol=0)
    for t in outside:
        assert np.array_equal(out[t.core], x[t.core])


def noisy_head(shape=(40, 34, 30), seed=0) -> np.ndarray:
    """A bright ellipsoid 'head' in a noisy background (noise ~3% of the head: above the old 1% skip limit)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    centre, radii = [(n - 1) / 2 + 2 for n in shape], [n / 3.5 for n in shape]
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    head = (r2 < 1) * rng.uniform(150, 300, shape)
    return np.abs(head + rng.normal(0, 9, shape)).astype(np.float32)


def test_output_does_not_depend_on_patch_or_batch_size_with_skipped_tiles():
    net = random_net(depth=3, seed=2)
    x = noisy_head()
    runs = [dict(patch_size=p, batch_size=b) for p, b in [(12, 1), (12, 5), (15, 2), (11, 1), ((10, 30, 14), 3),
                                                         (None, None)]]
    outs, skipped = [], []
    for kw in runs:
        out, stats = enhance(x, loaded(net), factors=(2, 2, 2), **kw, **FP32)
        outs.append(out)
        skipped.append(stats.n_skipped)
    assert min(skipped[:-1]) > 0  # tiles outside the mask were skipped in every tiled run
    span = float(x.max() - x.min())
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], atol=1e-5 * span, rtol=0)
    mask = network_mask(x, 3, (2, 2, 2), engine.BACKGROUND * robust_scale(x))
    assert 0.1 < mask.mean() < 0.9
    np.testing.assert_allclose(outs[0], _expected_with_mask(x, net, mask), atol=1e-5 * span, rtol=0)


def test_a_given_mask_is_followed_exactly():
    net = random_net()
    x = volume((14, 12, 10))
    mask = np.zeros(x.shape, bool)
    mask[3:7, 2:11, :4] = True
    out, stats = enhance(x, loaded(net), patch_size=8, mask=mask, **FP32)
    assert stats.n_skipped > 0 and stats.mask_fraction == pytest.approx(mask.mean())
    np.testing.assert_allclose(out, _expected_with_mask(x, net, mask), atol=1e-5 * stats.scale, rtol=0)
    assert np.array_equal(out[~mask], x[~mask])
    with pytest.raises(InputError, match="mask"):
        enhance(x, loaded(net), mask=mask[:-1], **FP32)


def test_all_zero_volume_is_returned_unchanged():
    out, stats = enhance(np.zeros((6, 7, 8), np.float32), loaded(random_net()), **FP32)
    assert np.array_equal(out, np.zeros((6, 7, 8))) and stats.n_skipped == stats.n_patches == 1


def test_progress_reports_every_batch():
    calls = []
    _, stats = enhance(volume((12, 12, 12)), loaded(random_net()), patch_size=10, batch_size=5,
                       progress=lambda d, t: calls.append((d, t)), **FP32)
    assert calls[-1] == (stats.n_patches, stats.n_patches)
    assert len(calls) == -(-stats.n_patches // 5)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_bf16_runs_and_stays_close_to_fp32():
    torch.manual_seed(3)
    net = ReCNN(3, 8).eval()
    x = volume((12, 11, 10), seed=3)
    ref, _ = enhance(x, loaded(net), **FP32)
    out, stats = enhance(x, loaded(net), device="cpu", precision="bf16", patch_size=9)
    assert stats.precision == "bf16" and out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-2 * stats.scale


def test_residual_is_added_in_fp32():
    """A zero residual leaves the input bit-exact even when the network runs in bf16."""
    net = ReCNN(3, 4)
    with torch.no_grad():
        net.body[-1].weight.zero_()
        net.body[-1].bias.zero_()
    x = volume((9, 8, 7)) + np.float32(1e-3)
    out, _ = enhance(x, loaded(net.eval()), device="cpu", precision="bf16")
    assert np.array_equal(out, x)


def test_short_patches_blend_and_warn():
    net = random_net()
    x = volume((14, 12, 10))
    out, stats = enhance(x, loaded(net), patch_size=6, **FP32)
    assert stats.blended and stats.halo < net.receptive_radius and stats.warnings
    assert np.isfinite(out).all()
    assert np.abs(out - whole_volume(x, net)).mean() < 0.05 * stats.scale


class _OOMNet(nn.Module):
    """Raises a CUDA out-of-memory error for batches above ``limit`` voxels."""

    def __init__(self, net: nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit, self.calls = net, limit, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if x.numel() > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return self.net(x)


@pytest.mark.parametrize("patch_size", [None, 16])
def test_out_of_memory_retries_smaller(patch_size):
    net = random_net()
    x = volume((16, 14, 12))
    oom = _OOMNet(net, limit=2000)
    out, stats = enhance(x, loaded(oom, radius=3), patch_size=patch_size, **FP32)
    assert stats.retries > 0 and any("memory" in w for w in stats.warnings)
    assert stats.batch_size * np.prod(stats.patch_size) <= 2000 and not stats.blended
    np.testing.assert_allclose(out, whole_volume(x, net), atol=1e-5 * stats.scale, rtol=0)


def test_other_errors_are_not_retried():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        enhance(volume((6, 6, 6)), loaded(Broken(), radius=1), **FP32)


def test_auto_plan_fits_the_budget_with_least_work():
    plan = make_plan((197, 233, 189), 8, voxel_budget=6_000_000)
    assert len(plan.tiles) == 2 and np.prod(plan.patch_shape) <= 6_000_000 and not plan.blend
    assert make_plan((40, 40, 40), 8, 10**9).tiles[0].shape == (40, 40, 40)


def test_bytes_per_voxel_follows_width_and_precision():
    assert engine.bytes_per_voxel(ReCNN(3, 32), "fp32") > engine.bytes_per_voxel(ReCNN(3, 32), "bf16")
    assert engine.bytes_per_voxel(ReCNN(3, 64), "fp32") > engine.bytes_per_voxel(ReCNN(3, 32), "fp32")


@pytest.mark.parametrize("data,match", [
    (np.zeros((4, 4, 4, 2), np.float32), "one 3D volume"),
    (np.zeros((4, 4, 4), np.int16), "floating-point"),
    (np.full((4, 4, 4), np.nan, np.float32), "NaN"),
    ([[[1.0]]], "numpy array"),
])
def test_bad_data_is_refused(data, match):
    with pytest.raises(InputError, match=match):
        enhance(data, loaded(random_net()), **FP32)


@pytest.mark.parametrize("kw,match", [
    (dict(patch_size=0), "patch_size"), (dict(patch_size=(8, 8)), "patch_size"),
    (dict(batch_size=-1), "batch_size"), (dict(threads=0), "threads"),
    (dict(device="gpu"), "unknown device 'gpu'"), (dict(precision="fp64"), "unknown precision"),
])
def test_bad_settings_are_refused(kw, match):
    settings = {**FP32, **kw}
    with pytest.raises(MrisrError, match=match):
        enhance(volume((4, 4, 4)), loaded(random_net()), **settings)


def test_wrong_model_is_refused():
    with pytest.raises(ModelError, match="LoadedModel"):
        enhance(volume((4, 4, 4)), object(), **FP32)
    with pytest.raises(ModelError, match="2 input channels"):
        enhance(volume((4, 4, 4)), loaded(ReCNN(3, 4, in_channels=2)), **FP32)  # a guided model without reference


def test_threads_are_set_and_restored():
    seen = []
    enhance(volume((6, 6, 6)), loaded(random_net()), threads=2, progress=lambda d, t: seen.append(
        torch.get_num_threads()), **FP32)
    assert seen == [2] and torch.get_num_threads() == 1


# --- device and precision selection -------------------------------------------------------------


def _availability(monkeypatch, cuda=False, mps=False, cuda_bf16=False, cpu_bf16=False):
    monkeypatch.setattr(dev, "cuda_available", lambda: cuda)
    monkeypatch.setattr(dev, "mps_available", lambda: mps)
    monkeypatch.setattr(dev, "cuda_supports_bf16", lambda d: cuda_bf16)
    monkeypatch.setattr(dev, "cpu_supports_bf16", lambda: cpu_bf16)


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_device_prefers_cuda_then_mps(monkeypatch, cuda, mps, expected):
    _availability(monkeypatch, cuda=cuda, mps=mps)
    assert dev.resolve_device("auto").type == expected


def test_unavailable_or_unknown_device_is_refused(monkeypatch):
    _availability(monkeypatch)
    with pytest.raises(MrisrError, match="'cuda' is not available.*usable here: auto, cpu"):
        dev.resolve_device("cuda")
    with pytest.raises(MrisrError, match="'mps' is not available"):
        dev.resolve_device("mps")
    with pytest.raises(MrisrError, match="Did you mean 'cuda'"):
        dev.resolve_device("cuad")


@pytest.mark.parametrize("kind,cuda_bf16,cpu_bf16,expected", [
    ("cpu", False, True, "bf16"), ("cpu", False, False, "fp32"),
    ("cuda", True, False, "bf16"), ("cuda", False, False, "fp16"), ("mps", False, False, "fp32"),
])
def test_auto_precision(monkeypatch, kind, cuda_bf16, cpu_bf16, expected):
    _availability(monkeypatch, cuda_bf16=cuda_bf16, cpu_bf16=cpu_bf16)
    assert dev.resolve_precision("auto", torch.device(kind)) == expected


def test_explicit_precision_rules(monkeypatch):
    _availability(monkeypatch)
    with pytest.raises(MrisrError, match="'fp16' is not supported on the CPU"):
        dev.resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(MrisrError, match="'bf16' is not supported by this GPU"):
        dev.resolve_precision("bf16", torch.device("cuda"))
    assert dev.resolve_precision("fp16", torch.device("cuda")) == "fp16"
    assert dev.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert dev.resolve_precision("fp32", torch.device("mps")) == "fp32"


def test_cpu_fp16_refused_through_enhance():
    with pytest.raises(MrisrError, match="fp16"):
        enhance(volume((4, 4, 4)), loaded(random_net()), device="cpu", precision="fp16")


def test_memory_budget(monkeypatch):
    assert 0 < dev.memory_budget(torch.device("cpu")) <= dev.CPU_BUDGET_CAP
    monkeypatch.setattr(dev, "available_ram", lambda: 400 * 1024**2)
    assert dev.memory_budget(torch.device("cpu")) == 100 * 1024**2
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (10 * 1024**3, 16 * 1024**3))
    assert dev.memory_budget(torch.device("cuda")) == int(10 * 1024**3 * dev.CUDA_BUDGET_FRACTION)


def test_out_of_memory_detection():
    assert dev.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert dev.is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not dev.is_out_of_memory(RuntimeError("size mismatch"))


# --- end to end: a tiny trained ReCNN beats the spline ----------------------------------------------


def _blobs(n: int, seed: int, k: int = 25) -> np.ndarray:
    """Sharp-edged spheres of random size and contrast."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32)] * 3, indexing="ij"), -1)
    v = np.zeros((n,) * 3, np.float32)
    for _ in range(k):
        c, r, a = rng.uniform(4, n - 4, 3), rng.uniform(2, n / 5), rng.uniform(50, 200)
        v += a / (1 + np.exp((np.linalg.norm(grid - c, axis=-1) - r) / 0.5))
    return v


def _spline_from_2x_block_average(hr: np.ndarray) -> np.ndarray:
    n = hr.shape[0] // 2
    lr = hr.reshape(n, 2, n, 2, n, 2).mean(axis=(1, 3, 5))
    grid = target_grid(block_average_affine(np.eye(4), [2, 2, 2]), lr.shape, 1.0)
    assert grid.shape == hr.shape and np.allclose(grid.offsets, -0.25)
    return resample_to_grid(lr, grid)


def _psnr(x: np.ndarray, truth: np.ndarray) -> float:
    return float(10 * np.log10(truth.max() ** 2 / np.mean((x - truth) ** 2)))


def test_tiny_trained_recnn_beats_the_spline():
    train_hr, test_hr = _blobs(20, 0), _blobs(20, 1)
    train_in, test_in = _spline_from_2x_block_average(train_hr), _spline_from_2x_block_average(test_hr)
    s = robust_scale(train_in)
    x = torch.from_numpy(train_in / s)[None, None]
    y = torch.from_numpy((train_hr - train_in) / s)[None, None]
    torch.manual_seed(0)
    net = ReCNN(depth=3, width=8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.mean((net(x) - y) ** 2)
        loss.backward()
        opt.step()
    out, _ = enhance(test_in, loaded(net.eval()), patch_size=12, **FP32)
    assert _psnr(out, test_hr) > _psnr(test_in, test_hr) + 0.5


def conditioned_net(seed=0) -> ReCNN:
    torch.manual_seed(seed)
    net = ReCNN(3, 4, cond_dim=3)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                m.bias.uniform_(-0.3, 0.3)
        net.cond.weight.uniform_(-1, 1)
    return net.eval()


@pytest.mark.parametrize("patch_size", [8, 13, 64])
def test_conditioned_network_tiles_exactly_and_uses_the_factors(patch_size):
    net = conditioned_net()
    x = volume((15, 12, 10))
    out, stats = enhance(x, loaded(net), patch_size=patch_size, factors=(1, 1, 4), **FP32)
    np.testing.assert_allclose(out, whole_volume(x, net, factors=(1, 1, 4)), atol=1e-5 * stats.scale, rtol=0)
    other, _ = enhance(x, loaded(net), patch_size=patch_size, factors=(2, 2, 2), **FP32)
    assert np.abs(other - out).max() > 1e-3 * stats.scale


def test_conditioned_network_needs_factors():
    with pytest.raises(ModelError, match="conditioned on the upsampling factors"):
        enhance(volume((8, 8, 8)), loaded(conditioned_net()), **FP32)


# ----------------------------------------------------------------- guided (two-channel) networks


def guided_net(seed=0, cond_dim=0) -> ReCNN:
    torch.manual_seed(seed)
    net = ReCNN(depth=3, width=4, in_channels=2, cond_dim=cond_dim)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


@pytest.mark.parametrize("patch_size", [8, 11, 64, (8, 64, 11)])
def test_guided_network_tiles_exactly_like_a_whole_volume_pass(patch_size):
    net = guided_net()
    x, ref = volume((17, 13, 11)), volume((17, 13, 11), seed=5) * 7  # the reference has its own scale
    out, stats = enhance(x, loaded(net), patch_size=patch_size, reference=ref, **FP32)
    assert out.shape == x.shape and out.dtype == np.float32 and not stats.blended
    np.testing.assert_allclose(out, whole_volume(x, net, reference=ref), atol=1e-5 * stats.scale, rtol=0)
    # The reference enters divided by its own robust scale: scaling it changes nothing.
    rescaled, _ = enhance(x, loaded(net), patch_size=patch_size, reference=ref / 7, **FP32)
    np.testing.assert_allclose(rescaled, out, atol=1e-5 * stats.scale, rtol=0)
    zeroed, _ = enhance(x, loaded(net), patch_size=patch_size, reference=np.zeros_like(ref), **FP32)
    assert np.abs(zeroed - out).max() > 1e-3 * stats.scale


def test_guided_conditioned_network_gets_both():
    net = guided_net(cond_dim=3)
    x, ref = volume((12, 10, 9)), volume((12, 10, 9), seed=2)
    out, stats = enhance(x, loaded(net), patch_size=9, reference=ref, factors=(1, 1, 3), **FP32)
    np.testing.assert_allclose(out, whole_volume(x, net, factors=(1, 1, 3), reference=ref),
                               atol=1e-5 * stats.scale, rtol=0)


def test_guided_background_is_decided_on_the_image_alone():
    net = guided_net()
    x = np.zeros((20, 18, 16), np.float32)
    x[2:9, 3:10, 2:8] = volume((7, 7, 6))
    ref = volume(x.shape, seed=3)  # a reference everywhere, brighter than nothing
    out, stats = enhance(x, loaded(net), patch_size=10, reference=ref, **FP32)
    mask = network_mask(x, net.receptive_radius, floor=engine.BACKGROUND * stats.scale)
    assert 0 < mask.mean() < 0.5  # from the image alone: the reference is bright everywhere
    expected = _expected_with_mask(x, net, mask, reference=ref)
    np.testing.assert_allclose(out, expected, atol=1e-5 * stats.scale, rtol=0)
    assert np.array_equal(out[~mask], x[~mask])


def test_guided_model_needs_a_reference_and_single_models_refuse_one(monkeypatch):
    with pytest.raises(ModelError, match=r"model 'test' is guided \(2 input channels\).*--reference"):
        enhance(volume((6, 6, 6)), loaded(guided_net()), **FP32)
    monkeypatch.setattr("mrisr.inference.registry.guided_model_names", lambda: ["guide-a", "guide-b"])
    with pytest.raises(ModelError, match="model 'test' is not guided.*guided models: guide-a, guide-b"):
        enhance(volume((6, 6, 6)), loaded(random_net()), reference=volume((6, 6, 6)), **FP32)
    monkeypatch.setattr("mrisr.inference.registry.guided_model_names", lambda: [])
    with pytest.raises(ModelError, match="no guided model ships with this installation"):
        enhance(volume((6, 6, 6)), loaded(random_net()), reference=volume((6, 6, 6)), **FP32)
    with pytest.raises(ModelError, match="takes 3 input channels"):
        enhance(volume((6, 6, 6)), loaded(ReCNN(3, 4, in_channels=3)), **FP32)


@pytest.mark.parametrize("reference, match", [
    (np.zeros((6, 6, 5), np.float32), r"reference must lie on the output grid: shape \(6, 6, 5\)"),
    (np.zeros((6, 6, 6), np.int16), "floating-point data, got int16 for the reference"),
    (np.full((6, 6, 6), np.nan, np.float32), "the reference holds 216 NaN"),
    ([[1.0]], "numpy array as the reference"),
])
def test_bad_references_are_refused(reference, match):
    with pytest.raises(InputError, match=match):
        enhance(volume((6, 6, 6)), loaded(guided_net()), reference=reference, **FP32)
