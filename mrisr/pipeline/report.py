"""What was done to one image: :class:`UpscaleReport` (the provenance of an output) and
:class:`UpscaleResult` (``data, affine, report``).

The JSON sidecar of ``mrisr upscale`` is ``report.to_dict()`` plus the settings; ``mrisr qc`` reads it back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from mrisr.geometry.grid import TargetGrid
    from mrisr.pipeline.settings import UpscaleOptions
    from mrisr.volume import Volume


#: Stages whose wall-clock time an :class:`UpscaleReport` records (seconds).
STAGES = ("read", "interpolate", "network", "write")


@dataclass
class UpscaleReport:
    """What was done to one image: the provenance of an output.

    Attributes:
        input: Source path (``None`` for an in-memory image).
        input_shape: Input array shape (3 or 4 values).
        input_spacing: Input voxel sizes in mm.
        output_shape: Output array shape (3 or 4 values; the 4th is kept).
        output_spacing: Output voxel sizes in mm.
        output_affine: Output 4x4 affine (the geometry contract's ``A'``).
        method: ``"cnn"`` or ``"spline"``.
        order: B-spline order of the interpolation.
        antialias: Whether axes made coarser were smoothed first.
        n_volumes: Number of 3D volumes processed.
        model: Model name (``None`` for ``"spline"``).
        model_sha256: SHA-256 of the model weights.
        model_path: The folder the model was loaded from (tells a custom
            model from a shipped one of the same name).
        device: Device the network ran on.
        precision: Arithmetic precision of the network.
        patch_size: Patch shape the network ran with (core plus halos).
        halo: Context voxels around each patch core.
        batch_size: Patches per network batch.
        threads: CPU threads used by the network.
        patches_run: Patches passed through the network (all volumes).
        patches_skipped: Patches skipped (background).
        timings: Seconds spent per stage (``read``, ``interpolate``,
            ``network``, ``write``; read and write are filled by the caller
            that does them).
        warnings: Reader warnings, model range warnings and input checks
            (:mod:`mrisr.trust.ood`), in plain language.
        consistency: With ``consistency=True``: the projection's PSF and the
            consistency errors of the spline, the network and the projected
            result (:mod:`mrisr.trust.consistency`); else ``None``.
        uncertainty: With the flip ensemble: how the passes were combined,
            their number, std-map statistics and ``std_output`` (the path of
            the written std map, filled by the writer); else ``None``.
        ood: Measures of the input behind the input-check warnings
            (:class:`mrisr.trust.ood.InputAssessment`; ``method="cnn"`` only).
        adapt: With ``adapt``: what per-scan adaptation did (:class:`mrisr.inference.adapt.AdaptReport`:
            internal pairs, steps, seconds, held-out internal loss before and
            after, and whether the adapted or the pretrained weights ran).
        reference: With a reference (guided models): its ``path``, ``shape``,
            ``spacing``, ``overlap`` (fraction of the output inside it),
            ``register`` (``none`` or ``rigid``), ``transform_ras`` (4x4 RAS
            matrix from output world to reference world, or ``None``), and
            with ``rigid`` ``rotation_deg``, ``translation_mm`` (at the
            output's centre) and ``transform_file`` (the ``.tfm`` written
            beside the output, filled by the writer); else ``None``.
        transfer: With ``method="transfer"``: what the input's internal test chose (the network's result or the
            spline, with or without the reference's detail), the fit's window and eps, and the test's PSNR per
            option (:meth:`mrisr.inference.transfer.ReferenceTransfer.describe`); else ``None``.
    """

    input: str | None
    input_shape: list[int]
    input_spacing: list[float]
    output_shape: list[int]
    output_spacing: list[float]
    output_affine: list[list[float]]
    method: str
    order: int
    antialias: bool
    n_volumes: int
    model: str | None = None
    model_sha256: str | None = None
    model_path: str | None = None
    device: str | None = None
    precision: str | None = None
    patch_size: Any = None
    halo: int | None = None
    batch_size: int | None = None
    threads: int | None = None
    patches_run: int = 0
    patches_skipped: int = 0
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    warnings: list[str] = field(default_factory=list)
    consistency: dict | None = None
    uncertainty: dict | None = None
    ood: dict | None = None
    reference: dict | None = None
    adapt: dict | None = None
    transfer: dict | None = None

    @classmethod
    def for_grid(cls, volume: Volume, grid: TargetGrid, options: UpscaleOptions) -> UpscaleReport:
        """The report of upscaling ``volume`` onto ``grid`` with ``options``, before any work: the input, the
        output grid, the interpolation and the reader's warnings; the stages fill in the rest."""
        shape = list(np.shape(volume.data))
        return cls(
            input=None if volume.path is None else str(volume.path),
            input_shape=[int(v) for v in shape],
            input_spacing=[float(v) for v in volume.spacing],
            output_shape=[*grid.shape, *shape[3:]],
            output_spacing=[float(v) for v in grid.spacing],
            output_affine=grid.affine.tolist(),
            method=options.method, order=int(options.order), antialias=bool(options.antialias),  # type: ignore[arg-type]
            n_volumes=1 if len(shape) == 3 else int(shape[3]),
            warnings=list(volume.warnings),
        )

    def warn(self, *messages: str, once: bool = False) -> None:
        """Add plain-language warnings; with ``once``, only those not there yet."""
        for message in messages:
            if not once or message not in self.warnings:
                self.warnings.append(message)

    def add_time(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to the wall-clock time of ``stage``."""
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def add_network(self, seconds: float, stats: Iterable[Any]) -> None:
        """A run of the network: its time, and what each pass's engine resolved (device, precision, patch and
        batch sizes, halo, threads), counted (patches run and skipped) and warned about.

        Example:
            >>> from types import SimpleNamespace
            >>> r = UpscaleReport(None, [2, 2, 2], [2.0] * 3, [4, 4, 4], [1.0] * 3,
            ...                   np.eye(4).tolist(), "cnn", 3, True, 1)
            >>> r.add_network(1.5, [SimpleNamespace(device="cpu", n_patches=8, n_skipped=2, warnings=["w"])] * 2)
            >>> r.timings["network"], r.device, r.patches_run, r.patches_skipped, r.warnings
            (1.5, 'cpu', 12, 4, ['w'])
        """
        self.add_time("network", seconds)
        for st in stats:
            for name in ("device", "precision", "patch_size", "batch_size", "halo", "threads"):
                value = getattr(st, name, None)
                if value is not None:
                    setattr(self, name, jsonable_keep_nan(value))
            skipped = int(getattr(st, "n_skipped", 0) or 0)
            self.patches_run += int(getattr(st, "n_patches", 0) or 0) - skipped
            self.patches_skipped += skipped
            self.warn(*(getattr(st, "warnings", None) or []), once=True)

    def to_dict(self) -> dict:
        """A JSON-ready copy (plain lists, floats and strings).

        Example:
            >>> r = UpscaleReport(None, [2, 2, 2], [2.0] * 3, [4, 4, 4], [1.0] * 3,
            ...                   np.eye(4).tolist(), "spline", 3, True, 1)
            >>> r.to_dict()["timings"]["read"]
            0.0
        """
        return jsonable_keep_nan(dataclasses.asdict(self))


class _UpscaleTuple(NamedTuple):
    data: np.ndarray
    affine: np.ndarray
    report: UpscaleReport


class UpscaleResult(_UpscaleTuple):
    """Output of :func:`upscale_volume`: unpacks as ``data, affine, report``.

    ``std`` holds the voxel-wise standard deviation of the flip ensemble
    (same shape as ``data``) when ``uncertainty=True``, else ``None``.
    """

    std: np.ndarray | None = None

    @classmethod
    def with_std(cls, data: np.ndarray, affine: np.ndarray, report: UpscaleReport,
                 std: np.ndarray | None) -> UpscaleResult:
        """A result carrying the std map."""
        result = cls(data, affine, report)
        result.std = std
        return result


def jsonable_keep_nan(obj: Any) -> Any:
    """Plain JSON types, NaN and Inf kept (:func:`mrisr.io.writer.jsonable`)."""
    from mrisr.io.writer import jsonable

    return jsonable(obj, finite=False)
