"""Validation report and export of a trained network as a shipped model.

The report runs the network through exactly the inference path of ``mrisr
upscale`` (:func:`mrisr.inference.engine.enhance`, or :func:`mrisr.inference.upsampling.upscale_learned` for
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

from mrisr.evaluation.metrics import psnr, ssim
from mrisr.inference.model_card import LoadedModel, ModelCard, architecture_name, example_card, save_model
from mrisr.inference.upsampling import upsampling_scale
from mrisr.training import icbm152, wholehead
from mrisr.training.config import Config, ConfigError
from mrisr.training.data import GUIDED_CONTRASTS, VALIDATION_CASES, ValidationCase, load_subjects, validation_cases
from mrisr.training.lr_pairs import hr_grid_of_lr
from mrisr.training.networks import build_network

#: Which end of each voxel axis the hold-out takes, for a RAS-oriented volume.
_END_OF_AXIS = {0: "right", 1: "anterior", 2: "superior"}
#: Contrasts of the full validation table.
REPORT_CONTRASTS = ("t1", "t2", "flair", "pd")


def card_normalisation(cfg: Config) -> dict:
    """The card's ``normalisation`` object for a model trained with ``cfg``.

    Example:
        >>> from mrisr.training.config import config_from_dict
        >>> card_normalisation(config_from_dict({"data": {"normalisation": "foreground_median"}}))
        {'method': 'foreground_median'}
    """
    from mrisr.inference.intensity import SCALE_PERCENTILE

    if cfg.data.normalisation == "robust_scale":
        return {"method": "robust_scale", "percentile": SCALE_PERCENTILE}
    return {"method": cfg.data.normalisation}


def _as_loaded(network: torch.nn.Module, name: str = "candidate", normalisation: dict | None = None) -> LoadedModel:
    card = example_card(name=name, architecture={"name": architecture_name(network), "params": network.config()},
                        receptive_radius=network.receptive_radius,
                        **({"normalisation": normalisation} if normalisation else {}))
    return LoadedModel(name, card, network.eval(), "0" * 64, Path("."))


def _run_case(case: ValidationCase, model: LoadedModel, precision: str,
              ensemble: bool = False) -> tuple[np.ndarray, str]:
    """The model's output for a case on the HR grid, through the code ``upscale`` runs; and its precision.
    ``ensemble``: a learned-upsampling model's 8-flip median (``upscale --ensemble median``)."""
    from mrisr.inference.engine import enhance
    from mrisr.inference.upsampling import upscale_learned, upscale_learned_ensemble

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
    through :func:`mrisr.inference.upsampling.upscale_learned`. ``baseline`` (for guided models: the
    single-input default) adds its PSNR on the same inputs, without the reference. ``ensemble``
    (learned-upsampling networks) adds the 8-flip median self-ensemble's PSNR and SSIM
    (Georgescu et al.; ``mrisr upscale --ensemble median``).
    """
    from mrisr.inference.engine import enhance

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
    model = _as_loaded(network, normalisation=card_normalisation(cfg))
    for case in validation_cases(cfg, subjects, names or list(VALIDATION_CASES), contrasts, scale=scale):
        t0 = time.perf_counter()
        sr, used = _run_case(case, model, precision)
        row = _row(case, sr, used, time.perf_counter() - t0)
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


def _row(case: ValidationCase, sr: np.ndarray, used: str, seconds: float) -> dict:
    row = {"contrast": case.contrast, "case": case.name, "acquisition": case.acquisition.describe(),
           "psnr_spline": psnr(case.inp, case.target, mask=case.mask),
           "psnr_model": psnr(sr, case.target, mask=case.mask),
           "ssim_spline": ssim(case.inp, case.target, mask=case.mask),
           "ssim_model": ssim(sr, case.target, mask=case.mask),
           "precision": used, "seconds": round(seconds, 2)}
    row["psnr_gain"] = row["psnr_model"] - row["psnr_spline"]
    row["ssim_gain"] = row["ssim_model"] - row["ssim_spline"]
    return row


def real_head_report(model: LoadedModel, names: list[str] | None = None, precision: str = "auto", log=print,
                     folder: Path | None = None, ensemble: bool = False, crop=None) -> list[dict]:
    """One row per (real head, acquisition): spline and model PSNR/SSIM and gains
    (:mod:`mrisr.training.real_heads`), through the code ``upscale`` runs. Rows carry the
    head's name in ``contrast``. Guided models are not run here (no second channel)."""
    from mrisr.training.real_heads import all_cases

    rows = []
    for case in all_cases(names, folder, scale=upsampling_scale(model.network), crop=crop):
        t0 = time.perf_counter()
        sr, used = _run_case(case, model, precision, ensemble=ensemble)
        rows.append(_row(case, sr, used, time.perf_counter() - t0))
        r = rows[-1]
        log(f"{case.contrast:15s} {case.name:20s} spline {r['psnr_spline']:6.2f} dB  model {r['psnr_model']:6.2f} dB"
            f"  gain {r['psnr_gain']:+5.2f} dB  SSIM {r['ssim_spline']:.4f} -> {r['ssim_model']:.4f}")
    return rows


