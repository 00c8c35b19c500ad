"""Batch upscaling: inputs to jobs, outputs, checks up front, one record per input.

``mrisr upscale`` is a thin layer over this module. A batch runs in four steps,
and everything that can be refused is refused before any image is read:

1. :func:`plan_batch` expands the paths given (files; folders of NIfTI files,
   non-recursive; a DICOM series folder is one input; a folder of DICOM
   series folders gives one input per subfolder), sorts them, names the
   outputs (:mod:`mrisr.naming`), refuses clashes, takes this process's share
   (``shard=(k, n)``: every n-th input from the k-th, 0-based) and marks the
   jobs whose output exists as skipped (unless ``force``).
2. :func:`preflight` reads NIfTI headers (not data) and refuses the jobs whose
   output grid would exceed ``max_voxels``.
3. :func:`run_job` reads, upscales, writes the image and its JSON sidecar; a
   failure is recorded on the job and the batch goes on.
4. :func:`exit_code`: 0 when nothing failed, 1 otherwise.

Example:
    >>> from mrisr.batch import parse_shard
    >>> parse_shard("1/4")
    (1, 4)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InputError, MrisrError, OutputError
from .geometry import DEFAULT_MAX_VOXELS
from .naming import (OUTPUT_SUFFIXES, dataset_description, is_image_name, is_nifti_name, output_name,
                     output_stem, sidecar_path, split_extension)
from .pipeline import UpscaleReport, check_spacing_args, load_model_once, plan_grid, resolve_method, upscale_volume

#: Job states: planned, done, left alone (output exists), or failed.
STATUSES = ("pending", "ok", "skipped", "failed")
#: Fields of a record that come from the :class:`~mrisr.pipeline.UpscaleReport`.
REPORT_FIELDS = tuple(f.name for f in dataclasses.fields(UpscaleReport) if f.name != "input")
DATASET_DESCRIPTION = "dataset_description.json"


@dataclass
class BatchSettings:
    """Processing settings shared by every job of a batch.

    The fields mirror the arguments of :func:`mrisr.pipeline.upscale`, plus
    ``dtype`` (``"float32"`` or ``"input"``) and ``force`` for the writer.
    """

    spacing: Any = None
    factor: Any = None
    method: str | None = None
    order: int = 3
    model: Any = None
    device: str = "auto"
    precision: str = "auto"
    patch_size: Any = None
    batch_size: int | None = None
    threads: int | None = None
    antialias: bool = True
    series: str | None = None
    nan_to_num: bool = False
    allow_uneven: bool = False
    max_voxels: int = DEFAULT_MAX_VOXELS
    dtype: str = "float32"
    force: bool = False

    def check(self) -> None:
        """Validate the settings that need no file (spacing, order, method).

        Raises:
            MrisrError: naming the bad value.
        """
        check_spacing_args(self.spacing, self.factor)
        if self.dtype not in ("float32", "input"):
            raise MrisrError(f"dtype must be 'float32' or 'input', got {self.dtype!r}")
        self.method, self.model = resolve_method(self.method, self.model)


@dataclass
class Job:
    """One input and where its output goes.

    Attributes:
        input: A NIfTI file or a DICOM series folder.
        output: The output image path.
        status: ``pending``, ``ok``, ``skipped`` or ``failed``.
        error: Why it failed (or was skipped), without the input path.
        record: The JSON record once the job has run (or was skipped/refused).
        seconds: Wall-clock time of :func:`run_job`.
    """

    input: Path
    output: Path
    status: str = "pending"
    error: str | None = None
    record: dict | None = None
    seconds: float = 0.0

    @property
    def sidecar(self) -> Path:
        """The provenance JSON next to the output."""
        return sidecar_path(self.output)


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/N"`` (0 <= K < N).

    Raises:
        MrisrError: for anything else, naming the value.

    Example:
        >>> parse_shard("0/2")
        (0, 2)
    """
    k, sep, n = str(text).partition("/")
    try:
        ki, ni = int(k), int(n)
    except ValueError:
        ki = ni = -1
    if not sep or ni < 1 or not 0 <= ki < ni:
        raise MrisrError(f"--shard takes K/N with 0 <= K < N (e.g. 0/4 for the first of 4 shards), got {text!r}")
    return ki, ni


