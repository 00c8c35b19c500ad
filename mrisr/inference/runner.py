"""The one tiled runner: a network over the windows of an input grid, stitched into regions of an output grid.

Every network the package runs goes through :func:`run_tiles`: the residual networks of
:func:`mrisr.inference.engine.enhance` (input and output on the same grid, ``scale`` 1) and the
learned-upsampling networks of :func:`mrisr.inference.upsampling.upsample` (the input's grid in, a grid
``scale`` times finer per axis out). As in MONAI's ``sliding_window_inference``, splitting and merging are
separate: the *plan* (:class:`mrisr.inference.tiling.Plan`, made by the caller's ``planner``) says which window
of the input each patch reads and which core it owns; :meth:`~mrisr.inference.tiling.Tile.scaled` puts those
on the output grid, and :class:`~mrisr.inference.tiling.Stitcher` writes them (cores, or blended windows).
The runner owns what happens in between, the same for every kind of network:

- the batches: ``patch / intensity`` (and a guide channel, ``guide / guide_scale``, read through the same
  windows) as one float32 batch, channels-last on the CPU, through ``forward`` (fused or eager, from
  :func:`mrisr.inference.inference_net.prepare`; :func:`network_forward`); the result cast to float32,
  multiplied by ``intensity`` (and added to the input patch for a residual network);
- the head mask: a tile whose core misses the mask (whose window, when blending) is not run, its output is
  the input (each voxel repeated ``scale`` times: :func:`~mrisr.inference.tiling.replicate`), and outside the
  mask the output is that fallback exactly, whatever the tiling;
- out-of-memory errors: the batch is halved, then the patch (:func:`shrink_plan`), up to :data:`MAX_RETRIES`
  times, after which a :class:`~mrisr.errors.MrisrError` says what was tried;
- the counts (:class:`RunStats`: network and stitching seconds, voxels, tiles run and skipped, retries,
  warnings) and ``progress(done, total)`` after every batch.

Example:
    >>> import numpy as np
    >>> from mrisr.inference.tiling import Plan, plan_tiles
    >>> x = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    >>> out = np.empty((12, 5, 4), np.float32)
    >>> planner = lambda sides, batch, budget: Plan(plan_tiles(x.shape, 3, 0), 0, batch or 4, False)
    >>> up = lambda t: t.repeat_interleave(2, dim=2)       # a learned "upsampling": nearest neighbour along axis 0
    >>> st = run_tiles(x, out, planner=planner, sizes=(None, None, 10**6), forward=lambda shape: up,
    ...                device=torch.device("cpu"), precision="fp32", intensity=2.0, scale=(2, 1, 1))
    >>> bool(np.array_equal(out, np.repeat(x, 2, axis=0))), st.n_patches, st.n_skipped
    (True, 8, 0)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mrisr.errors import MrisrError
from mrisr.inference.device import cpu_bf16_warning, empty_cache, is_out_of_memory
from mrisr.inference.inference_net import prepare
from mrisr.inference.tiling import Plan, Stitcher, Tile, batches, replicate

#: Out-of-memory retries before giving up.
MAX_RETRIES = 8

#: A network as a callable: a ``(B, C, X, Y, Z)`` float32 batch -> ``(B, 1, X*sx, Y*sy, Z*sz)``.
Forward = Callable[[torch.Tensor], torch.Tensor]
#: Builds the forward callable for a patch shape (called once per attempt, so it may prepack for it).
ForwardFactory = Callable[[tuple[int, int, int]], Forward]
#: Patch sides (or None: from the budget), batch size (or None: fill the budget) and the budget in patch voxels.
Sizes = tuple[tuple[int, int, int] | None, int | None, int]
#: Makes the plan for those sizes (:func:`mrisr.inference.engine.make_plan` on the caller's volume).
Planner = Callable[[tuple[int, int, int] | None, int | None, int], Plan]


@dataclass(frozen=True)
class RunStats:
    """What :func:`run_tiles` did (the fields :class:`mrisr.inference.engine.EngineStats` takes from it).

    Attributes:
        plan: The plan that ran (after any retries).
        device: Device used (``"cpu"``, ``"cuda:0"``...).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        n_skipped: Tiles not run (their core lies outside the mask).
        seconds_network: Time in the network (transfers and sync included).
        seconds_stitch: Time gathering patches and writing results.
        network_voxels: Input voxels the network processed (halos and channels included).
        retries: Out-of-memory retries.
        threads: CPU threads torch used.
        warnings: Plain-language notes (precision, blending, out-of-memory retries).
    """

    plan: Plan
    device: str
    precision: str
    n_skipped: int
    seconds_network: float
    seconds_stitch: float
    network_voxels: int
    retries: int
    threads: int
    warnings: tuple[str, ...]

    @property
    def n_patches(self) -> int:
        """Tiles in the plan."""
        return len(self.plan.tiles)

    def engine_fields(self) -> dict[str, Any]:
        """The fields of :class:`mrisr.inference.engine.EngineStats` this run decides (all but the caller's
        intensity scale, timings of its own steps and mask share)."""
        plan = self.plan
        return {"device": self.device, "precision": self.precision, "patch_size": plan.patch_shape,
                "halo": plan.halo, "batch_size": plan.batch_size, "n_patches": self.n_patches,
                "n_skipped": self.n_skipped, "seconds_network": self.seconds_network, "blended": plan.blend,
                "seconds_stitch": self.seconds_stitch, "network_voxels": self.network_voxels,
                "retries": self.retries, "threads": self.threads, "warnings": self.warnings}


@dataclass
class _Counters:
    skipped: int = 0
    network: float = 0.0
    stitch: float = 0.0
    voxels: int = 0


def network_forward(network: torch.nn.Module, device: torch.device, precision: str,
                    condition: torch.Tensor | None = None) -> ForwardFactory:
    """The forward factory of a network: :func:`~mrisr.inference.inference_net.prepare` for each patch shape
    (fused oneDNN convolutions for a ReCNN on the CPU, else the network under autocast)."""
    return lambda shape: prepare(network, device, precision, condition, shape)


def device_name(device: torch.device) -> str:
    """``device`` as reported: a CUDA device without an index is named by the current one (``cuda:0``).

    Example:
        >>> device_name(torch.device("cpu"))
        'cpu'
    """
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def shrink_plan(plan: Plan, sides: tuple[int, int, int] | None, budget: int) -> Sizes:
    """Smaller sizes after an out-of-memory error: halve the batch, else the patch volume.

    Example:
        >>> from mrisr.inference.tiling import plan_tiles
        >>> plan = Plan(plan_tiles((8, 8, 8), 4, 0), 0, 1, False)
        >>> shrink_plan(plan, (4, 4, 4), 10**6), shrink_plan(plan, None, 10**6)
        (((3, 3, 3), 1, 1000000), (None, 1, 32))
    """
    if plan.batch_size > 1:
        return sides, plan.batch_size // 2, budget
    voxels = math.prod(plan.patch_shape)
    if voxels <= 1:
        raise MrisrError("out of memory even with one-voxel patches")
    if sides is not None:
        shrunk = tuple(max(1, int(p / 2 ** (1 / 3))) for p in plan.patch_shape)
        return shrunk, 1, budget  # type: ignore[return-value]
    return None, 1, max(1, min(budget, voxels) // 2)


def run_tiles(data: np.ndarray, out: np.ndarray, *, planner: Planner, sizes: Sizes, forward: ForwardFactory,
              device: torch.device, precision: str, intensity: float, scale: Sequence[int] = (1, 1, 1),
              residual: bool = False, mask: np.ndarray | None = None,
              guide: np.ndarray | None = None, guide_scale: float = 1.0, radius: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> RunStats:
    """Run a network over ``data``'s tiles and stitch its outputs into ``out``, retrying smaller on out of memory.

    Args:
        data: float32 input volume (unnormalised), on the input grid.
        out: Preallocated float32 output, ``data.shape * scale``; every voxel is written.
        planner: ``planner(sides, batch_size, budget) -> Plan`` of ``data``'s grid, called for each attempt.
        sizes: The first attempt's ``(patch sides or None, batch size or None, budget in patch voxels)``.
        forward: ``forward(patch_shape) -> network callable`` (:func:`network_forward`), called for each attempt.
        device: Torch device the network is on.
        precision: ``fp32``, ``bf16`` or ``fp16`` (for the warnings; ``forward`` applies it).
        intensity: The network sees ``patch / intensity``; its output is multiplied back.
        scale: Output voxels per input voxel along each axis (1 for a residual network).
        residual: Add the input patch to the output (``data + intensity * network(data / intensity)``);
            needs a scale of 1.
        mask: Where the network may change the fallback (boolean, ``data``'s shape; None: everywhere).
        guide: A second input channel on ``data``'s grid, read through the same windows, or None.
        guide_scale: The network sees ``guide / guide_scale``.
        radius: The network's receptive radius, for the warning when the plan blends (default: the plan's halo).
        progress: Called with ``(tiles done, total)`` after each batch (from 0 again after a retry).

    Returns:
        The :class:`RunStats`.

    Raises:
        MrisrError: when out of memory after :data:`MAX_RETRIES` retries (or with one-voxel patches, or when
            ``planner`` refuses the smaller sizes), or for a residual network with a scale other than 1.
    """
    scale = tuple(int(s) for s in scale)
    if residual and scale != (1, 1, 1):
        raise MrisrError(f"a residual network writes the input's grid; got a scale of {list(scale)}")
    sides, batch_size, budget = sizes
    retries = 0
    while True:
        try:
            plan = planner(sides, batch_size, budget)
        except MrisrError as exc:
            if not retries:
                raise
            raise _out_of_memory(device, plan, retries) from exc  # no smaller plan can be made
        try:
            counts = _run_plan(data, out, plan, forward(plan.patch_shape), device=device,
                               intensity=np.float32(intensity), scale=scale, residual=residual, mask=mask,
                               guide=guide, guide_scale=np.float32(guide_scale), progress=progress)
            break
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if retries >= MAX_RETRIES:
                raise _out_of_memory(device, plan, retries) from exc
        # Outside the except block the traceback (and the failed batch's tensors) are released.
        empty_cache(device)
        retries += 1
        sides, batch_size, budget = shrink_plan(plan, sides, budget)
    notes = _warnings(plan, plan.halo if radius is None else radius, retries, cpu_bf16_warning(device, precision))
    return RunStats(plan=plan, device=device_name(device), precision=precision, n_skipped=counts.skipped,
                    seconds_network=counts.network, seconds_stitch=counts.stitch, network_voxels=counts.voxels,
                    retries=retries, threads=torch.get_num_threads(), warnings=tuple(notes))


def _out_of_memory(device: torch.device, plan: Plan, retries: int) -> MrisrError:
    return MrisrError(f"out of memory on {device} even with patches of {plan.patch_shape} and batches of "
                      f"{plan.batch_size} after {retries} retries; try --device cpu")


def _run_plan(data: np.ndarray, out: np.ndarray, plan: Plan, forward: Forward, *, device: torch.device,
              intensity: np.float32, scale: tuple[int, ...], residual: bool, mask: np.ndarray | None,
              guide: np.ndarray | None, guide_scale: np.float32,
              progress: Callable[[int, int], None] | None) -> _Counters:
    """One attempt: every tile of ``plan`` run (or skipped) and stitched into ``out``."""
    expected = tuple(n * s for n, s in zip(data.shape, scale))
    if out.shape != expected:
        raise MrisrError(f"the output must have shape {expected} (the input's times the scale), got {out.shape}")
    stitcher = Stitcher(out, [t.scaled(scale) for t in plan.tiles] if plan.blend else (), blend=plan.blend)
    counts = _Counters()
    total, done = len(plan.tiles), 0
    channels_last = device.type == "cpu"
    for group in batches(plan.tiles, plan.batch_size):
        t0 = time.perf_counter()
        run: list[Tile] = []
        for tile in group:
            if mask is not None and not mask[tile.read if plan.blend else tile.core].any():
                stitcher.add(tile.scaled(scale), replicate(data[tile.read], scale))
                counts.skipped += 1
            else:
                run.append(tile)
        if run:
            batch = np.empty((len(run), 1 if guide is None else 2, *plan.patch_shape), np.float32)
            for i, tile in enumerate(run):
                np.divide(data[tile.read], intensity, out=batch[i, 0])
                if guide is not None:
                    np.divide(guide[tile.read], guide_scale, out=batch[i, 1])
            t1 = time.perf_counter()
            counts.stitch += t1 - t0
            x = torch.from_numpy(batch).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            result = forward(x).float().cpu().numpy()
            _sync(device)
            t0 = time.perf_counter()
            counts.network += t0 - t1
            counts.voxels += batch.size
            del batch, x
            for i, tile in enumerate(run):
                patch = result[i, 0]
                patch *= intensity
                if residual:
                    patch += data[tile.read]
                stitcher.add(tile.scaled(scale), patch)
            del result
        counts.stitch += time.perf_counter() - t0
        done += len(group)
        if progress is not None:
            progress(done, total)
    if mask is not None:
        t0 = time.perf_counter()
        _keep_outside(data, out, plan.tiles, mask, scale)
        counts.stitch += time.perf_counter() - t0
    return counts


def _keep_outside(data: np.ndarray, out: np.ndarray, tiles: Sequence[Tile], mask: np.ndarray,
                  scale: tuple[int, ...]) -> None:
    """Outside ``mask`` the output is the input (repeated ``scale`` times) exactly: core by core (they
    partition the grid), so no full-size temporary of the output's shape is made."""
    for tile in tiles:
        inside = mask[tile.core]
        if inside.all():
            continue
        region = out[tile.scaled(scale).core]
        np.copyto(region, replicate(data[tile.core], scale), where=~replicate(inside, scale))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _warnings(plan: Plan, radius: int, retries: int, precision_note: str = "") -> list[str]:
    out = [precision_note] if precision_note else []
    if plan.blend:
        out.append(f"patches of {plan.patch_shape} cannot hold the model's context of {radius} voxels each side; "
                   f"overlapping outputs were blended (halo {plan.halo}), so patch seams may differ slightly "
                   "from a whole-volume pass")
    if retries:
        out.append(f"ran out of device memory; retried {retries} time(s) with smaller batches or patches "
                   f"(final patch {plan.patch_shape}, batch {plan.batch_size})")
    return out