def real_head_table(rows: list[dict], template: list[dict] | None = None) -> str:
    """Markdown: one row per acquisition, a PSNR-gain column per real head (and the template's T1 slab first,
    when ``template`` rows are given), then the worst real-head gain."""
    heads = list(dict.fromkeys(r["contrast"] for r in rows))
    gains: dict[str, dict[str, float]] = {}
    for r in rows:
        gains.setdefault(r["case"], {})[r["contrast"]] = r["psnr_gain"]
    slab = {r["case"]: r["psnr_gain"] for r in (template or []) if r["contrast"] == "t1"}
    head = "| acquisition |" + (" template slab (T1) |" if template else "") + "".join(f" {h} |" for h in heads)
    lines = [head + " worst real head |", "|---|" + ("---|" if template else "") + "---|" * (len(heads) + 1)]
    for case, per in gains.items():
        cells = [f"{per[h]:+.2f}" if h in per else "" for h in heads]
        line = f"| {case} |" + (f" {slab[case]:+.2f} |" if template and case in slab else " |" if template else "")
        lines.append(line + "".join(f" {c} |" for c in cells) + f" {min(per.values()):+.2f} |")
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    """The report as a Markdown table (with the baseline's or the ensemble's columns when they were run)."""
    extra = "baseline" in rows[0] if rows else False
    combined = "psnr_ensemble" in rows[0] if rows else False
    head = ("| contrast | acquisition (LR voxel in mm, PSF) | PSNR spline | PSNR model | gain dB "
            "| SSIM spline | SSIM model |")
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


def _source_entry(src: wholehead.Source) -> dict:
    return {"file": src.file, "what": src.what, "from": f"{src.package}=={src.version}", "member": src.member,
            "sha256": src.sha256, "licence": src.licence, "holdout": src.holdout}


