"""``mrisr info``: what an image is, and what a given spacing would make of it.

Prints shape, voxel sizes, orientation codes, handedness, data type, qform and
sform codes, the time axis of 4D images and, with ``--spacing``/``--factor``,
the output shape, spacing and affine of the geometry contract. NIfTI headers
are read without loading the data; DICOM folders are read in full.

Examples::

    mrisr info t2.nii.gz
    mrisr info t2.nii.gz --spacing 1 1 1 --json
    mrisr info dicom/          # a folder of DICOM series folders (or of images): each one

A folder holding several inputs (what ``mrisr upscale`` would process, see
:func:`mrisr.pipeline.jobs.expand_inputs`) is described input by input: text blocks
separated by a blank line, or with ``--json`` one JSON object per line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mrisr.cli.common import MultiValueCommand, err_console, parse_numbers, usage_error

#: Command class: ``--spacing``/``--factor`` take 1 or 3 space-separated numbers.
InfoCommand = MultiValueCommand

_XFORM_CODES = {0: "unknown", 1: "scanner", 2: "aligned", 3: "talairach", 4: "mni", 5: "template"}


def describe(path: str | Path, *, spacing: Any = None, factor: Any = None, series: str | None = None,
             max_voxels: int | None = None) -> dict:
    """Facts about an image (and the output grid of ``spacing``/``factor``).

    Args:
        path: NIfTI file or DICOM folder.
        spacing: Target spacing (1 or 3 values), optional.
        factor: Refinement factor (1 or 3 values), optional.
        series: DICOM series UID.
        max_voxels: Size limit for the output grid (default: the contract's).

    Returns:
        A JSON-ready dict.

    Raises:
        mrisr.errors.MrisrError: unreadable input, bad spacing.
    """
    import numpy as np

    from mrisr.geometry.grid import DEFAULT_MAX_VOXELS
    from mrisr.pipeline.checks import plan_grid

    info = _read_facts(Path(path), series)
    if spacing is not None or factor is not None:
        grid = plan_grid(np.asarray(info["affine"]), info["shape"], spacing=spacing, factor=factor,
                         max_voxels=max_voxels or DEFAULT_MAX_VOXELS)
        info["output"] = {"shape": [*grid.shape, *info["shape"][3:]], "spacing": list(grid.spacing),
                          "affine": grid.affine.tolist(), "ratios": list(grid.ratios),
                          "offsets": list(grid.offsets), "voxels": grid.n_voxels}
    return info


def _read_facts(path: Path, series: str | None) -> dict:
    from mrisr.io.naming import is_nifti_name

    if path.is_file() and is_nifti_name(path.name):
        return _nifti_facts(path)
    from mrisr.pipeline.upscale import as_volume

    vol = as_volume(path, series=series)
    facts = _geometry_facts(vol.affine, vol.data.shape)
    facts.update(file=str(path), format="dicom" if path.is_dir() else "image", dtype=str(vol.source_dtype),
                 meta={k: v for k, v in vol.meta.items() if isinstance(v, (str, int, float, bool))},
                 warnings=list(vol.warnings))
    tr = vol.meta.get("tr") or vol.meta.get("repetition_time")
    if vol.n_volumes > 1:
        facts["volumes"] = {"count": vol.n_volumes, "tr": tr, "tr_units": "s" if tr else None}
    return facts


def _nifti_facts(path: Path) -> dict:
    import nibabel as nib
    import numpy as np

    from mrisr.errors import InputError

    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types
        raise InputError(path, f"cannot read the NIfTI header: {exc}") from None
    hdr = img.header
    facts = _geometry_facts(img.affine, img.shape)
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    facts.update(file=str(path), format=type(img).__name__, dtype=str(img.get_data_dtype()),
                 qform_code=qcode, qform=_XFORM_CODES.get(qcode, "?"),
                 sform_code=scode, sform=_XFORM_CODES.get(scode, "?"))
    if len(img.shape) > 3:
        zooms = hdr.get_zooms()
        units = hdr.get_xyzt_units()[1] if hasattr(hdr, "get_xyzt_units") else None
        facts["volumes"] = {"count": int(np.prod(img.shape[3:])),
                            "tr": float(zooms[3]) if len(zooms) > 3 else None, "tr_units": units}
    return facts


def _geometry_facts(affine: Any, shape: Any) -> dict:
    import nibabel as nib
    import numpy as np
    from nibabel.affines import obliquity

    from mrisr.geometry.grid import voxel_sizes

    a = np.asarray(affine, dtype=np.float64)
    det = float(np.linalg.det(a[:3, :3]))
    return {
        "shape": [int(v) for v in shape],
        "spacing": [float(v) for v in voxel_sizes(a)],
        "orientation": "".join(nib.aff2axcodes(a)),
        "handedness": "left-handed" if det < 0 else "right-handed",
        "determinant": det,
        "obliquity_degrees": [float(v) for v in np.degrees(obliquity(a))],
        "affine": a.tolist(),
    }


def _fmt(values: Any, unit: str = "") -> str:
    return " x ".join(f"{v:g}" for v in values) + (f" {unit}" if unit else "")


def _fmt_affine(affine: Any) -> list[str]:
    return ["  [" + " ".join(f"{v:10.4f}" for v in row) + " ]" for row in affine]


def format_info(info: dict) -> str:
    """Human-readable lines for the dict of :func:`describe`."""
    lines = [f"file         {info['file']}  ({info['format']})",
             f"shape        {_fmt(info['shape'])}",
             f"spacing      {_fmt(info['spacing'], 'mm')}",
             f"orientation  {info['orientation']}  ({info['handedness']}, det {info['determinant']:+.4g})",
             f"obliquity    {_fmt(round(v, 2) for v in info['obliquity_degrees'])} degrees",
             f"dtype        {info['dtype']}"]
    if "qform_code" in info:
        lines += [f"qform code   {info['qform_code']} ({info['qform']})",
                  f"sform code   {info['sform_code']} ({info['sform']})"]
    if "volumes" in info:
        v = info["volumes"]
        tr = f", TR {v['tr']:g} {v['tr_units'] or ''}".rstrip() if v.get("tr") else ""
        lines.append(f"volumes      {v['count']}{tr}")
    lines += ["affine"] + _fmt_affine(info["affine"])
    if "output" in info:
        out = info["output"]
        lines += [f"output shape   {_fmt(out['shape'])}  ({out['voxels']:,} voxels per volume)",
                  f"output spacing {_fmt(round(v, 6) for v in out['spacing'])} mm",
                  "output affine"] + _fmt_affine(out["affine"])
    for w in info.get("warnings", []):
        lines.append(f"warning      {w}")
    return "\n".join(lines)


def info(
    file: Annotated[Path, typer.Argument(metavar="FILE", show_default=False, readable=False,
                                         help="An image file (NIfTI, MGH, NRRD...), a DICOM series folder, or "
                                              "a folder of them (each is described).")],
    spacing: Annotated[str | None, typer.Option("--spacing", metavar="S [S S]", show_default=False,
                                                help="Show the output grid for this target voxel size (mm).")] = None,
    factor: Annotated[str | None, typer.Option("--factor", metavar="F [F F]", show_default=False,
                                               help="Show the output grid for this refinement factor.")] = None,
    series: Annotated[str | None, typer.Option("--series", metavar="UID", show_default=False,
                                               help="DICOM series UID when a folder holds several.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON object instead of text.")] = False,
) -> None:
    """Show an image's geometry and header, and the grid a --spacing would give."""
    from mrisr.errors import GridSizeError, MrisrError
    from mrisr.geometry.grid import parse_spacing

    console = err_console()
    try:
        sp, fa = parse_numbers(spacing, "--spacing"), parse_numbers(factor, "--factor")
        if sp is not None and fa is not None:
            raise MrisrError("give either --spacing or --factor, not both")
        for values, name in ((sp, "--spacing"), (fa, "--factor")):
            if values is not None:
                parse_spacing(values, name)
        if not file.exists():
            raise MrisrError(f"{file}: no such file or folder")
    except MrisrError as exc:
        raise usage_error(str(exc), console) from None
    from mrisr.cli.common import print_error

    try:
        items = _inputs_of(file)
    except MrisrError as exc:
        print_error(str(exc), console)
        raise typer.Exit(code=1) from None
    failed = False
    for i, item in enumerate(items):
        try:
            facts = describe(item, spacing=sp, factor=fa, series=series)
        except GridSizeError as exc:  # the spacing or factor does not fit this image: a usage error
            raise usage_error(f"{item}: {exc}", console) from None
        except MrisrError as exc:
            print_error(str(exc) if str(item) in str(exc) else f"{item}: {exc}", console)
            failed = True
            continue
        if i and not json_out:
            typer.echo("")
        typer.echo(json.dumps(facts) if json_out else format_info(facts))
    if failed:
        raise typer.Exit(code=1)


def _inputs_of(path: Path) -> list[Path]:
    """The path itself, or for a folder that is not one DICOM series the inputs it holds (as upscale finds them)."""
    if not path.is_dir():
        return [path]
    from mrisr.pipeline.jobs import expand_inputs

    return expand_inputs([path])
