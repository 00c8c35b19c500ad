"""``mrisr upscale``: super-resolve one image or a batch to a target spacing.

A thin layer over :mod:`mrisr.pipeline.batch` and :mod:`mrisr.pipeline.upscale`: it parses
options, refuses bad values before touching any file (exit 2), runs the jobs
with a progress display on stderr, prints one JSON record per input on stdout
with ``--json``, and exits 1 when at least one input failed.

Examples::

    mrisr upscale t2.nii.gz --spacing 1 1 1
    mrisr upscale scans/ --factor 1 1 3 --output-dir derivatives/mrisr --json
    mrisr upscale dicom/T2_AX/ --spacing 0.5 -o t2_05mm.nii.gz
    mrisr upscale data/ --spacing 1 --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
    mrisr upscale scans/ --spacing 1 --jobs 4 --qc
    mrisr upscale t1_3mm.nii.gz --spacing 1 --consistency --uncertainty --json
    mrisr upscale t2_ax_4mm.nii.gz --spacing 1 --reference t1_1mm.nii.gz --register rigid
    mrisr upscale t1_thick.nii.gz --spacing 1 --adapt
    mrisr upscale @subjects.txt --spacing 1 --output-dir out --json > records.jsonl
    mrisr upscale scans/ --spacing 1 --output-dir out --dask-scheduler local:4
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import typer

from mrisr.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    MultiValueCommand,
    choices,
    err_console,
    parse_numbers,
    print_error,
    print_json,
    print_warning,
    usage_error,
)
from mrisr.options import CLI_DTYPES, COMBINES, METHODS, OUTPUT_SUFFIXES, PRECISIONS, PSF_CHOICES, REGISTRATIONS

#: Command class: ``--spacing``/``--factor`` take 1 or 3 space-separated numbers.
UpscaleCommand = MultiValueCommand

if TYPE_CHECKING:  # to the type checker these options are strings; to Typer, choices of the tables
    from mrisr.pipeline.settings import BatchSettings

    Method: TypeAlias = str
    Combine: TypeAlias = str
    OutputDtype: TypeAlias = str
    Suffix: TypeAlias = str
    ConsistencyPsf: TypeAlias = str
else:
    Method, Combine, OutputDtype = choices(METHODS), choices(COMBINES), choices(CLI_DTYPES)
    Suffix, ConsistencyPsf = choices(OUTPUT_SUFFIXES), choices(PSF_CHOICES)

_SPACING_HELP = "Target voxel size in mm: one value or three, per voxel axis (--spacing 1 1 3)."
_FACTOR_HELP = "Divide the voxel sizes by this: one value or three (--factor 1 1 3)."


#: Help panels of ``mrisr upscale`` (in the order --help shows them); the rare options come last.
IO, GRID, MODEL, TRUST, BATCH, PERF, RARE = ("Input and output", "Target grid", "Model", "Trust the result",
                                             "Batch", "Performance", "Rarely needed")


#: The options of ``mrisr upscale``, one alias each, so that ``mrisr bids`` (:mod:`mrisr.cli.bids_cmd`)
#: defines none of them twice.
OutputOpt = Annotated[Path | None, typer.Option(
    "-o", "--output", show_default=False, rich_help_panel=IO,
    help="Output file (.nii or .nii.gz); one input only.")]
OutputDirOpt = Annotated[Path | None, typer.Option(
    "--output-dir", file_okay=False, show_default=False, rich_help_panel=IO,
    help="Folder for the outputs (a BIDS derivatives folder). Default: next to each input.")]
InputsFromOpt = Annotated[str | None, typer.Option(
    "--inputs-from", metavar="FILE", show_default=False, rich_help_panel=IO,
    help="Also read input paths from FILE, one per line (- for stdin).")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite/--skip-existing", show_default=False, rich_help_panel=IO,
    help="Existing outputs: redo them, or skip those made with the same settings (refusing the others).")]
ForceOpt = Annotated[bool, typer.Option("--force", hidden=True, help="The same as --overwrite.")]
DemoOpt = Annotated[bool, typer.Option(
    "--demo", rich_help_panel=IO, help="Use the 2 mm sample T1 that ships with mrisr as the input.")]
SpacingOpt = Annotated[str | None, typer.Option(
    "--spacing", metavar="S [S S]", show_default=False, rich_help_panel=GRID, help=_SPACING_HELP)]
FactorOpt = Annotated[str | None, typer.Option(
    "--factor", metavar="F [F F]", show_default=False, rich_help_panel=GRID, help=_FACTOR_HELP)]
OrderOpt = Annotated[int, typer.Option(
    "--order", min=0, max=5, metavar="N", rich_help_panel=GRID,
    help="B-spline order (0 nearest, 1 linear, 3 cubic).")]
AntialiasOpt = Annotated[bool, typer.Option(
    "--antialias/--no-antialias", rich_help_panel=GRID, help="Smooth axes made coarser before sampling.")]
MethodOpt = Annotated[Method | None, typer.Option(
    "--method", metavar="METHOD", show_default=False, rich_help_panel=MODEL,
    help="cnn (spline + network), spline, or transfer (the --reference's detail). Default: cnn; transfer "
         "with --reference.")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", metavar="NAME|PATH", show_default=False, rich_help_panel=MODEL,
    help="Shipped model (see mrisr models) or a model folder.")]
ReferenceOpt = Annotated[Path | None, typer.Option(
    "--reference", metavar="PATH", show_default=False, rich_help_panel=MODEL,
    help="A finer scan of the same head (e.g. a 1 mm T1) to guide the result; one input only.")]
RegisterOpt = Annotated[str | None, typer.Option(
    "--register", metavar="|".join(REGISTRATIONS), rich_help_panel=MODEL, show_default=False,
    help="Align --reference to the input first (rigid) or trust the headers (none). Default: rigid with "
         "--method transfer, else none.")]
QcOpt = Annotated[bool, typer.Option(
    "--qc", rich_help_panel=TRUST,
    help='Also write a QC picture <output stem>_qc.png (needs pip install "mrisr[qc]").')]
ConsistencyOpt = Annotated[bool | None, typer.Option(
    "--consistency/--no-consistency", rich_help_panel=TRUST, show_default=False,
    help="Make the result consistent with the input's acquisition and report the errors (docs/trust.md). "
         "Default: on with the network, off with --method spline.")]
UncertaintyOpt = Annotated[bool, typer.Option(
    "--uncertainty", rich_help_panel=TRUST,
    help="Run the 8 flips of the volume and write their std map <output stem>_std.nii.gz (8x slower).")]
EnsembleOpt = Annotated[Combine | None, typer.Option(
    "--ensemble", show_default=False, rich_help_panel=TRUST,
    help="Combine the 8 flips by mean or median (alone: no std map). Default: mean with --uncertainty.")]
AdaptOpt = Annotated[bool, typer.Option(
    "--adapt", rich_help_panel=MODEL,
    help="Fine-tune the network on pairs made from this scan first (--adapt-seconds; docs/models.md).")]
AdaptSecondsOpt = Annotated[float, typer.Option(
    "--adapt-seconds", min=1, metavar="S", rich_help_panel=RARE,
    help="Time budget of --adapt per input, seconds.")]
JsonOutOpt = Annotated[bool, typer.Option(
    "--json", rich_help_panel=BATCH, help="One JSON record per input on stdout (progress on stderr).")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", rich_help_panel=BATCH, help="No progress display or summary.")]
NJobsOpt = Annotated[int, typer.Option(
    "--jobs", "-j", min=1, metavar="N", rich_help_panel=BATCH,
    help="Inputs processed at once (threads of this process).")]
ShardOpt = Annotated[str | None, typer.Option(
    "--shard", metavar="K/N", show_default=False, rich_help_panel=BATCH,
    help="Every N-th input from the K-th (0-based): for job arrays.")]
DaskSchedulerOpt = Annotated[str | None, typer.Option(
    "--dask-scheduler", metavar="ADDRESS|local:N", show_default=False, rich_help_panel=BATCH,
    help='Run the inputs on a Dask cluster (tcp://HOST:8786), or on N local worker processes (needs '
         'pip install "mrisr[dask]").')]
DeviceOpt = Annotated[str, typer.Option(
    "--device", metavar="DEVICE", rich_help_panel=PERF, help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", metavar="|".join(PRECISIONS), rich_help_panel=PERF, help="Arithmetic of the network.")]
ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", min=1, metavar="N", show_default=False, rich_help_panel=PERF,
    help="CPU threads for the network.")]
PatchSizeOpt = Annotated[int | None, typer.Option(
    "--patch-size", min=1, metavar="N", show_default=False, rich_help_panel=PERF,
    help="Network patch size in voxels.")]
BatchSizeOpt = Annotated[int | None, typer.Option(
    "--batch-size", min=1, metavar="N", show_default=False, rich_help_panel=PERF,
    help="Patches per network batch.")]
SeriesOpt = Annotated[str | None, typer.Option(
    "--series", metavar="UID", show_default=False, rich_help_panel=RARE,
    help="DICOM series UID when a folder holds several.")]
DtypeOpt = Annotated[OutputDtype, typer.Option(
    "--dtype", metavar="|".join(CLI_DTYPES), rich_help_panel=RARE,
    help="Output type: float32, or the input's (rounded, clipped).")]
SuffixOpt = Annotated[Suffix, typer.Option(
    "--suffix", metavar="EXT", rich_help_panel=RARE, help="Extension of generated names: .nii.gz or .nii.")]
NanToNumOpt = Annotated[bool, typer.Option(
    "--nan-to-num", rich_help_panel=RARE, help="Replace NaN/Inf input values with 0.")]
AllowUnevenOpt = Annotated[bool, typer.Option(
    "--allow-uneven", rich_help_panel=RARE, help="Accept DICOM slices with uneven spacing.")]
ConsistencyPsfOpt = Annotated[ConsistencyPsf, typer.Option(
    "--consistency-psf", metavar="PSF", rich_help_panel=RARE,
    help="PSF of --consistency: auto (the one that best explains the input), box, gaussian, kspace or slice.")]


def upscale(
    inputs: Annotated[list[Path] | None, typer.Argument(
        metavar="INPUT...", show_default=False, readable=False,  # unreadable inputs fail alone (exit 1)
        help="Images (NIfTI, MGH, NRRD, MetaImage), folders of them, DICOM series folders (or folders of "
             "them), or @LIST: a file of paths, one per line (@- reads stdin).")] = None,
    output: OutputOpt = None,
    output_dir: OutputDirOpt = None,
    inputs_from: InputsFromOpt = None,
    overwrite: OverwriteOpt = False,
    force: ForceOpt = False,
    demo: DemoOpt = False,
    spacing: SpacingOpt = None,
    factor: FactorOpt = None,
    order: OrderOpt = 3,
    antialias: AntialiasOpt = True,
    method: MethodOpt = None,
    model: ModelOpt = None,
    reference: ReferenceOpt = None,
    register: RegisterOpt = None,
    qc: QcOpt = False,
    consistency: ConsistencyOpt = None,
    uncertainty: UncertaintyOpt = False,
    ensemble: EnsembleOpt = None,
    adapt: AdaptOpt = False,
    json_out: JsonOutOpt = False,
    quiet: QuietOpt = False,
    n_jobs: NJobsOpt = 1,
    shard: ShardOpt = None,
    dask_scheduler: DaskSchedulerOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    threads: ThreadsOpt = None,
    patch_size: PatchSizeOpt = None,
    batch_size: BatchSizeOpt = None,
    adapt_seconds: AdaptSecondsOpt = 90.0,  # a rare option: its panel is listed last
    series: SeriesOpt = None,
    dtype: DtypeOpt = "float32",
    suffix: SuffixOpt = ".nii.gz",
    nan_to_num: NanToNumOpt = False,
    allow_uneven: AllowUnevenOpt = False,
    consistency_psf: ConsistencyPsfOpt = "auto",
) -> None:
    """Super-resolve images to a target voxel size: give --spacing or --factor.

    Outputs are <stem>_sr.nii.gz (BIDS names get desc-mrisr) with a JSON
    sidecar of provenance and settings. Exit codes: 0 all ok or skipped, 1
    some input failed, 2 usage error. More in docs/cli.md.
    """
    from mrisr.errors import MrisrError
    from mrisr.pipeline.jobs import parse_shard

    console = err_console()
    try:
        settings = make_settings(
            spacing=parse_numbers(spacing, "--spacing"), factor=parse_numbers(factor, "--factor"),
            method=method, order=order, model=model, device=device, precision=precision, patch_size=patch_size,
            batch_size=batch_size, threads=threads, antialias=antialias, series=series, nan_to_num=nan_to_num,
            allow_uneven=allow_uneven, dtype=dtype, force=force or overwrite, qc=qc, consistency=consistency,
            consistency_psf=consistency_psf, uncertainty=uncertainty, ensemble=ensemble, reference=reference,
            register=register, adapt=adapt_seconds if adapt else None)
        shard_kn = parse_shard(shard) if shard is not None else None
        check_dask(dask_scheduler, n_jobs)
        inputs = _with_demo(list(inputs or []), demo, inputs_from)
        if demo and len(inputs) == 1 and output is None and output_dir is None:
            output = Path.cwd() / "sample_t1_2mm_sr.nii.gz"  # never write inside the installed package
        jobs, loaded = _plan(inputs, settings, output, output_dir, suffix, shard_kn)
    except MrisrError as exc:
        raise usage_error(str(exc), console) from None
    if not jobs:
        if not quiet:
            print_warning(f"shard {shard} holds no inputs; nothing to do", console)
        raise typer.Exit(code=EXIT_OK)
    if n_jobs > 1 and not quiet:
        _warn_shared_device(settings, n_jobs, console)
    code = run_batch(jobs, settings, loaded, console, quiet=quiet, json_out=json_out, n_jobs=n_jobs,
                scheduler=dask_scheduler)
    raise typer.Exit(code=code)


def check_dask(scheduler: str | None, n_jobs: int) -> None:
    """--dask-scheduler's value (and dask's presence), and not together with --jobs."""
    if scheduler is None:
        return
    from mrisr.errors import MrisrError

    if n_jobs != 1:
        raise MrisrError("give either --jobs (threads of this process) or --dask-scheduler (a cluster), not both")
    from mrisr.pipeline.distributed import parse_scheduler

    parse_scheduler(scheduler)
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise MrisrError('--dask-scheduler needs dask.distributed: pip install "mrisr[dask]"') from None


def _with_demo(inputs: list[Path], demo: bool, inputs_from: str | None = None) -> list[Path]:
    """Add the paths of ``--inputs-from`` and the shipped sample for ``--demo``; refuse an empty input list."""
    from mrisr.errors import MrisrError
    from mrisr.pipeline.jobs import read_input_list

    if inputs_from is not None:
        inputs += read_input_list(inputs_from)
    if demo:
        from mrisr.io.sample import sample_path

        inputs.append(sample_path())
    if not inputs:
        raise MrisrError("no input given: name one or more images or folders, or use --demo")
    return inputs


def make_settings(**values: Any) -> BatchSettings:
    """The command's :class:`~mrisr.pipeline.settings.BatchSettings` (its options built once), checked; the errors
    name the options as typed ('--spacing', '--reference')."""
    from mrisr.errors import MrisrError
    from mrisr.geometry.grid import parse_spacing
    from mrisr.pipeline.settings import BatchSettings

    spacing, factor = values.get("spacing"), values.get("factor")
    if spacing is not None:
        parse_spacing(spacing, "--spacing")
    if factor is not None:
        parse_spacing(factor, "--factor")
    if spacing is None and factor is None:
        raise MrisrError("give the target with --spacing S [S S] (mm) or --factor F [F F]")
    if spacing is not None and factor is not None:
        raise MrisrError("give either --spacing or --factor, not both")
    _check_reference_options(values.get("reference"), values.get("register"), values.get("method"))
    settings = BatchSettings(**values)
    if settings.options.loads_model:
        from mrisr.inference.device import resolve_device, resolve_precision

        resolve_precision(settings.options.precision, resolve_device(settings.options.device))
    return settings


def _check_reference_options(reference: Any, register: str | None, method: str | None) -> None:
    """--register's value, --register without --reference, a missing reference (named as typed)."""
    from mrisr.errors import MrisrError, look_up_option

    if register is not None:
        look_up_option(register, REGISTRATIONS, "--register value")
    if reference is None:
        if register not in (None, "none"):
            raise MrisrError(f"--register {register} aligns the reference to the input: give --reference PATH")
        return
    if not Path(reference).exists():
        raise MrisrError(f"--reference {reference}: no such file or folder")
    if method == "spline":
        raise MrisrError("--reference guides the result, but --method is spline (which cannot use it); drop "
                         "--reference or use --method transfer (the default with --reference) or cnn")


