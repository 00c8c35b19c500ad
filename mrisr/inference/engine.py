"""The CNN stage: ``output = interpolated + network(interpolated)``, patch by patch.

:func:`enhance` takes the spline-interpolated volume on the output grid and
returns it plus the residual the network predicts (Pham et al.'s ReCNN learns
``X - Z``). Steps:

1. ``scale = normalising_scale(data, card.normalisation)`` (the model's own
   method, :mod:`mrisr.inference.intensity`); the network sees ``patch / scale``.
2. Where the network runs is decided once, before any tiling: the head mask
   of :func:`mrisr.evaluation.masks.network_mask` (on a coarse grid of about the
   low-resolution input's voxels: smoothed, thresholded by Otsu and the
   background's noise, holes filled, dilated by the receptive radius), or the
   caller's ``mask``. Outside it the output is exactly the interpolated value,
   whatever the tiling, so the result does not depend on the patch or batch
   size, and a noisy background costs nothing either.
3. The mask's bounding box, grown by the halo for context, is tiled
   (:mod:`mrisr.inference.tiling`) with a halo equal to the model's receptive radius,
   so inside the mask the stitched result equals a whole-volume pass. Patch
   shapes come from the memory budget (or ``patch_size``); a region that fits
   is one patch. Tiles whose core does not touch the mask are not run.
4. The tiles run through the one tiled runner (:func:`mrisr.inference.runner.run_tiles`,
   which also runs the learned-upsampling networks): batches in bf16/fp16 or fp32 (a
   ReCNN on the CPU as fused oneDNN convolutions, :mod:`mrisr.inference.inference_net`;
   anything else under autocast); the residual is cast to float32, multiplied by
   ``scale`` and added to the float32 input patch, and the core is written into one
   preallocated float32 output.

Peak memory is the input, the output, the one-byte mask and one batch of
patches with its activations: no other full-size array is alive while the
network runs (deciding the mask makes float32 temporaries of the coarse grid
and, for blocks of one voxel, of the volume, freed before the first batch).
A GPU out-of-memory error halves the batch, then the patch, and retries (the runner's rule,
:func:`mrisr.inference.runner.shrink_plan`).

Guided models (``network.in_channels == 2``) take a second channel: a finer
reference scan already on the output grid (:mod:`mrisr.trust.reference`), divided
by its own scale (same method). The reference only feeds the network: the
residual is still added to channel 0 (the image), the mask is decided on the
image alone, and tiles read both channels through the same windows, so tiling
stays exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mrisr.errors import InputError, ModelError, MrisrError
from mrisr.evaluation.masks import coarse_block, network_mask
from mrisr.inference.device import DTYPES, cpu_threads, memory_budget, resolve_device, resolve_precision
from mrisr.inference.intensity import normalising_scale, robust_scale
from mrisr.inference.model_card import LoadedModel
from mrisr.inference.runner import network_forward, run_tiles
from mrisr.inference.tiling import Plan, choose_core, plan_tiles

#: Voxels below this fraction of the scale are background whatever the histogram says (the mask's floor).
BACKGROUND = 0.01
#: Feature maps of ``width`` channels alive at once in a forward pass (measured
#: peak: ~400 B/voxel fp32 and ~140 B/voxel bf16 for width 32 on the CPU).
LIVE_MAPS = 3
#: Most patches in one automatic batch.
MAX_AUTO_BATCH = 16


@dataclass(frozen=True)
class EngineStats:
    """What :func:`enhance` did.

    Attributes:
        device: Device used (``"cpu"``, ``"cuda:0"``...).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        patch_size: Patch shape fed to the network (core plus halos).
        halo: Context voxels around each core.
        batch_size: Patches per network call.
        n_patches: Tiles in the plan.
        n_skipped: Tiles not run (their core lies outside the mask).
        seconds_network: Time in the network (transfers and sync included).
        seconds_total: Wall time of the whole call.
        scale: Intensity scale (the model's normalisation) the network saw 1.0 at.
        blended: Whether outputs were blended (halo below the receptive radius).
        seconds_normalise: Time computing the scale.
        seconds_stitch: Time gathering patches and writing results.
        network_voxels: Voxels the network processed (halos included).
        retries: Out-of-memory retries.
        threads: CPU threads torch used.
        warnings: Plain-language notes (blending, out-of-memory retries...).
        seconds_mask: Time deciding the mask.
        mask_fraction: Share of the output voxels inside the mask (where the network may change the input).
    """

    device: str
    precision: str
    patch_size: tuple[int, int, int]
    halo: int
    batch_size: int
    n_patches: int
    n_skipped: int
    seconds_network: float
    seconds_total: float
    scale: float
    blended: bool = False
    seconds_normalise: float = 0.0
    seconds_stitch: float = 0.0
    network_voxels: int = 0
    retries: int = 0
    threads: int | None = None
    warnings: tuple[str, ...] = ()
    seconds_mask: float = 0.0
    mask_fraction: float = 1.0

    @property
    def patches_run(self) -> int:
        """Patches the network ran on (``n_patches - n_skipped``)."""
        return self.n_patches - self.n_skipped

    @property
    def patches_skipped(self) -> int:
        """Alias of ``n_skipped``."""
        return self.n_skipped


def feature_channels(network: nn.Module) -> int:
    """Widest convolution output of ``network`` (for memory estimates)."""
    own = getattr(network, "feature_channels", None)  # a network whose layers run on coarser lattices says
    if isinstance(own, int):
        return own
    widths = [m.out_channels for m in network.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    return max(widths) if widths else 64


def model_halo(model: LoadedModel) -> int:
    """Context voxels each side of a tile: the larger of the card's receptive radius and the network's own.

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> from mrisr.inference.model_card import example_card
        >>> model_halo(LoadedModel("demo", example_card(receptive_radius=1), ReCNN(3, 4), "0" * 64, None))
        3
    """
    return max(int(model.receptive_radius), int(getattr(model.network, "receptive_radius", 0)))


def network_stride(network: nn.Module) -> int:
    """Lattice the network's tiles must be aligned to (``network.stride``; 1 for most networks).

    A network that folds blocks of voxels into channels (:class:`~mrisr.archs.s2d.ReCNNS2D`) computes the
    same function under any tiling only when every window starts at a multiple of its block and has whole
    blocks: :func:`enhance` aligns its windows, halo and cores to it.

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> network_stride(ReCNN(3, 4))
        1
    """
    stride = getattr(network, "stride", 1)
    return stride if isinstance(stride, int) and stride >= 1 else 1


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def bytes_per_voxel(network: nn.Module, precision: str) -> int:
    """Estimated peak bytes per patch voxel of one forward pass.

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> bytes_per_voxel(ReCNN(8, 32), "fp32"), bytes_per_voxel(ReCNN(8, 32), "bf16")
        (400, 208)
    """
    act = torch.finfo(DTYPES[precision]).bits // 8
    return LIVE_MAPS * feature_channels(network) * act + 16  # + input, residual, result in fp32


def positive_or_none(value: int | None, what: str) -> int | None:
    """``value`` when it is None or an integer >= 1 (``what`` names it in the error)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise MrisrError(f"{what} must be a positive integer or None, got {value!r}")
    return int(value)


def patch_sides(value: int | Sequence[int] | None) -> tuple[int, int, int] | None:
    """``patch_size`` as three sides (one value means a cube)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,) * 3
    sides = list(value) if isinstance(value, (list, tuple)) else []
    if len(sides) != 3:
        raise MrisrError(f"patch_size must be one positive integer or three, got {value!r}")
    return tuple(positive_or_none(v, "patch_size") for v in sides)  # type: ignore[return-value]


def balanced_core(n: int, core: int) -> int:
    """Smallest core that covers ``n`` voxels with as few tiles as cores of ``core``.

    Example:
        >>> balanced_core(197, 80)  # 3 tiles either way; windows shrink by 14 voxels
        66
    """
    return math.ceil(n / math.ceil(n / core))


def make_plan(shape: Sequence[int], halo: int, voxel_budget: int, patch_size: int | Sequence[int] | None = None,
              batch_size: int | None = None, stride: int = 1) -> Plan:
    """Choose tiles and batch size for a volume.

    Args:
        shape: Volume shape.
        halo: The model's receptive radius.
        voxel_budget: Patch voxels (all patches of a batch) that fit in memory.
        patch_size: Largest patch side(s) including halos (one value: a
            cube), or ``None`` to choose the shape with the least halo
            overhead that fits the budget. Cores are balanced, so patches
            may come out smaller than asked.
        batch_size: Patches per call, or ``None`` to fill the budget.
        stride: Cores and halo are rounded up to multiples of it (:func:`network_stride`); with a
            ``shape`` of whole multiples too, every window then starts at a multiple of it.

    Returns:
        The :class:`Plan`; it blends (with a halo of a quarter of the patch)
        when the patch cannot hold a core plus two full halos.

    Example:
        >>> p = make_plan((50, 40, 30), 8, 10**9)
        >>> len(p.tiles), p.patch_shape, p.blend
        (1, (50, 40, 30), False)
        >>> make_plan((50, 40, 30), 8, 10**9, patch_size=12).blend
        True
    """
    sides = patch_sides(patch_size)
    if sides is not None:
        sides = tuple(min(p, n) for p, n in zip(sides, shape))  # type: ignore[assignment]
        # An axis whose patch spans the whole volume needs no halo.
        short = [p for p, n in zip(sides, shape) if p < n]
        blend = bool(short) and min(short) <= 2 * halo
        h = min(short) // 4 if blend else halo
        # Same number of tiles with balanced cores: windows no larger than needed.
        core: tuple[int, int, int] | None = tuple(balanced_core(n, max(1, p - 2 * h)) if p < n else n
                                                 for p, n in zip(sides, shape))  # type: ignore[assignment]
    else:
        blend, h = False, halo
        core = choose_core(shape, halo, voxel_budget)
        if core is None:
            side = max(1, int(round(voxel_budget ** (1 / 3))))
            blend, h = True, side // 4
            core = (side - 2 * h,) * 3
    if stride > 1:
        h = _round_up(h, stride)
        core = tuple(_round_up(c, stride) for c in core)  # type: ignore[assignment]
    tiles = plan_tiles(shape, core, h)
    patch_vox = math.prod(tiles[0].shape)
    if batch_size is None:
        batch_size = max(1, min(len(tiles), MAX_AUTO_BATCH, voxel_budget // patch_vox))
    return Plan(tiles=tiles, halo=h, batch_size=batch_size, blend=blend)


def check_volume(data: np.ndarray, what: str = "volume") -> np.ndarray:
    """A 3D numpy volume as float32, refusing anything else (``what`` names it in the error)."""
    if not isinstance(data, np.ndarray):
        raise InputError(None, f"enhance takes a numpy array as the {what}, got {type(data).__name__}")
    if data.ndim != 3 or min(data.shape) < 1:
        raise InputError(None, f"enhance takes one 3D {what}, got an array of shape {data.shape}")
    if not np.issubdtype(data.dtype, np.floating):
        raise InputError(None, f"enhance takes floating-point data, got {data.dtype} for the {what}")
    data = np.asarray(data, dtype=np.float32)
    if not np.isfinite(np.sum(data, dtype=np.float64)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise InputError(None, f"the {what} holds {bad} NaN or infinite voxels")
    return data


def check_model_channels(model: LoadedModel, guided: bool) -> None:
    """Refuse a model that does not fit the inputs: a guided model (2 channels)
    without a reference, or a single-input model given one.

    Raises:
        ModelError: naming the model (and the shipped guided models).

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> from mrisr.inference.model_card import example_card
        >>> check_model_channels(LoadedModel("demo", example_card(), ReCNN(3, 4), "0" * 64, None), False)
    """
    net = getattr(model, "network", None)
    if not isinstance(net, nn.Module):
        raise ModelError("enhance takes a LoadedModel (see mrisr.inference.registry.load_model), "
                         f"got {type(model).__name__}")
    from mrisr.inference.registry import channel_error

    error = channel_error(model.name, getattr(net, "in_channels", 1), guided)
    if error is not None:
        raise ModelError(error)


def _check_inputs(data: np.ndarray, model: LoadedModel,
                  reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    data = check_volume(data)
    check_model_channels(model, reference is not None)
    if reference is not None:
        reference = check_volume(reference, "reference")
        if reference.shape != data.shape:
            raise InputError(None, f"the reference must lie on the output grid: shape {reference.shape}, "
                                   f"the volume's is {data.shape} (see mrisr.trust.reference.resample_reference)")
    return data, reference


def prepare_network(network: nn.Module, device: torch.device) -> nn.Module:
    """Move the network to ``device`` in eval mode (in place; channels-last on the CPU)."""
    network.eval().to(device)
    if device.type == "cpu":
        network.to(memory_format=torch.channels_last_3d)
    return network


def enhance(data: np.ndarray, model: LoadedModel, *, device: str = "auto", precision: str = "auto",
            patch_size: int | Sequence[int] | None = None, batch_size: int | None = None,
            threads: int | None = None,
            progress: Callable[[int, int], None] | None = None,
            factors: Sequence[float] | None = None,
            reference: np.ndarray | None = None,
            mask: np.ndarray | None = None) -> tuple[np.ndarray, EngineStats]:
    """Add the network's residual to an interpolated volume, patch by patch.

    Args:
        data: 3D float32 spline-interpolated volume on the output grid.
        model: From :func:`mrisr.inference.registry.load_model`. Its network is moved to
            ``device`` in place.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda`` or ``mps``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (not on the CPU).
        patch_size: Largest patch side including halos, one value (a cube)
            or three (default: from memory).
        batch_size: Patches per network call (default: from memory).
        threads: CPU threads for torch during the call (restored after).
        progress: Called with ``(patches done, total patches)``.
        factors: Upsampling factor per voxel axis (input voxel size over
            output voxel size); required by networks conditioned on them.
        reference: Guided models only (and required by them): the float32
            reference on the output grid (``data``'s shape, see
            :func:`mrisr.trust.reference.resample_reference`); the network sees it
            divided by its own scale (the same method) as channel 1.
        mask: Where the network may change ``data`` (boolean, ``data``'s
            shape); default :func:`mrisr.evaluation.masks.network_mask` of ``data``
            (on a coarse grid of ``factors``' integer parts). Outside it the
            result is ``data`` exactly.

    Returns:
        ``(result, stats)``: the float32 volume and :class:`EngineStats`.

    Raises:
        InputError: for data that is not a finite 3D floating-point array, or
            a mask of another shape.
        ModelError: for a model the engine cannot feed: a guided model
            without ``reference``, or a reference for a single-input model.
        MrisrError: for an unknown or unavailable device or precision, or
            invalid patch/batch sizes or thread counts.

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> from mrisr.inference.model_card import LoadedModel, example_card
        >>> m = LoadedModel("demo", example_card(), ReCNN(3, 4).eval(), "0" * 64, None)
        >>> out, st = enhance(np.ones((8, 8, 8), np.float32), m, device="cpu", precision="fp32")
        >>> out.shape, out.dtype, st.n_patches
        ((8, 8, 8), dtype('float32'), 1)
    """
    t_start = time.perf_counter()
    data, reference = _check_inputs(data, model, reference)
    sides = patch_sides(patch_size)
    batch_size = positive_or_none(batch_size, "batch_size")
    with cpu_threads(threads):
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev)
        t0 = time.perf_counter()
        norm = model.card.normalisation
        scale = normalising_scale(data, norm)
        guide_scale = normalising_scale(reference, norm) if reference is not None else 1.0
        t_norm = time.perf_counter() - t0
        network = prepare_network(model.network, dev)
        condition = _condition(network, factors)
        halo = model_halo(model)
        stride = network_stride(network)
        budget = memory_budget(dev) // bytes_per_voxel(network, prec)
        t0 = time.perf_counter()
        head = _head_mask(data, mask, halo, factors, BACKGROUND * scale)
        t_mask = time.perf_counter() - t0
        out = np.empty(data.shape, np.float32)
        box = mask_box(head)
        window = _expand(box, halo, data.shape) if box is not None else tuple(slice(0, n) for n in data.shape)
        window = tuple(slice(w.start - w.start % stride, w.stop) for w in window)  # on the network's lattice
        if window != tuple(slice(0, n) for n in data.shape):
            np.copyto(out, data)  # outside the mask's box (and its context) the input stays
        sub, sub_out, sub_mask = data[window], out[window], head[window]
        guide = None if reference is None else reference[window]
        whole_blocks = _to_whole_blocks(stride, sub, sub_mask, guide)
        if whole_blocks is not None:
            sub, sub_mask, guide = whole_blocks
            sub_out = np.empty(sub.shape, np.float32)
        run = run_tiles(sub, sub_out, planner=lambda p, b, v: make_plan(sub.shape, halo, v, p, b, stride),
                        forward=network_forward(network, dev, prec, condition), device=dev, precision=prec,
                        intensity=scale, residual=True, sizes=(sides, batch_size, budget), mask=sub_mask,
                        guide=guide, guide_scale=guide_scale, radius=halo, progress=progress)
        if whole_blocks is not None:
            out[window] = sub_out[tuple(slice(0, w.stop - w.start) for w in window)]
    stats = EngineStats(**run.engine_fields(), seconds_total=time.perf_counter() - t_start, scale=scale,
                        seconds_normalise=t_norm, seconds_mask=t_mask,
                        mask_fraction=float(np.count_nonzero(head)) / head.size)
    return out, stats


def _to_whole_blocks(stride: int, data: np.ndarray, mask: np.ndarray, guide: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """The network's box padded at its far ends to whole blocks of ``stride`` (None if it has them): the
    last slice repeated, as the network itself pads (so the result is a whole-box pass's), the mask False."""
    pad = [(0, (-n) % stride) for n in data.shape]
    if not any(p for _, p in pad):
        return None
    grown = np.pad(data, pad, mode="edge")
    return grown, np.pad(mask, pad), None if guide is None else np.pad(guide, pad, mode="edge")


def _head_mask(data: np.ndarray, mask: np.ndarray | None, radius: int, factors: Sequence[float] | None,
               floor: float) -> np.ndarray:
    """The caller's mask (checked), else :func:`mrisr.evaluation.masks.network_mask` of ``data``."""
    if mask is None:
        return network_mask(data, radius, coarse_block(data.shape, factors), floor)
    mask = np.asarray(mask)
    if mask.shape != data.shape:
        raise InputError(None, f"the mask must have the volume's shape {data.shape}, got {mask.shape}")
    return mask.astype(bool, copy=False)


def mask_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box of a boolean mask's True voxels (None if there are none).

    The network runs only over this box plus its context (the halo), so a
    volume with a clean or noisy background costs what its head costs.

    Example:
        >>> m = np.zeros((6, 6, 6), bool); m[2:4, 1:2, 3:6] = True
        >>> mask_box(m)
        (slice(2, 4, None), slice(1, 2, None), slice(3, 6, None))
    """
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def _expand(box: tuple[slice, ...], halo: int, shape: Sequence[int]) -> tuple[slice, ...]:
    """``box`` grown by ``halo`` voxels each side, clipped to the volume."""
    return tuple(slice(max(0, b.start - halo), min(n, b.stop + halo)) for b, n in zip(box, shape))


def _condition(network: nn.Module, factors: Sequence[float] | None) -> torch.Tensor | None:
    """The condition vector of a factor-conditioned network (None for others)."""
    if not getattr(network, "cond_dim", 0):
        return None
    if factors is None:
        raise ModelError("this model is conditioned on the upsampling factors; pass factors= to enhance()")
    return network.encode_factors(factors)


def whole_volume(data: np.ndarray, network: nn.Module, scale: float | None = None,
                 factors: Sequence[float] | None = None, reference: np.ndarray | None = None) -> np.ndarray:
    """Reference: one fp32 whole-volume pass ``data + scale * network(data / scale)``.

    For tests and small volumes (needs the activations of the whole volume).
    A guided network gets ``reference / robust_scale(reference)`` as channel 1.
    """
    scale = float(robust_scale(data)) if scale is None else scale
    channels = [np.ascontiguousarray(data, np.float32) / np.float32(scale)]
    if reference is not None:
        channels.append(np.asarray(reference, np.float32) / np.float32(robust_scale(reference)))
    x = torch.from_numpy(np.stack(channels))[None]
    cond = _condition(network, factors)
    with torch.inference_mode():
        r = (network(x) if cond is None else network(x, cond)).float()[0, 0].numpy()
    return (data + r * np.float32(scale)).astype(np.float32)
