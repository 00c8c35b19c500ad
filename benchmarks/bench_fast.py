"""Benchmark: seconds of ``mrisr upscale`` per model against the spline, end to end (not a test).

Issue 17's speed target is CNN time over spline-only time, end to end, on a real whole-head 2 mm -> 1 mm
input and on the shipped demo sample. This script runs the real command line, each run in its own
process as a user would, alternating the methods in rounds (spline, then each model) so that a change of
machine load hits all of them alike, and reports medians: wall seconds, the network's and the consistency
step's seconds from the ``--json`` record, and the ratio to the spline's wall time.

Inputs:

- ``demo``: the shipped sample (``mrisr upscale --demo``), 2 mm, 98 x 116 x 94;
- ``head``: ``chris_t1_088mm`` (a real whole head with scalp fat, from ``../shared/data`` or
  ``$MRISR_VALIDATION_DATA``; validation only, written to a temporary folder and deleted) box-averaged to
  2 mm voxels (as ``mrisr degrade``), upscaled to 1 mm.

``--avx2`` also runs everything as on an AVX2-only CPU (``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2``; mrisr then picks fp32). Usage (repository root)::

    python benchmarks/bench_fast.py recnn-d8w32 path/to/recnn-s2d --rounds 3 [--avx2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/: machine.py (which CPU), bench_upscale.py
from bench_upscale import run_cli  # noqa: E402
from machine import describe, machine_info  # noqa: E402

AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def head_input(folder: Path) -> Path:
    """``chris_t1_088mm`` box-averaged to 2 mm, as a NIfTI file in ``folder``."""
    from mrisr.training import real_heads

    src = Path(real_heads.data_folder()) / real_heads.HEADS["chris_t1_088mm"].name
    out = folder / "head_2mm.nii.gz"
    subprocess.run([sys.executable, "-m", "mrisr.cli.app", "degrade", str(src), "-o", str(out), "--spacing", "2",
                    "--psf", "box", "--force"], check=True, capture_output=True)
    return out


def methods(models: list[str]) -> list[tuple[str, list[str]]]:
    return [("spline", ["--method", "spline"])] + [(m, ["--method", "cnn", "--model", m]) for m in models]


def bench(inputs: dict[str, list[str]], models: list[str], rounds: int, env: dict[str, str], out_dir: Path,
          label: str) -> list[dict]:
    """Median figures per (input, method) over ``rounds`` alternated rounds."""
    rows = []
    for name, source in inputs.items():
        runs: dict[str, list[dict]] = {}
        for r in range(rounds):
            for method, extra in methods(models):
                target = out_dir / f"{name}-{Path(method).name}.nii.gz"
                rec, rec["wall"], _ = run_cli([*source, "--spacing", "1", *extra, "-o", str(target)], env)
                runs.setdefault(method, []).append(rec)
                print(f"{label} {name} round {r + 1} {method}: {rec['wall']:.2f} s", flush=True)
        spline = statistics.median(rec["wall"] for rec in runs["spline"])
        for method, recs in runs.items():
            timing = [rec.get("timings", {}) for rec in recs]
            row = {"cpu": label, "input": name, "method": method, "wall_s": statistics.median(r["wall"] for r in recs),
                   "network_s": statistics.median(t.get("network", 0.0) for t in timing),
                   "consistency_s": statistics.median(t.get("consistency", 0.0) for t in timing),
                   "precision": recs[0].get("precision") or ""}
            row["ratio"] = row["wall_s"] / spline
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| CPU | input | method | precision | wall s | network s | consistency s | x spline |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cpu']} | {r['input']} | {r['method']} | {r['precision']} | {r['wall_s']:.2f} | "
                     f"{r['network_s']:.2f} | "
                     f"{r['consistency_s']:.2f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model names or folders")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--avx2", action="store_true", help="also as on an AVX2-only CPU (fp32)")
    ap.add_argument("--inputs", nargs="+", default=["demo", "head"], choices=["demo", "head"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    info = machine_info()
    print(describe(info))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        inputs = {}
        if "demo" in args.inputs:
            inputs["demo"] = ["--demo"]
        if "head" in args.inputs:
            inputs["head"] = [str(head_input(out_dir))]
        envs = [("native", {})] + ([("AVX2-only (simulated)", AVX2_ENV)] if args.avx2 else [])
        for label, env in envs:
            rows += bench(inputs, args.models, args.rounds, env, out_dir, label)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
