"""Inference of learned-upsampling networks (``rrlsrn``, ``georgescu``): the network, then the spline.

A learned-upsampling network takes the low-resolution volume itself and
refines each voxel axis by an integer ``scale`` (its ``upsampling``
attribute). ``upscale`` with such a model:

1. places the network's axes on the input's voxel axes
   (:func:`placement`): as stored when every requested factor (input voxel
   size over output voxel size) is at least the network's scale along its
   axis, else in the first order of the axes that is (a 1x1x4 network on
   slices thick along voxel axis 0 runs on the input transposed to
   ``(1, 2, 0)``, and its output is transposed back); refused
   (:func:`check_factors`'s error) when no order fits. An axis the network
   does not refine (scale 1) takes any factor;
2. runs the network on the input's own grid (:func:`upsample`, through the
   one tiled runner :func:`mrisr.inference.runner.run_tiles`, as the residual
   networks): tiles of the input with a halo of the network's receptive
   radius (input voxels); each tile owns a core of input voxels and writes the
   ``scale`` blocks of output voxels over that core, so every output block
   comes from exactly one tile and the stitched volume equals a whole-volume
   pass. The result
   lies on the *refined grid* (:func:`refined_grid`): the geometry
   contract's grid for a spacing of ``input spacing / scale`` (the scale
   as placed on the input's axes), which is
   edge-aligned (output voxels ``[i*s, (i+1)*s)`` tile input voxel ``i``),
   as in training (:mod:`mrisr.training.lr_pairs`);
3. resamples that volume with the same B-spline code as every method
   (:func:`mrisr.geometry.resample.resample_to_grid`) onto the requested contract
   grid, expressed in refined-grid coordinates (:func:`grid_on_refined`), so
   the output lands on exactly the grid of every other method. Where the
   factor equals the scale this step is the identity.

The network sees ``input / robust_scale(input)`` and its output is
multiplied back. Where it runs is decided once, as in :mod:`mrisr.inference.engine`:
the head mask of :func:`mrisr.evaluation.masks.network_mask` on the input (dilated by
the receptive radius). Outside it every block repeats its input voxel
(nearest neighbour), whatever the tiling; tiles whose core misses it are not
run. ``patch_size`` counts input voxels.

Example:
    >>> g = refined_grid(np.diag([2.0, 2.0, 4.0, 1.0]), (5, 5, 3), (2, 2, 4))
    >>> g.shape, g.spacing, g.offsets
    ((10, 10, 12), (1.0, 1.0, 1.0), (-0.25, -0.25, -0.375))
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mrisr.errors import ModelError, MrisrError
from mrisr.evaluation.masks import network_mask
from mrisr.geometry.grid import TargetGrid, target_grid, voxel_sizes
from mrisr.geometry.resample import resample_to_grid
from mrisr.inference.ensemble import flip_passes
from mrisr.inference.intensity import normalising_scale, robust_scale
from mrisr.inference.tiling import replicate as replicate  # public here too (nearest-neighbour refinement)

# torch, mrisr.inference.device, mrisr.inference.engine and mrisr.inference.runner (which import torch) are imported
# inside the functions that run a network: the grid helpers here (upsampling_scale, placement) serve torch-free callers.

#: Largest shortfall of a factor below the scale that still counts as equal.
FACTOR_TOLERANCE = 1e-6


def upsampling_scale(network: Any) -> tuple[int, int, int] | None:
    """The integer per-axis scale of a learned-upsampling network, None for an interpolated-input one.

    Example:
        >>> from mrisr.archs.rrlsrn import RRLSRN
        >>> upsampling_scale(RRLSRN((1, 1, 2), depth=2, width=2)), upsampling_scale(object())
        ((1, 1, 2), None)
    """
    scale = getattr(network, "upsampling", None)
    return None if scale is None else tuple(int(s) for s in scale)  # type: ignore[return-value]


def check_factors(scale: Sequence[int], factors: Sequence[float], model: str = "the model") -> None:
    """Refuse factors below the network's scale along an axis it refines.

    Raises:
        MrisrError: naming the axis, the factor and the scale.

    Example:
        >>> check_factors((1, 1, 4), (1.0, 0.8, 4.5))
        >>> check_factors((2, 2, 2), (2, 2, 1.5))  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        mrisr.errors.MrisrError: the model refines voxel axis 2 by 2 (a learned-upsampling network, ...)
        but the requested factor along it is 1.5; ...
    """
    for axis, (s, f) in enumerate(zip(scale, factors)):
        if s > 1 and f < s - FACTOR_TOLERANCE:
            raise MrisrError(f"{model} refines voxel axis {axis} by {s} (a learned-upsampling network, scale "
                             f"{list(scale)}) but the requested factor along it is {f:g}; ask for a factor of at "
                             f"least {s} along axis {axis}, or use another model or --method spline")


def placed_scale(scale: Sequence[int], axes: Sequence[int]) -> tuple[int, int, int]:
    """The scale along each input voxel axis when network axis ``i`` runs along input axis ``axes[i]``.

    Example:
        >>> placed_scale((1, 1, 4), (1, 2, 0))
        (4, 1, 1)
    """
    out = [1, 1, 1]
    for s, axis in zip(scale, axes):
        out[axis] = int(s)
    return tuple(out)  # type: ignore[return-value]


def placement(scale: Sequence[int], factors: Sequence[float], model: str = "the model") -> tuple[int, int, int]:
    """Which input voxel axis each network axis runs along: ``axes[i]`` for network axis ``i``.

    The identity when every factor is at least the scale along its axis (the
    network runs on the volume as stored), else the first permutation in
    lexicographic order that is: slices thick along voxel axis 0 or 1 go to
    a 1x1x4 network transposed so that they lie along its axis 2, and the
    other two axes keep their stored order. The in-plane axes are
    interchangeable for a network trained with them permuted
    (:func:`mrisr.training.lr_pairs.scale_preserving_permutation`).

    Raises:
        MrisrError: when no order fits (:func:`check_factors`'s error for the
            axes as stored).

    Example:
        >>> placement((1, 1, 4), (4, 4, 4)), placement((1, 1, 4), (4.0, 1.0, 1.0))
        ((0, 1, 2), (1, 2, 0))
    """
    fits = [axes for axes in itertools.permutations(range(3)) if _fits(placed_scale(scale, axes), factors)]
    if not fits:
        check_factors(scale, factors, model)  # the axes as stored do not fit either: raises
    return fits[0]  # type: ignore[return-value]


def _fits(scale: Sequence[int], factors: Sequence[float]) -> bool:
    """Every axis the network refines has a factor of at least its scale."""
    return all(s <= 1 or f >= s - FACTOR_TOLERANCE for s, f in zip(scale, factors))


def refined_grid(affine: np.ndarray, shape: Sequence[int], scale: Sequence[int]) -> TargetGrid:
    """The grid of the network's output: the contract grid for ``input spacing / scale`` (edge-aligned)."""
    return target_grid(affine, shape, tuple(voxel_sizes(affine) / np.asarray(scale, dtype=np.float64)))


