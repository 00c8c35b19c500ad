"""The upscaling pipeline: read, interpolate onto the contract grid, refine.

:func:`upscale` is the one-call Python API (``mrisr.upscale``); the command
line (``mrisr upscale``) and :mod:`mrisr.pipeline.batch` use the lower-level
:func:`upscale_volume`, which works on an in-memory
:class:`~mrisr.volume.Volume` and returns the data, the affine and an
:class:`UpscaleReport` holding everything a provenance record needs.

Steps for each 3D volume (a 4D series is processed volume by volume):

1. B-spline interpolation of ``order`` onto the contract grid
   (:func:`mrisr.geometry.grid.target_grid`, :func:`mrisr.geometry.resample.resample_to_grid`).
2. With ``method="cnn"``, the network adds its residual to that interpolated
   volume (:func:`mrisr.inference.engine.enhance`). torch is imported only then.
   A guided model also gets a reference image (``reference=``), optionally
   rigidly registered to the input (:mod:`mrisr.trust.registration`), resampled
   once onto the output grid (:mod:`mrisr.trust.reference`).
   With ``method="transfer"`` (a reference and no model: the default) the
   reference's detail is added instead (:mod:`mrisr.inference.transfer`), to
   the spline or to the single-input network's result, whichever the input's
   own internal test (its first volume) finds truer.

A learned-upsampling model (``rrlsrn``, ``georgescu``) reverses the order: the
network refines the input by its integer scale on the input's own grid, then
the spline takes that onto the same contract grid (:mod:`mrisr.inference.upsampling`).

Example:
    >>> import numpy as np, nibabel as nib, mrisr
    >>> img = nib.Nifti1Image(np.ones((4, 4, 2), np.float32), np.diag([2.0, 2.0, 4.0, 1.0]))
    >>> out = mrisr.upscale(img, spacing=[1, 1, 2], method="spline")
    >>> out.shape
    (8, 8, 4)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mrisr.errors import InputError, MrisrError
from mrisr.geometry.grid import TargetGrid
from mrisr.geometry.resample import resample_to_grid
from mrisr.pipeline.checks import check_learned, plan_grid
from mrisr.pipeline.report import UpscaleReport, UpscaleResult
from mrisr.pipeline.settings import UpscaleOptions, make_options
from mrisr.volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    import nibabel as nib

# The stages are imported inside the functions that run them: mrisr.upscale(..., method="spline") loads no
# torch, and the model registry is looked up when a run needs it.

#: Share of a volume's progress given to interpolation when the network follows.
_INTERP_SHARE_CNN = 0.1


#: ``progress(done, total)``: ``done`` volumes processed (fractional within a
#: volume) out of ``total``.
ProgressCallback = Callable[[float, int], None]


def upscale_volume(volume: Volume, options: UpscaleOptions | None = None, *,
                   progress: ProgressCallback | None = None, **settings: Any) -> UpscaleResult:
    """Upscale an in-memory volume onto the geometry contract's grid.

    Args:
        volume: The image (3D, or 4D with volumes last).
        options: The settings, checked (:class:`~mrisr.pipeline.settings.UpscaleOptions`: spacing or factor,
            method, model, order, network, consistency, ensemble, reference, adaptation...).
        progress: ``progress(done, total)`` in volumes, called as work advances.
        **settings: The fields of :class:`~mrisr.pipeline.settings.UpscaleOptions` as keywords
            (``spacing=1, method="spline"``): the options, or changes to ``options`` when it is given too. The
            reading settings (``series``, ``nan_to_num``, ``allow_uneven``) do not apply to an image in memory;
            ``reference`` is a path, a nibabel image or a :class:`~mrisr.volume.Volume` (3D).

    Returns:
        ``UpscaleResult(data, affine, report)``: float32 data of shape
        ``grid.shape (+ (T,))``, the contract affine and the
        :class:`UpscaleReport` (``read``/``write`` timings left at 0);
        ``result.std`` is the std map with ``uncertainty=True``.

    Raises:
        MrisrError: bad settings, an absurd output size, no model for ``"cnn"``,
            a reference that is coarser than the output or misses it
            (:class:`~mrisr.errors.InputError` naming the reference), a
            model that does not fit (guided or not) the reference given.

    Example:
        >>> v = Volume(np.zeros((4, 4, 4, 2), np.float32), np.eye(4))
        >>> data, affine, report = upscale_volume(v, factor=2, method="spline")
        >>> data.shape, report.n_volumes
        ((8, 8, 8, 2), 2)
        >>> opts = UpscaleOptions(factor=2, method="spline", order=1)
        >>> upscale_volume(v, opts).report.order, upscale_volume(v, opts, order=0).report.order
        (1, 0)
    """
    options = make_options(options, **settings)
    data = np.asarray(volume.data)
    if data.ndim not in (3, 4):
        raise InputError(volume.path, f"expected a 3D or 4D image, got {data.ndim} dimensions {data.shape}")
    grid = plan_grid(volume.affine, data.shape, spacing=options.spacing, factor=options.factor,
                     max_voxels=options.max_voxels)
    report = UpscaleReport.for_grid(volume, grid, options)
    loaded = None
    engine_kw = options.engine_settings()
    first: np.ndarray | None = None
    if options.loads_model:
        from mrisr.inference.engine import check_model_channels
        from mrisr.inference.registry import PendingModel

        pending = PendingModel.loading(options.model)  # the network (and torch) load while the input is measured
        assessment = _assess_input(data)
        if _splines_first(pending.card, options):  # and its first volume interpolated (the GIL released)
            first = _interpolate(data if data.ndim == 3 else data[..., 0], grid, options, report)
        loaded = pending.result()
        check_model_channels(loaded, options.guided_network)
        check_learned(loaded, grid)
        _describe_model(report, loaded, grid, options)
        report.ood = assessment.to_dict()
        report.warn(*assessment.warnings, once=True)
        if options.guided_network:
            engine_kw["reference"] = _guide(volume, grid, options.reference, options.register, report)
        if options.adapt_options is not None:
            loaded, progress = _adapt(loaded, data, grid, options.adapt_options, report, options.threads, progress)
    transfer = None
    if options.method == "transfer":
        transfer = _transfer(volume, grid, options, report, loaded, engine_kw)
    maps: dict[str, np.ndarray] = {}
    out = _run_volumes(data, grid, report, loaded, options, progress, engine_kw, maps=maps, first=first,
                       transfer=transfer)
    return UpscaleResult.with_std(out, grid.affine.copy(), report, maps.get("std") if options.uncertainty else None)


#: Share of the progress bar that per-scan adaptation takes.
ADAPT_SHARE = 0.5


def _adapt(loaded: Any, data: np.ndarray, grid: TargetGrid, opts: Any, report: UpscaleReport,
           threads: int | None, progress: ProgressCallback | None) -> tuple[Any, ProgressCallback | None]:
    """The model fine-tuned on the input's first volume (:func:`mrisr.inference.adapt.adapt_model`), and the progress
    callback for the rest of the run (adaptation takes the first :data:`ADAPT_SHARE` of the bar)."""
    from mrisr.inference.adapt import adapt_model

    n = report.n_volumes
    on_adapt = None if progress is None else (lambda f: progress(ADAPT_SHARE * f * n, n))
    t0 = time.perf_counter()
    adapted, info = adapt_model(loaded, data if data.ndim == 3 else data[..., 0],
                                tuple(1.0 / r for r in grid.ratios), opts, progress=on_adapt, threads=threads)
    report.add_time("adapt", time.perf_counter() - t0)
    report.adapt = info.to_dict()
    if info.kept != "adapted":
        report.warn(f"--adapt: {info.reason}")
    rest = None if progress is None else (lambda done, total: progress(ADAPT_SHARE * total
                                                                        + (1 - ADAPT_SHARE) * done, total))
    return adapted, rest


def _transfer(volume: Volume, grid: TargetGrid, options: UpscaleOptions, report: UpscaleReport, loaded: Any,
              engine_kw: dict) -> tuple[Any, Any]:
    """The reference on ``grid`` and the input's internal test (:mod:`mrisr.inference.transfer`), scoring
    ``loaded`` (the single-input network, or None) beside the spline: ``(ReferenceTransfer, Choice)``."""
    from mrisr.inference.transfer import ReferenceTransfer

    if loaded is not None and getattr(loaded.network, "upsampling", None) is not None:
        raise MrisrError(f"method 'transfer' adds the reference's detail to a residual network's result; "
                         f"{loaded.name!r} is a learned-upsampling model (drop --model to use the default)")
    guide = _guide(volume, grid, options.reference, options.register, report)
    t0 = time.perf_counter()
    data = np.asarray(volume.data)
    first = data if data.ndim == 3 else data[..., 0]
    rt = ReferenceTransfer(guide, grid, first.shape, order=options.order, antialias=options.antialias)
    refine = None
    if loaded is not None:
        from mrisr.inference.engine import enhance

        def refine(sim: np.ndarray, factors: tuple[float, float, float]) -> np.ndarray:
            return enhance(sim, loaded, factors=factors, **engine_kw)[0]

    choice = rt.choose(first, refine)
    report.add_time("transfer", time.perf_counter() - t0)
    report.transfer = rt.describe(choice)
    if choice.candidate is None:
        base = "the network's" if choice.network else "the spline"
        report.warn(f"reference: its detail did not make the input's own internal test truer "
                    f"({', '.join(choice.table['pairs']) or 'no head found'}); the result is what it would be "
                    f"without the reference ({base})")
    return rt, choice


def _guide(volume: Volume, grid: TargetGrid, reference: Any, register: str, report: UpscaleReport) -> np.ndarray:
    """Load the reference, register it (``rigid``), resample it onto ``grid``; fills ``report.reference``."""
    from mrisr.trust.reference import as_reference, check_reference_spacing, resample_reference

    t0 = time.perf_counter()
    ref = as_reference(as_volume(reference))
    check_reference_spacing(ref.affine, grid, ref.path)  # before a registration that would be wasted
    report.warn(*(f"reference: {w}" for w in ref.warnings))
    transform, extra = None, {"register": register}
    if register == "rigid":
        transform, extra = _register(volume, ref, grid, report)
    guide = resample_reference(ref, grid, transform=transform)
    guide.extra.update(extra)
    report.reference = guide.describe()
    report.add_time("reference", time.perf_counter() - t0)
    return guide.data


def _register(volume: Volume, ref: Volume, grid: TargetGrid, report: UpscaleReport) -> tuple[np.ndarray, dict]:
    """Rigid registration of the reference to the input's first volume, with its summary and warnings."""
    from mrisr.trust.registration import LARGE_ROTATION_DEG, LARGE_TRANSLATION_MM, describe_rigid, register_rigid

    t0 = time.perf_counter()
    fixed = volume.data if volume.data.ndim == 3 else volume.data[..., 0]
    try:
        transform = register_rigid(ref.data, ref.affine, fixed, volume.affine)
    except InputError:
        raise
    except MrisrError as exc:
        raise InputError(ref.path, str(exc)) from None
    centre = grid.affine @ np.r_[(np.asarray(grid.shape) - 1) / 2.0, 1.0]
    moved = describe_rigid(transform, centre[:3])
    if moved["rotation_deg"] > LARGE_ROTATION_DEG or moved["translation_mm"] > LARGE_TRANSLATION_MM:
        report.warn(f"the rigid registration moved the reference by {moved['rotation_deg']:.1f} degrees "
                    f"and {moved['translation_mm']:.1f} mm: more than head motion within a session "
                    "usually is; check the alignment (the transform is in the sidecar)")
    report.add_time("register", time.perf_counter() - t0)
    return transform, {"register": "rigid", **moved, "transform_file": None}


