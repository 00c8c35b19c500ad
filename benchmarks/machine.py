"""Which machine a benchmark figure comes from: the CPU model and the flags that decide mrisr's speed.

Every bench script in this folder prints :func:`describe` above its tables and stores :func:`machine_info`
in its JSON, so a figure always says on which CPU it was taken: the model name and the AVX2 / AVX-512 /
BF16 / AMX flags from ``/proc/cpuinfo``, torch's own capability (``torch.backends.cpu``, the ATen kernels'
instruction set), oneDNN's instruction-set cap if one is set (``ONEDNN_MAX_CPU_ISA``, which makes a bf16
machine behave like an AVX2-only one), whether mrisr sees native bf16 (what ``--precision auto`` picks),
the torch threads and the load average (figures from a loaded machine are slower).

Usage (also as a script: ``python benchmarks/machine.py`` prints the line)::

    sys.path.insert(0, str(Path(__file__).resolve().parent))   # from another bench script
    from machine import describe, machine_info
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

#: ``/proc/cpuinfo`` flags reported, under the names used in the docs.
FLAGS = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512F", "avx512bw": "AVX-512BW", "avx512_vnni": "AVX-512VNNI",
         "avx512_bf16": "AVX-512BF16", "amx_tile": "AMX", "amx_bf16": "AMX-BF16", "avx_vnni": "AVX-VNNI"}


def cpu_model_and_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`FLAGS` it has (``platform.processor()`` and no flags where
    ``/proc/cpuinfo`` is missing).

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        ...     _ = fh.write("model name\\t: Some CPU\\nflags\\t\\t: fpu avx2 fma\\n")
        >>> cpu_model_and_flags(fh.name)
        ('Some CPU', ['AVX2', 'FMA'])
    """
    model, flags = "", set()
    try:
        for line in Path(cpuinfo).read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "cpu model") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), [name for f, name in FLAGS.items() if f in flags]


def machine_info() -> dict:
    """The CPU (model, flags, core count), torch's and oneDNN's view of it, threads and load, as a dict."""
    model, flags = cpu_model_and_flags()
    info: dict = {"cpu": model, "flags": flags, "cpus": os.cpu_count(), "platform": platform.platform(),
                  "python": platform.python_version(),
                  "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"),
                  "aten_cpu_capability_env": os.environ.get("ATEN_CPU_CAPABILITY")}
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        info["load_average"] = None
    try:
        import torch

        from mrisr.inference.device import cpu_supports_bf16

        info.update(torch=torch.__version__, torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    torch_threads=torch.get_num_threads(), native_bf16=cpu_supports_bf16())
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        info["torch"] = None
    return info


def describe(info: dict | None = None) -> str:
    """One line naming the CPU and its speed-relevant features, e.g. ``CPU: AMD EPYC 7B13 (AVX2, FMA), 2 cores;
    torch 2.13.0 AVX2, 2 threads; native bf16: no; load 1.2``.

    Example:
        >>> describe({"cpu": "X", "flags": ["AVX2"], "cpus": 2, "torch": "2.1", "torch_cpu_capability": "AVX2",
        ...           "torch_threads": 2, "native_bf16": False, "load_average": [1.5, 1, 1],
        ...           "onednn_max_cpu_isa": "AVX2"})
        'CPU: X (AVX2), 2 cores; torch 2.1 AVX2, 2 threads; oneDNN capped at AVX2; native bf16: no; load 1.50'
    """
    info = machine_info() if info is None else info
    parts = [f"CPU: {info['cpu']} ({', '.join(info['flags']) or 'no AVX2'}), {info['cpus']} cores"]
    if info.get("torch"):
        parts.append(f"torch {info['torch']} {info.get('torch_cpu_capability')}, {info.get('torch_threads')} threads")
    if info.get("onednn_max_cpu_isa"):
        parts.append(f"oneDNN capped at {info['onednn_max_cpu_isa']}")
    if "native_bf16" in info:
        parts.append(f"native bf16: {'yes' if info['native_bf16'] else 'no'}")
    if info.get("gpus"):
        parts.append(f"GPU: {', '.join(info['gpus'])}")
    if info.get("load_average"):
        parts.append(f"load {info['load_average'][0]:.2f}")
    return "; ".join(parts)


if __name__ == "__main__":
    print(describe())
    print(json.dumps(machine_info(), indent=2))