def grid_on_refined(grid: TargetGrid, scale: Sequence[int]) -> TargetGrid:
    """``grid`` (a contract grid of the input) expressed in the voxel coordinates of the refined grid.

    Refined voxel ``k`` sits at input coordinate ``c + k / s`` with ``c = (1/s - 1) / 2``, so output
    voxel ``j`` (input coordinate ``c0 + r j``) is at refined coordinate ``(c0 + r j - c) * s``. The
    affine, shape and spacing are ``grid``'s: the output is the same grid.

    Example:
        >>> from mrisr.geometry.grid import target_grid
        >>> g = grid_on_refined(target_grid(np.eye(4), (4, 4, 4), 0.5), (2, 2, 2))
        >>> g.ratios, g.offsets
        ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    """
    s = np.asarray(scale, dtype=np.float64)
    c = (1.0 / s - 1.0) / 2.0
    r, c0 = np.asarray(grid.ratios), np.asarray(grid.offsets)
    ratios, offsets = tuple(float(v) for v in r * s), tuple(float(v) for v in (c0 - c) * s)
    return TargetGrid(shape=grid.shape, affine=grid.affine, ratios=ratios, offsets=offsets,  # type: ignore[arg-type]
                      spacing=grid.spacing)


def _plan(shape: Sequence[int], halo: int, budget: int, patch_size: Any, batch_size: int | None) -> Any:
    from mrisr.inference.engine import make_plan

    plan = make_plan(shape, halo, budget, patch_size, batch_size)
    if plan.blend:
        raise MrisrError(f"patches of {plan.patch_shape} input voxels cannot hold this learned-upsampling model's "
                         f"context of {halo} voxels each side; use patch_size of at least {2 * halo + 1} "
                         "(or leave it unset)")
    return plan


