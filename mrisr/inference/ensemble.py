"""Flip self-ensemble: the network under the 8 flips of the volume, and their spread.

Georgescu et al.'s self-ensemble for medical super-resolution: the network is
run on the interpolated volume flipped along every subset of the three voxel
axes (8 passes), each output is flipped back, and the 8 results are combined
voxel by voxel (mean or median; Georgescu et al. use the median). A
learned-upsampling network runs on the flipped low-resolution input instead
(:func:`flip_passes`, :func:`mrisr.inference.upsampling.upscale_learned_ensemble`).
Flips keep every axis in place, so the
per-axis upsampling factors a conditioned network receives are the same for
every pass. The network was trained with random flips, so each pass is an
equally valid estimate; where they disagree the network is guessing.

The voxel-wise standard deviation of the 8 passes (population std,
``ddof=0``) is the uncertainty map ``mrisr upscale --uncertainty`` writes as
``<output stem>_std.nii.gz``. It is zero wherever the network's answer does
not depend on the orientation (a network whose kernels are symmetric under
every flip gives exactly the single pass, and zero spread).

Cost: 8 network passes. Memory: for ``mean``, three output-sized float32
arrays besides the engine's own (running mean, running sum of squared
deviations, current pass); for ``median``, the 8 passes are kept.

torch is imported only by :func:`flip_ensemble`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import MrisrError, look_up_option
from mrisr.options import COMBINES

#: The 8 flips: for each voxel axis, whether it is reversed (the identity first).
FLIPS: tuple[tuple[bool, ...], ...] = tuple(itertools.product((False, True), repeat=3))
#: Suffix of the uncertainty map beside an output.
STD_SUFFIX = "_std"
#: Voxels above this fraction of the robust scale are foreground for the summary statistics.
FOREGROUND = 0.1


@dataclass
class EnsembleStats:
    """What :func:`flip_ensemble` did.

    Attributes:
        combine: ``"mean"`` or ``"median"``.
        passes: Network passes (8).
        engine: The :class:`~mrisr.inference.engine.EngineStats` of every pass.
        seconds: Wall time of the whole ensemble.
        std: Summary of the std map (:func:`std_summary`).
    """

    combine: str
    passes: int
    engine: list[Any] = field(default_factory=list)
    seconds: float = 0.0
    std: dict = field(default_factory=dict)


def std_path(output: str | Path) -> Path:
    """Where the uncertainty map of an output goes: ``<output stem>_std.nii.gz`` beside it.

    Example:
        >>> std_path("out/t2_sr.nii").name
        't2_sr_std.nii.gz'
    """
    from mrisr.io.naming import split_extension

    p = Path(output)
    return p.with_name(split_extension(p.name)[0] + STD_SUFFIX + ".nii.gz")


def _axes(flip: Sequence[bool]) -> tuple[int, ...]:
    return tuple(k for k, f in enumerate(flip) if f)


def std_summary(std: np.ndarray, reference: np.ndarray) -> dict:
    """Std statistics relative to the reference's robust scale, over its foreground.

    Returns:
        ``{"scale", "mean_relative", "p99_relative", "max_relative"}``:
        the scale (:func:`mrisr.inference.intensity.robust_scale` of ``reference``) and
        the mean, 99th percentile and maximum of ``std / scale`` over voxels
        where ``reference > 0.1 * scale`` (all voxels if none are).

    Example:
        >>> ref = np.zeros((4, 4, 4), np.float32); ref[1:3, 1:3, 1:3] = 100
        >>> std_summary(np.full(ref.shape, 2.0, np.float32), ref)["mean_relative"]
        0.02
    """
    from mrisr.inference.intensity import robust_scale

    scale = float(robust_scale(reference))
    fg = np.asarray(reference) > FOREGROUND * scale
    values = np.asarray(std, dtype=np.float32)[fg] if fg.any() else np.asarray(std, dtype=np.float32).ravel()
    rel = values.astype(np.float64) / scale
    return {"scale": scale, "mean_relative": round(float(rel.mean()), 6),
            "p99_relative": round(float(np.percentile(rel, 99)), 6), "max_relative": round(float(rel.max()), 6)}


def flip_ensemble(data: np.ndarray, model: Any, factors: Sequence[float] | None = None, combine: str = "mean", *,
                  progress: Callable[[int, int], None] | None = None,
                  **engine_kw: Any) -> tuple[np.ndarray, np.ndarray, EnsembleStats]:
    """Run :func:`mrisr.inference.engine.enhance` under the 8 flips and combine the passes.

    Args:
        data: 3D float32 spline-interpolated volume on the output grid.
        model: A :class:`~mrisr.inference.model_card.LoadedModel`.
        factors: Upsampling factor per voxel axis (unchanged by flips).
        combine: ``"mean"`` or ``"median"`` of the 8 passes.
        progress: ``progress(patches done, total patches)`` over all passes.
        **engine_kw: ``device``, ``precision``, ``patch_size``, ``batch_size``,
            ``threads`` for :func:`~mrisr.inference.engine.enhance`.

    Returns:
        ``(combined, std, stats)``: float32 volumes of ``data``'s shape and
        the :class:`EnsembleStats`.

    Raises:
        MrisrError: an unknown ``combine``, or what :func:`~mrisr.inference.engine.enhance` raises.

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> from mrisr.inference.model_card import LoadedModel, example_card
        >>> m = LoadedModel("demo", example_card(), ReCNN(3, 4).eval(), "0" * 64, None)
        >>> x = np.full((8, 8, 8), 100.0, np.float32)
        >>> out, std, st = flip_ensemble(x, m, device="cpu", precision="fp32", threads=1)
        >>> out.shape, st.passes, float(std[3:5, 3:5, 3:5].max()) < 1e-3   # constant input: no spread inside
        ((8, 8, 8), 8, True)
    """
    from mrisr.inference.engine import enhance

    return flip_passes(data, lambda x, on: enhance(x, model, factors=factors, progress=on, **engine_kw),
                       combine, progress)


def flip_passes(data: np.ndarray, run: Callable[[np.ndarray, Callable[[int, int], None]], tuple[np.ndarray, Any]],
                combine: str = "mean", progress: Callable[[int, int], None] | None = None,
                ) -> tuple[np.ndarray, np.ndarray, EnsembleStats]:
    """``run`` under the 8 flips of ``data``, each output flipped back, combined voxel by voxel.

    ``run(volume, on_patches) -> (output, engine stats)`` may change the shape
    (a learned-upsampling network: ``scale`` output voxels per input voxel
    along each axis); the flips are the same axes of its output, which is
    exact for an output grid that tiles the input grid edge-aligned (the
    output blocks of input voxel ``i`` become those of ``n - 1 - i``, in
    reverse order).

    Returns:
        ``(combined, std, stats)`` on the output's shape (see :func:`flip_ensemble`).

    Example:
        >>> x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
        >>> up = lambda v, on: (np.repeat(v, 2, axis=2) + 1, None)   # flip-equivariant: no spread
        >>> out, std, st = flip_passes(x, up, "median")
        >>> out.shape, bool(np.array_equal(out, np.repeat(x, 2, axis=2) + 1)), float(std.max())
        ((2, 2, 4), True, 0.0)
    """
    look_up_option(combine, COMBINES, "ensemble")
    data = np.asarray(data)
    if data.ndim != 3:
        raise MrisrError(f"the flip ensemble takes one 3D volume, got an array of shape {data.shape}")
    t0 = time.perf_counter()
    stats = EnsembleStats(combine=combine, passes=len(FLIPS))
    n = len(FLIPS)
    keep = None
    mean = m2 = None
    for k, flip in enumerate(FLIPS):
        axes = _axes(flip)
        x = np.ascontiguousarray(np.flip(data, axes)) if axes else data

        def on_patches(done: int, total: int, k: int = k) -> None:
            if progress is not None and total:
                progress(k * total + done, n * total)

        out, st = run(x, on_patches)
        stats.engine.append(st)
        out = np.flip(out, axes) if axes else out
        if combine == "median":
            if keep is None:
                keep = np.empty((n, *out.shape), np.float32)
            keep[k] = out
            continue
        # Welford's running mean and sum of squared deviations (stable in float32 for 8 passes).
        if mean is None:
            mean, m2 = np.array(out, np.float32), np.zeros(out.shape, np.float32)
            continue
        delta = out - mean
        mean += delta / np.float32(k + 1)
        delta *= out - mean
        m2 += delta  # type: ignore[operator]
        del delta
    if keep is not None:
        combined = np.median(keep, axis=0).astype(np.float32)
        std = keep.std(axis=0, dtype=np.float64).astype(np.float32)
        del keep
    else:
        combined = mean  # type: ignore[assignment]
        std = np.sqrt(np.maximum(m2 / np.float32(n), 0.0)).astype(np.float32)  # type: ignore[operator]
    stats.seconds = time.perf_counter() - t0
    stats.std = std_summary(std, combined)
    return np.ascontiguousarray(combined, np.float32), std, stats


__all__ = ["flip_ensemble", "flip_passes", "EnsembleStats", "std_path", "std_summary", "FLIPS", "COMBINES",
           "STD_SUFFIX"]