def _is_dicom_folder(folder: Path) -> bool:
    from .dicom import is_dicom_folder

    return bool(is_dicom_folder(folder))


def _folder_inputs(folder: Path) -> list[Path]:
    """Inputs found in a folder: its image files (NIfTI, MGH, NRRD, MetaImage),
    else the folder itself if it is a DICOM series folder, else its DICOM
    series subfolders."""
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise MrisrError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    images = [p for p in entries if p.is_file() and is_image_name(p.name)]
    if images:
        # Earlier outputs of ours sitting next to their inputs are not inputs.
        produced = {output_stem(p) for p in images}
        return [p for p in images if split_extension(p.name)[0] not in produced]
    if _is_dicom_folder(folder):
        return [folder]
    subfolders = [p for p in entries if p.is_dir() and _is_dicom_folder(p)]
    if not subfolders:
        raise MrisrError(f"{folder}: the folder holds no image files (.nii, .nii.gz, .mgz, .nrrd, .mha...) "
                         "and no DICOM series")
    return subfolders


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Turn the paths given by the user into a sorted list of inputs.

    Raises:
        MrisrError: a path that does not exist, a folder with nothing to
            process, or no paths at all.

    Example:
        >>> expand_inputs([])
        Traceback (most recent call last):
        ...
        mrisr.errors.MrisrError: no inputs given
    """
    found: dict[str, Path] = {}
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise MrisrError(f"{p}: no such file or folder")
        for item in (_folder_inputs(p) if p.is_dir() else [p]):
            found.setdefault(str(item.resolve()), item)
    if not found:
        raise MrisrError("no inputs given")
    return [found[k] for k in sorted(found)]


def _check_output_suffix(path: Path) -> None:
    if split_extension(path.name)[1].lower() not in OUTPUT_SUFFIXES:
        raise MrisrError(f"-o {path}: the output must end with {' or '.join(OUTPUT_SUFFIXES)}")


def name_outputs(inputs: Sequence[Path], *, output: str | Path | None = None,
                 output_dir: str | Path | None = None, suffix: str = ".nii.gz") -> list[Job]:
    """Pair each input with its output path.

    Raises:
        MrisrError: ``output`` with several inputs, ``output`` together with
            ``output_dir``, a bad suffix, two inputs with one output, or an
            output that would overwrite an input or the input's sidecar.
    """
    if suffix not in OUTPUT_SUFFIXES:
        raise MrisrError(f"suffix must be one of {', '.join(OUTPUT_SUFFIXES)}, got {suffix!r}")
    if output is not None and output_dir is not None:
        raise MrisrError("give either -o/--output (one output file) or --output-dir, not both")
    if output is not None:
        if len(inputs) != 1:
            raise MrisrError(f"-o/--output names one output file, but there are {len(inputs)} inputs; "
                             "use --output-dir for several")
        _check_output_suffix(Path(output))
        jobs = [Job(inputs[0], Path(output))]
    else:
        jobs = [Job(p, (Path(output_dir) if output_dir is not None else p.parent) / output_name(p, suffix))
                for p in inputs]
    _check_clashes(jobs)
    return jobs


def _check_clashes(jobs: Sequence[Job]) -> None:
    inputs = {str(j.input.resolve()): j.input for j in jobs}
    input_sidecars = {str(sidecar_path(j.input).resolve()) for j in jobs if j.input.is_file()}
    seen: dict[str, Path] = {}
    for job in jobs:
        out = str(job.output.resolve())
        if out in inputs:
            raise MrisrError(f"{job.input}: the output {job.output} is an input; choose another output name")
        if str(job.sidecar.resolve()) in input_sidecars:
            raise MrisrError(f"{job.input}: the output {job.output} would write its provenance to "
                             f"{job.sidecar}, an input's sidecar; choose another output name")
        if out in seen:
            raise MrisrError(f"{seen[out]} and {job.input} would both be written to {job.output}; "
                             "rename one or process them separately")
        seen[out] = job.input


def plan_batch(paths: Iterable[str | Path], *, output: str | Path | None = None,
               output_dir: str | Path | None = None, suffix: str = ".nii.gz",
               shard: tuple[int, int] | None = None, force: bool = False) -> list[Job]:
    """Expand inputs, name outputs, check clashes, take a shard, mark skips.

    Args:
        paths: Files and folders given by the user.
        output: One output file (only with a single input).
        output_dir: Folder for all outputs (created by :func:`run_job` or
            :func:`ensure_dataset_description`); default: next to each input.
        suffix: ``".nii.gz"`` or ``".nii"`` for generated names.
        shard: ``(k, n)``: keep inputs ``k, k+n, k+2n...`` of the sorted list.
        force: Overwrite existing outputs instead of skipping them.

    Returns:
        The jobs of this shard, sorted by input path.

    Raises:
        MrisrError: any usage problem (see :func:`expand_inputs`,
            :func:`name_outputs`). Planning writes nothing.
    """
    jobs = name_outputs(expand_inputs(paths), output=output, output_dir=output_dir, suffix=suffix)
    if shard is not None:
        k, n = shard
        jobs = jobs[k::n]
    for job in jobs:
        _mark_existing(job, force)
    return jobs


def _make_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None


def _mark_existing(job: Job, force: bool) -> None:
    if force:
        return
    if job.output.exists():
        job.status, job.error = "skipped", "output exists (use --force to overwrite)"
        job.record = make_record(job)
    elif job.sidecar.exists():
        job.status = "failed"
        job.error = (f"the output's sidecar {job.sidecar} already exists although the output does not; "
                     "remove it or use --force to overwrite it")
        job.record = make_record(job)


def preflight(jobs: Sequence[Job], settings: BatchSettings) -> None:
    """Refuse, before any data is read, the jobs whose output grid is too large.

    Reads NIfTI headers only; other inputs are checked when they are read.
    Refused jobs get status ``failed`` and an error.
    """
    for job in jobs:
        if job.status != "pending" or not job.input.is_file() or not is_nifti_name(job.input.name):
            continue
        header = _header_geometry(job.input)
        if header is None:
            continue  # let the reader report what is wrong with the file
        try:
            plan_grid(header[0], header[1], spacing=settings.spacing, factor=settings.factor,
                      max_voxels=settings.max_voxels)
        except MrisrError as exc:
            _fail(job, exc)


def _header_geometry(path: Path) -> tuple[Any, tuple[int, ...]] | None:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        return img.affine, tuple(img.shape)
    except Exception:  # noqa: BLE001 - the reader gives the proper message later
        return None


def ensure_dataset_description(output_dir: str | Path) -> Path | None:
    """Write a minimal BIDS derivatives ``dataset_description.json`` if missing.

    Returns:
        The path written, or ``None`` if one was already there.
    """
    from .writer import save_json_atomic

    path = Path(output_dir) / DATASET_DESCRIPTION
    if path.exists():
        return None
    _make_dir(path.parent)
    try:
        save_json_atomic(dataset_description(__version__), path, force=False)
    except OutputError:
        if path.exists():  # another shard wrote it meanwhile
            return None
        raise
    return path


def prepare_model(settings: BatchSettings) -> Any:
    """Load the model once for the whole batch (``None`` for the spline method)."""
    if settings.method != "cnn":
        return None
    return load_model_once(settings.model)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, or of a folder's files (names and contents, sorted).

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp(); p = os.path.join(d, "a"); _ = open(p, "wb").write(b"abc")
        >>> file_sha256(p)[:12]
        'ba7816bf8f01'
    """
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(q for q in p.iterdir() if q.is_file())
    for f in files:
        if p.is_dir():
            h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def make_record(job: Job, report: UpscaleReport | None = None, input_sha256: str | None = None) -> dict:
    """The JSON record of a job: status, error, paths, version, report fields.

    Every record has the same keys; report fields are ``None`` for jobs that
    did not run.

    Example:
        >>> rec = make_record(Job(Path("a.nii"), Path("a_sr.nii.gz"), "skipped"))
        >>> rec["status"], rec["method"]
        ('skipped', None)
    """
    rec: dict[str, Any] = {
        "status": job.status, "error": job.error, "input": str(job.input), "output": str(job.output),
        "sidecar": str(job.sidecar), "mrisr_version": __version__, "input_sha256": input_sha256,
    }
    values = report.to_dict() if report is not None else {}
    rec.update({name: values.get(name) for name in REPORT_FIELDS})
    rec["seconds"] = round(job.seconds, 3)
    return rec