def data_sources(cfg: Config) -> dict:
    """The card's record of the training volumes beyond the template: the whole-head sources and the
    synthetic heads' label map, each pinned (package, member, sha256) and licensed.

    Example:
        >>> from mrisr.training.config import config_from_dict
        >>> data_sources(config_from_dict({}))
        {}
        >>> cfg = config_from_dict({"data": {"wholehead_dir": "w", "label_heads_probability": 0.3}})
        >>> sorted(data_sources(cfg)), data_sources(cfg)["label_heads"]["labels"]["from"]
        (['label_heads', 'wholehead'], 'melage==2.2.0')
    """
    out: dict = {}
    if cfg.data.wholehead_dir:
        out["wholehead"] = {"probability": cfg.data.wholehead_probability,
                            "sources": [_source_entry(w) for w in wholehead.SOURCES]}
    if cfg.data.label_heads_probability > 0:
        out["label_heads"] = {"probability": cfg.data.label_heads_probability,
                              "what": "synthetic heads drawn from a label map (mrisr.training.labelheads): random "
                                      "per-label intensities, texture and partial volume",
                              "labels": _source_entry(wholehead.LABELS)}
    return out


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
        from mrisr.inference.registry import load_model

        baseline = load_model()  # the single-input default, for the guided-vs-single comparison
    rows = validation_report(network, cfg, cases, contrasts, log=log, baseline=baseline, ensemble=ensemble)
    gains = [r["psnr_gain"] for r in rows]
    real = _real_rows(network, cfg, log, ensemble)
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
    training.update(data_sources(cfg))
    protocol = ("held-out slab of the template, degraded by each acquisition (mrisr degrade operators, "
                "Rician noise where named), spline-interpolated back to 1 mm, network run through "
                "mrisr.inference.engine.enhance on the CPU; PSNR (peak = 99.5th percentile of the reference) and "
                "SSIM (3D Gaussian window, sigma 1.5) over the automatic head mask")
    scale = upsampling_scale(network)
    if scale is not None:  # trained at one scale; upscale adds the spline for larger factors
        training["input_spacing_mm"] = training["factor"] = [float(min(scale)), float(max(scale))]
        training["upsampling"] = (f"learned, integer scale {list(scale)} per voxel axis: trained on LR/HR pairs "
                                  "acquired at exactly that scale (PSF and noise sampled as listed); larger "
                                  "factors add a spline step after the network")
        protocol = ("held-out slab of the template cropped to whole LR voxels, degraded at the network's scale "
                    "with each named acquisition's PSF and noise (mrisr degrade operators); network run by "
                    "mrisr.inference.upsampling.upscale_learned on the CPU (the code of mrisr upscale) against the "
                    "cubic spline of the same LR volume, both on the 1 mm grid; PSNR (peak = 99.5th percentile of the "
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
    text = f"# Validation of {folder.name}\n\n"
    if real:
        validation["real_heads"] = real_heads_entry(real)
        text += real_heads_section(real, rows)
    card = save_model(network, folder, name=folder.name, version=version, description=description,
                      default=default, training=training, validation=validation,
                      normalisation=card_normalisation(cfg))
    (folder / "validation.md").write_text(text + f"{validation['protocol']}.\n\n{markdown_table(rows)}\n")
    return card


def real_heads_entry(real: list[dict]) -> dict:
    """The card's ``validation.real_heads``: the protocol, the rows and their worst gain."""
    return {"protocol": REAL_PROTOCOL, "rows": real, "psnr_gain_min": min(r["psnr_gain"] for r in real)}


def real_heads_section(real: list[dict], template: list[dict]) -> str:
    """The real-head part of a ``validation.md``, ending where the template slab's part begins."""
    return (f"## Real heads (PSNR gain over the cubic spline, dB)\n\n{REAL_PROTOCOL}.\n\n"
            f"{real_head_table(real, template)}\n\n{markdown_table(real)}\n\n{_SLAB_HEADING}")


_SLAB_HEADING = "## Template slab\n\n"


def record_real_heads(folder: Path, real: list[dict]) -> None:
    """Write real-head rows (:func:`real_head_report`'s) into an exported model's ``card.json`` and
    ``validation.md``, replacing any there, without retraining or touching the weights.

    For models exported before the real heads were measured (``benchmarks/bench_real_heads.py
    --record``). Both files are replaced atomically; the card is re-read and validated first.

    Example:
        >>> import json, shutil
        >>> from mrisr.inference.registry import models_dir
        >>> d = shutil.copytree(models_dir() / "georgescu-1x1x4", Path("m"))
        >>> row = {"contrast": "chris_t1_088mm", "case": "1x1x4-box", "acquisition": "box",
        ...        "psnr_spline": 20.0, "psnr_model": 20.5, "psnr_gain": 0.5, "ssim_spline": 0.8,
        ...        "ssim_model": 0.81, "ssim_gain": 0.01, "precision": "fp32", "seconds": 1.0}
        >>> record_real_heads(d, [row])
        >>> json.loads((d / "card.json").read_text())["validation"]["real_heads"]["psnr_gain_min"]
        0.5
        >>> (d / "validation.md").read_text().count("## Real heads")
        1
    """
    from mrisr.inference.model_card import read_card
    from mrisr.io.writer import save_bytes_atomic

    if not real:
        raise ValueError(f"{folder}: no real-head rows to record")
    raw = (folder / "card.json").read_text()
    data = json.loads(raw)
    second = raw.splitlines()[1:2] or [""]
    indent = len(second[0]) - len(second[0].lstrip()) or 2  # keep the card's own layout: a diff of added rows only
    data["validation"]["real_heads"] = real_heads_entry(real)
    text = (folder / "validation.md").read_text()
    title, _, rest = text.partition("\n\n")
    if rest.startswith("## Real heads"):  # recorded before: replace it
        rest = rest.partition(_SLAB_HEADING)[2]
    rest = rest.removeprefix(_SLAB_HEADING)  # the section ends with this heading
    card = (json.dumps(data, indent=indent) + "\n").encode()
    save_bytes_atomic(card, folder / "card.json", force=True, verify=read_card)
    md = f"{title}\n\n" + real_heads_section(real, data["validation"]["rows"]) + rest
    save_bytes_atomic(md.encode(), folder / "validation.md", force=True)


#: How the real-head rows are measured.
REAL_PROTOCOL = ("real single-subject scans never trained on (mrisr.training.real_heads: a whole-head 0.88 mm T1 "
                 "with scalp fat, a skull-stripped post-contrast 1 mm T1, and the in-plane axes of a real 2.4 mm "
                 "PD thickened to 2.4 mm with the slice profile), each acquisition simulated in the head's own "
                 "voxels, the model run through the code of mrisr upscale; PSNR and SSIM over the automatic head "
                 "mask (mrisr evaluate's)")


def _real_rows(network: torch.nn.Module, cfg: Config, log, ensemble: bool) -> list[dict]:
    """Real-head rows for the card, or none (with a log line) where the heads are absent or the model is guided."""
    from mrisr.training import real_heads

    if cfg.data.reference:
        log("real heads: not measured for guided models here (docs/guided.md)")
        return []
    if not real_heads.available():
        log(f"real heads: not found in {real_heads.data_folder()} (set {real_heads.ENV}); card without them")
        return []
    model = _as_loaded(network, normalisation=card_normalisation(cfg))
    return real_head_report(model, log=log, ensemble=ensemble)
