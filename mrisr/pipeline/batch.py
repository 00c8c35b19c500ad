"""Batch upscaling: inputs to jobs, outputs, checks up front, one record per input.

``mrisr upscale`` is a thin layer over this module. A batch runs in four steps,
and everything that can be refused is refused before any image is read:

1. :func:`plan_batch` expands the paths given (files; folders of NIfTI files,
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
4. :func:`exit_code`: 0 when nothing failed, 1 otherwise.

Example:
    >>> from mrisr.pipeline.batch import parse_shard
    >>> parse_shard("1/4")
    (1, 4)
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrisr import __version__
from mrisr.errors import InputError, MrisrError, OutputError
from mrisr.geometry.grid import DEFAULT_MAX_VOXELS
from mrisr.inference.ensemble import STD_SUFFIX, std_path
from mrisr.inference.model_card import file_sha256
from mrisr.io.naming import (
    OUTPUT_SUFFIXES,
    dataset_description,
    is_image_name,
    is_nifti_name,
    output_name,
    output_stem,
    sidecar_path,
    split_extension,
)
from mrisr.pipeline.checks import (
    check_adapt_args,
    check_guide_args,
    check_spacing_args,
    check_trust_args,
    load_model_once,
    plan_grid,
    resolve_consistency,
    resolve_method,
)
from mrisr.pipeline.report import UpscaleReport
from mrisr.pipeline.upscale import upscale_volume
from mrisr.trust.registration import transform_path

#: Job states: planned, done, left alone (output exists), or failed.
STATUSES = ("pending", "ok", "skipped", "failed")
#: Fields of a record that come from the :class:`~mrisr.pipeline.report.UpscaleReport`.
REPORT_FIELDS = tuple(f.name for f in dataclasses.fields(UpscaleReport) if f.name != "input")
DATASET_DESCRIPTION = "dataset_description.json"


@dataclass
class BatchSettings:
    """Processing settings shared by every job of a batch.

    The fields mirror the arguments of :func:`mrisr.pipeline.upscale.upscale`, plus
    ``dtype`` (``"float32"`` or ``"input"``) and ``force`` for the writer,
    and ``qc``: also draw a QC picture beside each output (:mod:`mrisr.evaluation.qc`).
    ``consistency``/``consistency_psf`` and ``uncertainty``/``ensemble`` are
    those of :func:`mrisr.pipeline.upscale.upscale_volume`; with ``uncertainty`` the
    std map is written beside each output (:func:`mrisr.inference.ensemble.std_path`).
    ``reference`` (a path) and ``register`` (``"none"`` or ``"rigid"``) guide
    a guided model (``docs/guided.md``); with ``rigid`` the transform is
    written beside the output (:func:`mrisr.trust.registration.transform_path`).
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
    qc: bool = False
    consistency: bool | None = None   # None: on with the network (pipeline.resolve_consistency)
    consistency_psf: str = "auto"
    uncertainty: bool = False
    ensemble: str | None = None
    reference: Any = None
    register: str | None = None
    adapt: float | None = None   # seconds of per-scan adaptation (mrisr.inference.adapt); None: off

    def check(self) -> None:
        """Validate the settings that need no file (spacing, order, method).

        Raises:
            MrisrError: naming the bad value.
        """
        check_spacing_args(self.spacing, self.factor)
        if self.dtype not in ("float32", "input"):
            raise MrisrError(f"dtype must be 'float32' or 'input', got {self.dtype!r}")
        guided = self.reference is not None
        self.method, self.model = resolve_method(self.method, self.model, guided=guided)
        self.consistency = resolve_consistency(self.consistency, self.method)
        self.ensemble = check_trust_args(self.method, self.consistency, self.consistency_psf, self.uncertainty,
                                         self.ensemble)
        self.register = check_guide_args(guided, self.register, self.ensemble)
        check_adapt_args(self.adapt, self.method, guided)


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
        qc: The QC picture written for it (``settings.qc``), if any.
        settings: The settings that shape its output (:func:`output_settings`),
            when planned with them; recorded in the sidecar.
        sidecar_extra: Fields written in the sidecar before the record's
            (a BIDS source's metadata and ``Sources``: :mod:`mrisr.pipeline.bids`).
    """

    input: Path
    output: Path
    status: str = "pending"
    error: str | None = None
    record: dict | None = None
    seconds: float = 0.0
    qc: Path | None = None
    settings: dict | None = None
    sidecar_extra: dict | None = None

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


#: The :class:`BatchSettings` fields that shape an output. The others (device, precision, threads, patch
#: and batch sizes, qc, force) change how fast it is made (and at most its last bits: the arithmetic),
#: or what is written beside it, not what the image is.
OUTPUT_SETTINGS = ("spacing", "factor", "method", "order", "model", "antialias", "series",
                   "nan_to_num", "allow_uneven", "dtype", "consistency", "consistency_psf", "uncertainty",
                   "ensemble", "reference", "register", "adapt")


def output_settings(settings: BatchSettings) -> dict:
    """The settings that shape an output, as recorded in its sidecar (``settings``).

    Spacings and factors are written per axis (``1`` and ``1 1 1`` are one
    setting), the model as the name, version and weights SHA-256 of its card
    (a re-trained model with the same name is another setting) and the
    reference as an absolute path. Call it on checked settings
    (:meth:`BatchSettings.check`).

    Example:
        >>> s = output_settings(BatchSettings(spacing=(1.0,), method="spline"))
        >>> s["spacing"], s["method"], s["model"]
        ([1.0, 1.0, 1.0], 'spline', None)
    """
    values = {name: getattr(settings, name) for name in OUTPUT_SETTINGS}
    for name in ("spacing", "factor"):
        if values[name] is not None:
            numbers = [float(v) for v in values[name]]
            values[name] = numbers * 3 if len(numbers) == 1 else numbers
    values["model"] = _model_identity(settings.model) if settings.method == "cnn" else None
    if values["reference"] is not None:
        values["reference"] = str(Path(values["reference"]).absolute())
    return values


def _model_identity(model: Any) -> dict | str | None:
    """Name, version and weights checksum of a model (a name, a folder, or a loaded model)."""
    card = getattr(model, "card", None)
    if card is None and model is not None:
        from mrisr.inference.registry import find_card

        try:
            card = find_card(model)
        except MrisrError:
            return str(model)  # loading it reports the problem
    if card is None:
        return None
    return {"name": card.name, "version": card.version, "sha256": card.sha256}


def settings_fingerprint(values: dict | None) -> str | None:
    """SHA-256 of :func:`output_settings` (keys sorted), or ``None``.

    Example:
        >>> a = settings_fingerprint({"order": 3, "method": "spline"})
        >>> a == settings_fingerprint({"method": "spline", "order": 3}), len(a)
        (True, 64)
    """
    if values is None:
        return None
    import hashlib
    import json

    text = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def settings_changes(old: dict, new: dict) -> list[str]:
    """``"name: old -> new"`` for every setting that differs, in :data:`OUTPUT_SETTINGS` order.

    Example:
        >>> settings_changes({"order": 3, "method": "spline"}, {"order": 1, "method": "spline"})
        ['order: 3 -> 1']
    """
    def show(value: Any) -> str:
        if isinstance(value, dict) and "name" in value:
            return f"{value['name']} {value.get('version', '')}".strip()
        if isinstance(value, list):
            return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        return str(value)

    names = [n for n in OUTPUT_SETTINGS if n in old or n in new]
    names += sorted((set(old) | set(new)) - set(names))
    return [f"{n}: {show(old.get(n))} -> {show(new.get(n))}" for n in names if old.get(n) != new.get(n)]


def _is_dicom_folder(folder: Path) -> bool:
    from mrisr.io.dicom import is_dicom_folder

    return bool(is_dicom_folder(folder))


def _folder_inputs(folder: Path) -> list[Path]:
    """Inputs found in a folder: its image files (NIfTI, MGH, NRRD, MetaImage),
    else the folder itself if it is a DICOM series folder, else its DICOM
    series subfolders."""
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except PermissionError:
        return [folder]  # one input that fails alone when read ("permission denied"); the batch goes on
    except OSError as exc:
        raise MrisrError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    images = [p for p in entries if p.is_file() and is_image_name(p.name)]
    if images:
        # Earlier outputs of ours sitting next to their inputs are not inputs.
        produced = {output_stem(p) for p in images}
        produced |= {stem + STD_SUFFIX for stem in produced}  # their uncertainty maps (--uncertainty)
        return [p for p in images if split_extension(p.name)[0] not in produced]
    if _is_dicom_folder(folder):
        return [folder]
    subfolders = [p for p in entries if p.is_dir() and _is_dicom_folder(p)]
    if not subfolders:
        raise MrisrError(f"{folder}: the folder holds no image files (.nii, .nii.gz, .mgz, .nrrd, .mha...) "
                         "and no DICOM series")
    return subfolders


def read_input_list(source: str | Path, stream: Any = None) -> list[Path]:
    r"""The paths listed in a text file, one per line (``-``: read ``stream``, default stdin).

    Blank lines and lines starting with ``#`` are left out; surrounding spaces
    are stripped. Relative paths are relative to the current folder (as for
    paths typed on the command line).

    Raises:
        MrisrError: the file cannot be read, or lists nothing.

    Example:
        >>> import io
        >>> read_input_list("-", io.StringIO("a.nii.gz\n\n# comment\n  scans/b.nii  \n"))
        [PosixPath('a.nii.gz'), PosixPath('scans/b.nii')]
    """
    import sys

    name = "standard input" if str(source) == "-" else str(source)
    try:
        if str(source) == "-":
            text = (stream if stream is not None else sys.stdin).read()
        else:
            text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise MrisrError(f"{name}: cannot read the list of inputs ({reason})") from None
    paths = [Path(line.strip()) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not paths:
        raise MrisrError(f"{name}: the list of inputs is empty (one path per line)")
    return paths


def expand_list_arguments(paths: Iterable[str | Path], stream: Any = None) -> list[Path]:
    r"""Replace each ``@FILE`` argument by the paths listed in FILE (``@-``: stdin).

    An existing file whose name starts with ``@`` stays an input.

    Example:
        >>> import io
        >>> expand_list_arguments(["a.nii", "@-"], io.StringIO("b.nii\nc.nii\n"))
        [PosixPath('a.nii'), PosixPath('b.nii'), PosixPath('c.nii')]
    """
    out: list[Path] = []
    for raw in paths:
        text = str(raw)
        if text.startswith("@") and len(text) > 1 and not Path(text).exists():
            out += read_input_list(text[1:], stream)
        else:
            out.append(Path(raw))
    return out


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Turn the paths given by the user into a sorted list of inputs.

    ``@FILE`` arguments are replaced by the paths FILE lists
    (:func:`expand_list_arguments`).

    Raises:
        MrisrError: a path that does not exist, a folder with nothing to
            process, an unreadable list file, or no paths at all.

    Example:
        >>> expand_inputs([])
        Traceback (most recent call last):
        ...
        mrisr.errors.MrisrError: no inputs given
    """
    found: dict[str, Path] = {}
    for p in expand_list_arguments(paths):
        if not p.exists():
            raise MrisrError(f"{p}: no such file or folder")
        for item in (_folder_inputs(p) if p.is_dir() else [p]):
            found.setdefault(str(item.resolve()), item)
    if not found:
        raise MrisrError("no inputs given")
    return [found[k] for k in sorted(found)]


def _check_output_suffix(path: Path) -> None:
    if str(path) == "-":
        raise MrisrError("-o -: outputs are files, written atomically, not a stream on stdout; give a file name "
                         "(stdout carries the --json records)")
    if split_extension(path.name)[1].lower() not in OUTPUT_SUFFIXES:
        raise MrisrError(f"-o {path}: the output must end with {' or '.join(OUTPUT_SUFFIXES)}")


def name_outputs(inputs: Sequence[Path], *, output: str | Path | None = None,
                 output_dir: str | Path | None = None, suffix: str = ".nii.gz",
                 series: str | None = None) -> list[Job]:
    """Pair each input with its output path.

    With ``series`` (a DICOM SeriesInstanceUID) generated names carry it
    (:func:`mrisr.io.naming.output_stem`), so two series of one folder get two
    outputs.

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
        jobs = [Job(p, (Path(output_dir) if output_dir is not None else p.parent)
                    / output_name(p, suffix, series=series)) for p in inputs]
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
               shard: tuple[int, int] | None = None, force: bool = False,
               settings: BatchSettings | None = None) -> list[Job]:
    """Expand inputs, name outputs, check clashes, take a shard, mark skips.

    An existing output is skipped when its sidecar records the same
    :func:`output_settings` as ``settings``; one made with other settings (or
    whose sidecar records none) is refused: the job fails, naming the
    settings that changed, and the output is left alone. ``force`` redoes
    both. Without ``settings`` any existing output is skipped.

    Args:
        paths: Files and folders given by the user.
        output: One output file (only with a single input).
        output_dir: Folder for all outputs (created by :func:`run_job` or
            :func:`ensure_dataset_description`); default: next to each input.
        suffix: ``".nii.gz"`` or ``".nii"`` for generated names.
        shard: ``(k, n)``: keep inputs ``k, k+n, k+2n...`` of the sorted list.
        force: Overwrite existing outputs instead of skipping them.
        settings: Checked settings of the run: recorded on each job, compared
            with existing outputs' sidecars; their ``series`` names the outputs.

    Returns:
        The jobs of this shard, sorted by input path.

    Raises:
        MrisrError: any usage problem (see :func:`expand_inputs`,
            :func:`name_outputs`). Planning writes nothing.
    """
    jobs = name_outputs(expand_inputs(paths), output=output, output_dir=output_dir, suffix=suffix,
                        series=None if settings is None else settings.series)
    return prepare_jobs(jobs, shard=shard, force=force, settings=settings)


def prepare_jobs(jobs: Sequence[Job], *, shard: tuple[int, int] | None = None, force: bool = False,
                 settings: BatchSettings | None = None) -> list[Job]:
    """Take this shard of named jobs, record the settings on them and mark existing outputs.

    The second half of :func:`plan_batch`, for callers that name outputs
    themselves (:mod:`mrisr.pipeline.bids`).

    Raises:
        MrisrError: two jobs with one output, or an output that is an input.
    """
    _check_clashes(jobs)
    wanted = output_settings(settings) if settings is not None else None
    jobs = list(jobs)
    if shard is not None:
        k, n = shard
        jobs = jobs[k::n]
    for job in jobs:
        job.settings = wanted
        _mark_existing(job, force)
    return jobs


def _make_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None


def _mark_existing(job: Job, force: bool) -> None:
    from mrisr.io.writer import check_name_length

    try:
        check_name_length(job.output)  # a name the file system cannot hold fails this job alone
    except OutputError as exc:
        _fail(job, exc)
        return
    if force:
        return
    if job.output.exists():
        changes = _stale(job)
        if not changes:
            same = "" if job.settings is None else " with the same settings"
            job.status, job.error = "skipped", f"output exists{same} (use --overwrite or --force to redo it)"
        else:
            job.status = "failed"
            job.error = (f"the output {job.output} exists but was made with other settings ({'; '.join(changes)}); "
                         "use --overwrite to replace it, or write to another --output-dir")
        job.record = make_record(job)
    elif job.sidecar.exists():
        job.status = "failed"
        job.error = (f"the output's sidecar {job.sidecar} already exists although the output does not; "
                     "remove it or use --force to overwrite it")
        job.record = make_record(job)


def _stale(job: Job) -> list[str]:
    """How the settings recorded beside an existing output differ from the job's (empty: the same)."""
    if job.settings is None:
        return []
    import json

    try:
        recorded = json.loads(job.sidecar.read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if not isinstance(recorded, dict):
        return [f"its sidecar {job.sidecar.name} records no settings"]
    return settings_changes(recorded, job.settings)


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
            plan_grid(header[0], header[1], spacing=settings.spacing, factor=settings.factor,
                      max_voxels=settings.max_voxels)
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
    _make_dir(path.parent)
    try:
        save_json_atomic(dataset_description(__version__), path, force=False)
    except OutputError:
        if path.exists():  # another shard wrote it meanwhile
            return None
        raise
    return path


def prepare_model(settings: BatchSettings) -> Any:
    """Load the model once for the whole batch (``None`` for the spline method).

    Raises:
        ModelError: also for a guided model without ``settings.reference``,
            or a single-input model with one.
    """
    if settings.method != "cnn":
        return None
    from mrisr.inference.engine import check_model_channels

    loaded = load_model_once(settings.model)
    check_model_channels(loaded, settings.reference is not None)
    return loaded


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
        "status": job.status, "error": job.error, "input": _absolute(job.input), "output": _absolute(job.output),
        "sidecar": _absolute(job.sidecar), "mrisr_version": __version__, "input_sha256": input_sha256,
        "qc": None if job.qc is None else _absolute(job.qc),
        "settings": job.settings, "settings_sha256": settings_fingerprint(job.settings),
    }
    values = report.to_dict() if report is not None else {}
    rec.update({name: values.get(name) for name in REPORT_FIELDS})
    if isinstance(rec.get("reference"), dict) and rec["reference"].get("path"):
        rec["reference"] = {**rec["reference"], "path": _absolute(rec["reference"]["path"])}
    rec["seconds"] = round(job.seconds, 3)
    return round_floats(rec)


def _absolute(path: Path) -> str:
    """Records name files by absolute paths: they stay valid wherever they are read from."""
    return str(Path(path).absolute())


def round_floats(value: Any, digits: int = 12) -> Any:
    """Round every float in a JSON-like value to ``digits`` significant digits (no float noise).

    Example:
        >>> round_floats({"spacing": [3.9999999999999827, 1.0], "n": 2, "x": 1e-20})
        {'spacing': [4.0, 1.0], 'n': 2, 'x': 1e-20}
    """
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [round_floats(v, digits) for v in value]
    return value


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
        report, sha, qc_error = _process(job, settings, model, progress)
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop the batch
        job.seconds = time.perf_counter() - t0
        if not isinstance(exc, MrisrError) and os.environ.get("MRISR_DEBUG"):
            traceback.print_exception(exc)
        _fail(job, exc)
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
        _fail(job, exc)
        job.error = f"the image was written but its sidecar was not: {job.error}"
        job.record = make_record(job, report, sha)
    return job.record


def _process(job: Job, settings: BatchSettings, model: Any,
             progress: Callable[[float, int], None] | None) -> tuple[UpscaleReport, str, str | None]:
    """Read, upscale, write; returns the report, the input's SHA-256 and why the QC picture failed (or None)."""
    from mrisr.io.read import load_volume
    from mrisr.io.writer import check_output_path, save_volume

    if settings.qc:
        from mrisr.evaluation.qc import require_matplotlib

        require_matplotlib()  # before any work: the input fails with the install hint
    _make_dir(job.output.parent)
    # Refuse an unwritable destination before reading and upscaling (the writer checks again).
    inputs = (job.input,) if settings.reference is None else (job.input, Path(settings.reference))
    check_output_path(job.output, force=settings.force, inputs=inputs)
    if settings.uncertainty:
        check_output_path(std_path(job.output), force=settings.force, inputs=(job.input,))
    if settings.register == "rigid":
        check_output_path(transform_path(job.output), force=settings.force, suffixes=(".tfm",))
    t0 = time.perf_counter()
    volume = load_volume(job.input, series=settings.series, nan_to_num=settings.nan_to_num,
                         allow_uneven=settings.allow_uneven)
    reference = None
    if settings.reference is not None:
        reference = load_volume(settings.reference, nan_to_num=settings.nan_to_num,
                                allow_uneven=settings.allow_uneven)
    t_read = time.perf_counter() - t0
    result = upscale_volume(
        volume, spacing=settings.spacing, factor=settings.factor, method=settings.method, order=settings.order,
        model=model if model is not None else settings.model, device=settings.device,
        precision=settings.precision, patch_size=settings.patch_size, batch_size=settings.batch_size,
        threads=settings.threads, antialias=settings.antialias, max_voxels=settings.max_voxels,
        progress=progress, consistency=settings.consistency, consistency_psf=settings.consistency_psf,
        uncertainty=settings.uncertainty, ensemble=settings.ensemble, reference=reference,
        register=settings.register, adapt=settings.adapt)
    data, affine, report = result
    t0 = time.perf_counter()
    save_volume(data, affine, job.output, template=volume, dtype=settings.dtype, force=settings.force,
                inputs=inputs)
    _save_transform(job, settings, report)
    if result.std is not None and report.uncertainty is not None:
        report.uncertainty["std_output"] = _absolute(save_volume(result.std, affine, std_path(job.output),
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
    ref["transform_file"] = _absolute(path)


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
            grid = plan_grid(volume.affine, volume.data.shape, spacing=settings.spacing, factor=settings.factor,
                             max_voxels=settings.max_voxels)
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


# ----------------------------------------------------------------- several inputs at once


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
    ``settings.threads`` or else :func:`threads_per_job` torch threads (set per
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

    if settings.method == "cnn":
        if settings.threads is None:
            settings = dataclasses.replace(settings, threads=threads_per_job(workers))
        model = model if model is not None else prepare_model(settings)
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

    prepare_network(model.network, resolve_device(settings.device))


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


__all__ = ["BatchSettings", "Job", "parse_shard", "OUTPUT_SETTINGS", "output_settings", "settings_fingerprint",
           "settings_changes", "read_input_list", "expand_list_arguments", "round_floats", "expand_inputs",
           "prepare_jobs", "name_outputs", "plan_batch", "preflight",
           "prepare_model", "ensure_dataset_description", "run_job", "iter_jobs", "run_jobs", "available_cores",
           "threads_per_job", "make_record", "exit_code", "summarise"]
