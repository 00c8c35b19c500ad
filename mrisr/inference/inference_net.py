"""Fast CPU inference for ReCNN: the network as a chain of fused oneDNN convolutions.

:func:`prepare` turns a network into a callable ``forward(x) -> residual``
for one engine call (fixed device, precision and condition). For a plain
:class:`~mrisr.archs.recnn.ReCNN` on the CPU (fp32 or bf16) it returns a
:class:`FusedReCNN`, which computes the same function with less work:

- the factor conditioning (a constant per call) is folded into the first
  convolution's bias, so every layer is a plain convolution;
- weights are cast to the compute dtype once, in channels-last order, and
  prepacked into oneDNN's blocked layout for the patch shape (instead of a
  cast and a reorder per layer and per call under autocast);
- each hidden convolution and its ReLU run as one oneDNN primitive
  (``mkldnn._convolution_pointwise``, the op inductor emits), so no separate
  ReLU pass over the feature maps;
- the hidden layers write into two feature-map buffers reused across layers
  and calls (the in-place form of that op), instead of a fresh allocation
  per layer whose first touch costs ~15% of the time in page faults;
- the last convolution (one output channel, which oneDNN pads to 16 and so
  costs half a hidden layer) is split into ``k`` partial outputs of a
  ``1 x k x k`` kernel (one per offset along the first axis), summed with
  shifts along that axis in float32: ~2x faster on head-sized patches, same
  function.

Anything else (other architectures, GPUs, fp16, bf16 on a CPU without native
bf16, a torch without the oneDNN ops, or a self-check that fails) gets
:func:`eager`: the network itself under autocast, exactly what the engine ran
before. The fast path is checked against eager fp32 on a small patch when it
is built.

Example:
    >>> import torch
    >>> from mrisr.archs.recnn import ReCNN
    >>> net = ReCNN(3, 4, cond_dim=3).eval()
    >>> cond = net.encode_factors([1, 1, 2])
    >>> fwd = prepare(net, torch.device("cpu"), "fp32", condition=cond)
    >>> fwd.kind
    'fused'
    >>> x = torch.rand(1, 1, 9, 8, 7)
    >>> bool(torch.allclose(fwd(x), net(x, cond), atol=1e-5))
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.inference.device import DTYPES, autocast, cpu_supports_bf16

#: Precisions the fused path runs (on the CPU).
FUSED_PRECISIONS = ("fp32", "bf16")
#: Shape of the patch the fused path is checked on at build time (small, not cubic).
CHECK_SHAPE = (10, 9, 8)
#: Largest |fused - eager| in fp32 the self-check accepts, relative to max |eager| + 1.
CHECK_TOLERANCE = 1e-4
#: Patch shapes whose prepacked weights are kept.
MAX_PACKED_SHAPES = 4
#: Messages of allocation failures, which propagate instead of falling back (eager needs more memory).
MEMORY_ERRORS = ("out of memory", "not enough memory")

#: Why bf16 is not fused on a CPU without native bf16 (oneDNN cannot prepack bf16 weights there).
NO_NATIVE_BF16 = "this CPU has no native bf16 (AVX-512 BF16 or AMX) for the fused path; fp32 is faster here"

Forward = Callable[[torch.Tensor], torch.Tensor]


class EagerForward:
    """The network itself under autocast (the engine's reference path).

    Attributes:
        kind: ``"eager"``.
        reason: Why the fused path was not used (empty if not tried).

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> fwd = EagerForward(ReCNN(3, 4).eval(), torch.device("cpu"), "fp32")
        >>> fwd(torch.zeros(1, 1, 5, 5, 5)).shape
        torch.Size([1, 1, 5, 5, 5])
    """

    kind = "eager"

    def __init__(self, network: nn.Module, device: torch.device, precision: str,
                 condition: torch.Tensor | None = None, reason: str = "") -> None:
        self.network, self.device, self.precision = network, device, precision
        self.condition = None if condition is None else condition.to(device)
        self.reason = reason

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.device, self.precision):
            if self.condition is None:
                return self.network(x)
            return self.network(x, self.condition.expand(len(x), -1))


def eager(network: nn.Module, device: torch.device, precision: str,
          condition: torch.Tensor | None = None) -> EagerForward:
    """The unmodified network as a forward callable (see :class:`EagerForward`).

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> eager(ReCNN(3, 4).eval(), torch.device("cpu"), "fp32").kind
        'eager'
    """
    return EagerForward(network, device, precision, condition)


def fused_ops_available() -> bool:
    """Whether this torch has oneDNN enabled and its fused convolution ops.

    Example:
        >>> isinstance(fused_ops_available(), bool)
        True
    """
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    try:
        return all(hasattr(torch.ops.mkldnn, op) for op in ("_convolution_pointwise", "_reorder_convolution_weight"))
    except Exception:  # noqa: BLE001 - exotic builds
        return False


def unsupported(network: nn.Module, device: torch.device, precision: str) -> str:
    """Why the fused path cannot run ``network`` ("" when it can).

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> unsupported(ReCNN(3, 4), torch.device("cpu"), "fp32")
        ''
        >>> unsupported(nn.Conv3d(1, 1, 3), torch.device("cpu"), "fp32")
        'Conv3d is not a ReCNN'
    """
    from mrisr.archs.recnn import ReCNN

    if device.type != "cpu" or precision not in FUSED_PRECISIONS:
        return f"the fused path runs on the CPU in {' or '.join(FUSED_PRECISIONS)} only"
    if not isinstance(network, ReCNN) or type(network).forward is not ReCNN.forward:
        return f"{type(network).__name__} is not a ReCNN"
    if not fused_ops_available():
        return "this torch lacks oneDNN or its fused convolution ops"
    if precision == "bf16" and not cpu_supports_bf16():
        return NO_NATIVE_BF16
    return _unsupported_body(network.body)


def _unsupported_body(body: nn.Sequential) -> str:
    """Check the body is Conv3d (+ ReLU) ... Conv3d with 'same' zero padding."""
    layers = list(body)
    convs, relus = layers[0::2], layers[1::2]
    if (not all(type(m) is nn.Conv3d for m in convs) or not all(type(m) is nn.ReLU for m in relus)
            or len(convs) != len(relus) + 1):
        return "the body is not alternating Conv3d and ReLU layers"
    for m in convs:
        k = m.kernel_size
        if (m.stride != (1, 1, 1) or m.dilation != (1, 1, 1) or m.groups != 1 or m.padding_mode != "zeros"
                or any(n % 2 == 0 for n in k) or m.padding != tuple(n // 2 for n in k) or m.bias is None):
            return f"unsupported convolution {m}"
    if convs[-1].out_channels != 1:
        return "the last convolution has more than one output channel"
    return ""


class FusedReCNN:
    """A ReCNN (eval, fixed condition) as fused oneDNN convolutions; see the module docstring.

    Call with a ``(B, C, X, Y, Z)`` float32 batch (channels-last is fastest);
    returns the float32 residual ``(B, 1, X, Y, Z)``.

    Args:
        network: The ReCNN (left unchanged).
        precision: ``fp32`` or ``bf16``.
        condition: Its ``(1, k)`` condition vector, if conditioned.
        patch_shape: Spatial shape to prepack the weights for.
        reuse_buffers: Write the hidden layers into two feature-map buffers
            kept across layers and calls (the peak is the same two maps a
            forward pass needs anyway), instead of a fresh allocation per
            layer, whose first touch costs the kernel ~15% of the network
            time in page faults; :meth:`release` frees them.

    Attributes:
        kind: ``"fused"``, or ``"eager"`` once a batch failed and the
            ``fallback`` took over.
        reason: Why it fell back ("" while fused).
        dtype: Compute dtype of the convolutions.
        fallback: Forward used when a batch fails (set by :func:`prepare`;
            without it errors propagate). Out-of-memory errors always do.
    """

    kind = "fused"
    reason = ""
    fallback: EagerForward | None = None

    def __init__(self, network: nn.Module, precision: str, condition: torch.Tensor | None = None,
                 patch_shape: Sequence[int] | None = None, reuse_buffers: bool = True) -> None:
        self.dtype = DTYPES[precision]
        convs = [m for m in network.body if isinstance(m, nn.Conv3d)]
        self.weights, self.biases, self.paddings = _hidden_layers(network, convs, condition, self.dtype)
        self.last_weight, self.last_bias, self.last_kernel = _split_last(convs[-1], self.dtype)
        self.reuse_buffers = reuse_buffers and hasattr(torch.ops.mkldnn, "_convolution_pointwise_")
        self._packed: dict[tuple[int, ...], list[torch.Tensor]] = {}
        self._buffers: list[torch.Tensor | None] = [None, None]
        if patch_shape is not None:
            self.packed_weights((1, convs[0].in_channels, *patch_shape))

    def packed_weights(self, shape: Sequence[int]) -> list[torch.Tensor]:
        """Hidden weights prepacked into oneDNN's layout for inputs of ``shape`` (cached per patch shape)."""
        key = tuple(shape[2:])
        if key not in self._packed:
            if len(self._packed) >= MAX_PACKED_SHAPES:
                self._packed.pop(next(iter(self._packed)))
            size = list(shape)
            packed = []
            for w, p in zip(self.weights, self.paddings):
                size[1] = w.shape[1]
                packed.append(torch.ops.mkldnn._reorder_convolution_weight(w, list(p), [1, 1, 1], [1, 1, 1], 1, size))
            self._packed[key] = packed
        return self._packed[key]

    def buffer(self, slot: int, shape: Sequence[int]) -> torch.Tensor:
        """Feature-map buffer ``slot`` (0 or 1) of ``shape``, zeroed (reallocated if the shape changed)."""
        buf = self._buffers[slot]
        if buf is None or tuple(buf.shape) != tuple(shape):
            self._buffers[slot] = None  # free the old one first
            buf = torch.empty(tuple(shape), dtype=self.dtype).contiguous(memory_format=torch.channels_last_3d)
            self._buffers[slot] = buf
        return buf.zero_()

    def release(self) -> None:
        """Free the feature-map buffers (they are rebuilt on the next call)."""
        self._buffers = [None, None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "eager" and self.fallback is not None:
            return self.fallback(x)
        try:
            return self.run(x)
        except RuntimeError as exc:
            if self.fallback is None or any(m in str(exc).lower() for m in MEMORY_ERRORS):
                raise
            self.kind, self.reason = "eager", f"the fused path failed on a batch of {tuple(x.shape)}: {exc}"
            self.release()
            return self.fallback(x)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The fused forward pass (no fallback)."""
        with torch.inference_mode():
            packed = self.packed_weights(x.shape)
            h = x.to(self.dtype).contiguous(memory_format=torch.channels_last_3d)
            for i, (w, dense, b, p) in enumerate(zip(packed, self.weights, self.biases, self.paddings)):
                out = self.buffer(i % 2, (x.shape[0], dense.shape[0], *x.shape[2:])) if self.reuse_buffers else None
                h = _conv_relu(h, w, b, p, out)
            return self._last(h)

    def _last(self, h: torch.Tensor) -> torch.Tensor:
        """Last convolution: ``kd`` partial maps of a ``1 x kh x kw`` kernel, shifted along axis 2 and summed
        in float32."""
        kd, kh, kw = self.last_kernel
        parts = F.conv3d(h, self.last_weight, None, padding=(0, kh // 2, kw // 2))
        del h
        out = torch.empty((parts.shape[0], 1, *parts.shape[2:]), dtype=torch.float32)
        out.fill_(self.last_bias)
        for i in range(kd):
            _add_shifted(out, parts[:, i:i + 1], i - kd // 2)
        return out


def _hidden_layers(network: nn.Module, convs: list[nn.Conv3d], condition: torch.Tensor | None,
                   dtype: torch.dtype) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[int, ...]]]:
    """Weights (channels-last, ``dtype``), biases (condition folded into the first) and paddings of all
    convolutions but the last."""
    with torch.no_grad():
        biases = [m.bias.detach().float().cpu() for m in convs[:-1]]
        if getattr(network, "cond", None) is not None:
            if condition is None:
                raise ValueError("this network is conditioned on the upsampling factors: pass condition")
            bias = network.cond(condition.detach().float().cpu().reshape(1, -1).to(network.cond.weight.device))
            biases[0] = biases[0] + bias.float().cpu()[0]
        weights = [m.weight.detach().cpu().to(dtype).contiguous(memory_format=torch.channels_last_3d)
                   for m in convs[:-1]]
    return weights, [b.to(dtype) for b in biases], [tuple(m.padding) for m in convs[:-1]]


def _conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: Sequence[int],
               out: torch.Tensor | None = None) -> torch.Tensor:
    """``relu(conv3d(x, weight, bias))`` as one oneDNN primitive; into ``out`` (zeroed: the op adds to it) if
    given."""
    ones = [1, 1, 1]
    if out is None:
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(padding), ones, ones, 1, "relu", [], "")
    return torch.ops.mkldnn._convolution_pointwise_.binary(out, x, weight, bias, list(padding), ones, ones, 1, "add",
                                                          None, "relu", [], "")


def _split_last(conv: nn.Conv3d, dtype: torch.dtype) -> tuple[torch.Tensor, float, tuple[int, int, int]]:
    """The one-output last convolution as ``kd`` outputs of a ``1 x kh x kw`` kernel (output ``i``: the
    kernel's slice ``i`` along the first axis)."""
    kd, kh, kw = conv.kernel_size
    with torch.no_grad():
        w = conv.weight.detach().cpu()[0]                      # (C, kd, kh, kw)
        w = w.permute(1, 0, 2, 3)[:, :, None]                  # (kd, C, 1, kh, kw)
        w = w.to(dtype).contiguous(memory_format=torch.channels_last_3d)
    return w, float(conv.bias.detach().float().cpu()[0]), (kd, kh, kw)


def _add_shifted(out: torch.Tensor, part: torch.Tensor, shift: int) -> None:
    """``out[:, :, x] += part[:, :, x + shift]`` where both lie inside the volume (in float32).

    Example:
        >>> out = torch.zeros(1, 1, 4, 1, 1)
        >>> _add_shifted(out, torch.arange(4.0).reshape(1, 1, 4, 1, 1), 1)
        >>> out.flatten().tolist()
        [1.0, 2.0, 3.0, 0.0]
    """
    n = out.shape[2]
    if abs(shift) >= n:
        return
    out[:, :, max(0, -shift):n - max(0, shift)] += part[:, :, max(0, shift):n + min(0, shift)]


def self_check(fused: FusedReCNN, network: nn.Module, condition: torch.Tensor | None) -> str:
    """Compare the fused path with eager fp32 on a small random patch ("" if they agree).

    The fused path's structure is the same in every precision, so it is
    checked in fp32 (tightly); in bf16 it is only required to run.
    """
    channels = next(m for m in network.body if isinstance(m, nn.Conv3d)).in_channels
    x = torch.rand((1, channels, *CHECK_SHAPE), generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last_3d)
    ref = eager(network, torch.device("cpu"), "fp32", condition)(x).float()
    check = fused if fused.dtype == torch.float32 else FusedReCNN(network, "fp32", condition)
    err = float((check(x) - ref).abs().max())
    if not err <= CHECK_TOLERANCE * (1 + float(ref.abs().max())):
        return f"the fused path differs from eager by {err:.3g} on a test patch"
    if check is not fused:
        fused(x)
    return ""


def prepare(network: nn.Module, device: torch.device, precision: str, condition: torch.Tensor | None = None,
            patch_shape: Sequence[int] | None = None) -> Forward:
    """The fastest exact forward callable for ``network`` on ``device`` in ``precision``.

    Args:
        network: The residual network, on ``device`` in eval mode.
        device: Torch device the engine runs on.
        precision: ``fp32``, ``bf16`` or ``fp16`` (resolved).
        condition: ``(1, k)`` condition vector of a conditioned network
            (the same for every patch), or None.
        patch_shape: Spatial patch shape the engine will use, to prepack
            weights for it (other shapes still work).

    Returns:
        A callable ``forward(x) -> residual`` with ``kind`` ``"fused"`` or
        ``"eager"`` (and ``reason``, why not fused). It runs under
        inference mode itself; cast its result with ``.float()``.
    """
    reason = unsupported(network, device, precision)
    if not reason:
        try:
            fused = FusedReCNN(network, precision, condition, patch_shape)
            reason = self_check(fused, network, condition)
            fused.fallback = EagerForward(network, device, precision, condition)
        except Exception as exc:  # noqa: BLE001 - any failure falls back to the reference path
            reason = f"the fused path failed to build: {type(exc).__name__}: {exc}"
        if not reason:
            return fused
    return EagerForward(network, device, precision, condition, reason)
