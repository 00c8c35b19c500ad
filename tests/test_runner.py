"""The one tiled runner (mrisr.inference.runner.run_tiles) with analytic predictors: exact stitching.

The predictors compute known functions of the patch: the identity, +1, a linear filter of a known receptive radius
(integer weights on integer data, so every sum is exact in float32 and any tiling must equal the whole-volume pass
bit for bit), and learned-upsampling stand-ins (the filter, then each voxel repeated ``scale`` times). The runner
is also checked on skipped tiles, the guide channel, channels-last input, progress, and the out-of-memory retry
(a forward that raises torch's out-of-memory error for large batches), for residual and upsampling networks, and
through the entry points (``engine.enhance``, ``upsampling.upsample``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mrisr.errors import MrisrError
from mrisr.inference.engine import enhance, make_plan
from mrisr.inference.model_card import LoadedModel, example_card
from mrisr.inference.runner import MAX_RETRIES, network_forward, run_tiles, shrink_plan
from mrisr.inference.tiling import Plan, plan_tiles, replicate
from mrisr.inference.upsampling import upsample, whole_volume_upsample

CPU = torch.device("cpu")
SHAPE = (19, 14, 11)


def integers(shape=SHAPE, seed=0) -> np.ndarray:
    """Integer-valued float32 data: sums of small integer multiples stay exact."""
    return np.random.default_rng(seed).integers(0, 8, shape).astype(np.float32)


class Filter:
    """``conv3d`` with an integer kernel of radius ``radii`` per axis and zero padding: receptive radius
    ``max(radii)``; then each voxel repeated ``scale`` times (a learned-upsampling stand-in, for a scale > 1)."""

    def __init__(self, radii=(2, 2, 2), scale=(1, 1, 1), seed=0) -> None:
        rng = np.random.default_rng(seed)
        kernel = rng.integers(-2, 3, tuple(2 * r + 1 for r in radii)).astype(np.float32)
        kernel[tuple(0 for _ in radii)] = 1.0  # a corner weight: the full radius reaches along every axis
        self.weight = torch.from_numpy(kernel)[None, None]
        self.radii, self.scale, self.calls = tuple(radii), tuple(scale), 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        y = F.conv3d(x[:, :1], self.weight, padding=self.radii)
        for axis, s in enumerate(self.scale):
            if s > 1:
                y = y.repeat_interleave(s, dim=2 + axis)
        return y

    @property
    def radius(self) -> int:
        return max(self.radii)


def whole(predict, data: np.ndarray, intensity: float = 1.0, residual: bool = False) -> np.ndarray:
    """The predictor on the whole volume, as the runner scales it."""
    x = torch.from_numpy(np.ascontiguousarray(data) / np.float32(intensity))[None, None]
    y = predict(x).float().numpy()[0, 0] * np.float32(intensity)
    return y + data if residual else y


def run(data, predict, *, halo, scale=(1, 1, 1), patch=None, batch=None, budget=10**9, **kw):
    """``run_tiles`` with :func:`make_plan` as the planner; returns ``(out, stats)``."""
    out = np.full(tuple(n * s for n, s in zip(data.shape, scale)), np.nan, np.float32)
    sides = None if patch is None else tuple(patch) if isinstance(patch, tuple) else (patch,) * 3
    stats = run_tiles(data, out, planner=lambda p, b, v: make_plan(data.shape, halo, v, p, b),
                      forward=lambda shape: predict, device=CPU, precision="fp32", scale=scale,
                      sizes=(sides, batch, budget), **kw)
    return out, stats


PATCHES = [None, 9, 12, (8, 14, 6), 30]
BATCHES = [None, 1, 3]


@pytest.mark.parametrize("patch", PATCHES)
def test_identity_and_plus_one_are_stitched_exactly(patch):
    data = integers()
    out, st = run(data, lambda x: x, halo=0, patch=patch, intensity=2.0)
    assert np.array_equal(out, data) and st.n_skipped == 0
    out, st = run(data, lambda x: torch.ones_like(x), halo=0, patch=patch, intensity=3.0, residual=True)
    assert np.array_equal(out, data + np.float32(3.0))
    assert not st.plan.blend and st.n_patches == len(st.plan.tiles)


@pytest.mark.parametrize("patch", PATCHES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("residual", [False, True])
def test_a_linear_filter_equals_the_whole_volume_pass_bit_for_bit(patch, batch, residual):
    data = integers()
    predict = Filter((2, 1, 2))
    out, st = run(data, predict, halo=predict.radius, patch=patch, batch=batch, intensity=1.0, residual=residual)
    assert predict.calls == math.ceil(st.n_patches / st.plan.batch_size)
    assert np.array_equal(out, whole(predict, data, residual=residual))
    if batch is not None:
        assert st.plan.batch_size == batch


def test_the_receptive_radius_is_needed_exactly():
    data = integers()
    predict = Filter((2, 2, 2))
    short, st = run(data, predict, halo=predict.radius - 1, patch=9, intensity=1.0)
    assert st.n_patches > 1 and not st.plan.blend
    assert not np.array_equal(short, whole(predict, data))  # one voxel of context short: the seams differ
    full, _ = run(data, predict, halo=predict.radius, patch=9, intensity=1.0)
    assert np.array_equal(full, whole(predict, data))


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4), (2, 1, 3)])
@pytest.mark.parametrize("patch", [None, 7, 10, (12, 6, 9)])
@pytest.mark.parametrize("batch", BATCHES)
def test_upsampling_predictors_are_stitched_exactly(scale, patch, batch):
    data = integers((13, 11, 9), seed=1)
    predict = Filter((1, 2, 1), scale)
    out, st = run(data, predict, halo=predict.radius, scale=scale, patch=patch, batch=batch, intensity=1.0)
    assert out.shape == tuple(n * s for n, s in zip(data.shape, scale))
    assert np.array_equal(out, whole(predict, data))
    out, _ = run(data, Filter((0, 0, 0), scale), halo=0, scale=scale, patch=patch, batch=batch, intensity=4.0)
    assert np.array_equal(out, replicate(data, scale))


def _mask(shape) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[2:7, 3:9, 1:5] = True
    mask[15, 12, 9] = True
    return mask


@pytest.mark.parametrize(("scale", "residual"), [((1, 1, 1), True), ((1, 1, 1), False), ((2, 2, 2), False),
                                                 ((1, 1, 4), False)])
@pytest.mark.parametrize("patch", [8, 11, (6, 14, 7)])
@pytest.mark.parametrize("batch", [1, 4])
def test_tiles_outside_the_mask_are_skipped_and_keep_the_input(scale, residual, patch, batch):
    data = integers()
    mask = _mask(data.shape)
    predict = Filter((2, 1, 1), scale)
    out, st = run(data, predict, halo=predict.radius, scale=scale, patch=patch, batch=batch, intensity=1.0,
                  residual=residual, mask=mask)
    tiles = st.plan.tiles
    outside = [t for t in tiles if not mask[t.core].any()]
    assert st.n_skipped == len(outside) > 0 and st.n_patches == len(tiles)
    groups = [tiles[i:i + batch] for i in range(0, len(tiles), batch)]
    assert predict.calls == sum(any(mask[t.core].any() for t in g) for g in groups)  # all-skipped batches: no call
    fallback = replicate(data, scale)
    expected = np.where(replicate(mask, scale), whole(predict, data, residual=residual), fallback)
    assert np.array_equal(out, expected)  # inside: the whole-volume pass; outside: the input, bit for bit
    for t in outside:
        assert np.array_equal(out[t.scaled(scale).core], fallback[t.scaled(scale).core])


def test_no_mask_voxel_runs_nothing():
    data = integers()
    predict = Filter()
    out, st = run(data, predict, halo=2, patch=9, intensity=1.0, mask=np.zeros(data.shape, bool), scale=(1, 2, 1))
    assert predict.calls == 0 and st.n_skipped == st.n_patches and st.network_voxels == 0
    assert np.array_equal(out, replicate(data, (1, 2, 1)))


def test_the_guide_is_read_through_the_same_windows():
    data, guide = integers(), integers(seed=3)
    out, st = run(data, lambda x: x[:, 1:2] * 2, halo=0, patch=(7, 9, 5), intensity=1.0, residual=True,
                  guide=guide, guide_scale=2.0)
    assert np.array_equal(out, data + guide)
    assert st.network_voxels == 2 * st.n_patches * math.prod(st.plan.patch_shape)


def test_batches_are_channels_last_on_the_cpu():
    layouts = []

    def predict(x):
        layouts.append(x.is_contiguous(memory_format=torch.channels_last_3d))
        return x

    run(integers(), predict, halo=0, patch=9, intensity=1.0)
    assert layouts and all(layouts)


def test_progress_counts_tiles_after_every_batch():
    calls = []
    _, st = run(integers(), lambda x: x, halo=1, patch=9, batch=4, intensity=1.0,
                progress=lambda d, t: calls.append((d, t)))
    assert calls == [(min(4 * (i + 1), st.n_patches), st.n_patches) for i in range(-(-st.n_patches // 4))]


def test_blending_with_a_constant_predictor_averages_to_it():
    data = integers()
    plan = make_plan(data.shape, 4, 10**9, 6)
    assert plan.blend
    out = np.empty(data.shape, np.float32)
    st = run_tiles(data, out, planner=lambda p, b, v: plan, sizes=(None, None, 10**9),
                   forward=lambda s: lambda x: torch.ones_like(x), device=CPU, precision="fp32", intensity=2.0,
                   residual=True, radius=4)
    np.testing.assert_allclose(out, data + 2.0, rtol=0, atol=1e-5)
    assert st.plan.blend and any("blended" in w and "context of 4" in w for w in st.warnings)


def test_a_residual_network_must_write_the_input_grid():
    with pytest.raises(MrisrError, match="residual"):
        run(integers(), lambda x: x, halo=0, scale=(2, 1, 1), intensity=1.0, residual=True)


class OutOfMemoryAbove:
    """A predictor that raises torch's out-of-memory error for batches above ``limit`` input voxels."""

    def __init__(self, predict, limit: int) -> None:
        self.predict, self.limit, self.sizes = predict, limit, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.numel())
        if x.numel() > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return self.predict(x)


