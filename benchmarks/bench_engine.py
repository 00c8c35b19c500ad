"""Benchmark of the CNN engine (not a test).

Measures, each part in its own child process so peak memory is clean:

a. raw network throughput on one large patch (voxels/s and GFLOP/s from the
   layer shapes), fp32 and bf16;
b. ``mrisr.inference.engine.enhance`` on a head-sized volume (a synthetic head or a
   NIfTI file), split into normalisation / network / stitching, with the
   network time compared with the raw throughput for the same voxels;
c. peak RSS of every part (``resource.getrusage``).

Usage::

    python benchmarks/bench_engine.py                      # ReCNN(8, 32), 197x233x189 head
    python benchmarks/bench_engine.py --input t1_interp.nii.gz --precision bf16
    python benchmarks/bench_engine.py --depth 10 --width 64 --raw-patch 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/machine.py: which CPU
from machine import describe, machine_info  # noqa: E402


def conv_flops_per_voxel(network) -> int:
    """Multiply-adds x 2 of every convolution, per output voxel."""
    from torch import nn

    total = 0
    for m in network.modules():
        if isinstance(m, nn.Conv3d):
            k = int(np.prod(m.kernel_size))
            total += 2 * (m.in_channels // m.groups) * m.out_channels * k
    return total


def peak_rss_mb() -> float:
    """Peak resident set size of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_head(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A head-like phantom: zero air, a skull shell, brain tissue with smooth texture."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    r = np.sqrt((x / 0.8) ** 2 + (y / 0.85) ** 2 + (z / 0.8) ** 2)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 3)
    texture /= np.abs(texture).max()
    head = np.where(r < 0.85, 300.0 + 250.0 * texture, 0.0)
    head = np.where((r >= 0.85) & (r < 0.95), 120.0, head)
    head = ndimage.gaussian_filter(head.astype(np.float32), 1.0)
    head[r >= 1.0] = 0.0
    return head.astype(np.float32)


def build_network(depth: int, width: int, seed: int = 0):
    import torch

    from mrisr.archs.recnn import ReCNN

    torch.manual_seed(seed)
    return ReCNN(depth=depth, width=width).eval()


def part_raw(args: argparse.Namespace, precision: str) -> dict:
    """(a) throughput of one forward pass on a ``raw_patch`` cube."""
    import torch

    from mrisr.inference.device import autocast

    if args.threads:
        torch.set_num_threads(args.threads)
    net = build_network(args.depth, args.width).to(memory_format=torch.channels_last_3d)
    n = args.raw_patch
    x = torch.rand(1, 1, n, n, n).contiguous(memory_format=torch.channels_last_3d)
    dev = torch.device("cpu")
    times = []
    with torch.inference_mode():
        for i in range(args.repeats + 1):
            t0 = time.perf_counter()
            with autocast(dev, precision):
                net(x).float()
            if i:  # the first call builds the oneDNN primitives
                times.append(time.perf_counter() - t0)
    best = min(times)
    vps = n ** 3 / best
    return {"part": "raw", "precision": precision, "patch": [n] * 3, "seconds": best,
            "voxels_per_s": vps, "gflop_per_s": vps * conv_flops_per_voxel(net) / 1e9,
            "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads()}


def load_input(args: argparse.Namespace) -> np.ndarray:
    if args.input:
        import nibabel as nib

        return np.asarray(nib.load(args.input).dataobj, dtype=np.float32)
    return synthetic_head(tuple(args.shape))


def part_enhance(args: argparse.Namespace, precision: str) -> dict:
    """(b) enhance on the head-sized volume, with its time split."""
    import torch

    from mrisr.inference.engine import enhance
    from mrisr.inference.model_card import LoadedModel, example_card

    data = load_input(args)
    rss_input = peak_rss_mb()
    net = build_network(args.depth, args.width)
    card = example_card(receptive_radius=net.receptive_radius, architecture={"name": "recnn", "params": net.config()})
    model = LoadedModel("bench", card, net, "0" * 64, None)
    t0 = time.perf_counter()
    out, st = enhance(data, model, device="cpu", precision=precision, patch_size=args.patch_size,
                      batch_size=args.batch_size, threads=args.threads)
    wall = time.perf_counter() - t0
    return {"part": "enhance", "precision": precision, "shape": list(data.shape), "voxels": int(data.size),
            "patch": list(st.patch_size), "halo": st.halo, "batch": st.batch_size, "patches": st.n_patches,
            "skipped": st.n_skipped, "network_voxels": st.network_voxels, "scale": st.scale,
            "seconds_total": wall, "seconds_normalise": st.seconds_normalise,
            "seconds_network": st.seconds_network, "seconds_stitch": st.seconds_stitch,
            "seconds_other": wall - st.seconds_normalise - st.seconds_network - st.seconds_stitch,
            "input_mb": data.nbytes / 2**20, "output_mb": out.nbytes / 2**20,
            "peak_rss_mb": peak_rss_mb(), "rss_after_input_mb": rss_input, "threads": torch.get_num_threads()}


def run_child(args: argparse.Namespace, part: str, precision: str) -> dict:
    cmd = [sys.executable, __file__, "--_part", part, "--_precision", precision] + args.passthrough
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(raw: dict[str, dict], enh: dict[str, dict]) -> str:
    lines = ["| precision | raw Mvox/s | raw GFLOP/s | raw peak RSS MB |", "|---|---|---|---|"]
    for p, r in raw.items():
        lines.append(f"| {p} | {r['voxels_per_s'] / 1e6:.3f} | {r['gflop_per_s']:.0f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", "| precision | patch | patches (skipped) | total s | normalise s | network s | stitch s | other s "
              "| net/raw (same net voxels) | net/raw (output voxels) | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p, e in enh.items():
        vps = raw[p]["voxels_per_s"] if p in raw else float("nan")
        same = e["seconds_network"] / (e["network_voxels"] / vps)
        outv = e["seconds_network"] / (e["voxels"] / vps)
        lines.append(f"| {p} | {'x'.join(map(str, e['patch']))} | {e['patches']} ({e['skipped']}) "
                     f"| {e['seconds_total']:.2f} | {e['seconds_normalise']:.2f} | {e['seconds_network']:.2f} "
                     f"| {e['seconds_stitch']:.2f} | {e['seconds_other']:.2f} | {same:.2f} | {outv:.2f} "
                     f"| {e['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--raw-patch", type=int, default=96, help="cube side for the raw throughput (a)")
    ap.add_argument("--repeats", type=int, default=2, help="timed raw passes after one warm-up")
    ap.add_argument("--shape", type=int, nargs=3, default=[197, 233, 189], help="synthetic head shape")
    ap.add_argument("--input", help="NIfTI volume to enhance instead of the synthetic head")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--patch-size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-raw", action="store_true")
    ap.add_argument("--json", help="also write all results to this file")
    ap.add_argument("--_part", help=argparse.SUPPRESS)
    ap.add_argument("--_precision", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    raw_argv = sys.argv[1:] if argv is None else argv
    skip = {"--_part", "--_precision"}
    args.passthrough = [a for i, a in enumerate(raw_argv) if a not in skip and (i == 0 or raw_argv[i - 1] not in skip)]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args._part:
        fn = part_raw if args._part == "raw" else part_enhance
        print(json.dumps(fn(args, args._precision)))
        return
    info = machine_info()
    print(f"# {describe(info)}; ReCNN(depth={args.depth}, width={args.width})", flush=True)
    raw = {} if args.skip_raw else {p: run_child(args, "raw", p) for p in args.precision}
    enh = {p: run_child(args, "enhance", p) for p in args.precision}
    print(report(raw, enh))
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"machine": info, "raw": raw, "enhance": enh, "args": vars(args)}, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
