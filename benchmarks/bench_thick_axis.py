"""Benchmark of a thick-slice specialist on slices stored along each voxel axis (not a test).

A 1x1x4 learned-upsampling model (``rrlsrn-1x1x4``, ``georgescu-1x1x4``) was
trained with its thick axis along voxel axis 2 (axial slices of the
template). ``mrisr upscale`` runs it on slices thick along axis 0 or 1 too,
transposed (:func:`mrisr.inference.upsampling.placement`). This measures what that
gives: the validation cases of the model's training configuration
(:func:`mrisr.training.data.validation_cases`: the held-out slab, each
contrast acquired as 4 mm slices as the ``thick4-slice`` case) with the
thick axis along voxel axis 0 (sagittal on the template), 1 (coronal) and 2
(axial), then ``mrisr.upscale`` to 1 mm with the model, against the cubic
spline of the same slices; PSNR / SSIM over the head mask against the 1 mm
slab, as ``mrisr train --export`` reports them.

Usage (from the repository root, with the template in data/icbm152)::

    python benchmarks/bench_thick_axis.py models/georgescu-1x1x4 [--ensemble median] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/machine.py: which CPU
from machine import describe, machine_info  # noqa: E402

AXIS_NAMES = ("sagittal (axis 0)", "coronal (axis 1)", "axial (axis 2)")


def measure(case, model, ensemble: str | None) -> dict:
    """``mrisr.upscale`` of a learned-upsampling validation case's LR volume with the model; its spline
    (``case.inp``, what ``upscale``'s spline gives) beside it."""
    import nibabel as nib

    import mrisr
    from mrisr.evaluation.metrics import psnr, ssim
    from mrisr.geometry.grid import target_grid

    scale = case.acquisition.factors
    img = nib.Nifti1Image(case.lr, target_grid(np.eye(4), case.target.shape, scale).affine)  # output: the slab's grid
    sr = mrisr.upscale(img, spacing=1, model=model, ensemble=ensemble)
    if sr.shape != case.target.shape or not np.allclose(sr.affine, np.eye(4), atol=1e-9):
        raise RuntimeError(f"output grid {sr.shape} {sr.affine.tolist()} is not the slab's")
    x, hr, mask = np.asarray(sr.dataobj, np.float32), case.target, case.mask
    return {"psnr_spline": psnr(case.inp, hr, mask=mask), "psnr_model": psnr(x, hr, mask=mask),
            "ssim_spline": ssim(case.inp, hr, mask=mask), "ssim_model": ssim(x, hr, mask=mask)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a 1x1x4 learned-upsampling model folder")
    ap.add_argument("--config", type=Path, help="training configuration (default: MODEL/train.toml)")
    ap.add_argument("--contrasts", nargs="+", default=["t1", "t2", "flair", "pd"])
    ap.add_argument("--ensemble", choices=["median", "mean"], help="the flip ensemble, as `--ensemble`")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)

    from mrisr.inference.registry import load_model
    from mrisr.training.config import load_config
    from mrisr.training.data import load_subjects, validation_cases

    model = load_model(args.model)
    cfg = load_config(args.config or args.model / "train.toml")
    subjects = load_subjects(cfg)
    by_axis = {axis: validation_cases(cfg, subjects, ["thick4-slice"], tuple(args.contrasts),
                                      scale=tuple(4 if a == axis else 1 for a in range(3)))  # type: ignore[arg-type]
               for axis in range(3)}
    rows = []
    info = machine_info()
    print(f"# {describe(info)}")
    print("| contrast | slices along | spline PSNR / SSIM | model PSNR / SSIM | gain dB / SSIM |")
    print("|---|---|---|---|---|")
    for i, contrast in enumerate(args.contrasts):
        for axis in range(3):
            r = {"contrast": contrast, "axis": axis, **measure(by_axis[axis][i], model, args.ensemble)}
            rows.append(r)
            print(f"| {contrast} | {AXIS_NAMES[axis]} | {r['psnr_spline']:.2f} / {r['ssim_spline']:.4f} | "
                  f"{r['psnr_model']:.2f} / {r['ssim_model']:.4f} | {r['psnr_model'] - r['psnr_spline']:+.2f} / "
                  f"{r['ssim_model'] - r['ssim_spline']:+.4f} |", flush=True)
    if args.json:
        meta = {"model": str(args.model), "ensemble": args.ensemble, "command": " ".join(sys.argv), "machine": info}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
