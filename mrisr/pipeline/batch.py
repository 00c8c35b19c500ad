"""Batch upscaling: runs the jobs (:mod:`mrisr.pipeline.jobs`), one record per input (:mod:`mrisr.pipeline.records`).

``mrisr upscale`` is a thin layer over this module. A batch runs in four steps,
and everything that can be refused is refused before any image is read:

1. :func:`mrisr.pipeline.jobs.plan_batch` expands the paths given (files; folders of NIfTI files,
   non-recursive; a DICOM series folder is one input; a folder of DICOM
   series folders gives one input per subfolder), sorts them, names the
   outputs (:mod:`mrisr.io.naming`), refuses clashes, takes this process's share
   (``shard=(k, n)``: every n-th input from the k-th, 0-based) and marks the
   jobs whose output exists as skipped (unless ``force``).
2. :func:`preflight` reads NIfTI headers (not data) and refuses the jobs whose
   output grid would exceed ``max_voxels``.
3. :func:`run_job` reads, upscales, writes the image, its QC picture when
   asked (:mod:`mrisr.evaluation.qc`) and its JSON sidecar; a failure is recorded on the
   job and the batch goes on. :func:`iter_jobs` runs several jobs at once
   (``n_jobs``, threads sharing the cores and the model).
4. :func:`mrisr.pipeline.records.exit_code`: 0 when nothing failed, 1 otherwise.

Example:
    >>> from mrisr.pipeline.jobs import parse_shard
    >>> parse_shard("1/4")
    (1, 4)
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mrisr import __version__
from mrisr.errors import MrisrError, OutputError
from mrisr.inference.ensemble import std_path
from mrisr.inference.model_card import file_sha256
from mrisr.io.naming import dataset_description, is_nifti_name
from mrisr.pipeline.checks import load_model_once, plan_grid
from mrisr.pipeline.jobs import Job, fail_job, make_output_dir
from mrisr.pipeline.records import absolute_path, make_record
from mrisr.pipeline.report import UpscaleReport
from mrisr.pipeline.settings import BatchSettings
from mrisr.pipeline.upscale import upscale_volume
from mrisr.trust.registration import transform_path

DATASET_DESCRIPTION = "dataset_description.json"


def preflight(jobs: Sequence[Job], settings: BatchSettings) -> None:
    """Refuse, before anything is read or written, a target grid that is too large.

    Reads NIfTI headers only; other inputs are checked when they are read.
    Headers mrisr would refuse are left to the reader, which names the exact
    problem when the job runs.

    Raises:
        GridTooLargeError: naming the input and the output's size: the spacing
            or factor is too fine (a usage error: nothing has been done yet).
    """
    from mrisr.errors import GridSizeError, GridTooLargeError

    for job in jobs:
        if job.status != "pending" or not job.input.is_file() or not is_nifti_name(job.input.name):
            continue
        header = _header_geometry(job.input)
        if header is None:
            continue  # let the reader report what is wrong with the file
        try:
            plan_grid(header[0], header[1], spacing=settings.options.spacing, factor=settings.options.factor,
                      max_voxels=settings.options.max_voxels)
        except GridTooLargeError as exc:
            raise GridTooLargeError(f"{job.input}: {exc}; choose a larger spacing (or a smaller factor)") from None
        except GridSizeError as exc:
            raise type(exc)(f"{job.input}: {exc}") from None
        except MrisrError:
            continue  # the reader gives the proper message


def _header_geometry(path: Path) -> tuple[Any, tuple[int, ...]] | None:
    from mrisr.io.nifti import read_nifti_geometry

    try:
        return read_nifti_geometry(path)
    except Exception:  # noqa: BLE001 - the reader gives the proper message later
        return None


def ensure_dataset_description(output_dir: str | Path) -> Path | None:
    """Write a minimal BIDS derivatives ``dataset_description.json`` if missing.

    Returns:
        The path written, or ``None`` if one was already there.
    """
    from mrisr.io.writer import save_json_atomic

    path = Path(output_dir) / DATASET_DESCRIPTION
    if path.exists():
        return None
    make_output_dir(path.parent)
    try:
        save_json_atomic(dataset_description(__version__), path, force=False)
    except OutputError:
        if path.exists():  # another shard wrote it meanwhile
            return None
        raise
    return path


def prepare_model(settings: BatchSettings) -> Any:
    """Start loading the model once for the whole batch (``None`` for the spline method): a
    :class:`~mrisr.inference.registry.PendingModel`, its card checked now, its network (and torch) loading
    in the background while the first input is read and interpolated.

    Raises:
        ModelError: an unknown model or a broken card; a guided model without ``settings.reference``,
            or a single-input model with one.
    """
    if not settings.options.loads_model:
        return None
    from mrisr.inference.registry import PendingModel, check_card_channels

    pending = PendingModel.loading(settings.options.model)
    check_card_channels(pending.card, settings.options.guided_network)
    return pending


def run_job(job: Job, settings: BatchSettings, model: Any = None,
            progress: Callable[[float, int], None] | None = None) -> dict:
    """Read, upscale and write one job; record the outcome on the job.

    Never raises for a bad input: the error lands in ``job.error`` and the
    record (status ``failed``). Skipped and failed jobs are returned as is.
    Unexpected errors (bugs, not :class:`~mrisr.errors.MrisrError`) print
    their traceback on stderr when the environment sets ``MRISR_DEBUG``.

    Returns:
        The job's JSON record (also written as the output's sidecar when ok).
    """
    if job.status != "pending":
        return job.record or make_record(job)
    t0 = time.perf_counter()
    try:
        report, sha, qc_error = _process(job, settings, model, progress)
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop the batch
        if getattr(model, "failed", False):  # the model could not load: every job would fail alike
            raise
        job.seconds = time.perf_counter() - t0
        if not isinstance(exc, MrisrError) and os.environ.get("MRISR_DEBUG"):
            traceback.print_exception(exc)
        fail_job(job, exc)
        return job.record  # type: ignore[return-value]
    job.status, job.seconds = "ok", time.perf_counter() - t0
    if qc_error is not None:
        job.status = "failed"
        job.error = (f"the image was written but its QC picture was not: {qc_error} "
                     f"(make it later with: mrisr qc {job.input} {job.output})")
    job.record = make_record(job, report, sha)
    try:
        from mrisr.io.writer import save_json_atomic

        save_json_atomic({**(job.sidecar_extra or {}), **job.record}, job.sidecar, force=True)
    except Exception as exc:  # noqa: BLE001
        fail_job(job, exc)
        job.error = f"the image was written but its sidecar was not: {job.error}"
        job.record = make_record(job, report, sha)
    return job.record


def _process(job: Job, settings: BatchSettings, model: Any,
             progress: Callable[[float, int], None] | None) -> tuple[UpscaleReport, str, str | None]:
    """Read, upscale, write; returns the report, the input's SHA-256 and why the QC picture failed (or None)."""
    from mrisr.io.read import load_volume
    from mrisr.io.writer import check_output_path, save_volume

    options = settings.options
    if settings.qc:
        from mrisr.evaluation.qc import require_matplotlib

        require_matplotlib()  # before any work: the input fails with the install hint
    make_output_dir(job.output.parent)
    # Refuse an unwritable destination before reading and upscaling (the writer checks again).
    inputs = (job.input,) if options.reference is None else (job.input, Path(options.reference))
    check_output_path(job.output, force=settings.force, inputs=inputs)
    if options.uncertainty:
        check_output_path(std_path(job.output), force=settings.force, inputs=(job.input,))
    if options.register == "rigid":
        check_output_path(transform_path(job.output), force=settings.force, suffixes=(".tfm",))
    t0 = time.perf_counter()
    volume = load_volume(job.input, series=options.series, nan_to_num=options.nan_to_num,
                         allow_uneven=options.allow_uneven)
    loaded: dict[str, Any] = {} if model is None else {"model": model}  # the model loaded once for the batch
    if options.reference is not None:
        loaded["reference"] = load_volume(options.reference, nan_to_num=options.nan_to_num,
                                          allow_uneven=options.allow_uneven)
    t_read = time.perf_counter() - t0
    result = upscale_volume(volume, options, progress=progress, **loaded)
    data, affine, report = result
    t0 = time.perf_counter()
    save_volume(data, affine, job.output, template=volume, dtype=settings.dtype, force=settings.force,
                inputs=inputs)
    _save_transform(job, settings, report)
    if result.std is not None and report.uncertainty is not None:
        report.uncertainty["std_output"] = absolute_path(save_volume(result.std, affine, std_path(job.output),
                                                           template=volume, dtype="float32",
                                                           force=settings.force, inputs=(job.input,)))
    report.timings["read"], report.timings["write"] = t_read, time.perf_counter() - t0
    report.input = str(job.input)
    qc_error = _make_qc(job, settings, volume, data, affine, report) if settings.qc else None
    return report, file_sha256(job.input), qc_error


