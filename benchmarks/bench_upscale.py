"""End-to-end benchmark of ``mrisr upscale`` on a real head (not a test).

In one run, on the same machine:

1. makes a 2 mm input from the 1 mm ICBM152 T1 template (``mrisr degrade``
   box PSF, cropped to an even matrix so the 1 mm output lands exactly on the
   reference grid);
2. runs the real command line, each in its own process, as a user would:
   ``mrisr upscale LR --spacing 1 --method spline`` and ``--method cnn`` in
   bf16 and fp32, reading the per-stage timings (read, interpolate, network,
   write) from the ``--json`` record and the peak resident memory from
   ``/usr/bin/time``;
3. scores every output against the 1 mm reference (``mrisr.evaluate``: PSNR,
   SSIM over the automatic head mask), and reports the bf16 - fp32 PSNR
   difference and the CNN / spline-only time ratio;
4. measures peak memory of a CNN job whose output is 256^3 (a 2 mm input of
   128^3: the template's 2 mm volume zero-padded).

Usage (from the repository root, after ``mrisr train --fetch-data`` fetched
the template into data/icbm152)::

    python benchmarks/bench_upscale.py --data data/icbm152 [--model NAME] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/machine.py: which CPU
from machine import describe, machine_info  # noqa: E402


def run_cli(args: list[str], env: dict[str, str] | None = None) -> tuple[dict, float, float]:
    """Run ``mrisr upscale ... --json`` under /usr/bin/time: (record, wall s, peak RSS MB). ``env``: variables
    set for that process on top of this one's (e.g. an instruction-set cap)."""
    with tempfile.NamedTemporaryFile(suffix=".time") as tf:
        t0 = time.perf_counter()
        res = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name, sys.executable, "-m", "mrisr.cli.app",
                              "upscale", *args, "--json", "--quiet", "--force"], capture_output=True, text=True,
                             env={**os.environ, **(env or {})})
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"mrisr upscale {' '.join(args)} failed:\n{res.stderr}")
        peak_kb = float(Path(tf.name).read_text().strip().splitlines()[-1])
    record = json.loads(res.stdout.strip().splitlines()[-1])
    return record, wall, peak_kb / 1024


def template_head(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 1 mm ICBM152 T1 cropped to 196x232x188 (every axis even, axis 2 a multiple of 4, so 2 mm and
    1x1x4 mm voxel edges align with the 1 mm grid), and its affine."""
    from mrisr.training import icbm152

    t1 = nib.load(str(icbm152.verify(data_dir)["t1"]))
    return t1.get_fdata(dtype=np.float32)[:196, :232, :188], t1.affine


def degraded_head(hr: np.ndarray, affine: np.ndarray, factors, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``mrisr degrade`` (box PSF) of the head by ``factors``, saved to ``path``; returns (data, affine)."""
    from mrisr.acquisition.degrade import degrade

    lr, lr_affine = degrade(hr, affine, factors, psf="box")
    nib.save(nib.Nifti1Image(lr, lr_affine), str(path))
    return lr, lr_affine


def make_inputs(data_dir: Path, work: Path) -> tuple[Path, Path, Path]:
    """2 mm input, 1 mm reference on the output grid, and a 128^3 2 mm input."""
    hr, affine = template_head(data_dir)
    ref = work / "ref_1mm.nii.gz"
    nib.save(nib.Nifti1Image(hr, affine), str(ref))
    lr_path = work / "t1_2mm.nii.gz"
    lr, lr_affine = degraded_head(hr, affine, 2.0, lr_path)
    big = np.zeros((128, 128, 128), np.float32)
    big[:lr.shape[0], :lr.shape[1], :lr.shape[2]] = lr[:, :128, :]
    big_path = work / "t1_2mm_128.nii.gz"
    nib.save(nib.Nifti1Image(big, lr_affine), str(big_path))
    return lr_path, ref, big_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/icbm152"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import mrisr

    work = Path(tempfile.mkdtemp(prefix="mrisr-bench-"))
    lr, ref, big = make_inputs(args.data, work)
    model = ["--model", args.model] if args.model else []
    runs = {
        "spline": ["--method", "spline"],
        "cnn-bf16": ["--method", "cnn", "--precision", "bf16", "--threads", str(args.threads), *model],
        "cnn-fp32": ["--method", "cnn", "--precision", "fp32", "--threads", str(args.threads), *model],
    }
    results = {}
    info = machine_info()
    print(f"# {describe(info)}", flush=True)
    for name, extra in runs.items():
        out = work / f"{name}.nii.gz"
        record, wall, peak = run_cli([str(lr), "--spacing", "1", "-o", str(out), *extra])
        scores = mrisr.evaluate(out, ref)
        results[name] = {"wall_s": wall, "peak_rss_mb": peak, "timings": record.get("timings", {}),
                         "psnr": scores["psnr"], "ssim": scores["ssim"], "patch_size": record.get("patch_size"),
                         "patches_run": record.get("patches_run"), "patches_skipped": record.get("patches_skipped"),
                         "model": record.get("model")}
        print(f"{name:9s} wall {wall:6.2f} s  peak {peak:7.0f} MB  PSNR {scores['psnr']:.3f} dB  "
              f"SSIM {scores['ssim']:.4f}  timings {record.get('timings')}", flush=True)
    record, wall, peak = run_cli([str(big), "--spacing", "1", "-o", str(work / "big.nii.gz"), "--method", "cnn",
                                  "--threads", str(args.threads), *model])
    results["cnn-256cubed"] = {"wall_s": wall, "peak_rss_mb": peak, "timings": record.get("timings", {}),
                               "output_shape": record.get("output_shape")}
    print(f"256^3 output: wall {wall:.2f} s, peak {peak:.0f} MB, shape {record.get('output_shape')}")
    spline_wall = results["spline"]["wall_s"]
    summary = {
        "cnn_bf16_over_spline_wall": results["cnn-bf16"]["wall_s"] / spline_wall,
        "bf16_minus_fp32_psnr_db": results["cnn-bf16"]["psnr"] - results["cnn-fp32"]["psnr"],
        "fp32_over_bf16_network_time": (results["cnn-fp32"]["timings"].get("network", float("nan"))
                                        / results["cnn-bf16"]["timings"].get("network", float("nan"))),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
