"""Inputs to jobs: the paths given expanded and sorted, the outputs named, clashes refused, this process's
share taken (``shard=(k, n)``) and existing outputs marked skipped; one :class:`Job` per input.

Example:
    >>> parse_shard("1/4")
    (1, 4)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrisr.errors import InputError, MrisrError, OutputError
from mrisr.inference.ensemble import STD_SUFFIX
from mrisr.io.naming import is_image_name, output_name, output_stem, sidecar_path, split_extension
from mrisr.options import OUTPUT_SUFFIXES
from mrisr.pipeline.records import make_record
from mrisr.pipeline.settings import BatchSettings, output_settings, settings_changes


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
                        series=None if settings is None else settings.options.series)
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


def make_output_dir(folder: Path) -> None:
    """Create ``folder`` (and its parents), refusing with an OutputError that says why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None


def _mark_existing(job: Job, force: bool) -> None:
    from mrisr.io.writer import check_name_length

    try:
        check_name_length(job.output)  # a name the file system cannot hold fails this job alone
    except OutputError as exc:
        fail_job(job, exc)
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


def fail_job(job: Job, exc: BaseException) -> None:
    """Mark ``job`` failed with the reason ``exc`` gives, and record it."""
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