@pytest.mark.parametrize(("scale", "residual"), [((1, 1, 1), True), ((2, 2, 2), False), ((1, 1, 4), False)])
@pytest.mark.parametrize(("patch", "batch"), [(None, None), (10, 8), (None, 16)])
def test_out_of_memory_shrinks_the_batch_then_the_patch_and_stays_exact(scale, residual, patch, batch):
    data = integers()
    predict = Filter((1, 2, 1), scale)
    oom = OutOfMemoryAbove(predict, limit=1500)
    out, st = run(data, oom, halo=predict.radius, scale=scale, patch=patch, batch=batch, intensity=1.0,
                  residual=residual)
    assert st.retries > 0 and any("ran out of device memory" in w for w in st.warnings)
    assert st.plan.batch_size * math.prod(st.plan.patch_shape) <= 1500
    assert max(oom.sizes) > 1500 and not st.plan.blend
    assert np.array_equal(out, whole(predict, data, residual=residual))


@pytest.mark.parametrize(("scale", "residual"), [((1, 1, 1), True), ((1, 1, 4), False)])
def test_out_of_memory_to_the_end_is_an_mrisr_error(scale, residual):
    oom = OutOfMemoryAbove(lambda x: x, limit=0)
    with pytest.raises(MrisrError, match=rf"out of memory on cpu even with patches of .* after {MAX_RETRIES} "
                                         "retries; try --device cpu") as err:
        run(integers((40, 40, 40)), oom, halo=1, scale=scale, batch=64, patch=20, intensity=1.0,
            residual=residual)
    assert isinstance(err.value.__cause__, torch.cuda.OutOfMemoryError)
    assert len(oom.sizes) == MAX_RETRIES + 1


