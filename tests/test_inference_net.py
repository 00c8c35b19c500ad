"""The fused CPU forward of ReCNN (mrisr.inference.inference_net) equals the eager network,
and anything it cannot run falls back to the eager network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mrisr.archs.recnn import ReCNN
from mrisr.inference import inference_net as inet
from mrisr.inference.device import cpu_supports_bf16
from mrisr.inference.inference_net import EagerForward, FusedReCNN, eager, prepare

CPU = torch.device("cpu")
#: bf16 tolerance of the engine tests (test_engine.test_bf16_runs_and_stays_close_to_fp32: 1e-2 of the
#: intensity scale, at which the network's input is ~1), in network units.
BF16_TOL = 1e-2
#: The fused bf16 path needs native bf16 (AVX-512 BF16 or AMX); elsewhere bf16 falls back to eager.
NATIVE_BF16 = cpu_supports_bf16()
needs_native_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU (or its ONEDNN_MAX_CPU_ISA) has no "
                                       "native bf16: the fused bf16 path is not used here (see the fallback tests)")
#: Precisions the fused path runs on this CPU (bf16 skipped without native bf16).
FUSED_HERE = ["fp32", pytest.param("bf16", marks=needs_native_bf16)]


def random_net(depth=3, width=8, kernel=3, in_channels=1, cond_dim=0, seed=0) -> ReCNN:
    """A ReCNN with non-zero biases and a non-negligible last layer."""
    torch.manual_seed(seed)
    net = ReCNN(depth, width, kernel=kernel, in_channels=in_channels, cond_dim=cond_dim)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                m.bias.uniform_(-0.3, 0.3)
        net.body[-1].weight.mul_(3)
        if net.cond is not None:
            net.cond.bias.uniform_(-0.3, 0.3)
    return net.eval()


def batch(shape, channels=1, n=1, seed=0) -> torch.Tensor:
    x = torch.rand((n, channels, *shape), generator=torch.Generator().manual_seed(seed))  # ~1 at the scale
    return x.contiguous(memory_format=torch.channels_last_3d)


def reference(net: ReCNN, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    with torch.inference_mode():
        return (net(x) if cond is None else net(x, cond.expand(len(x), -1))).float()


CASES = [  # depth, width, kernel, in_channels, cond_dim
    (3, 8, 3, 1, 0), (3, 8, 3, 1, 3), (4, 6, 3, 2, 0), (4, 6, 3, 2, 3), (2, 4, 5, 1, 3), (8, 32, 3, 1, 3),
]
SHAPES = [(9, 8, 7), (17, 5, 12), (3, 1, 2), (1, 1, 1)]


@pytest.mark.parametrize("depth,width,kernel,channels,cond_dim", CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_fp32_equals_eager(depth, width, kernel, channels, cond_dim, shape):
    net = random_net(depth, width, kernel, channels, cond_dim)
    cond = net.encode_factors([1, 2, 4]) if cond_dim else None
    fwd = prepare(net, CPU, "fp32", condition=cond, patch_shape=shape)
    assert fwd.kind == "fused", fwd.reason
    x = batch(shape, channels, n=2)
    out = fwd(x)
    assert out.dtype == torch.float32 and out.shape == (2, 1, *shape)
    torch.testing.assert_close(out, reference(net, x, cond), atol=1e-5, rtol=1e-5)


@needs_native_bf16
@pytest.mark.parametrize("depth,width,kernel,channels,cond_dim", CASES)
@pytest.mark.parametrize("shape", SHAPES[:2])
def test_bf16_close_to_fp32_and_eager(depth, width, kernel, channels, cond_dim, shape):
    net = random_net(depth, width, kernel, channels, cond_dim)
    cond = net.encode_factors([2, 2, 1]) if cond_dim else None
    fwd = prepare(net, CPU, "bf16", condition=cond, patch_shape=shape)
    assert fwd.kind == "fused", fwd.reason
    x = batch(shape, channels)
    out = fwd(x).float()
    exact = reference(net, x, cond)
    err = float((out - exact).abs().max())
    assert err < BF16_TOL
    autocast = eager(net, CPU, "bf16", cond)(x).float()  # the path it replaces: no less accurate
    assert err <= 1.5 * float((autocast - exact).abs().max()) + 1e-3


def test_other_shapes_than_prepacked_and_contiguous_input():
    net = random_net(3, 8, cond_dim=3)
    cond = net.encode_factors([2, 2, 2])
    fwd = prepare(net, CPU, "fp32", condition=cond, patch_shape=(20, 20, 20))
    for shape in [(20, 20, 20), (7, 11, 6), (20, 20, 20)]:
        x = batch(shape).contiguous()
        torch.testing.assert_close(fwd(x), reference(net, x, cond), atol=1e-5, rtol=1e-5)


def test_zero_last_layer_gives_an_exact_zero_residual():
    net = random_net(3, 4)
    with torch.no_grad():
        net.body[-1].weight.zero_()
        net.body[-1].bias.zero_()
    out = prepare(net, CPU, "bf16")(batch((6, 5, 4)))
    assert torch.equal(out, torch.zeros_like(out))


def test_network_is_left_unchanged():
    net = random_net(3, 8, cond_dim=3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    prepare(net, CPU, "bf16", condition=net.encode_factors([1, 1, 3]))
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)


class Doubled(ReCNN):
    def forward(self, x, cond=None):
        return 2 * super().forward(x, cond)


@pytest.mark.parametrize("network,device,precision,why", [
    (nn.Sequential(nn.Conv3d(1, 1, 3, padding=1)), CPU, "fp32", "is not a ReCNN"),
    (Doubled(3, 4), CPU, "fp32", "is not a ReCNN"),
    (ReCNN(3, 4), torch.device("cuda"), "bf16", "on the CPU"),
    (ReCNN(3, 4), CPU, "fp16", "on the CPU"),
])
def test_unsupported_networks_run_eager(network, device, precision, why):
    fwd = prepare(network.eval(), device, precision)
    assert isinstance(fwd, EagerForward) and why in fwd.reason


def test_unsupported_layers_run_eager():
    net = random_net(3, 4)
    net.body[2] = nn.Conv3d(4, 4, 3, padding=1, dilation=1, padding_mode="reflect")
    fwd = prepare(net, CPU, "fp32")
    assert fwd.kind == "eager" and "unsupported convolution" in fwd.reason
    x = batch((6, 6, 6))
    torch.testing.assert_close(fwd(x), reference(net, x, None))


def test_falls_back_without_the_onednn_ops(monkeypatch):
    monkeypatch.setattr(inet, "fused_ops_available", lambda: False)
    net = random_net(3, 4, cond_dim=3)
    cond = net.encode_factors([1, 1, 2])
    fwd = prepare(net, CPU, "bf16", condition=cond)
    assert fwd.kind == "eager" and "oneDNN" in fwd.reason
    x = batch((6, 5, 4), n=2)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        expected = net(x, cond.expand(2, -1))
    assert torch.equal(fwd(x), expected)


def test_falls_back_when_building_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_convolution_weight", broken, raising=False)
    net = random_net(3, 4)
    fwd = prepare(net, CPU, "fp32", patch_shape=(8, 8, 8))
    assert fwd.kind == "eager" and "primitive descriptor" in fwd.reason
    x = batch((8, 8, 8))
    torch.testing.assert_close(fwd(x), reference(net, x, None))


def test_falls_back_when_the_self_check_fails(monkeypatch):
    monkeypatch.setattr(FusedReCNN, "_last", lambda self, h: torch.zeros((h.shape[0], 1, *h.shape[2:])))
    fwd = prepare(random_net(3, 4), CPU, "fp32")
    assert fwd.kind == "eager" and "differs from eager" in fwd.reason


def test_conditioned_network_without_condition_fails_like_eager():
    net = random_net(3, 4, cond_dim=3)
    fwd = prepare(net, CPU, "fp32")
    assert fwd.kind == "eager"
    with pytest.raises(ValueError, match="conditioned"):
        fwd(batch((5, 5, 5)))


@pytest.mark.parametrize("precision", FUSED_HERE)
def test_weights_are_packed_once_per_patch_shape(monkeypatch, precision):
    net = random_net(4, 8, cond_dim=3)
    fwd = prepare(net, CPU, precision, condition=net.encode_factors([2, 2, 2]), patch_shape=(12, 10, 8))
    calls = []
    reorder = torch.ops.mkldnn._reorder_convolution_weight
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_convolution_weight",
                        lambda *a: calls.append(a) or reorder(*a), raising=False)
    fwd(batch((12, 10, 8), n=2))
    fwd(batch((12, 10, 8)))
    assert calls == []
    fwd(batch((5, 6, 7)))
    assert len(calls) == 3  # the hidden layers, for the new shape


def test_a_batch_that_fails_falls_back_to_eager(monkeypatch):
    net = random_net(3, 4, cond_dim=3)
    cond = net.encode_factors([1, 2, 2])
    fwd = prepare(net, CPU, "fp32", condition=cond)
    assert fwd.kind == "fused"

    def broken(*args, **kwargs):
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(inet, "_conv_relu", broken)
    x = batch((7, 6, 5), n=2)
    torch.testing.assert_close(fwd(x), reference(net, x, cond))
    assert fwd.kind == "eager" and "primitive descriptor" in fwd.reason
    torch.testing.assert_close(fwd(x), reference(net, x, cond))


@pytest.mark.parametrize("message", ["DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes.",
                                     "CUDA out of memory"])
@pytest.mark.parametrize("precision", FUSED_HERE)
def test_out_of_memory_is_not_hidden(monkeypatch, message, precision):
    fwd = prepare(random_net(3, 4), CPU, precision)

    def oom(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(inet, "_conv_relu", oom)
    with pytest.raises(RuntimeError, match="memory"):
        fwd(batch((5, 5, 5)))
    assert fwd.kind == "fused"


def test_bf16_without_native_support_runs_eager_and_says_why(monkeypatch):
    monkeypatch.setattr(inet, "cpu_supports_bf16", lambda: False)
    net = random_net(3, 4, cond_dim=3)
    cond = net.encode_factors([1, 1, 2])
    fwd = prepare(net, CPU, "bf16", condition=cond, patch_shape=(6, 5, 4))
    assert isinstance(fwd, EagerForward) and fwd.reason == inet.NO_NATIVE_BF16 and "fp32" in fwd.reason
    x = batch((6, 5, 4), n=2)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        expected = net(x, cond.expand(2, -1))
    assert torch.equal(fwd(x), expected)
    assert prepare(net, CPU, "fp32", condition=cond).kind == "fused"  # fp32 is unaffected


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU has native bf16 (the fused bf16 tests run instead)")
def test_bf16_falls_back_on_this_cpu_without_native_bf16():
    fwd = prepare(random_net(3, 4), CPU, "bf16")
    assert fwd.kind == "eager" and fwd.reason == inet.NO_NATIVE_BF16