def _fail(job: Job, exc: BaseException) -> None:
    job.status = "failed"
    if isinstance(exc, InputError) and exc.path is not None and _same_path(exc.path, job.input):
        job.error = exc.reason
    elif isinstance(exc, MrisrError):
        job.error = str(exc)
    elif isinstance(exc, MemoryError):
        job.error = "out of memory (try a larger spacing, fewer threads or a smaller --patch-size)"
    else:
        job.error = f"unexpected {type(exc).__name__}: {exc}"
    job.record = make_record(job)


def _same_path(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


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
        report, sha = _process(job, settings, model, progress)
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop the batch
        job.seconds = time.perf_counter() - t0
        if not isinstance(exc, MrisrError) and os.environ.get("MRISR_DEBUG"):
            traceback.print_exception(exc)
        _fail(job, exc)
        return job.record  # type: ignore[return-value]
    job.status, job.seconds = "ok", time.perf_counter() - t0
    job.record = make_record(job, report, sha)
    try:
        from .writer import save_json_atomic

        save_json_atomic(job.record, job.sidecar, force=True)
    except Exception as exc:  # noqa: BLE001
        _fail(job, exc)
        job.error = f"the image was written but its sidecar was not: {job.error}"
        job.record = make_record(job, report, sha)
    return job.record


def _process(job: Job, settings: BatchSettings, model: Any,
             progress: Callable[[float, int], None] | None) -> tuple[UpscaleReport, str]:
    from .io import load_volume
    from .writer import save_volume

    _make_dir(job.output.parent)
    t0 = time.perf_counter()
    volume = load_volume(job.input, series=settings.series, nan_to_num=settings.nan_to_num,
                         allow_uneven=settings.allow_uneven)
    t_read = time.perf_counter() - t0
    data, affine, report = upscale_volume(
        volume, spacing=settings.spacing, factor=settings.factor, method=settings.method, order=settings.order,
        model=model if model is not None else settings.model, device=settings.device,
        precision=settings.precision, patch_size=settings.patch_size, batch_size=settings.batch_size,
        threads=settings.threads, antialias=settings.antialias, max_voxels=settings.max_voxels,
        progress=progress)
    t0 = time.perf_counter()
    save_volume(data, affine, job.output, template=volume, dtype=settings.dtype, force=settings.force,
                inputs=(job.input,))
    report.timings["read"], report.timings["write"] = t_read, time.perf_counter() - t0
    report.input = str(job.input)
    return report, file_sha256(job.input)


def exit_code(jobs: Iterable[Job]) -> int:
    """0 when no job failed, else 1.

    Example:
        >>> exit_code([Job(Path("a"), Path("b"), "skipped")])
        0
    """
    return 1 if any(j.status == "failed" for j in jobs) else 0


def summarise(jobs: Sequence[Job]) -> dict[str, int]:
    """Count jobs per status.

    Example:
        >>> summarise([Job(Path("a"), Path("b"), "ok")])["ok"]
        1
    """
    counts = dict.fromkeys(STATUSES[1:], 0)
    for j in jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    return counts


__all__ = ["BatchSettings", "Job", "parse_shard", "expand_inputs", "name_outputs", "plan_batch", "preflight",
           "prepare_model", "ensure_dataset_description", "run_job", "make_record", "exit_code", "summarise",
           "file_sha256"]