def _save_transform(job: Job, settings: BatchSettings, report: UpscaleReport) -> None:
    """Write the reference's rigid transform beside the output; record its path in the report."""
    ref = report.reference
    if not ref or ref.get("transform_ras") is None:
        return
    from mrisr.trust.registration import save_transform

    path = save_transform(ref["transform_ras"], transform_path(job.output), force=settings.force)
    ref["transform_file"] = absolute_path(path)


def _make_qc(job: Job, settings: BatchSettings, volume: Any, data: Any, affine: Any,
             report: UpscaleReport) -> str | None:
    """Draw the QC picture of a written output; sets ``job.qc``. Returns why it failed, or None."""
    from mrisr.evaluation.qc import qc_path, qc_picture
    from mrisr.geometry.resample import resample_to_grid
    from mrisr.volume import Volume

    t0 = time.perf_counter()
    try:
        spline = None
        if report.method != "spline":  # recompute the interpolation the network started from (cheap)
            opts = settings.options
            grid = plan_grid(volume.affine, volume.data.shape, spacing=opts.spacing, factor=opts.factor,
                             max_voxels=opts.max_voxels)
            first = volume.data if volume.data.ndim == 3 else volume.data[..., 0]
            spline = resample_to_grid(first, grid, order=report.order, antialias=report.antialias)
        job.qc = qc_picture(volume, Volume(data, affine), qc_path(job.output), spline=spline, method=report.method,
                            model=report.model, order=report.order, antialias=report.antialias,
                            names=(str(job.input), str(job.output)))
    except Exception as exc:  # noqa: BLE001 - the image is written; report the picture's failure on the job
        if not isinstance(exc, MrisrError) and os.environ.get("MRISR_DEBUG"):
            traceback.print_exception(exc)
        return str(exc) if isinstance(exc, MrisrError) else f"unexpected {type(exc).__name__}: {exc}"
    finally:
        report.timings["qc"] = time.perf_counter() - t0
    return None


