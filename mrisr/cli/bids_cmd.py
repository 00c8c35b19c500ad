"""``mrisr bids``: the BIDS app (``BIDS_DIR OUTPUT_DIR participant|group``), over :mod:`mrisr.pipeline.bids`.

The participant level runs the batch of ``mrisr upscale`` (same settings,
records, skip rules, exit codes) on the anatomical images found; the group
level writes one summary table. Options after the three positional
arguments, as BIDS apps are called; list options take several values
(``--participant-label 01 02``).

Examples::

    mrisr bids /data/ds001 /data/derivatives/mrisr participant --spacing 1
    mrisr bids /data/ds001 /data/derivatives/mrisr participant --participant-label 01 02 --suffix T2w FLAIR \\
        --spacing 1 --json > records.jsonl
    mrisr bids /data/ds001 /data/derivatives/mrisr group
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mrisr.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    MrisrCommand,
    err_console,
    join_list_values,
    join_multi_values,
    parse_numbers,
    print_json,
    print_warning,
    usage_error,
)
from mrisr.cli.upscale_cmd import (
    AntialiasOpt,
    BatchSizeOpt,
    ConsistencyOpt,
    DaskSchedulerOpt,
    DeviceOpt,
    DtypeOpt,
    EnsembleOpt,
    FactorOpt,
    ForceOpt,
    JsonOutOpt,
    MethodOpt,
    ModelOpt,
    NanToNumOpt,
    NJobsOpt,
    OrderOpt,
    OverwriteOpt,
    PatchSizeOpt,
    PrecisionOpt,
    QcOpt,
    QuietOpt,
    ShardOpt,
    SpacingOpt,
    ThreadsOpt,
    UncertaintyOpt,
    check_dask,
    make_settings,
    run_batch,
)

#: Options that take several values up to the next option.
LIST_OPTIONS = ("--participant-label", "--session-label", "--suffix")
#: The BIDS-Apps spellings (``--participant_label``) of the label options.
_SPELLINGS = {"--participant_label": "--participant-label", "--session_label": "--session-label"}
_SELECT = "Selection"


class BidsCommand(MrisrCommand):
    """``--spacing``/``--factor`` take 1 or 3 numbers, the label and suffix options several values."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # noqa: D102
        args = [_SPELLINGS.get(a, a) for a in args]
        return super().parse_args(ctx, join_list_values(join_multi_values(args), LIST_OPTIONS))


