"""GPU benchmark of the default model (not a test): network throughput, end-to-end time, CPU agreement.

On a CUDA machine, in under 5 minutes (``--budget-s``, default 270 s; whatever does not fit is listed as
not run):

a. **network**: Mvox/s of the default model's forward pass on ``--patch``^3 patches (96) for fp16, bf16
   and fp32, channels-last off and on, batch sizes 1, 2 and 4 (one warm-up call, then the median of
   ``--repeat`` timed calls, each ended by ``torch.cuda.synchronize``);
b. **end to end**: seconds of ``mrisr.upscale`` for a 256^3 output (a synthetic 2 mm head phantom of
   128^3 upscaled to 1 mm, default device and precision), median of ``--repeat`` after a warm-up, next
   to the spline-only time;
c. **CPU agreement**: ``mrisr.inference.engine.enhance`` on a small phantom on CUDA (fp16, bf16, fp32) against the
   CPU in fp32; the largest difference must stay within the bf16 tolerance of the engine tests (1e-2 of
   the intensity scale).

It prints the machine line (``benchmarks/machine.py``) and one markdown table, and writes everything as
JSON to ``--out``. Without a CUDA device it prints one line saying so and exits 0 (writing
``{"skipped": ...}`` to ``--out`` if given). ``--device cpu`` runs the same code on the CPU (fp16 left out),
only to check the script itself with tiny sizes (the tests do).

Usage::

    python benchmarks/bench_gpu.py --out benchmarks/results/gpu.json
    python benchmarks/bench_gpu.py --device cpu --patch 8 --output 16 --check-side 12 --repeat 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:
    sys.path.insert(1, str(HERE.parent))  # the repository's mrisr when it is not installed

from machine import describe, machine_info  # noqa: E402

PRECISIONS = ("fp16", "bf16", "fp32")
BATCHES = (1, 2, 4)
#: Largest |CUDA - CPU fp32| accepted, relative to the intensity scale (tests/test_engine.py's bf16 tolerance).
AGREEMENT_TOL = 1e-2


def gpu_missing(device: str = "cuda") -> str:
    """Why this machine cannot run the benchmark on ``device`` ("" when it can)."""
    try:
        import torch
    except ImportError as exc:
        return f"torch is not importable ({exc})"
    if device == "cuda" and not torch.cuda.is_available():
        return f"no CUDA device here (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})"
    return ""


class Budget:
    """Wall-clock allowance shared by all measurements."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def sync_for(device: str) -> Callable[[], None]:
    """What ends a timed call on ``device`` (``torch.cuda.synchronize`` on CUDA)."""
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def precisions(device: str) -> tuple[str, ...]:
    """Precisions measured on ``device`` (fp16 is for GPUs)."""
    return PRECISIONS if device == "cuda" else tuple(p for p in PRECISIONS if p != "fp16")


def bf16_missing(device: str) -> bool:
    """Whether ``device`` lacks bf16 (a GPU before Ampere)."""
    import torch

    return device == "cuda" and not torch.cuda.is_bf16_supported()


def timed(fn: Callable[[], object], repeat: int, sync: Callable[[], None]) -> list[float]:
    """Seconds of ``repeat`` calls of ``fn`` after one warm-up, each ended by ``sync``."""
    fn()
    sync()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def phantom(shape: tuple[int, int, int], seed: int = 0):
    """bench_engine's synthetic head with a noisy background (5 grey levels: the head mask must find it)."""
    import numpy as np

    from bench_engine import synthetic_head

    noise = np.random.default_rng(seed).normal(0, 5, shape)
    return np.abs(synthetic_head(shape, seed) + noise).astype(np.float32)


def skip_reason(precision: str, device: str, budget: Budget) -> str:
    """Why a measurement is not run ("" when it is)."""
    if precision == "bf16" and bf16_missing(device):
        return "bf16 not supported by this GPU"
    return "not run (time budget)" if budget.left() < 0 else ""


def network_rows(model, args: argparse.Namespace, budget: Budget) -> list[dict]:
    """Throughput of the bare network per precision, channels-last and batch size."""
    import torch

    dev = torch.device(args.device)
    net = model.network.eval().to(dev)
    cond = None
    if getattr(net, "cond_dim", 0):
        cond = net.encode_factors([2.0, 2.0, 2.0]).to(dev)
    rows = []
    for precision in precisions(args.device):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
        for channels_last in (False, True):
            fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
            net.to(memory_format=fmt)
            for batch in BATCHES:
                row = {"measure": "network", "precision": precision, "channels_last": channels_last, "batch": batch}
                rows.append(row)
                row["note"] = skip_reason(precision, args.device, budget)
                if row["note"]:
                    continue
                x = torch.rand((batch, net.in_channels, *(args.patch,) * 3), device=dev).contiguous(memory_format=fmt)
                c = None if cond is None else cond.expand(batch, -1)

                def forward():
                    with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=precision != "fp32"):
                        return net(x) if c is None else net(x, c)  # noqa: F821 - x is bound until the del below

                try:
                    times = timed(forward, args.repeat, sync_for(args.device))
                except torch.cuda.OutOfMemoryError:
                    row["note"] = "out of memory"
                    torch.cuda.empty_cache()
                    continue
                seconds = statistics.median(times)
                row.update(seconds=seconds, value=batch * args.patch ** 3 / seconds / 1e6, unit="Mvox/s")
                del x
    net.to(memory_format=torch.contiguous_format)
    return rows