def test_other_errors_propagate_unchanged():
    def broken(x):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run(integers(), broken, halo=0, intensity=1.0)


def test_shrink_plan_halves_the_batch_then_the_patch():
    plan = Plan(plan_tiles((8, 8, 8), 4, 0), 0, 6, False)
    assert shrink_plan(plan, (4, 4, 4), 500) == ((4, 4, 4), 3, 500)
    one = Plan(plan.tiles, 0, 1, False)
    assert shrink_plan(one, (4, 4, 4), 500) == ((3, 3, 3), 1, 500)
    assert shrink_plan(one, None, 500) == (None, 1, 32)
    with pytest.raises(MrisrError, match="one-voxel"):
        shrink_plan(Plan(plan_tiles((1, 1, 1), 1, 0), 0, 1, False), None, 1)


# Through the entry points: both kinds of network get the same runner.

class Upsampler(nn.Module):
    """A learned-upsampling network: a 3x3x3 convolution, then each voxel repeated ``scale`` times; raises
    torch's out-of-memory error for batches above ``limit`` input voxels."""

    in_channels, cond_dim, receptive_radius = 1, 0, 1

    def __init__(self, scale, limit: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.upsampling, self.limit = tuple(scale), limit
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.out = nn.Conv3d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.limit is not None and x.numel() > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        y = self.out(torch.relu(self.conv(x)))
        for axis, s in enumerate(self.upsampling):
            y = y.repeat_interleave(s, dim=2 + axis)
        return y


def _loaded(net: nn.Module) -> LoadedModel:
    card = example_card(receptive_radius=int(net.receptive_radius))
    return LoadedModel("runner-test", card, net.eval(), "0" * 64, None)


def _head(shape=(16, 14, 12)) -> np.ndarray:
    data = np.zeros(shape, np.float32)
    data[3:13, 2:12, 2:10] = integers((10, 10, 8), seed=4) + 10
    return data


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4)])
def test_upsample_retries_out_of_memory_and_reports_it(scale):
    data = _head()
    net = Upsampler(scale, limit=900)
    out, st = upsample(data, _loaded(net), device="cpu", precision="fp32", threads=1)
    assert st.retries > 0 and any("ran out of device memory" in w for w in st.warnings)
    assert st.batch_size * math.prod(st.patch_size) <= 900 and st.device == "cpu"
    net.limit = None
    expected = whole_volume_upsample(data, net)
    inside = out != replicate(data, scale)
    assert inside.any()
    np.testing.assert_allclose(out[inside], expected[inside], rtol=0, atol=1e-5 * float(np.abs(expected).max()))


def test_upsample_out_of_memory_to_the_end_is_an_mrisr_error():
    with pytest.raises(MrisrError, match="out of memory on cpu even with patches of"):
        upsample(_head(), _loaded(Upsampler((2, 2, 2), limit=0)), device="cpu", precision="fp32", threads=1)


def test_enhance_out_of_memory_to_the_end_is_an_mrisr_error():
    class Residual(nn.Module):
        in_channels, receptive_radius = 1, 1

        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    with pytest.raises(MrisrError, match="out of memory on cpu even with patches of"):
        enhance(_head(), _loaded(Residual()), device="cpu", precision="fp32", threads=1)


def test_network_forward_runs_the_network_as_prepared():
    net = Upsampler((1, 1, 2)).eval()
    forward = network_forward(net, CPU, "fp32")((6, 6, 6))
    x = torch.rand(2, 1, 6, 6, 6)
    assert forward.kind == "eager"
    with torch.inference_mode():
        assert torch.equal(forward(x), net(x))