def bids(
    bids_dir: Annotated[Path, typer.Argument(metavar="BIDS_DIR", show_default=False,
                                             help="The BIDS dataset (read only: nothing is written there).")],
    output_dir: Annotated[Path, typer.Argument(metavar="OUTPUT_DIR", show_default=False,
                                               help="The derivatives folder to write (outside BIDS_DIR).")],
    level: Annotated[str, typer.Argument(metavar="participant|group", show_default=False,
                                         help="participant: upscale the images; group: write the summary "
                                              "table.")],
    participant_label: Annotated[str | None, typer.Option(
        "--participant-label", metavar="LABEL...", show_default=False,
        rich_help_panel=_SELECT, help="Only these participants (01 02, or sub-01). Default: all.")] = None,
    session_label: Annotated[str | None, typer.Option(
        "--session-label", metavar="LABEL...", show_default=False, rich_help_panel=_SELECT,
        help="Only these sessions. Default: all.")] = None,
    suffix: Annotated[str | None, typer.Option(
        "--suffix", metavar="SUFFIX...", show_default=False, rich_help_panel=_SELECT,
        help="Only images with these suffixes (T1w T2w FLAIR...). Default: every structural suffix.")] = None,
    spacing: SpacingOpt = None,
    factor: FactorOpt = None,
    order: OrderOpt = 3,
    antialias: AntialiasOpt = True,
    method: MethodOpt = None,
    model: ModelOpt = None,
    qc: QcOpt = False,
    consistency: ConsistencyOpt = None,
    uncertainty: UncertaintyOpt = False,
    ensemble: EnsembleOpt = None,
    overwrite: OverwriteOpt = False,
    force: ForceOpt = False,
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
    dtype: DtypeOpt = "float32",
    nan_to_num: NanToNumOpt = False,
) -> None:
    """A BIDS app: upscale a dataset's anatomical images into a derivatives dataset.

    participant writes OUTPUT_DIR/sub-XX/[ses-YY/]anat/..._desc-mrisr_<suffix>.nii.gz,
    with sidecars carrying the source's metadata and Sources; group writes
    OUTPUT_DIR/mrisr_summary.tsv. Options go after the three arguments;
    --participant_label works too. Exit codes as mrisr upscale; docs/bids.md.
    """
    from mrisr.errors import MrisrError, look_up_option
    from mrisr.pipeline.bids import LEVELS, check_dataset, find_anat, parse_labels
    from mrisr.pipeline.jobs import parse_shard

    console = err_console()
    try:
        look_up_option(level, LEVELS, "analysis level")
        root = check_dataset(bids_dir, output_dir)
        images = find_anat(root, participants=parse_labels([participant_label] if participant_label else None,
                                                           "--participant-label"),
                           sessions=parse_labels([session_label] if session_label else None, "--session-label",
                                                 prefix="ses-"),
                           suffixes=parse_labels([suffix] if suffix else None, "--suffix", prefix=""))
        if level == "group":
            raise typer.Exit(code=_group(images, output_dir, console, quiet=quiet, json_out=json_out))
        settings = make_settings(
            spacing=parse_numbers(spacing, "--spacing"), factor=parse_numbers(factor, "--factor"), method=method,
            order=order, model=model, device=device, precision=precision, patch_size=patch_size,
            batch_size=batch_size, threads=threads, antialias=antialias, nan_to_num=nan_to_num, dtype=dtype,
            force=force or overwrite, qc=qc, consistency=consistency, uncertainty=uncertainty, ensemble=ensemble,
            register="none")
        check_dask(dask_scheduler, n_jobs)
        jobs, loaded = _plan(images, root, output_dir, settings, parse_shard(shard) if shard else None)
    except MrisrError as exc:
        raise usage_error(str(exc), console) from None
    if not jobs:
        if not quiet:
            print_warning(f"shard {shard} holds no images; nothing to do", console)
        raise typer.Exit(code=EXIT_OK)
    raise typer.Exit(code=run_batch(jobs, settings, loaded, console, quiet=quiet, json_out=json_out, n_jobs=n_jobs,
                                    scheduler=dask_scheduler))


def _plan(images: list, root: Path, output_dir: Path, settings: Any, shard: tuple[int, int] | None) -> tuple:
    from mrisr.pipeline.batch import preflight, prepare_model
    from mrisr.pipeline.bids import bids_jobs, write_description
    from mrisr.pipeline.jobs import prepare_jobs

    jobs = prepare_jobs(bids_jobs(images, root, output_dir), shard=shard, force=settings.force, settings=settings)
    if not any(j.status == "pending" for j in jobs):
        return jobs, None
    loaded = prepare_model(settings)
    preflight(jobs, settings)
    write_description(output_dir, root)
    return jobs, loaded


def _group(images: list, output_dir: Path, console: Any, *, quiet: bool, json_out: bool) -> int:
    """Write the summary table; exit 1 when some image has no output yet."""
    from mrisr.pipeline.bids import summary_rows, write_summary

    if not Path(output_dir).is_dir():
        from mrisr.errors import MrisrError

        raise MrisrError(f"{output_dir}: no such folder; run the participant level first")
    rows = summary_rows(images, output_dir)
    path = write_summary(rows, output_dir)
    if json_out:
        for row in rows:
            print_json(row)
    missing = [row["source"] for row in rows if row["status"] != "ok"]
    if not quiet:
        console.print(f"wrote {path}: {len(rows) - len(missing)} of {len(rows)} images done", markup=False,
                      highlight=False)
        if missing:
            print_warning(f"{len(missing)} images have no output yet (first: {missing[0]}); run the participant "
                          "level for them", console)
    return EXIT_FAILED if missing else EXIT_OK


__all__ = ["bids", "BidsCommand", "LIST_OPTIONS"]
