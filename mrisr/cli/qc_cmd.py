"""``mrisr qc``: the QC picture of an output and the input it came from.

Draws what ``mrisr upscale --qc`` draws (:mod:`mrisr.evaluation.qc`) for files already
written: three orthogonal world planes through the output's centre (or
``--point X Y Z`` in world mm), showing the input, the plain spline, the
result and result minus spline. Method, model and interpolation settings come
from the output's JSON sidecar when there is one.

Examples::

    mrisr qc t2.nii.gz t2_sr.nii.gz
    mrisr qc t2.nii.gz t2_sr.nii.gz --point -20 10 35 -o t2_qc_left.png

Exit codes: 0 written (its path is printed on stdout), 1 an image could not
be read or the picture not written, 2 usage error (bad point, point outside
the input, matplotlib missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mrisr.cli.common import (
    EXIT_FAILED,
    MrisrCommand,
    err_console,
    join_multi_values,
    parse_numbers,
    print_error,
    usage_error,
)

_POINT = {"--point": 3}


class QCCommand(MrisrCommand):
    """``--point`` takes three numbers (``-20 10 35``, ``-20,10,35``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # noqa: D102
        return super().parse_args(ctx, join_multi_values(args, _POINT))


def qc(
    input: Annotated[Path, typer.Argument(metavar="INPUT", show_default=False,
                                          help="The image that was upscaled.")],
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", show_default=False,
                                           help="The upscaled image (its JSON sidecar is read if present).")],
    point: Annotated[str | None, typer.Option("--point", metavar="X Y Z", show_default=False,
                                              help="World point (mm, RAS) the three slices go through. "
                                                   "Default: the centre of OUTPUT.")] = None,
    png: Annotated[Path | None, typer.Option("-o", "--output", show_default=False,
                                             help="PNG to write. Default: <OUTPUT stem>_qc.png beside OUTPUT "
                                                  "(replaced if it exists).")] = None,
    radiological: Annotated[bool, typer.Option("--radiological", help="Show axial and coronal slices with the "
                                                                      "patient's right on the left.")] = False,
) -> None:
    """Draw the QC picture of OUTPUT: input, spline, result and result - spline in three planes."""
    from mrisr.errors import InputError, MrisrError, OutputError
    from mrisr.evaluation.qc import QCUnavailableError, qc_files, require_matplotlib

    console = err_console()
    try:
        require_matplotlib()
        xyz = _parse_point(point)
        if png is not None and not png.name.lower().endswith(".png"):
            raise MrisrError(f"-o {png}: the picture is a PNG; the name must end in .png")
    except MrisrError as exc:
        raise usage_error(str(exc), console) from None
    try:
        written = qc_files(input, output, png, point=xyz, radiological=radiological)
    except (InputError, OutputError) as exc:
        print_error(str(exc), console)
        raise typer.Exit(code=EXIT_FAILED) from None
    except QCUnavailableError as exc:
        raise usage_error(str(exc), console) from None
    except MrisrError as exc:  # a point outside the input, or a bad value
        raise usage_error(str(exc), console) from None
    typer.echo(str(written))


def _parse_point(text: str | None) -> tuple[float, float, float] | None:
    """``"X,Y,Z"`` (joined by :class:`QCCommand`) to three finite numbers."""
    import math

    from mrisr.errors import MrisrError

    if text is None:
        return None
    try:
        values = parse_numbers(text, "--point")
    except MrisrError:
        values = None
    if values is None or len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise MrisrError(f"--point takes three finite world coordinates in mm (X Y Z), got {text!r}")
    return values[0], values[1], values[2]
