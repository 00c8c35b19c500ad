"""Validation report and export of a trained network as a shipped model.

The report runs the network through exactly the inference path of ``mrisr
upscale`` (:func:`mrisr.engine.enhance`, or :func:`mrisr.upsampling.upscale_learned` for
learned-upsampling networks: normalisation, tiling, background
skipping, precision) on the held-out slab, for every named acquisition and
several synthetic contrasts, and compares it with the plain cubic spline in
PSNR and SSIM over the head mask.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..metrics import psnr, ssim
from ..model_card import LoadedModel, ModelCard, architecture_name, example_card, save_model
from ..upsampling import upsampling_scale
from . import icbm152
from .config import Config, ConfigError
from .data import GUIDED_CONTRASTS, VALIDATION_CASES, ValidationCase, load_subjects, validation_cases
from .lr_pairs import hr_grid_of_lr
from .trainer import build_network

#: Which end of each voxel axis the hold-out takes, for a RAS-oriented volume.
_END_OF_AXIS = {0: "right", 1: "anterior", 2: "superior"}
#: Contrasts of the full validation table.
REPORT_CONTRASTS = ("t1", "t2", "flair", "pd")


def _as_loaded(network: torch.nn.Module, name: str = "candidate") -> LoadedModel:
    card = example_card(name=name, architecture={"name": architecture_name(network), "params": network.config()},
                        receptive_radius=network.receptive_radius)
    return LoadedModel(name, card, network.eval(), "0" * 64, Path("."))


def _run_case(case: ValidationCase, model: LoadedModel, precision: str,
              ensemble: bool = False) -> tuple[np.ndarray, str]:
    """The model's output for a case on the HR grid, through the code ``upscale`` runs; and its precision.
    ``ensemble``: a learned-upsampling model's 8-flip median (``upscale --ensemble median``)."""
    from ..engine import enhance
    from ..upsampling import upscale_learned, upscale_learned_ensemble

    if case.lr is not None:  # learned upsampling: network on the LR grid, then the spline (identity here)
        grid = hr_grid_of_lr(case.lr.shape, upsampling_scale(model.network))
        if ensemble:
            sr, _, ens = upscale_learned_ensemble(case.lr, grid, model, "median", device="cpu", precision=precision)
            return sr, ens.engine[0].precision
        sr, stats = upscale_learned(case.lr, grid, model, device="cpu", precision=precision)
        return sr, stats.precision
    guide = {} if case.reference is None else {"reference": case.reference}
    sr, stats = enhance(case.inp, model, device="cpu", precision=precision, factors=case.acquisition.factors,
                        **guide)
    return sr, stats.precision