def available_cores() -> int:
    """CPU cores this process may run on (its affinity: a SLURM or taskset allocation), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_per_job(n_jobs: int, cores: int | None = None) -> int:
    """Torch threads for each of ``n_jobs`` inputs processed at once: ``max(1, cores // n_jobs)``.

    Example:
        >>> threads_per_job(2, cores=8), threads_per_job(3, cores=2)
        (4, 1)
    """
    cores = available_cores() if cores is None else int(cores)
    return max(1, cores // max(1, int(n_jobs)))


class _Stopped(BaseException):
    """Raised inside a worker (from its progress callback) to abandon its job after Ctrl-C.

    A BaseException, so :func:`run_job` does not record it as a failure of the input.
    """


def iter_jobs(jobs: Iterable[Job], settings: BatchSettings, model: Any = None, *, n_jobs: int = 1,
              on_start: Callable[[Job], Callable[[float, int], None] | None] | None = None,
              on_finish: Callable[[Job], None] | None = None) -> Iterator[Job]:
    """Run jobs with :func:`run_job`, up to ``n_jobs`` at once; yield each, in input order, once finished.

    ``n_jobs > 1`` runs the jobs in a pool of threads of this process. The
    heavy work releases the GIL (torch's convolutions, numpy's and
    scipy.ndimage's loops, zlib, hashing), the model is loaded once and shared,
    and records and callbacks need no pickling. Each job's network runs with
    ``settings.options.threads`` or else :func:`threads_per_job` torch threads (set per
    worker thread, which is what torch's OpenMP pool follows), so the jobs
    share the cores instead of each taking all of them. Every output, sidecar
    and record is what a sequential run writes, apart from timings and, for
    the network, the ``threads`` field; records come out in input order.

    Args:
        jobs: From :func:`plan_batch` (skipped and failed ones pass through).
        settings: Checked settings.
        model: The loaded model (:func:`prepare_model`), or ``None``.
        n_jobs: Inputs processed at once (1: one after another, in this thread).
        on_start: ``on_start(job)`` when a job begins, in the thread that runs
            it; may return the job's ``progress(done, total)`` callback.
        on_finish: ``on_finish(job)`` when a job ends (in any order), in the
            thread that ran it.

    Raises:
        MrisrError: ``n_jobs`` is not a positive integer.

    On Ctrl-C (or when the caller stops iterating) no new job starts, running
    jobs stop at their next progress step (outputs are written atomically, so
    nothing partial is left), and the KeyboardInterrupt goes on.
    """
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise MrisrError(f"jobs must be a positive integer, got {n_jobs!r}")
    jobs = list(jobs)
    workers = min(n_jobs, sum(job.status == "pending" for job in jobs))
    if workers <= 1:
        for job in jobs:
            yield _run_one(job, settings, model, on_start, on_finish, None)
        return
    from concurrent.futures import ThreadPoolExecutor

    if settings.options.loads_model:
        if settings.options.threads is None:
            settings = settings.with_options(threads=threads_per_job(workers))
        model = load_model_once(model if model is not None else prepare_model(settings))
        _share_model(model, settings)
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mrisr-job")
    try:
        futures = [pool.submit(_run_one, job, settings, model, on_start, on_finish, stop) for job in jobs]
        for job, future in zip(jobs, futures):
            future.result()
            yield job
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def run_jobs(jobs: Iterable[Job], settings: BatchSettings, model: Any = None, *, n_jobs: int = 1) -> list[dict]:
    """Run every job (up to ``n_jobs`` at once, see :func:`iter_jobs`); their records in input order."""
    return [job.record or make_record(job) for job in iter_jobs(jobs, settings, model, n_jobs=n_jobs)]


def _run_one(job: Job, settings: BatchSettings, model: Any,
             on_start: Callable[[Job], Callable[[float, int], None] | None] | None,
             on_finish: Callable[[Job], None] | None, stop: threading.Event | None) -> Job:
    if stop is not None and stop.is_set():
        raise _Stopped
    callback = on_start(job) if on_start is not None else None
    progress = callback
    if stop is not None:
        def progress(done: float, total: int) -> None:
            if stop.is_set():
                raise _Stopped
            if callback is not None:
                callback(done, total)
    run_job(job, settings, model, progress=progress)
    if on_finish is not None:
        on_finish(job)
    return job


def _share_model(model: Any, settings: BatchSettings) -> None:
    """Move the shared network to its device once, before threads use it (the engine does it in place)."""
    if model is None or not hasattr(model, "network"):
        return
    from mrisr.inference.device import resolve_device
    from mrisr.inference.engine import prepare_network

    prepare_network(model.network, resolve_device(settings.options.device))


__all__ = ["DATASET_DESCRIPTION", "preflight", "prepare_model", "ensure_dataset_description", "run_job", "iter_jobs",
           "run_jobs", "available_cores", "threads_per_job"]
