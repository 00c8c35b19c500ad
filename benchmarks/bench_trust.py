"""Benchmark of the trust options on the held-out ICBM152 slab (not a test).

For every validation acquisition of the training configuration (the held-out
slab of ``mrisr.training.data``, never touched by a training crop):

1. rebuilds the low-resolution input ``y`` exactly as
   :func:`mrisr.training.data.validation_cases` does (same degradation, same
   noise seed) and checks that its spline interpolation is the case's input;
2. runs the network through the inference path of ``mrisr upscale``
   (:func:`mrisr.inference.engine.enhance`);
3. corrects the result as ``--consistency`` does (:class:`mrisr.trust.consistency.ConsistencyTracker`
   with its defaults: the PSF chosen by ``auto``, the correction weighted
   above the residual's noise), and, for comparison, projects it exactly
   with the box PSF (the former default) and with the case's true PSF
   ("matched"); measures PSNR and SSIM over the head mask against the 1 mm
   truth and the consistency errors (RMS of ``y - A x`` over the robust
   range of ``y``; "used" is the operator ``--consistency`` chose and
   reports, "true" the acquisition that made ``y``, "box" the box one);
4. checks the acceptance rule of ``--consistency``: it loses at most 0.1 dB
   of PSNR against the raw network and lowers its consistency error (with
   the operator it reports);
5. runs the input checks (:mod:`mrisr.trust.ood`) on ``y``;
6. with ``--ensemble``, runs the flip ensemble (8 passes) and reports the
   PSNR of its mean and how well its std map follows the actual error
   (Pearson correlation over the head mask; mean std over RMS error).

Usage (from the repository root, with the template in data/icbm152)::

    python benchmarks/bench_trust.py models/recnn-d8w32 [--config models/recnn-d8w32/train.toml]
        [--cases iso2-box thick4-slice ...] [--ensemble] [--json out.json]
    python benchmarks/bench_trust.py --untrained --crop 48      # smoke run of the script itself
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

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "models" / "recnn-d8w32" / "train.toml"
#: Cases measured besides the configuration's own: more box acquisitions, an isotropic k-space one, more noise.
EXTRA_CASES = ("iso2-box", "iso3-box", "thick4-box", "iso2-box-noise", "iso2-kspace", "thick4-slice-noise",
               "thick4x-slice")
#: The acceptance rule of --consistency: PSNR loss at most this (dB) against the raw network.
MAX_PSNR_LOSS = 0.1


def load_network(model: str | None, untrained: bool):
    """A LoadedModel: the model at ``model``, or an untrained ReCNN(3, 4, cond_dim=3) for smoke runs."""
    if untrained:
        import torch

        from mrisr.archs.recnn import ReCNN
        from mrisr.inference.model_card import LoadedModel, example_card

        torch.manual_seed(0)
        net = ReCNN(3, 4, cond_dim=3)
        card = example_card(name="untrained", architecture={"name": "recnn", "params": net.config()},
                            training={"data": "none", "input_spacing_mm": [1, 6], "factor": [1, 6]})
        return LoadedModel("untrained", card, net.eval(), "0" * 64, Path("."))
    from mrisr.inference.registry import load_model

    return load_model(model)


def rebuild_input(hr: np.ndarray, acq) -> tuple[np.ndarray, object]:
    """``(y, grid)``: the LR input of an acquisition of ``hr`` and the HR grid seen from it.

    Same steps and noise seed as :func:`mrisr.training.data.simulate` in
    ``validation_cases``; ``grid`` is the output grid of the upscale (HR
    voxels in LR voxel coordinates), on which :class:`mrisr.trust.consistency.Projector`
    rebuilds the very operator that made ``y``.
    """
    from mrisr.acquisition.degrade import add_rician_noise, degrade
    from mrisr.geometry.grid import target_grid
    from mrisr.training.data import hr_grid_in_lr

    rng = np.random.default_rng(1234)
    y, _ = degrade(hr, np.eye(4), acq.factors, psf=acq.psf, fwhm=acq.fwhm)
    if acq.noise > 0:
        y = add_rician_noise(y, acq.noise, rng)
    return y, hr_grid_in_lr(hr.shape, target_grid(np.eye(4), hr.shape, acq.factors))


def centre_crop(a: np.ndarray, size: int | None) -> np.ndarray:
    if not size:
        return a
    sl = tuple(slice(max(0, (n - size) // 2), max(0, (n - size) // 2) + min(n, size)) for n in a.shape)
    return a[sl]


def measure_case(case, model, precision: str, crop: int | None, ensemble: bool) -> dict:
    """All figures of one validation case."""
    from mrisr.evaluation.metrics import psnr, ssim
    from mrisr.geometry.resample import resample_to_grid
    from mrisr.inference.engine import enhance
    from mrisr.trust.consistency import ConsistencyTracker, Projector, consistency_error, robust_range
    from mrisr.trust.ood import assess_input

    acq = case.acquisition
    hr, mask = centre_crop(case.target, crop), centre_crop(case.mask, crop)
    y, grid = rebuild_input(hr, acq)
    spline = resample_to_grid(y, grid)
    if not crop:
        assert np.allclose(spline, case.inp, atol=1e-5), "the rebuilt input differs from the validation case's"
    t0 = time.perf_counter()
    net, stats = enhance(spline, model, device="cpu", precision=precision, factors=acq.factors)
    t_net = time.perf_counter() - t0
    t0 = time.perf_counter()
    tracker = ConsistencyTracker(grid, y.shape)                  # what --consistency runs
    corrected = tracker(y, spline, net)
    t_proj = time.perf_counter() - t0
    summary = tracker.summary()
    box = Projector(grid, y.shape, "box")
    true = Projector(grid, y.shape, acq.psf, fwhm=(acq.fwhm,) * 3)
    used = tracker.projector
    scale = robust_range(y)
    images = {"spline": spline, "network": net, "projected": corrected,
              "projected_box": box.project(net, y), "projected_matched": true.project(net, y)}
    row: dict = {"contrast": case.contrast, "case": case.name, "acquisition": acq.describe(),
                 "shape": list(hr.shape), "precision": stats.precision, "psf_auto": summary["psf"],
                 "psf_errors": {k: float(f"{v:.3e}") for k, v in summary["psf_errors"].items()},
                 "noise_level": float(f"{summary['noise_level']:.3e}"),
                 "seconds_network": round(t_net, 2), "seconds_projection": round(t_proj, 3)}
    for name, img in images.items():
        row[f"psnr_{name}"] = round(float(psnr(img, hr, mask=mask)), 3)
        row[f"ssim_{name}"] = round(float(ssim(img, hr, mask=mask)), 4)
        for op_name, op in (("used", used), ("true", true), ("box", box)):
            row[f"err_{op_name}_{name}"] = float(f"{consistency_error(y, op.degrade(img), scale):.3e}")
    for name in ("projected", "projected_box", "projected_matched"):
        row[f"psnr_change_{name}"] = round(row[f"psnr_{name}"] - row["psnr_network"], 3)
    row["accept"] = bool(row["psnr_change_projected"] >= -MAX_PSNR_LOSS
                         and row["err_used_projected"] < row["err_used_network"])
    spacing = tuple(float(f) for f in acq.factors)  # HR voxels are 1 mm: LR spacing = factors
    row["ood_warnings"] = assess_input(y, spacing, (1.0, 1.0, 1.0), model.card).warnings
    if ensemble:
        from mrisr.inference.ensemble import flip_ensemble

        t0 = time.perf_counter()
        mean, std, _ = flip_ensemble(spline, model, acq.factors, "mean", device="cpu", precision=precision)
        row["seconds_ensemble"] = round(time.perf_counter() - t0, 2)
        err = np.abs(mean - hr)[mask]
        s = std[mask]
        row["psnr_ensemble"] = round(float(psnr(mean, hr, mask=mask)), 3)
        row["std_error_corr"] = round(float(np.corrcoef(s, err)[0, 1]), 3) if s.std() > 0 else None
        row["std_over_rmse"] = round(float(s.mean() / np.sqrt(np.mean(err ** 2))), 3)
    return row


def markdown(rows: list[dict], ensemble: bool) -> str:
    head = ("| case | PSF chosen | noise level | PSNR spline | PSNR network | PSNR --consistency (change) "
            "| PSNR exact box (change) | PSNR exact matched (change) | err spline | err network "
            "| err --consistency | err true: network -> --consistency | accept |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['contrast']}:{r['case']} | {r['psf_auto']} | {r['noise_level']:.1e} "
            f"| {r['psnr_spline']:.2f} | {r['psnr_network']:.2f} "
            f"| {r['psnr_projected']:.2f} ({r['psnr_change_projected']:+.2f}) "
            f"| {r['psnr_projected_box']:.2f} ({r['psnr_change_projected_box']:+.2f}) "
            f"| {r['psnr_projected_matched']:.2f} ({r['psnr_change_projected_matched']:+.2f}) "
            f"| {r['err_used_spline']:.2e} | {r['err_used_network']:.2e} | {r['err_used_projected']:.1e} "
            f"| {r['err_true_network']:.2e} -> {r['err_true_projected']:.1e} "
            f"| {'yes' if r['accept'] else 'NO'} |")
    if ensemble:
        lines += ["", "| case | PSNR network | PSNR flip mean | corr(std, abs error) | mean std / RMSE |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['contrast']}:{r['case']} | {r['psnr_network']:.2f} | {r['psnr_ensemble']:.2f} "
                  f"| {r['std_error_corr']} | {r['std_over_rmse']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help="model folder or card.json")
    ap.add_argument("--untrained", action="store_true", help="use an untrained ReCNN(3, 4) (smoke run)")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="training configuration (data and held-out slab)")
    ap.add_argument("--cases", nargs="*", help="validation cases (default: the config's plus the box ones)")
    ap.add_argument("--contrasts", nargs="*", default=["t1"], help="t1, t2, flair, pd")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--crop", type=int, default=None, help="centre crop of the slab (voxels per axis; smoke runs)")
    ap.add_argument("--ensemble", action="store_true", help="also run the flip ensemble (8x the network time)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    if not args.untrained and not args.model:
        ap.error("give a model folder (or --untrained for a smoke run)")

    from mrisr.training.config import load_config
    from mrisr.training.data import load_subjects, validation_cases

    cfg = load_config(args.config)
    names = args.cases or list(dict.fromkeys([*cfg.train.validation_cases, *EXTRA_CASES]))
    model = load_network(args.model, args.untrained)
    t0 = time.perf_counter()
    subjects = load_subjects(cfg)
    cases = validation_cases(cfg, subjects, names, tuple(args.contrasts))
    print(f"# model {model.name}; held-out slab {cases[0].target.shape} of {subjects[0].name}; "
          f"{len(cases)} cases ({time.perf_counter() - t0:.1f} s to build)", file=sys.stderr)
    rows = []
    for case in cases:
        row = measure_case(case, model, args.precision, args.crop, args.ensemble)
        rows.append(row)
        print(f"{row['contrast']:5s} {row['case']:20s} network {row['psnr_network']:6.2f} dB, --consistency "
              f"({row['psf_auto']}, noise {row['noise_level']:.1e}) {row['psnr_change_projected']:+.3f} dB, "
              f"exact box {row['psnr_change_projected_box']:+.3f} dB, exact matched "
              f"{row['psnr_change_projected_matched']:+.3f} dB; consistency {row['err_used_network']:.2e} -> "
              f"{row['err_used_projected']:.1e}; {'ok' if row['accept'] else 'REJECTED'}"
              + (f"; warnings: {row['ood_warnings']}" if row["ood_warnings"] else ""), file=sys.stderr)
    info = machine_info()
    print(f"# {describe(info)}")
    print(markdown(rows, args.ensemble))
    if args.json:
        args.json.write_text(json.dumps({"model": model.name, "config": str(args.config), "rows": rows,
                                         "machine": info}, indent=2))
    return 0 if all(r["accept"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