def upsample(data: np.ndarray, model: Any, *, device: str = "auto", precision: str = "auto",
             patch_size: int | Sequence[int] | None = None, batch_size: int | None = None,
             threads: int | None = None, progress: Callable[[int, int], None] | None = None,
             background: float | None = None, axes: Sequence[int] = (0, 1, 2)) -> tuple[np.ndarray, Any]:
    """The network's output on the refined grid (``data.shape * scale``, the scale placed by ``axes``),
    tile by tile.

    Args:
        data: 3D float volume on the input grid.
        model: A :class:`~mrisr.inference.model_card.LoadedModel` of a learned-upsampling network.
        axes: The input axis each network axis runs along (:func:`placement`); the
            network sees ``data.transpose(axes)`` (and ``patch_size`` per input axis
            is permuted with it) and its output is transposed back.
        device, precision, patch_size, batch_size, threads, progress: As
            :func:`mrisr.inference.engine.enhance` (``patch_size`` in input voxels).
        background: Intensity floor of the head mask, as a fraction of the
            intensity scale (default :data:`mrisr.inference.engine.BACKGROUND`).

    Returns:
        ``(volume, stats)``: float32 volume and :class:`mrisr.inference.engine.EngineStats`.

    Raises:
        ModelError: for a network without an integer ``upsampling`` scale.
        MrisrError: for ``axes`` that are not a permutation, a patch too small for the receptive radius, or
            out of device memory even after the runner's retries (:func:`mrisr.inference.runner.run_tiles`).
    """
    from mrisr.inference.device import cpu_threads, memory_budget, resolve_device, resolve_precision
    from mrisr.inference.engine import (
        BACKGROUND,
        EngineStats,
        bytes_per_voxel,
        check_volume,
        model_halo,
        patch_sides,
        positive_or_none,
        prepare_network,
    )
    from mrisr.inference.runner import network_forward, run_tiles

    t_start = time.perf_counter()
    scale = upsampling_scale(model.network)
    if scale is None:
        raise ModelError(f"model {model.name!r} is not a learned-upsampling network (it has no integer scale)")
    data = check_volume(data)
    axes = tuple(int(a) for a in axes)
    if sorted(axes) != [0, 1, 2]:
        raise MrisrError(f"axes must be a permutation of (0, 1, 2), got {axes}")
    sides, batch_size = patch_sides(patch_size), positive_or_none(batch_size, "batch_size")
    if axes != (0, 1, 2):
        data = np.ascontiguousarray(data.transpose(axes))
        sides = None if sides is None else tuple(sides[a] for a in axes)  # type: ignore[assignment]  # follow the axes
    background = BACKGROUND if background is None else background
    with cpu_threads(threads):
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev)
        t0 = time.perf_counter()
        intensity = normalising_scale(data, model.card.normalisation)
        t_norm = time.perf_counter() - t0
        network = prepare_network(model.network, dev)  # channels-last on the CPU, as the runner feeds it
        halo = model_halo(model)
        t0 = time.perf_counter()
        mask = network_mask(data, halo, floor=background * intensity)
        t_mask = time.perf_counter() - t0
        per_voxel = bytes_per_voxel(network, prec) * (1 + math.prod(scale))
        out = np.empty(tuple(n * s for n, s in zip(data.shape, scale)), np.float32)
        run = run_tiles(data, out, planner=lambda p, b, v: _plan(data.shape, halo, v, p, b),
                        forward=network_forward(network, dev, prec), device=dev, precision=prec,
                        intensity=intensity, scale=scale, sizes=(sides, batch_size, memory_budget(dev) // per_voxel),
                        mask=mask, radius=halo, progress=progress)
    fields = run.engine_fields()
    fields["patch_size"] = tuple(run.plan.patch_shape[k] for k in np.argsort(axes))  # per input axis
    stats = EngineStats(**fields, seconds_total=time.perf_counter() - t_start, scale=intensity,
                        seconds_normalise=t_norm, seconds_mask=t_mask, mask_fraction=float(mask.mean()))
    if axes != (0, 1, 2):
        out = np.ascontiguousarray(out.transpose(np.argsort(axes)))
    return out, stats


def whole_volume_upsample(data: np.ndarray, network: Any, intensity: float | None = None) -> np.ndarray:
    """Reference: one fp32 whole-volume pass ``intensity * network(data / intensity)`` (tests, small volumes)."""
    import torch

    intensity = float(robust_scale(data)) if intensity is None else intensity
    x = torch.from_numpy(np.ascontiguousarray(data, np.float32) / np.float32(intensity))[None, None]
    with torch.inference_mode():
        y = network.eval()(x).float()[0, 0].numpy()
    return (y * np.float32(intensity)).astype(np.float32)


def _placement_for(model: Any, grid: TargetGrid) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(axes, scale on the input's axes)`` of the model for ``grid``'s factors (:func:`placement`)."""

    scale = upsampling_scale(model.network)
    if scale is None:
        raise ModelError(f"model {model.name!r} is not a learned-upsampling network (it has no integer scale)")
    axes = placement(scale, [1.0 / r for r in grid.ratios], f"model {model.name!r}")
    return axes, placed_scale(scale, axes)


def upscale_learned(data: np.ndarray, grid: TargetGrid, model: Any, *, order: int = 3, antialias: bool = True,
                    progress: Callable[[int, int], None] | None = None,
                    **engine_kw: Any) -> tuple[np.ndarray, Any]:
    """A learned-upsampling model's result on ``grid`` (a contract grid of ``data``): network, then spline.

    Args:
        data: 3D input volume.
        grid: The output grid (:func:`mrisr.geometry.grid.target_grid` of the input).
        model: A loaded learned-upsampling model.
        order, antialias: Of the spline step.
        progress: Called with ``(tiles done, total)``.
        **engine_kw: ``device``, ``precision``, ``patch_size``, ``batch_size``,
            ``threads``, ``background`` (``factors`` is ignored: the grid gives them).

    Returns:
        ``(volume on grid, engine stats)``.

    Raises:
        MrisrError: for a factor below the network's scale (:func:`check_factors`).
    """
    engine_kw.pop("factors", None)
    axes, scale = _placement_for(model, grid)
    refined, stats = upsample(data, model, progress=progress, axes=axes, **engine_kw)
    return resample_to_grid(refined, grid_on_refined(grid, scale), order=order, antialias=antialias), stats


def upscale_learned_ensemble(data: np.ndarray, grid: TargetGrid, model: Any, combine: str = "median", *,
                             order: int = 3, antialias: bool = True,
                             progress: Callable[[int, int], None] | None = None,
                             **engine_kw: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """:func:`upscale_learned` with Georgescu et al.'s 8-way flip self-ensemble (median by default).

    The network runs on the input under each flip (:func:`mrisr.inference.ensemble.flip_passes`);
    the combined refined volume and the std of the passes are resampled to
    ``grid`` by the same spline (the std clipped at 0).

    Returns:
        ``(volume on grid, std on grid, EnsembleStats)``.

    Example:
        >>> from mrisr.archs.georgescu import Georgescu
        >>> from mrisr.geometry.grid import target_grid
        >>> from mrisr.inference.model_card import LoadedModel, example_card
        >>> m = LoadedModel("g", example_card(), Georgescu(scale=(1, 1, 2), width=4).eval(), "0" * 64, None)
        >>> x = np.random.default_rng(0).random((6, 6, 4)).astype(np.float32) + 1
        >>> out, std, st = upscale_learned_ensemble(x, target_grid(np.eye(4), x.shape, (1, 1, 0.5)), m,
        ...                                         device="cpu", precision="fp32", threads=1)
        >>> out.shape, st.passes, st.combine, bool(std.min() >= 0)
        ((6, 6, 8), 8, 'median', True)
    """

    engine_kw.pop("factors", None)
    axes, scale = _placement_for(model, grid)
    refined, std, stats = flip_passes(data, lambda x, on: upsample(x, model, progress=on, axes=axes, **engine_kw),
                                      combine, progress)
    on_refined = grid_on_refined(grid, scale)
    out = resample_to_grid(refined, on_refined, order=order, antialias=antialias)
    std = np.maximum(resample_to_grid(std, on_refined, order=order, antialias=antialias), 0).astype(np.float32)
    return out, std, stats
