"""``mrisr degrade``: simulate a low-resolution acquisition of a high-resolution scan.

Wraps :func:`mrisr.acquisition.degrade.degrade`; the output lies on the contract's
grid for ``--spacing``, so ``mrisr upscale`` of it back to the input's voxel
size lands on the input's grid (see docs/evaluation.md).

Example::

    mrisr degrade sub-01_T1w.nii.gz --spacing 1 1 3 --psf slice -o lr.nii.gz
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mrisr.cli.common import (
    EXIT_FAILED,
    MULTI_VALUE_OPTIONS,
    MrisrCommand,
    join_multi_values,
    parse_numbers,
    print_error,
    usage_error,
)
from mrisr.options import PSFS

#: The shared multi-value options plus ``--fwhm`` (1 or 3 numbers after one flag).
DEGRADE_MULTI_VALUE_OPTIONS = {**MULTI_VALUE_OPTIONS, "--fwhm": 3}


class DegradeCommand(MrisrCommand):
    """``--spacing`` and ``--fwhm`` take 1 or 3 numbers (see :mod:`mrisr.cli.common`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # noqa: D102
        return super().parse_args(ctx, join_multi_values(args, DEGRADE_MULTI_VALUE_OPTIONS))


def _check_options(spacing: str, psf: str, fwhm: str | None, noise: float) -> tuple:
    """Validate the options (usage errors) and return ``(spacing, fwhm)`` tuples."""
    import math

    from mrisr.errors import MrisrError, look_up_option
    from mrisr.geometry.grid import parse_spacing

    sp = parse_spacing(parse_numbers(spacing, "--spacing"), "--spacing")  # type: ignore[arg-type]  # required
    look_up_option(psf, PSFS, "--psf")
    fw = None if fwhm is None else parse_spacing(parse_numbers(fwhm, "--fwhm"), "--fwhm")  # type: ignore[arg-type]
    if not (math.isfinite(noise) and noise >= 0):
        raise MrisrError(f"--noise must be a finite value >= 0 (a fraction of the robust maximum), got {noise}")
    return sp, fw


def degrade(
    image: Annotated[Path, typer.Argument(help="High-resolution NIfTI image (.nii or .nii.gz).", show_default=False)],
    spacing: Annotated[str, typer.Option(
        "--spacing", metavar="S [S S]", show_default=False,
        help="Low-resolution voxel size in mm: one value (isotropic) or three (voxel axes i j k), "
             "each >= the input's.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output NIfTI path.", show_default=False)],
    psf: Annotated[str, typer.Option(
        "--psf", help="Point-spread function: box (block average), gaussian, kspace (k-space truncation) "
                      "or slice (2D multi-slice: k-space in-plane, slice profile through-plane).")] = "box",
    fwhm: Annotated[str | None, typer.Option(
        "--fwhm", metavar="F [F F]", show_default=False,
        help="PSF width in low-resolution voxels (gaussian FWHM, slice thickness); 1 or 3 values. "
             "Default 1.")] = None,
    noise: Annotated[float, typer.Option(
        "--noise", help="Rician noise sigma as a fraction of the image's robust maximum "
                        "(99th percentile of the foreground), e.g. 0.02.")] = 0.0,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the noise (reproducible output).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")] = False,
) -> None:
    """Simulate a low-resolution acquisition of IMAGE (for evaluation on your own scans)."""
    from mrisr.errors import MrisrError

    try:
        sp, fw = _check_options(spacing, psf, fwhm, noise)
    except MrisrError as exc:
        raise usage_error(str(exc)) from None
    try:
        _run(image, output, sp, psf, fw, noise, seed, force)
    except MrisrError as exc:
        msg = str(exc)
        print_error(msg if str(image) in msg or str(output) in msg else f"{image}: {msg}")
        raise typer.Exit(code=EXIT_FAILED) from None


def _run(image: Path, output: Path, spacing: tuple, psf: str, fwhm: tuple | None, noise: float,
         seed: int | None, force: bool) -> None:
    from mrisr.acquisition.degrade import degrade as simulate
    from mrisr.io.read import load_volume
    from mrisr.io.writer import check_output_path, save_volume

    check_output_path(output, force=force, inputs=(image,))  # fail before the work
    vol = load_volume(image)
    lr, lr_affine = simulate(vol.data, vol.affine, spacing, psf=psf, fwhm=fwhm, noise=noise, seed=seed)
    path = save_volume(lr, lr_affine, output, template=vol, dtype="float32", force=force, inputs=(image,))
    sizes = " x ".join(f"{s:g}" for s in spacing)
    typer.echo(f"wrote {path}: shape {tuple(lr.shape)}, {sizes} mm, {psf} PSF", err=True)