def _plan(inputs: list[Path], settings: BatchSettings, output: Path | None, output_dir: Path | None, suffix: str,
          shard: tuple[int, int] | None) -> tuple[list, Any]:
    from mrisr.pipeline.batch import ensure_dataset_description, preflight, prepare_model
    from mrisr.pipeline.jobs import plan_batch

    if settings.options.reference is not None:
        _check_one_input(inputs)
    jobs = plan_batch(inputs, output=output, output_dir=output_dir, suffix=suffix, shard=shard,
                      force=settings.force, settings=settings)
    if not any(j.status == "pending" for j in jobs):
        return jobs, None
    loaded = prepare_model(settings)
    preflight(jobs, settings)
    if output_dir is not None:
        ensure_dataset_description(output_dir)
    return jobs, loaded


def _check_one_input(inputs: list[Path]) -> None:
    """--reference belongs to one head: refuse several inputs."""
    from mrisr.errors import MrisrError
    from mrisr.pipeline.jobs import expand_inputs

    found = expand_inputs(inputs)
    if len(found) != 1:
        raise MrisrError(f"--reference guides one input, but {len(found)} inputs were given; run mrisr upscale "
                         "once per input, each with the reference scan of its own head")


def run_batch(jobs: list, settings: Any, loaded: Any, console: Any, *, quiet: bool, json_out: bool,
         n_jobs: int = 1, scheduler: str | None = None) -> int:
    """Run the jobs (``n_jobs`` at once, or on the Dask ``scheduler``); errors, lines and records come out in
    input order."""
    from mrisr.errors import MrisrError
    from mrisr.pipeline.batch import iter_jobs
    from mrisr.pipeline.records import exit_code, make_record

    # Live bars redraw the terminal: with --json on a terminal stdout they would interleave with the
    # records, so the progress then falls back to one line per input (on stderr, like the bars).
    display = _Display(console, len(jobs), quiet, live=not (json_out and _stdout_is_terminal()))
    if scheduler is not None:
        from mrisr.pipeline.distributed import iter_jobs_dask

        finished = iter_jobs_dask(jobs, settings, scheduler, on_finish=display.finish)
    else:
        finished = iter_jobs(jobs, settings, loaded, n_jobs=n_jobs, on_start=display.start, on_finish=display.finish)
    try:
        with display:
            for job in finished:
                display.done(job)
                if job.status == "failed":
                    print_error(f"{job.input}: {job.error}", console)
                if json_out:
                    print_json(job.record or make_record(job))
    except MrisrError as exc:  # the Dask cluster could not be reached or started: nothing was sent
        print_error(str(exc), console)
        return EXIT_USAGE
    if not quiet:
        _print_warnings(jobs, console)
        _print_summary(jobs, console)
    return exit_code(jobs)


