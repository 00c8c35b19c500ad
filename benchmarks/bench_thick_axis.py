"""Benchmark of a thick-slice specialist on slices stored along each voxel axis (not a test).

A 1x1x4 learned-upsampling model (``rrlsrn-1x1x4``, ``georgescu-1x1x4``) was
trained with its thick axis along voxel axis 2 (axial slices of the
template). ``mrisr upscale`` runs it on slices thick along axis 0 or 1 too,
transposed (:func:`mrisr.upsampling.placement`). This measures what that
gives: the held-out slab of the model's training configuration, each
contrast acquired as 4 mm slices (slice profile, as the ``thick4-slice``
validation case) along voxel axis 0 (sagittal on the template), 1 (coronal)
and 2 (axial), then ``mrisr.upscale`` to 1 mm with the model and with the
cubic spline; PSNR / SSIM over the head mask against the 1 mm slab, as
``mrisr train --export`` reports them.

Usage (from the repository root, with the template in data/icbm152)::

    python benchmarks/bench_thick_axis.py models/georgescu-1x1x4 [--ensemble median] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

AXIS_NAMES = ("sagittal (axis 0)", "coronal (axis 1)", "axial (axis 2)")


def slab_contrasts(cfg, contrasts) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{contrast: (1 mm held-out slab, head mask)}`` of the configuration's first subject."""
    from mrisr.intensity import robust_scale
    from mrisr.training.data import holdout_slab, load_subjects
    from mrisr.training.synth import synthesize

    subj = load_subjects(cfg)[0]
    sl = holdout_slab(subj, cfg)
    out = {}
    for c in contrasts:
        whole = subj.image if c == "t1" else synthesize(subj.image, subj.gm, subj.wm, c, None)
        out[c] = ((whole / robust_scale(whole))[sl].astype(np.float32), subj.head[sl])
    return out


def measure(hr: np.ndarray, mask: np.ndarray, axis: int, model, ensemble: str | None) -> dict:
    """Acquire ``hr`` as 4 mm slices along ``axis`` and compare the model with the spline."""
    import nibabel as nib

    import mrisr
    from mrisr.geometry import target_grid
    from mrisr.metrics import psnr, ssim
    from mrisr.training.data import VALIDATION_CASES
    from mrisr.training.lr_pairs import crop_to_scale, degrade_to_lr, fixed_scale

    scale = tuple(4 if a == axis else 1 for a in range(3))
    hr, mask = crop_to_scale(hr, scale), crop_to_scale(mask, scale)
    lr = degrade_to_lr(hr, fixed_scale(VALIDATION_CASES["thick4-slice"], scale), np.random.default_rng(1234))
    img = nib.Nifti1Image(lr, target_grid(np.eye(4), hr.shape, scale).affine)  # the slab's 1 mm grid is the output
    sr = mrisr.upscale(img, spacing=1, model=model, ensemble=ensemble)
    spline = mrisr.upscale(img, spacing=1, method="spline")
    if sr.shape != hr.shape or not np.allclose(sr.affine, np.eye(4), atol=1e-9):
        raise RuntimeError(f"output grid {sr.shape} {sr.affine.tolist()} is not the slab's")
    x, s = np.asarray(sr.dataobj, np.float32), np.asarray(spline.dataobj, np.float32)
    return {"psnr_spline": psnr(s, hr, mask=mask), "psnr_model": psnr(x, hr, mask=mask),
            "ssim_spline": ssim(s, hr, mask=mask), "ssim_model": ssim(x, hr, mask=mask)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a 1x1x4 learned-upsampling model folder")
    ap.add_argument("--config", type=Path, help="training configuration (default: MODEL/train.toml)")
    ap.add_argument("--contrasts", nargs="+", default=["t1", "t2", "flair", "pd"])
    ap.add_argument("--ensemble", choices=["median", "mean"], help="the flip ensemble, as `--ensemble`")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)

    from mrisr.registry import load_model
    from mrisr.training.config import load_config

    model = load_model(args.model)
    cfg = load_config(args.config or args.model / "train.toml")
    rows = []
    print("| contrast | slices along | spline PSNR / SSIM | model PSNR / SSIM | gain dB / SSIM |")
    print("|---|---|---|---|---|")
    for contrast, (hr, mask) in slab_contrasts(cfg, args.contrasts).items():
        for axis in range(3):
            r = {"contrast": contrast, "axis": axis, **measure(hr, mask, axis, model, args.ensemble)}
            rows.append(r)
            print(f"| {contrast} | {AXIS_NAMES[axis]} | {r['psnr_spline']:.2f} / {r['ssim_spline']:.4f} | "
                  f"{r['psnr_model']:.2f} / {r['ssim_model']:.4f} | {r['psnr_model'] - r['psnr_spline']:+.2f} / "
                  f"{r['ssim_model'] - r['ssim_spline']:+.4f} |", flush=True)
    if args.json:
        meta = {"model": str(args.model), "ensemble": args.ensemble, "command": " ".join(sys.argv)}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
