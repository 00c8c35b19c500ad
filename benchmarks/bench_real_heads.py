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
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def cpu_name() -> str:
    """The CPU model and its vector flags, from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    kinds = [k for k, f in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("BF16", "avx512_bf16")) if f in flags]
    return f"{name} ({'/'.join(kinds) or 'no AVX2'})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="model names or folders (default: every shipped model but guided)")
    ap.add_argument("--cases", nargs="+", help="acquisitions (default: mrisr.training.real_heads.REAL_CASES)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--ensemble", action="store_true", help="learned-upsampling models: the 8-flip median")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)

    import torch

    from mrisr.registry import list_models, load_model
    from mrisr.training.export import real_head_report, real_head_table

    names = args.models or [m.name for m in list_models() if "guided" not in m.name]
    out = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "precision": args.precision, "models": {}}
    for name in names:
        model = load_model(name)
        print(f"== {model.name} {model.card.version}  ({out['cpu']}, {out['threads']} threads)", flush=True)
        t0 = time.perf_counter()
        rows = real_head_report(model, args.cases, precision=args.precision, ensemble=args.ensemble)
        out["models"][f"{model.name} {model.card.version}"] = {"rows": rows, "seconds": time.perf_counter() - t0}
        print(real_head_table(rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