def _print_warnings(jobs: list, console: Any) -> None:
    for job in jobs:
        for warning in (job.record or {}).get("warnings") or []:
            print_warning(f"{job.input}: {warning}", console)


class _Display:
    """Progress on stderr: live bars on a terminal, one line per input otherwise.

    The bars never capture stdout (``redirect_stdout=False``): the JSON
    records written there reach a redirected file or pipe whatever stderr is.
    ``start`` and ``finish`` may be called from worker threads (``--jobs``):
    rich's Progress is thread-safe and the bar of each running input is kept
    per job. ``done`` is called in input order from the main thread.
    """

    def __init__(self, console: Any, n_jobs: int, quiet: bool, live: bool = True) -> None:
        import threading

        self.console, self.n_jobs, self.quiet, self.index = console, n_jobs, quiet, 0
        self.live = live and not quiet and console.is_terminal
        self.bar: Any = None
        self.overall: Any = None
        self.tasks: dict[int, Any] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> _Display:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=self.console, transient=True,
                                redirect_stdout=False)
            self.bar.__enter__()
            self.overall = self.bar.add_task("inputs", total=self.n_jobs)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start(self, job: Any) -> Any:
        """Begin a job; returns the ``progress(done, total)`` callback for it."""
        if self.bar is None or job.status != "pending":
            return None
        task = self.bar.add_task(f"{job.input.name} (volumes)", total=None)
        with self.lock:
            self.tasks[id(job)] = task

        def on_progress(done: float, total: int) -> None:
            self.bar.update(task, completed=done, total=total)

        return on_progress

    def finish(self, job: Any) -> None:
        """A job ended (any order): drop its bar and advance the overall one."""
        if self.bar is None:
            return
        with self.lock:
            task = self.tasks.pop(id(job), None)
        if task is not None:
            self.bar.remove_task(task)
        self.bar.advance(self.overall)

    def done(self, job: Any) -> None:
        """Report a finished job, in input order: its line when there are no live bars."""
        self.index += 1
        if self.bar is None and not self.quiet and job.status != "failed":  # failures get their own error line
            qc = f", QC picture {job.qc}" if job.qc is not None else ""
            self.console.print(f"[{self.index}/{self.n_jobs}] {job.status:7s} {job.input} -> {job.output} "
                               f"({job.seconds:.1f} s{qc})", markup=False, highlight=False)


