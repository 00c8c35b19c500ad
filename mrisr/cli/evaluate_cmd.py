"""``mrisr evaluate``: PSNR, SSIM and NRMSE of a result against a reference scan.

Both images must be on the same voxel grid (shape equal, affines within
1e-4 mm); see :func:`mrisr.evaluation.metrics.evaluate` and docs/evaluation.md.

Example::

    mrisr evaluate sr.nii.gz hr.nii.gz --mask auto --json
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from mrisr.cli.common import EXIT_FAILED, print_error, print_json


def json_safe(result: dict[str, Any]) -> dict[str, Any]:
    """Replace non-finite floats by ``None`` so the output is strict JSON.

    Example:
        >>> json_safe({"psnr": float("inf"), "ssim": 1.0})
        {'psnr': None, 'ssim': 1.0}
    """
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    psnr = result["psnr"]
    table = Table(title=f"{result['sr']} vs {result['ref']}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("PSNR (dB)", "inf (identical)" if math.isinf(psnr) else f"{psnr:.3f}")
    table.add_row("SSIM", f"{result['ssim']:.4f}")
    table.add_row("NRMSE", f"{result['nrmse']:.5f}")
    table.add_row("peak", f"{result['peak']:.6g}")
    table.add_row("voxels in mask", f"{result['mask_voxels']:,} ({result['mask']})")
    Console().print(table)


def evaluate(
    sr: Annotated[Path, typer.Argument(help="Result to score (e.g. the output of mrisr upscale).",
                                       show_default=False)],
    ref: Annotated[Path, typer.Argument(help="Reference (ground truth) on the same grid.", show_default=False)],
    mask: Annotated[str, typer.Option(
        "--mask", "-m", metavar="auto|none|PATH",
        help="Voxels scored: auto (head mask of REF: Otsu threshold, largest component, holes filled), "
             "none (every voxel) or a mask image on REF's grid (voxels > 0).")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table "
                                          "(psnr is null for identical images).")] = False,
) -> None:
    """Score SR against REF: PSNR (dB), SSIM and NRMSE inside a mask."""
    from mrisr.errors import MrisrError
    from mrisr.evaluation.metrics import evaluate as score

    mask_arg: str | Path = mask
    if mask.lower() not in ("auto", "none"):
        mask_arg = Path(mask)
    try:
        result = score(sr, ref, mask=mask_arg)
    except MrisrError as exc:
        msg = str(exc)
        if not any(str(p) in msg for p in (sr, ref, mask)):
            msg = f"{sr} vs {ref}: {msg}"
        print_error(msg)
        raise typer.Exit(code=EXIT_FAILED) from None
    result = {"sr": str(sr), "ref": str(ref), **result}
    if as_json:
        print_json(json_safe(result))
    else:
        _print_table(result)
