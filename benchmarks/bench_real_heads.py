"""Benchmark: every shipped model (or the ones named) on the real validation heads (not a test).

The real heads are individual people's scans outside the repository
(``../shared/data/`` or ``$MRISR_VALIDATION_DATA``; see
:mod:`mrisr.training.real_heads`): a whole-head 0.88 mm T1 with scalp fat, a
skull-stripped post-contrast T1, and the in-plane axes of a real 2.4 mm PD.
Each is degraded by the named acquisitions (in its own voxels), the model
runs through the code of ``mrisr upscale``, and the PSNR gain over the cubic
spline of the same input is measured over the automatic head mask.

Usage (from the repository root)::

    python benchmarks/bench_real_heads.py [MODEL ...] [--cases iso2-box thick4-box] [--json out.json]

``--record`` writes the rows into each model's ``card.json`` and
``validation.md`` (:func:`mrisr.training.export.record_real_heads`): how the
models exported before the real heads existed got their real-head rows.
``--from-json out.json --record`` records rows measured earlier instead of
measuring again.

``--upscale`` measures through ``mrisr.upscale`` itself instead (each head
cropped to whole LR voxels, degraded, written as an image with its LR
affine, upscaled back to 1 voxel): columns spline, the model, and the model
with ``--consistency`` and/or ``--adapt SECONDS`` (per-scan adaptation)::

    python benchmarks/bench_real_heads.py recnn-d8w32 --upscale --consistency --adapt 90 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def upscale_rows(model, cases: list[str], consistency: bool, adapt: float | None, log=print) -> list[dict]:
    """Each real head x acquisition through ``mrisr.upscale`` (see the module docstring)."""
    import nibabel as nib
    import numpy as np

    import mrisr
    from mrisr.evaluation.masks import head_mask
    from mrisr.evaluation.metrics import psnr
    from mrisr.geometry.grid import target_grid
    from mrisr.training.data import VALIDATION_CASES
    from mrisr.training.lr_pairs import crop_to_scale, degrade_to_lr
    from mrisr.training.real_heads import HEADS, data_folder, read_head

    rows = []
    for key, head in HEADS.items():
        volume = read_head(data_folder(), head)
        for name in cases:
            acq = VALIDATION_CASES[name]
            scale = tuple(int(round(f)) for f in acq.factors)
            hr = crop_to_scale(volume, scale)
            mask = head_mask(hr)
            lr = degrade_to_lr(hr, acq, np.random.default_rng(1234))
            img = nib.Nifti1Image(lr, target_grid(np.eye(4), hr.shape, acq.factors).affine)
            row = {"head": key, "case": name}
            runs = {"spline": {"method": "spline"}, "model": {"model": model}}
            if consistency:
                runs["model+consistency"] = {"model": model, "consistency": True}
            if adapt:
                runs["model+adapt"] = {"model": model, "adapt": adapt}
            for label, kw in runs.items():
                t0 = time.perf_counter()
                out = mrisr.upscale(img, spacing=1, **kw)
                sr = np.asarray(out.dataobj, np.float32)
                if sr.shape != hr.shape:
                    raise RuntimeError(f"{key} {name}: output {sr.shape} is not the head's grid {hr.shape}")
                row[label] = psnr(sr, hr, mask=mask)
                row[f"{label}_seconds"] = round(time.perf_counter() - t0, 2)
                info = out.extra["mrisr_report"].adapt
                if info:
                    row["adapt"] = info
            rows.append(row)
            log(f"{key:15s} {name:20s} " + "  ".join(f"{k} {row[k] - row['spline']:+.2f}" for k in runs
                                                     if k != "spline") + f"  (spline {row['spline']:.2f} dB)")
    return rows


def upscale_table(rows: list[dict]) -> str:
    """Markdown: PSNR gain over the spline per head and acquisition, one column per variant."""
    labels = [k for k in rows[0] if k not in ("head", "case", "spline", "adapt") and not k.endswith("_seconds")]
    lines = ["| head | acquisition | spline dB | " + " | ".join(f"{k} gain" for k in labels) + " |",
             "|---|---|---|" + "---|" * len(labels)]
    for r in rows:
        lines.append(f"| {r['head']} | {r['case']} | {r['spline']:.2f} | "
                     + " | ".join(f"{r[k] - r['spline']:+.2f}" for k in labels) + " |")
    means = [sum(r[k] - r["spline"] for r in rows) / len(rows) for k in labels]
    lines.append("| mean | | | " + " | ".join(f"{m:+.2f}" for m in means) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="model names or folders (default: every shipped model but guided)")
    ap.add_argument("--cases", nargs="+", help="acquisitions (default: mrisr.training.real_heads.REAL_CASES)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--ensemble", action="store_true", help="learned-upsampling models: the 8-flip median")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--record", action="store_true", help="write the rows into each model's card and validation.md")
    ap.add_argument("--from-json", type=Path, help="with --record: the rows of an earlier --json run")
    ap.add_argument("--upscale", action="store_true", help="measure through mrisr.upscale (see above)")
    ap.add_argument("--consistency", action="store_true", help="with --upscale: also with --consistency")
    ap.add_argument("--adapt", type=float, help="with --upscale: also with --adapt for this many seconds")
    args = ap.parse_args(argv)

    import torch

    from machine import describe, machine_info
    from mrisr.inference.registry import find_card, list_models, load_model
    from mrisr.training.export import real_head_report, real_head_table, record_real_heads

    if args.from_json:
        if not args.record:
            ap.error("--from-json needs --record")
        for key, entry in json.loads(args.from_json.read_text())["models"].items():
            name, version = key.split()
            card = find_card(name)
            if card.version != version:
                ap.error(f"{args.from_json}: rows of {key}, but the shipped {name} is {card.version}")
            record_real_heads(card.path.parent, entry["rows"])
            print(f"recorded {len(entry['rows'])} real-head rows in {card.path.parent}")
        return 0

    names = args.models or [m.name for m in list_models() if "guided" not in m.name]
    out = {"machine": machine_info(), "threads": torch.get_num_threads(), "precision": args.precision,
           "models": {}}
    for name in names:
        model = load_model(name)
        print(f"== {model.name} {model.card.version}  ({describe(out['machine'])})", flush=True)
        t0 = time.perf_counter()
        if args.upscale:
            from mrisr.training.real_heads import REAL_CASES

            rows = upscale_rows(model, args.cases or REAL_CASES, args.consistency, args.adapt)
            out["models"][f"{model.name} {model.card.version}"] = {"rows": rows,
                                                                   "seconds": time.perf_counter() - t0}
            print(upscale_table(rows), flush=True)
            continue
        rows = real_head_report(model, args.cases, precision=args.precision, ensemble=args.ensemble)
        out["models"][f"{model.name} {model.card.version}"] = {"rows": rows, "seconds": time.perf_counter() - t0}
        print(real_head_table(rows), flush=True)
        if args.record:
            record_real_heads(model.card.path.parent, rows)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