def _stdout_is_terminal() -> bool:
    import sys

    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def _warn_shared_device(settings: BatchSettings, n_jobs: int, console: Any) -> None:
    """--jobs is for CPU runs: say so when several inputs would share one GPU."""
    if not settings.options.loads_model:
        return
    from mrisr.inference.device import resolve_device

    device = resolve_device(settings.options.device)
    if device.type != "cpu":
        print_warning(f"--jobs {n_jobs} runs {n_jobs} inputs at once on one {device.type} device; they share its "
                      "memory and are rarely faster than --jobs 1 there (--jobs is meant for CPU runs)", console)


def _shape(job: Any) -> str:
    shape = (job.record or {}).get("output_shape")
    return "x".join(str(v) for v in shape) if shape else "-"


def _print_summary(jobs: list, console: Any) -> None:
    from rich.table import Table

    from mrisr.pipeline.records import summarise

    table = Table(title=None, show_edge=False, pad_edge=False)
    for col in ("input", "output", "status", "shape", "time"):
        table.add_column(col, overflow="fold")
    styles = {"ok": "green", "skipped": "yellow", "failed": "bold red"}
    for job in jobs:
        table.add_row(str(job.input), str(job.output), f"[{styles.get(job.status, '')}]{job.status}[/]",
                      _shape(job), f"{job.seconds:.1f} s" if job.status == "ok" else "-")
    console.print(table)
    counts = summarise(jobs)
    console.print(", ".join(f"{n} {status}" for status, n in counts.items() if n) or "nothing done",
                  markup=False, highlight=False)
