"""Benchmark of ``--register rigid`` on the ICBM152 head (not a test).

Each case moves a contrast of the template by a known rigid transform,
acquires it at a clinical resolution (the training degradations of
:func:`mrisr.acquisition.degrade.degrade`, with Rician noise), and registers the
template T1 (the 1 mm reference) to it with
:func:`mrisr.trust.registration.register_rigid`, exactly as ``mrisr upscale
--reference T1 --register rigid`` does. Reported per case: wall seconds (best
of ``--repeat``), the rotation left over (degrees, of ``inv(truth) @ found``)
and the largest displacement error over eight points 60 mm from the head's
centre (mm), beside the size of the true motion.

Usage (from the repository root, with the template in data/icbm152)::

    python benchmarks/bench_register.py [--repeat 3] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/machine.py: which CPU
from machine import describe, machine_info  # noqa: E402

#: (name, input contrast, spacing mm, PSF, rotation axis, degrees, translation mm)
CASES = (
    ("t1 2 mm, 5 deg 3 mm", "t1", (2.0, 2.0, 2.0), "box", (1, -1, 2), 5.0, (2.0, -1.5, 1.6)),
    ("t2 2 mm, 5 deg 3 mm", "t2", (2.0, 2.0, 2.0), "box", (1, -1, 2), 5.0, (2.0, -1.5, 1.6)),
    ("t2 1x1x4 slices, 5 deg 3 mm", "t2", (1.0, 1.0, 4.0), "slice", (1, -1, 2), 5.0, (2.0, -1.5, 1.6)),
    ("flair 1x1x4 slices, 10 deg 10 mm", "flair", (1.0, 1.0, 4.0), "slice", (0, 1, 1), 10.0, (6.0, -7.0, 3.5)),
    ("pd 1x1x5 slices, 3 deg 2 mm", "pd", (1.0, 1.0, 5.0), "slice", (1, 0, 0), 3.0, (0.0, 2.0, 0.0)),
)
NOISE = 0.03  # Rician sigma, fraction of the image's robust maximum


def rigid(axis, degrees: float, shift) -> np.ndarray:
    """A 4x4 rotation about ``axis`` through the world origin, then ``shift`` (mm)."""
    a = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(degrees)
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k
    m[:3, 3] = shift
    return m


def moved(volume: np.ndarray, affine: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``volume`` seen through ``truth``: the value at world ``x`` is the original's at ``truth @ x``."""
    from scipy import ndimage

    m = np.linalg.inv(affine) @ truth @ affine  # voxel -> voxel on the same grid
    return ndimage.affine_transform(volume, m[:3, :3], m[:3, 3], order=3, mode="constant", cval=0.0).astype(np.float32)


def worst_error_mm(found: np.ndarray, truth: np.ndarray, centre: np.ndarray, radius: float = 60.0) -> float:
    """Largest ``|found @ p - truth @ p|`` over the eight corners of a cube of half-width ``radius / sqrt(3)``."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * radius / np.sqrt(3)
    points = np.c_[corners + centre, np.ones(8)]
    return float(np.linalg.norm((points @ (found - truth).T)[:, :3], axis=1).max())


def run_case(case, t1, gm, wm, affine, repeat: int) -> dict:
    from mrisr.acquisition.degrade import degrade
    from mrisr.training.synth import synthesize
    from mrisr.trust.registration import describe_rigid, register_rigid

    name, contrast, spacing, psf, axis, degrees, shift = case
    truth = rigid(axis, degrees, shift)
    hr = moved(synthesize(t1, gm, wm, contrast), affine, truth)
    lr, lr_affine = degrade(hr, affine, spacing, psf=psf, noise=NOISE, seed=0)
    times, found = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        found = register_rigid(t1, affine, lr, lr_affine)
        times.append(time.perf_counter() - t0)
    centre = (affine @ np.r_[(np.asarray(t1.shape) - 1) / 2.0, 1.0])[:3]
    return {"case": name, "input_shape": list(lr.shape), "spacing": list(spacing), "psf": psf,
            "truth": describe_rigid(truth, centre), "seconds": round(min(times), 2),
            "seconds_all": [round(s, 2) for s in times],
            "rotation_error_deg": describe_rigid(np.linalg.inv(truth) @ found)["rotation_deg"],
            "worst_error_mm": round(worst_error_mm(found, truth, centre), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/icbm152"), help="folder of the ICBM152 files")
    ap.add_argument("--repeat", type=int, default=3, help="registrations per case; the best time is reported")
    ap.add_argument("--threads", type=int, default=2, help="ITK threads (SimpleITK's global default)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    import nibabel as nib
    import SimpleITK as sitk

    from mrisr.training.config import config_from_dict
    from mrisr.training.data import load_subjects
    from mrisr.training.icbm152 import verify

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    affine = nib.load(str(verify(args.data)["t1"])).affine
    subj = load_subjects(config_from_dict({"data": {"dir": str(args.data.resolve())}}))[0]  # as training reads it
    t1, gm, wm = subj.image, subj.gm, subj.wm
    rows = []
    info = machine_info()
    print(f"# {describe(info)}")
    print("| case | input | true motion | seconds | rotation error (deg) | worst error at 60 mm (mm) |")
    print("|---|---|---|---|---|---|")
    for case in CASES:
        r = run_case(case, t1, gm, wm, affine, args.repeat)
        rows.append(r)
        print(f"| {r['case']} | {'x'.join(map(str, r['input_shape']))} | {r['truth']['rotation_deg']:.1f} deg, "
              f"{r['truth']['translation_mm']:.1f} mm | {r['seconds']:.2f} | {r['rotation_error_deg']:.3f} | "
              f"{r['worst_error_mm']:.3f} |", flush=True)
    if args.json:
        meta = {"machine": info, "cpus": os.cpu_count(),
                "threads": args.threads, "repeat": args.repeat, "noise": NOISE, "command": " ".join(sys.argv)}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