def end_to_end_rows(args: argparse.Namespace, budget: Budget) -> list[dict]:
    """Seconds of ``mrisr.upscale`` for a 256^3 output (cnn on CUDA, and the spline alone)."""
    import nibabel as nib
    import numpy as np

    import mrisr

    side = args.output // 2
    img = nib.Nifti1Image(phantom((side,) * 3, seed=1), np.diag([2.0, 2.0, 2.0, 1.0]))
    rows = []
    for method, device in (("cnn", args.device), ("spline", "cpu")):
        row = {"measure": f"upscale {args.output}^3 ({method})", "precision": "auto" if method == "cnn" else "-",
               "channels_last": None, "batch": None, "device": device}
        rows.append(row)
        row["note"] = skip_reason("-", device, budget)
        if row["note"]:
            continue
        times = timed(lambda: mrisr.upscale(img, spacing=1.0, method=method, device=device), args.repeat,
                      sync_for(args.device))
        row.update(seconds=statistics.median(times), value=statistics.median(times), unit="s",
                   note=f"median of {args.repeat} after a warm-up")
    return rows


def agreement_rows(model, args: argparse.Namespace, budget: Budget) -> list[dict]:
    """Largest |CUDA - CPU fp32| of ``enhance`` on a small phantom, relative to the intensity scale."""
    import numpy as np

    from mrisr.inference.engine import enhance

    x = phantom((args.check_side,) * 3, seed=2)
    cpu, stats = enhance(x, model, device="cpu", precision="fp32", factors=(2.0, 2.0, 2.0))
    rows = []
    for precision in precisions(args.device):
        row = {"measure": f"{args.device} vs CPU fp32", "precision": precision, "channels_last": None, "batch": None}
        rows.append(row)
        row["note"] = skip_reason(precision, args.device, budget)
        if row["note"]:
            continue
        gpu, _ = enhance(x, model, device=args.device, precision=precision, factors=(2.0, 2.0, 2.0))
        diff = float(np.abs(gpu - cpu).max()) / stats.scale
        row.update(value=diff, unit="max abs diff / scale", ok=diff <= AGREEMENT_TOL,
                   note=f"{'ok' if diff <= AGREEMENT_TOL else 'FAILED'}: tolerance {AGREEMENT_TOL:g}")
    model.network.to("cpu")
    return rows


def table(rows: list[dict]) -> str:
    """The rows as one markdown table."""
    def cell(v):
        if v is None or v == "":
            return "-"
        if isinstance(v, bool):
            return "on" if v else "off"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| measure | precision | channels-last | batch | value | unit | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(cell(r.get(k)) for k in ("measure", "precision", "channels_last", "batch",
                                                                   "value", "unit", "note")) + " |")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="write all results here as JSON")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cuda (the benchmark) or cpu (a smoke run of this script, with tiny sizes)")
    ap.add_argument("--model", help="model name or folder (default: the default model)")
    ap.add_argument("--patch", type=int, default=96, help="patch side of the throughput runs (default 96)")
    ap.add_argument("--output", type=int, default=256, help="output side of the end-to-end run (default 256)")
    ap.add_argument("--check-side", type=int, default=48, help="phantom side of the CPU agreement check")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per measurement (default 3)")
    ap.add_argument("--budget-s", type=float, default=270.0, help="stop starting measurements after this")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    missing = gpu_missing(args.device)
    if missing:
        print(f"bench_gpu: skipped: {missing}")
        if args.out:
            args.out.write_text(json.dumps({"skipped": missing, "machine": machine_info()}, indent=2) + "\n")
        return 0
    import torch

    from mrisr.inference.registry import load_model

    budget = Budget(args.budget_s)
    t0 = time.perf_counter()
    model = load_model(args.model)
    rows = network_rows(model, args, budget)
    if args.device == "cuda":
        torch.cuda.empty_cache()
    rows += end_to_end_rows(args, budget)
    rows += agreement_rows(model, args, budget)
    info = machine_info()
    print(f"# {describe(info)}")
    print(f"# model {model.name}, patch {args.patch}^3, output {args.output}^3, {time.perf_counter() - t0:.0f} s")
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps({"machine": info, "model": model.name, "args": vars(args), "rows": rows,
                                        "seconds": time.perf_counter() - t0}, indent=2, default=str) + "\n")
    failed = [r for r in rows if r.get("ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
