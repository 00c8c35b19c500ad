"""Benchmark: guided super-resolution (``--reference``) on real heads, against the single-input default and the
cubic spline (not a test).

The real validation heads live outside the repository (``../shared/data/`` or ``$MRISR_VALIDATION_DATA``; see
:mod:`mrisr.training.real_heads`; validation only, never training). Three parts:

1. **The real pair**: ``chris_pd_thick`` (a real 2.4 mm PD, 0.86 x 0.86 x 2.4 mm) upscaled to 0.86 mm isotropic
   with the guided model and ``chris_t1_088mm`` (the same subject's 0.88 mm T1) as the reference, registered
   with ``register="rigid"`` (what ``mrisr upscale --reference T1 --register rigid`` runs), against the default
   and the spline. There is no truth: the QC pictures (``--qc-dir``) show it.
2. **In-plane self-consistency of the real pair**: an in-plane axis of the PD thickened to 2.4 mm with the slice
   profile (:func:`mrisr.training.real_heads.inplane_cases`), upscaled back by each method (the guided models
   with the T1 registered onto the PD's grid as the reference), PSNR against the original PD over its head mask.
   A real cross-contrast pair with real noise and real misregistration.
3. **Simulated pairs on the real heads** (``chris_t1_088mm``, ``mr_gd_1mm``), 1x1x4 voxel slices (slice profile,
   box): *same contrast*: the T1 slices with the T1 itself as the reference, but an independent copy: its own
   Rician noise (2% of the 99th percentile), a shift of (0.3, -0.3, 0.25) mm (0.49 mm) and a Gaussian blur of 0.5 voxel;
   *cross contrast*: the target is the same T1 through an intensity remap, the reference the same corrupted
   T1: ``monotone`` (an increasing sigmoid remap, so every edge keeps its polarity) and ``t2like`` (tissue
   contrast inverted: CSF bright, white matter dark, air still dark; a stand-in for a T2/PD of the same anatomy:
   the real PD of part 2 is the only real cross-contrast truth).

Besides the guided networks, every input also runs ``method="transfer"`` (what ``mrisr upscale --reference``
does without ``--model``: :mod:`mrisr.inference.transfer`) with each ``--default`` model scored beside the
spline by the input's own internal test, the reference registered rigidly first as ``mrisr upscale`` does
(``--transfer-register none`` trusts the headers instead); its row records the option the test chose
(``--no-transfer`` skips it).

Every figure is PSNR (dB) over the head mask of the truth (:func:`mrisr.evaluation.masks.head_mask`), the network
through the code ``mrisr upscale`` runs (:func:`mrisr.inference.engine.enhance`, or :func:`mrisr.upscale` in part
1). The JSON records the machine (:mod:`machine`).

Usage (from the repository root)::

    python benchmarks/bench_guided_real.py [--guided MODEL ...] [--default MODEL] [--json OUT.json]
        [--merge OLD.json] [--qc-dir docs/images] [--markdown OUT.md]

``--merge OLD.json`` keeps OLD's rows and runs only the models not in it (same inputs: everything is seeded).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: (shift in mm per world axis, blur sigma in voxels, Rician sigma as a fraction of the 99th percentile) of the
#: same-contrast reference.
REF_SHIFT_MM = (0.3, -0.3, 0.25)  # 0.49 mm in all
REF_BLUR = 0.5
REF_NOISE = 0.02
#: Acquisitions of the simulated pairs (keys of mrisr.training.data.VALIDATION_CASES).
SIM_CASES = ("thick4-slice", "thick4-box")
#: Rows of the simulated pairs: (label, target remap, acquisition).
SIM_ROWS = (("same-contrast", "none", "thick4-slice"), ("same-contrast", "none", "thick4-box"),
            ("cross-contrast", "monotone", "thick4-slice"), ("cross-contrast", "t2like", "thick4-slice"))
#: ``--more``: the same heads at 2 mm isotropic and 2x2x1 k-space (other acquisitions than thick slices).
MORE_ROWS = (("same-contrast", "none", "iso2-box"), ("cross-contrast", "t2like", "iso2-box"),
             ("same-contrast", "none", "kspace2x2-kspace"))
ATTRIBUTION = "Images courtesy of Chris Rorden (CC BY-NC 4.0)"


def remap(t1: np.ndarray, kind: str) -> np.ndarray:
    """``t1`` as another contrast of the same anatomy (intensities in units of its foreground median).

    ``monotone``: an increasing sigmoid (edges keep their polarity, contrasts change);
    ``t2like``: tissue contrast inverted above a CSF-like level, with air kept dark.

    Example:
        >>> t = np.array([0.0, 0.3, 0.8, 1.1], np.float32)
        >>> m, t2 = remap(t, "monotone"), remap(t, "t2like")
        >>> bool(np.all(np.diff(m) > 0)), bool(t2[1] > t2[2] > t2[3] > t2[0])
        (True, True)
    """
    from mrisr.inference.intensity import normalising_scale

    if kind == "none":
        return t1
    s = normalising_scale(t1, "foreground_median")
    t = t1.astype(np.float64) / s
    if kind == "monotone":
        out = 1.0 / (1.0 + np.exp(-(t - 0.7) / 0.15)) - 1.0 / (1.0 + np.exp(0.7 / 0.15))
    elif kind == "t2like":
        air = 1.0 / (1.0 + np.exp(-(t - 0.12) / 0.03)) - 1.0 / (1.0 + np.exp(0.12 / 0.03))  # air 0, tissue ~1
        out = air * np.clip(1.6 - t, 0.15, None)                   # CSF 1.3, GM 0.8, WM 0.5, fat 0.15
    else:
        raise ValueError(kind)
    return (out * s).astype(np.float32)


def corrupted_copy(volume: np.ndarray, zooms, seed: int = 7) -> np.ndarray:
    """An independent acquisition of the same head: shifted (:data:`REF_SHIFT_MM`), blurred, own noise."""
    from scipy import ndimage

    from mrisr.acquisition.degrade import add_rician_noise

    rng = np.random.default_rng(seed)
    shift = np.asarray(REF_SHIFT_MM) / np.asarray(zooms, np.float64)
    out = ndimage.shift(volume.astype(np.float32), shift, order=3, mode="constant")
    out = ndimage.gaussian_filter(np.clip(out, 0, None), REF_BLUR)
    return add_rician_noise(out, REF_NOISE * float(np.percentile(volume, 99)), rng)


def acquired(target: np.ndarray, acq) -> tuple[np.ndarray, object, np.ndarray]:
    """The LR volume of ``target`` under ``acq`` (seeded as every row here), the grid that takes it back onto
    ``target``'s grid (``resample_to_grid(lr, grid)`` is the rows' spline input) and its affine in ``target``'s
    voxel coordinates (the world of these rows)."""
    from mrisr.geometry.grid import target_grid
    from mrisr.training.data import hr_grid_in_lr
    from mrisr.training.lr_pairs import degrade_to_lr

    lr = degrade_to_lr(target, acq, np.random.default_rng(1234))
    lr_grid = target_grid(np.eye(4), target.shape, acq.factors)
    return lr, hr_grid_in_lr(target.shape, lr_grid), lr_grid.affine


def transferred(lr: np.ndarray, grid, lr_affine: np.ndarray, inp: np.ndarray, reference: np.ndarray, model,
                register: str = "rigid") -> tuple[np.ndarray, str]:
    """What ``mrisr upscale --reference`` (method ``transfer``, no consistency) makes of one input: the reference
    registered rigidly to the input (the transfer's default), the input's internal test with ``model`` scored
    beside the spline (:class:`mrisr.inference.transfer.ReferenceTransfer`, as
    :func:`mrisr.pipeline.upscale._transfer`), then the chosen option; ``(result, the choice's label)``."""
    from mrisr.inference.engine import enhance
    from mrisr.inference.transfer import ReferenceTransfer
    from mrisr.trust.reference import resample_reference
    from mrisr.trust.registration import register_rigid
    from mrisr.volume import Volume

    if register == "rigid":  # the rows' world is the truth's voxel grid (grid.affine is the identity)
        transform = register_rigid(reference, np.eye(4), lr, lr_affine)
        reference = resample_reference(Volume(reference, np.eye(4)), grid, transform=transform).data
    rt = ReferenceTransfer(reference, grid, lr.shape)
    choice = rt.choose(lr, None if model is None else (lambda x, g: enhance(x, model, device="cpu", factors=g)[0]))
    factors = tuple(1.0 / r for r in grid.ratios)
    base = enhance(inp, model, device="cpu", factors=factors)[0] if choice.network else inp
    return rt.apply(inp, base, choice), choice.label


def psnr_rows(label: str, head: str, acq_name: str, inp: np.ndarray, target: np.ndarray, mask: np.ndarray,
              factors, reference: np.ndarray, defaults, guided, done: set, log,
              transfer: tuple | None = None, register: str = "rigid") -> list[dict]:
    """One row per method (spline, each default, each guided model; with ``transfer = (lr, grid)``, the
    reference's transfer with each default, ``transfer = (lr, grid, lr_affine)`` from :func:`acquired`, the
    reference registered as ``register`` says) of one input."""
    from mrisr.evaluation.metrics import psnr
    from mrisr.inference.engine import enhance

    rows = []
    key = (label, head, acq_name)
    if ("spline",) + key not in done:
        rows.append({"method": "spline", "model": "spline", "test": label, "head": head, "case": acq_name,
                     "psnr": psnr(inp, target, mask=mask), "seconds": 0.0})
    if label == "same-contrast" and ("reference alone",) + key not in done:  # the corrupted copy itself
        rows.append({"method": "reference", "model": "reference alone", "test": label, "head": head,
                     "case": acq_name, "psnr": psnr(reference, target, mask=mask), "seconds": 0.0})
    for kind, models in (("default", defaults), ("guided", guided)):
        for m in models:
            name = f"{m.name} {m.card.version}"
            if (name,) + key in done:
                continue
            t0 = time.perf_counter()
            extra = {"reference": reference} if kind == "guided" else {}
            sr, _ = enhance(inp, m, device="cpu", factors=factors, **extra)
            rows.append({"method": kind, "model": name, "test": label, "head": head, "case": acq_name,
                         "psnr": psnr(sr, target, mask=mask), "seconds": round(time.perf_counter() - t0, 1)})
    for m in defaults if transfer is not None else []:
        name = f"transfer + {m.name} {m.card.version}" + ("" if register == "rigid" else f" (register {register})")
        if (name,) + key in done:
            continue
        t0 = time.perf_counter()
        sr, chosen = transferred(*transfer, inp, reference, m, register=register)
        rows.append({"method": "transfer", "model": name, "test": label, "head": head, "case": acq_name,
                     "psnr": psnr(sr, target, mask=mask), "seconds": round(time.perf_counter() - t0, 1),
                     "chosen": chosen})
    for r in rows:
        log(f"{label:15s} {head:15s} {acq_name:22s} {r['model']:28s} {r['psnr']:6.2f} dB  ({r['seconds']} s)")
    return rows


def real_pair(folder: Path, defaults, guided, qc_dir: Path | None, done: set, log,
              transfer_register: str | None = "rigid") -> tuple[list[dict], dict]:
    """Parts 1 and 2 (see the module docstring)."""
    import nibabel as nib

    import mrisr
    from mrisr.evaluation.qc import qc_picture
    from mrisr.geometry.grid import target_grid
    from mrisr.training.real_heads import HEADS, REAL_LR, inplane_cases, read_head
    from mrisr.trust.reference import resample_reference
    from mrisr.trust.registration import describe_rigid, register_rigid
    from mrisr.volume import Volume

    pd_img, t1_img = nib.load(str(folder / REAL_LR.name)), nib.load(str(folder / HEADS["chris_t1_088mm"].name))
    pd, t1 = read_head(folder, REAL_LR), read_head(folder, HEADS["chris_t1_088mm"])
    zooms = [float(z) for z in pd_img.header.get_zooms()[:3]]
    info: dict = {}
    t0 = time.perf_counter()
    transform = register_rigid(t1, t1_img.affine, pd, pd_img.affine)
    centre = pd_img.affine @ np.r_[(np.asarray(pd.shape) - 1) / 2.0, 1.0]
    info["registration"] = {**describe_rigid(transform, centre[:3]), "seconds": round(time.perf_counter() - t0, 1)}
    log(f"T1 -> PD rigid registration: {info['registration']}")

    # Part 1: the real 2.4 mm PD to 0.86 mm, through mrisr.upscale (QC pictures only: no truth).
    if qc_dir is not None:
        spacing = min(zooms)
        pd_vol = Volume(pd, pd_img.affine)
        t1_ref = {"reference": Volume(t1, t1_img.affine), "register": "rigid"}
        runs = [(m, "default", {}) for m in defaults] + [(m, "guided", t1_ref) for m in guided]
        runs += [(m, "transfer", {**t1_ref, "method": "transfer"}) for m in defaults] if transfer_register else []
        for m, tag, extra in runs:
            t0 = time.perf_counter()
            out = mrisr.upscale(pd_vol, spacing=spacing, model=str(m.path), device="cpu", **extra)
            seconds = time.perf_counter() - t0
            path = qc_dir / (f"guided-real-pd-{m.name}.png" if tag != "transfer" else "guided-real-pd-transfer.png")
            qc_picture(pd_vol, Volume(np.asarray(out.dataobj, np.float32), out.affine), path,
                       method=extra.get("method", "cnn"),
                       model=f"{m.name} {m.card.version}" + (" + T1 reference (rigid)" if extra else ""),
                       names=("chris_pd_thick (real 2.4 mm PD)", f"{tag} {spacing:.2f} mm"), note=ATTRIBUTION)
            info.setdefault("qc", []).append({"model": f"{m.name} {m.card.version}", "picture": str(path),
                                              "seconds": round(seconds, 1)})
            log(f"QC {path} ({seconds:.0f} s)")

    # Part 2: in-plane self-consistency on the PD's own grid, the registered T1 as the reference.
    grid = target_grid(pd_img.affine, pd.shape, zooms)
    ref = resample_reference(Volume(t1, t1_img.affine), grid, transform=transform).data
    rows = []
    for case in inplane_cases(pd, zooms[2] / zooms[0]):
        rows += psnr_rows("real-pd-inplane", "chris_pd_thick", case.name, case.inp, case.target, case.mask,
                          case.acquisition.factors, ref, defaults, guided, done, log,
                          transfer=acquired(case.target, case.acquisition) if transfer_register else None,
                          register=transfer_register or "rigid")
    return rows, info


def simulated_pairs(folder: Path, defaults, guided, done: set, log, transfer_register: str | None = "rigid",
                    sim_rows: tuple = SIM_ROWS) -> list[dict]:
    """Part 3 (see the module docstring)."""
    import nibabel as nib

    from mrisr.evaluation.masks import head_mask
    from mrisr.training.data import VALIDATION_CASES, simulate
    from mrisr.training.real_heads import HEADS, read_head

    rows = []
    for key, head in HEADS.items():
        t1 = read_head(folder, head)
        zooms = [float(z) for z in nib.load(str(folder / head.name)).header.get_zooms()[:3]]
        reference = corrupted_copy(t1, zooms)
        for label, kind, acq_name in sim_rows:
            target = remap(t1, kind)
            acq = VALIDATION_CASES[acq_name]
            inp = simulate(target, acq, np.random.default_rng(1234))
            test = label if kind == "none" else f"{label} ({kind})"
            rows += psnr_rows(test, key, acq_name, inp, target, head_mask(target), acq.factors, reference,
                              defaults, guided, done, log,
                              transfer=acquired(target, acq) if transfer_register else None,
                              register=transfer_register or "rigid")
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: one line per (test, head, acquisition), a PSNR column per method, then each guided model minus
    the last single-input model given (the newest default)."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    defaults = [m for m in models if any(r["model"] == m and r["method"] == "default" for r in rows)]
    default = defaults[-1] if defaults else None  # the newest single-input model given
    guided = [m for m in models if any(r["model"] == m and r["method"] in ("guided", "transfer") for r in rows)]
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["test"], r["head"], r["case"]), {})[r["model"]] = r["psnr"]
    head = "| test | head | acquisition |" + "".join(f" {m} |" for m in models)
    head += "".join(f" {g} - {default} |" for g in guided) if default else ""
    lines = [head, "|---|---|---|" + "---|" * (len(models) + (len(guided) if default else 0))]
    for (test, h, case), per in cells.items():
        line = f"| {test} | {h} | {case} |" + "".join(f" {per[m]:.2f} |" if m in per else " |" for m in models)
        if default:
            line += "".join(f" {per[g] - per[default]:+.2f} |" if g in per and default in per else " |"
                            for g in guided)
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guided", nargs="*", default=["recnn-guided-d8w32"], help="guided model names or folders")
    ap.add_argument("--default", nargs="*", default=["recnn-d8w32"], help="single-input model(s)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--merge", type=Path, help="keep this JSON's rows; run only the models not in it")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    ap.add_argument("--qc-dir", type=Path, help="write the QC pictures of the real PD here (part 1)")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--no-simulated", action="store_true", help="parts 1-2 only")
    ap.add_argument("--more", action="store_true", help="part 3 with the other acquisitions (MORE_ROWS) instead")
    ap.add_argument("--no-real", action="store_true", help="part 3 only")
    ap.add_argument("--no-transfer", action="store_true",
                    help="skip method 'transfer' (the reference's detail with each --default model)")
    ap.add_argument("--transfer-register", choices=("rigid", "none"), default="rigid",
                    help="the transfer's registration of the reference (default rigid, as mrisr upscale's)")
    args = ap.parse_args(argv)

    import torch

    from machine import describe, machine_info
    from mrisr.inference.registry import load_model
    from mrisr.training.real_heads import data_folder

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = data_folder()
    old = json.loads(args.merge.read_text()) if args.merge else {"rows": [], "runs": []}
    done = {(r["model"], r["test"], r["head"], r["case"]) for r in old["rows"]}
    defaults = [load_model(m) for m in args.default]
    guided = [load_model(m) for m in args.guided]
    print(describe(), flush=True)
    t0 = time.perf_counter()
    register = None if args.no_transfer else args.transfer_register
    rows, info = ([], {}) if args.no_real else real_pair(folder, defaults, guided, args.qc_dir, done, print, register)
    if not args.no_simulated:
        rows += simulated_pairs(folder, defaults, guided, done, print, register, MORE_ROWS if args.more else SIM_ROWS)
    run = {"machine": machine_info(), "threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - t0),
           "models": [f"{m.name} {m.card.version}" for m in defaults + guided],
           "model_sha256": {f"{m.name} {m.card.version}": m.sha256 for m in defaults + guided}, **info}
    out = {"rows": old["rows"] + rows, "runs": old["runs"] + [run],
           "reference_corruption": {"shift_mm": REF_SHIFT_MM, "blur_voxels": REF_BLUR, "rician_of_p99": REF_NOISE}}
    text = table(out["rows"])
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(f"{describe(run['machine'])}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