def _assess_input(data: np.ndarray) -> Any:
    """The input (its first volume) measured against the training data (:func:`mrisr.trust.ood.assess_input`)."""
    from mrisr.trust.ood import assess_input

    return assess_input(data if data.ndim == 3 else data[..., 0])


def _splines_first(card: Any, options: UpscaleOptions) -> bool:
    """Whether the first volume's spline can be computed before the network is loaded: the network refines
    that spline (not a learned-upsampling or guided model, no per-scan adaptation before it)."""
    scale = (card.architecture.get("params") or {}).get("scale")
    return not scale and not options.guided_network and options.adapt_options is None


def _interpolate(vol: np.ndarray, grid: TargetGrid, options: UpscaleOptions, report: UpscaleReport,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
    """The spline of one 3D volume on ``grid`` (its seconds added to the report's ``interpolate``)."""
    t0 = time.perf_counter()
    out = resample_to_grid(vol, grid, order=options.order, antialias=options.antialias, progress=progress)
    report.add_time("interpolate", time.perf_counter() - t0)
    return out


def _describe_model(report: UpscaleReport, loaded: Any, grid: TargetGrid, options: UpscaleOptions) -> None:
    from mrisr.inference.registry import custom_model_warning, range_warnings, real_heads_warning

    report.model = loaded.name
    report.model_sha256 = getattr(loaded, "sha256", None) or getattr(loaded.card, "sha256", None)
    folder = getattr(loaded, "path", None)
    report.model_path = None if folder is None else str(folder)
    for warning in (custom_model_warning(loaded), real_heads_warning(loaded.card)):
        if warning is not None:
            report.warn(warning)
    for name, value in options.engine_settings().items():  # what was asked; the engine's stats say what ran
        setattr(report, name, value)
    report.warn(*range_warnings(loaded.card, report.input_spacing, grid.spacing))


def _run_volumes(data: np.ndarray, grid: TargetGrid, report: UpscaleReport, loaded: Any, options: UpscaleOptions,
                 progress: ProgressCallback | None, engine_kw: dict, *, maps: dict | None = None,
                 first: np.ndarray | None = None, transfer: tuple[Any, Any] | None = None) -> np.ndarray:
    """Each volume through the spline and the network (``first``: the first volume's spline, already computed;
    ``transfer``: the reference's :class:`~mrisr.inference.transfer.ReferenceTransfer` and the internal test's
    choice, which says whether the network runs)."""
    order, antialias, ensemble = options.order, options.antialias, options.ensemble
    consistency = options.consistency_psf if options.consistency else None
    n = report.n_volumes
    out = np.empty(tuple(grid.shape) + tuple(data.shape[3:]), dtype=np.float32)
    interp_share = 1.0 if loaded is None else _INTERP_SHARE_CNN
    tracker = None
    if consistency is not None:
        from mrisr.trust.consistency import ConsistencyTracker

        tracker = ConsistencyTracker(grid, data.shape[:3], consistency)
    std_out = np.empty_like(out) if ensemble is not None and loaded is not None else None
    std_stats: list[dict] = []
    learned = loaded is not None and getattr(loaded.network, "upsampling", None) is not None
    for t in range(n):
        ticker = _Ticker(progress, t, n)
        vol = data if data.ndim == 3 else data[..., t]
        if learned:  # learned upsampling: the network on the input grid, then the spline (mrisr.inference.upsampling)
            result, std, summary = _upsample(vol, grid, loaded, report, order, antialias, engine_kw, ticker,
                                             ensemble if std_out is not None else None)
            if std_out is not None:
                std_stats.append(summary)  # type: ignore[arg-type]
                std_out[(...,) if data.ndim == 3 else (..., t)] = std
            del std
            spline = resample_to_grid(vol, grid, order=order, antialias=antialias) if tracker is not None else None
            network = result if tracker is not None else None
        else:
            if t == 0 and first is not None:
                result, first = first, None
                ticker.add(interp_share)
            else:
                result = _interpolate(vol, grid, options, report, lambda k: ticker.add(k * interp_share / 3))
            spline = result if tracker is not None else None
            network = None
            interpolated = result if transfer is not None else None  # the transfer's gain is fitted on it
            if loaded is not None and (transfer is None or transfer[1].network):
                # The network may be conditioned on the upsampling factor per voxel axis.
                factors = tuple(1.0 / r for r in grid.ratios)
                kw = {**engine_kw, "factors": factors}
                if std_out is not None:
                    result, std, summary = _enhance_ensemble(result, loaded, report, kw, ticker, 1.0 - interp_share,
                                                             ensemble)  # type: ignore[arg-type]
                    std_stats.append(summary)
                    std_out[(...,) if data.ndim == 3 else (..., t)] = std
                    del std
                else:
                    result = _enhance(result, loaded, report, kw, ticker, 1.0 - interp_share)
                network = result if tracker is not None else None
            if transfer is not None and interpolated is not None:
                t0 = time.perf_counter()
                result = transfer[0].apply(interpolated, result, transfer[1])
                network = result if tracker is not None else None
                report.add_time("transfer", time.perf_counter() - t0)
            del interpolated
        if tracker is not None:
            t0 = time.perf_counter()
            result = tracker(vol, spline, network)
            report.add_time("consistency", time.perf_counter() - t0)
            spline = network = None
        if data.ndim == 3:
            out[...] = result
        else:
            out[..., t] = result
        ticker.finish()
    if tracker is not None:
        report.consistency = tracker.summary()
    if std_out is not None:
        report.uncertainty = _ensemble_summary(ensemble, std_stats)  # type: ignore[arg-type]
        if maps is not None:
            maps["std"] = std_out
    return out


def _upsample(vol: np.ndarray, grid: TargetGrid, loaded: Any, report: UpscaleReport, order: int, antialias: bool,
              engine_kw: dict, ticker: _Ticker, combine: str | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, dict | None]:
    """A learned-upsampling model's result on ``grid`` (:func:`mrisr.inference.upsampling.upscale_learned`), or with
    ``combine`` its flip ensemble (:func:`mrisr.inference.upsampling.upscale_learned_ensemble`): ``(result, std or None,
    std summary or None)``."""
    from mrisr.inference.upsampling import upscale_learned, upscale_learned_ensemble

    t0 = time.perf_counter()
    kw = {"order": order, "antialias": antialias, "progress": ticker.within(0.9), **engine_kw}
    std = summary = None
    if combine is None:
        result, stats = upscale_learned(vol, grid, loaded, **kw)
        engine_stats = [stats]
    else:
        result, std, ens = upscale_learned_ensemble(vol, grid, loaded, combine, **kw)
        engine_stats, summary = ens.engine, {"passes": ens.passes, **ens.std}
    report.add_network(time.perf_counter() - t0, engine_stats)
    return result, std, summary


def _enhance_ensemble(data3d: np.ndarray, loaded: Any, report: UpscaleReport, engine_kw: dict, ticker: _Ticker,
                      share: float, combine: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """The flip ensemble (:func:`mrisr.inference.ensemble.flip_ensemble`) in place of one network pass."""
    from mrisr.inference.ensemble import flip_ensemble

    t0 = time.perf_counter()
    result, std, stats = flip_ensemble(data3d, loaded, combine=combine, progress=ticker.within(share), **engine_kw)
    report.add_network(time.perf_counter() - t0, stats.engine)
    return result, std, {"passes": stats.passes, **stats.std}


def _ensemble_summary(combine: str, per_volume: list[dict]) -> dict:
    """The report's ``uncertainty`` entry: std statistics combined over volumes (mean of means, max of the rest)."""
    return {"ensemble": combine, "passes": per_volume[0]["passes"] if per_volume else 0,
            "std_mean_relative": float(np.mean([s["mean_relative"] for s in per_volume])),
            "std_p99_relative": float(max(s["p99_relative"] for s in per_volume)),
            "std_max_relative": float(max(s["max_relative"] for s in per_volume)),
            "std_output": None}


def _enhance(data3d: np.ndarray, loaded: Any, report: UpscaleReport, engine_kw: dict, ticker: _Ticker,
             share: float) -> np.ndarray:
    from mrisr.inference.engine import enhance

    t0 = time.perf_counter()
    result, stats = enhance(data3d, loaded, progress=ticker.within(share), **engine_kw)
    report.add_network(time.perf_counter() - t0, [stats])
    return np.asarray(result, dtype=np.float32)


class _Ticker:
    """Reports fractional progress of volume ``t`` of ``n`` to a callback."""

    def __init__(self, progress: ProgressCallback | None, t: int, n: int) -> None:
        self.progress, self.t, self.n, self.done = progress, t, n, 0.0

    def set(self, done: float) -> None:
        self.done = min(max(done, self.done), 1.0)
        if self.progress is not None:
            self.progress(self.t + self.done, self.n)

    def add(self, amount: float) -> None:
        self.set(self.done + amount)

    def finish(self) -> None:
        self.set(1.0)

    def within(self, share: float) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback of a stage that takes the next ``share`` of this volume."""
        start = self.done

        def on_progress(done: int, total: int) -> None:
            if total:
                self.set(start + share * min(done / total, 1.0))

        return on_progress


def as_volume(image: Any, *, series: str | None = None, nan_to_num: bool = False,
              allow_uneven: bool = False) -> Volume:
    """A :class:`Volume` from a path, a nibabel image or a Volume (returned as is).

    Raises:
        InputError: unreadable file, or an object of another type.
    """
    if isinstance(image, Volume):
        return image
    if isinstance(image, (str, Path)):
        from mrisr.io.read import load_volume

        return load_volume(image, series=series, nan_to_num=nan_to_num, allow_uneven=allow_uneven)
    if hasattr(image, "affine") and hasattr(image, "dataobj") and hasattr(image, "header"):
        return _volume_from_nibabel(image, nan_to_num)
    raise InputError(None, f"expected a file path, a nibabel image or a mrisr Volume, got {type(image).__name__}")


def _volume_from_nibabel(img: Any, nan_to_num: bool) -> Volume:
    """Wrap an in-memory nibabel image (NIfTI-1/2 or any spatial image), checked as a read file is."""
    from mrisr.io.checks import finish_volume

    if img.affine is None:
        raise InputError(None, "the nibabel image has no affine")
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector images with one time point
        data = data[:, :, :, 0, :]
    header = None
    if hasattr(img.header, "get_qform"):  # NIfTI: a copy whose sform/qform match img.affine
        header = type(img)(img.dataobj, img.affine, img.header.copy()).header
    vol = Volume(data=data, affine=np.asarray(img.affine, dtype=np.float64), header=header,
                 source_dtype=np.dtype(img.get_data_dtype()))
    return finish_volume(vol, None, nan_to_num)


def to_nifti(data: np.ndarray, affine: np.ndarray, template: Volume | None = None,
             dtype: str = "float32") -> nib.Nifti1Image:
    """A Nifti1Image with the output affine and a header derived from the input's.

    Uses the writer's header policy (:mod:`mrisr.io.writer`: sform and qform set
    to ``affine``, the template's codes, units and TR kept) so that images
    returned by :func:`upscale` carry the same header as files written by
    ``mrisr upscale``.
    """
    from mrisr.io.writer import nifti_image

    built = nifti_image(data, affine, template=template, dtype=dtype)
    # upscale's images carry the affine a written file holds: the header's (float32) sform, not the float64 one.
    # The header's sform equals it, so nibabel keeps the header's codes.
    img = type(built)(built.dataobj, built.header.get_best_affine(), built.header)
    img.header.set_slope_inter(*built.header.get_slope_inter())
    return img


def upscale(image: Any, options: UpscaleOptions | None = None, *, progress: ProgressCallback | None = None,
            **settings: Any) -> nib.Nifti1Image:
    """Super-resolve an MRI image to a target voxel size.

    Args:
        image: A NIfTI file or DICOM folder path, a nibabel image or a
            :class:`~mrisr.volume.Volume`.
        options: The settings, checked (:class:`~mrisr.pipeline.settings.UpscaleOptions`), or ``None``.
        progress: ``progress(done, total)`` in volumes.
        **settings: The fields of :class:`~mrisr.pipeline.settings.UpscaleOptions` as keywords (or changes
            to ``options``):

            - ``spacing``: target voxel size(s) in mm, one value or three (voxel axes
              i, j, k); or ``factor``: refinement factor(s) (2 halves every voxel size). Exactly one.
            - ``method``: ``"cnn"``, ``"spline"`` or ``None`` (cnn if a model is available);
              ``model``: model name or path (``None``: the default model); ``order``: B-spline
              order, 0 to 5 (3 = cubic); ``antialias``: smooth axes that are made coarser before sampling.
            - ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``), ``precision``
              (``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``), ``patch_size``, ``batch_size``,
              ``threads``: the network's (``None`` chooses).
            - ``series``: DICOM series UID when a folder holds several; ``nan_to_num``: replace NaN/Inf
              input values with 0 instead of refusing; ``allow_uneven``: accept DICOM slices with uneven
              spacing; ``max_voxels``: refuse outputs larger than this (voxels per volume).
            - ``consistency``: project the result onto the images consistent with the
              input (``docs/trust.md``; ``None``, the default: on with the network, off for the spline);
              ``consistency_psf`` names the PSF.
            - ``uncertainty``: flip ensemble of the network with its std map; ``ensemble``: ``"mean"`` or
              ``"median"`` of the 8 flips (see :func:`upscale_volume`).
            - ``reference``: a finer scan of the same head (file path, nibabel image
              or Volume) guiding a guided model (``docs/guided.md``); read
              like ``image`` (``nan_to_num``, ``allow_uneven`` apply). ``register``: ``"none"`` (default)
              or ``"rigid"``: register the reference to the input first.
            - ``adapt``: seconds of per-scan adaptation (:mod:`mrisr.inference.adapt`; about
              60-120 on two CPU cores), or an :class:`~mrisr.inference.adapt.AdaptOptions`; ``None``: off.

    Returns:
        A ``nibabel.Nifti1Image`` in float32 on the contract grid (affine
        ``A'``; qform/sform codes and, for 4D, the TR kept from the input).
        ``img.extra["mrisr_report"]`` holds the :class:`UpscaleReport`;
        with ``uncertainty``, ``img.extra["mrisr_std"]`` holds the std map
        as a Nifti1Image on the same grid.

    Raises:
        MrisrError: bad settings or input (subclasses name the problem).

    Example:
        >>> import numpy as np, nibabel as nib
        >>> img = nib.Nifti1Image(np.zeros((10, 10, 5), np.float32), np.diag([1.0, 1.0, 3.0, 1.0]))
        >>> out = upscale(img, spacing=[1, 1, 1], method="spline")
        >>> out.shape, [float(z) for z in out.header.get_zooms()]
        ((10, 10, 15), [1.0, 1.0, 1.0])
    """
    options = make_options(options, **settings)  # fails on a bad setting before reading anything
    t0 = time.perf_counter()
    volume = as_volume(image, series=options.series, nan_to_num=options.nan_to_num,
                       allow_uneven=options.allow_uneven)
    if options.guided:
        options = dataclasses.replace(options, reference=as_volume(options.reference, nan_to_num=options.nan_to_num,
                                                                    allow_uneven=options.allow_uneven))
    read_time = time.perf_counter() - t0
    result = upscale_volume(volume, options, progress=progress)
    data, affine, report = result
    report.timings["read"] = read_time if isinstance(image, (str, Path)) else 0.0
    img = to_nifti(data, affine, template=volume)
    img.extra["mrisr_report"] = report
    if result.std is not None:
        img.extra["mrisr_std"] = to_nifti(result.std, affine, template=volume)
    return img