def validation_report(network: torch.nn.Module, cfg: Config, names: list[str] | None = None,
                      contrasts: tuple[str, ...] | None = None, precision: str = "auto",
                      log=print, baseline: LoadedModel | None = None, ensemble: bool = False) -> list[dict]:
    """One row per (contrast, acquisition): spline and network PSNR/SSIM and gains.

    Contrasts default to T1, T2, FLAIR and PD (T2, FLAIR and PD with the T1 as
    the reference for guided models). A learned-upsampling network is
    validated at its own scale (:func:`mrisr.training.data.scaled_cases`),
    through :func:`mrisr.upsampling.upscale_learned`. ``baseline`` (for guided models: the
    single-input default) adds its PSNR on the same inputs, without the reference. ``ensemble``
    (learned-upsampling networks) adds the 8-flip median self-ensemble's PSNR and SSIM
    (Georgescu et al.; ``mrisr upscale --ensemble median``).
    """
    from ..engine import enhance

    subjects = load_subjects(cfg)
    scale = upsampling_scale(network)
    if ensemble and scale is None:
        raise ConfigError(f"the flip self-ensemble is validated for learned-upsampling networks (rrlsrn, "
                          f"georgescu), not {architecture_name(network)}")
    if contrasts is None:
        contrasts = GUIDED_CONTRASTS if cfg.data.reference else REPORT_CONTRASTS
    if subjects[0].gm is None:
        contrasts = ("t1",)  # no tissue maps: only the volumes' own contrast
    rows = []
    model = _as_loaded(network)
    for case in validation_cases(cfg, subjects, names or list(VALIDATION_CASES), contrasts, scale=scale):
        t0 = time.perf_counter()
        sr, used = _run_case(case, model, precision)
        seconds = time.perf_counter() - t0
        row = {"contrast": case.contrast, "case": case.name, "acquisition": case.acquisition.describe(),
               "psnr_spline": psnr(case.inp, case.target, mask=case.mask),
               "psnr_model": psnr(sr, case.target, mask=case.mask),
               "ssim_spline": ssim(case.inp, case.target, mask=case.mask),
               "ssim_model": ssim(sr, case.target, mask=case.mask),
               "precision": used, "seconds": round(seconds, 2)}
        row["psnr_gain"] = row["psnr_model"] - row["psnr_spline"]
        row["ssim_gain"] = row["ssim_model"] - row["ssim_spline"]
        if baseline is not None:
            single, _ = enhance(case.inp, baseline, device="cpu", precision=precision,
                                factors=case.acquisition.factors)
            row["baseline"] = baseline.name
            row["psnr_baseline"] = psnr(single, case.target, mask=case.mask)
            row["ssim_baseline"] = ssim(single, case.target, mask=case.mask)
        if ensemble:
            combined, _ = _run_case(case, model, precision, ensemble=True)
            row["psnr_ensemble"] = psnr(combined, case.target, mask=case.mask)
            row["ssim_ensemble"] = ssim(combined, case.target, mask=case.mask)
        rows.append(row)
        log(f"{case.contrast:6s} {case.name:20s} spline {row['psnr_spline']:6.2f} dB  model {row['psnr_model']:6.2f} dB"
            f"  gain {row['psnr_gain']:+5.2f} dB  SSIM {row['ssim_spline']:.4f} -> {row['ssim_model']:.4f}"
            + (f"  8-flip median {row['psnr_ensemble'] - row['psnr_spline']:+5.2f} dB" if ensemble else ""))
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The report as a Markdown table (with the baseline's or the ensemble's columns when they were run)."""
    extra = "baseline" in rows[0] if rows else False
    combined = "psnr_ensemble" in rows[0] if rows else False
    head = "| contrast | acquisition (LR voxel in mm, PSF) | PSNR spline | PSNR model | gain dB | SSIM spline | SSIM model |"
    rule = "|---|---|---|---|---|---|---|"
    if extra:
        head += f" PSNR {rows[0]['baseline']} | guided - {rows[0]['baseline']} dB | SSIM {rows[0]['baseline']} |"
        rule += "---|---|---|"
    if combined:
        head += " PSNR 8-flip median | gain dB | SSIM 8-flip median |"
        rule += "---|---|---|"
    lines = [head, rule]
    for r in rows:
        line = (f"| {r['contrast']} | {r['case']}: {r['acquisition']} | {r['psnr_spline']:.2f} | "
                f"{r['psnr_model']:.2f} | {r['psnr_gain']:+.2f} | {r['ssim_spline']:.4f} | {r['ssim_model']:.4f} |")
        if extra:
            line += (f" {r['psnr_baseline']:.2f} | {r['psnr_model'] - r['psnr_baseline']:+.2f} |"
                     f" {r['ssim_baseline']:.4f} |")
        if combined:
            line += (f" {r['psnr_ensemble']:.2f} | {r['psnr_ensemble'] - r['psnr_spline']:+.2f} |"
                     f" {r['ssim_ensemble']:.4f} |")
        lines.append(line)
    return "\n".join(lines)


def read_init(run_dir: Path) -> dict | None:
    """The model a run was fine-tuned from (``init.json``: name, sha256, version), or None."""
    path = run_dir / "init.json"
    return json.loads(path.read_text()) if path.is_file() else None


def export_model(cfg: Config, weights: Path, folder: Path, *, config_path: Path, description: str,
                 default: bool = False, version: str = "1.0.0", log=print, cases: list[str] | None = None,
                 contrasts: tuple[str, ...] | None = None, ensemble: bool = False) -> ModelCard:
    """Validate ``weights`` on the held-out slab and write ``folder`` (weights + card + report).

    For a GAN mode ``weights`` (``best.pt``) hold the generator alone, which is what is exported.
    ``cases`` and ``contrasts`` narrow the report (default: every named acquisition, the
    contrasts of :func:`validation_report`). ``ensemble``: also validate the 8-flip median
    self-ensemble of a learned-upsampling network (extra columns).
    """
    network = build_network(cfg)
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    network.eval()
    baseline = None
    if cfg.data.reference:
        from ..registry import load_model

        baseline = load_model()  # the single-input default, for the guided-vs-single comparison
    rows = validation_report(network, cfg, cases, contrasts, log=log, baseline=baseline, ensemble=ensemble)
    gains = [r["psnr_gain"] for r in rows]
    init = read_init(weights.parent)
    init_flag = f" --init {init['model']}" if init else ""
    d = cfg.degradation
    data_files = {k: v[1] for k, v in icbm152.FILES.items()} if cfg.data.source == "icbm152" else {}
    training = {
        "data": ("MNI ICBM152 2009a symmetric T1 template (1 mm) with grey/white-matter maps, from the nilearn "
                 f"{icbm152.NILEARN_VERSION} wheel; contrasts {sorted(cfg.data.contrasts)} synthesised from the maps"
                 if cfg.data.source == "icbm152" else f"folder {cfg.data.dir}"),
        "data_sha256": data_files,
        "licence": icbm152.NOTICE if cfg.data.source == "icbm152" else "see the data's own licence",
        "held_out": (f"last {cfg.data.holdout_fraction:.0%} of voxel axis {cfg.data.holdout_axis} "
                     f"({_END_OF_AXIS[cfg.data.holdout_axis]} end for the RAS-oriented template): "
                     "no training crop touches it"),
        "degradations": {"kinds": d.kinds, "psfs": d.psfs, "iso_factor": d.iso_factor,
                         "thick_factor": d.thick_factor, "kspace_factor": d.kspace_factor,
                         "noise": d.noise, "noise_probability": d.noise_probability,
                         **({"input_blur": d.input_blur, "input_blur_probability": d.input_blur_probability}
                            if d.input_blur_probability > 0 else {})},
        "input_spacing_mm": [1.0, max(d.iso_factor[1], d.thick_factor[1], d.kspace_factor[1])],
        "factor": [1.0, max(d.iso_factor[1], d.thick_factor[1], d.kspace_factor[1])],
        "output_spacing_mm": [1.0, 1.0],
        "config": cfg.to_dict(),
        "reproduce": f"mrisr train --config {config_path} --fetch-data{init_flag} && "
                     f"mrisr train --config {config_path} --export {folder}" + (" --default" if default else "")
                     + (" --ensemble" if ensemble else ""),
    }
    if init is not None:
        training["init"] = init
    protocol = ("held-out slab of the template, degraded by each acquisition (mrisr degrade operators, "
                "Rician noise where named), spline-interpolated back to 1 mm, network run through "
                "mrisr.engine.enhance on the CPU; PSNR (peak = 99.5th percentile of the reference) and "
                "SSIM (3D Gaussian window, sigma 1.5) over the automatic head mask")
    scale = upsampling_scale(network)
    if scale is not None:  # trained at one scale; upscale adds the spline for larger factors
        training["input_spacing_mm"] = training["factor"] = [float(min(scale)), float(max(scale))]
        training["upsampling"] = (f"learned, integer scale {list(scale)} per voxel axis: trained on LR/HR pairs "
                                  "acquired at exactly that scale (PSF and noise sampled as listed); larger "
                                  "factors add a spline step after the network")
        protocol = ("held-out slab of the template cropped to whole LR voxels, degraded at the network's scale "
                    "with each named acquisition's PSF and noise (mrisr degrade operators); network run by "
                    "mrisr.upsampling.upscale_learned on the CPU (the code of mrisr upscale) against the cubic "
                    "spline of the same LR volume, both on the 1 mm grid; PSNR (peak = 99.5th percentile of the "
                    "reference) and SSIM (3D Gaussian window, sigma 1.5) over the automatic head mask")
    if cfg.data.reference:
        training["reference"] = ("second input channel: a 1 mm T1-weighted scan of the same head on the output "
                                 "grid (trained with the template T1, independently biased, misregistered by up "
                                 f"to {d.reference_shift} voxel, blurred and noised)")
        protocol += (f"; guided: the slab's clean T1 is the reference; the baseline columns run the single-input "
                     f"default {baseline.name} {baseline.card.version} on the same inputs without it")
    if ensemble:
        protocol += ("; the 8-flip median columns: the network on the LR volume under each of the 8 axis flips, "
                     "flipped back, the voxelwise median (Georgescu et al.'s self-ensemble, mrisr upscale "
                     "--ensemble median)")
    validation = {
        "protocol": protocol,
        "psnr_gain_min": min(gains), "psnr_gain_mean": float(np.mean(gains)), "rows": rows,
    }
    card = save_model(network, folder, name=folder.name, version=version, description=description,
                      default=default, training=training, validation=validation)
    (folder / "validation.md").write_text(f"# Validation of {folder.name}\n\n{validation['protocol']}.\n\n"
                                          f"{markdown_table(rows)}\n")
    return card
