"""Compute device, precision, threads and memory budget for the engine.

- device ``auto`` picks CUDA, then MPS, then the CPU.
- precision ``auto`` picks bfloat16 on CPUs with native bf16 (AVX-512 BF16
  or AMX, and oneDNN not capped below it by ``ONEDNN_MAX_CPU_ISA``), else
  float32; a forced bf16 on another CPU runs (emulated, far slower) with
  :func:`cpu_bf16_warning`; on CUDA bfloat16 where the GPU supports
  it, else float16; float32 on MPS. float16 on the CPU is refused.
- Only the convolutions run in reduced precision: the engine adds the
  predicted residual to the float32 input in float32.

Example:
    >>> resolve_precision("fp32", resolve_device("cpu"))
    'fp32'
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from mrisr.errors import MrisrError, look_up_option
from mrisr.options import DEVICES, PRECISIONS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

#: Upper bound of the CPU memory budget for one batch (bytes).
CPU_BUDGET_CAP = 768 * 2**20  # keeps a 256^3 CNN job under ~1.5 GB resident (docs/benchmarks.md)
#: Fraction of free GPU memory one batch may use.
CUDA_BUDGET_FRACTION = 0.6


def cuda_available() -> bool:
    """Whether a CUDA device can be used."""
    return bool(torch.cuda.is_available())


def mps_available() -> bool:
    """Whether an Apple MPS device can be used."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|mps`` (or ``cuda:1``) into an available device.

    Raises:
        MrisrError: for an unknown name, or a device this machine lacks.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    text = str(device)
    kind, _, index = text.partition(":")
    look_up_option(kind, DEVICES, "device")
    if index and (kind != "cuda" or not index.isdigit()):
        raise MrisrError(f"invalid device {text!r}; valid: {', '.join(DEVICES)} or cuda:N")
    if kind == "auto":
        kind = "cuda" if cuda_available() else "mps" if mps_available() else "cpu"
    available = {"cpu": True, "cuda": cuda_available, "mps": mps_available}[kind]
    if callable(available) and not available():
        usable = ["auto", "cpu"] + [k for k, f in (("cuda", cuda_available), ("mps", mps_available)) if f()]
        raise MrisrError(f"device {kind!r} is not available on this machine (torch {torch.__version__}); "
                         f"usable here: {', '.join(usable)}")
    if kind == "cuda" and index:
        n = torch.cuda.device_count()
        if int(index) >= n:
            raise MrisrError(f"device {text!r} does not exist; this machine has {n} CUDA device(s)")
        return torch.device("cuda", int(index))
    return torch.device(kind)


#: oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) below native bf16: with one of these oneDNN emulates bf16
#: (or refuses it), however capable the processor is.
ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_MIC", "AVX512_MIC_4OPS",
                            "AVX512_CORE", "AVX512_CORE_VNNI")
#: Environment variables that cap oneDNN's instruction set, in the order oneDNN reads them.
ONEDNN_ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def onednn_max_isa() -> str:
    """The instruction-set cap oneDNN was given (``ONEDNN_MAX_CPU_ISA``, else ``DNNL_MAX_CPU_ISA``), upper
    case; ``""`` when there is none.

    Example:
        >>> import os
        >>> os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper() == onednn_max_isa()
        True
    """
    for name in ONEDNN_ISA_VARIABLES:
        value = os.environ.get(name, "").strip().upper()
        if value:
            return value
    return ""


def onednn_allows_bf16() -> bool:
    """Whether oneDNN's instruction-set cap leaves native bf16 available: no cap, ``DEFAULT``, ``ALL``, or
    ``AVX512_CORE_BF16`` and above (``AVX512_CORE_AMX*``, ``AVX10_1_512*``...). A name oneDNN does not know
    is ignored by oneDNN, and here too.

    Example:
        >>> onednn_allows_bf16() == (onednn_max_isa() not in ONEDNN_ISAS_WITHOUT_BF16)
        True
    """
    return onednn_max_isa() not in ONEDNN_ISAS_WITHOUT_BF16


def cpu_supports_bf16() -> bool:
    """Whether bfloat16 oneDNN convolutions run natively here: the processor has AVX-512 BF16 or AMX tiles
    (torch's cpuinfo probes) *and* oneDNN is not capped below them (:func:`onednn_allows_bf16`, e.g.
    ``ONEDNN_MAX_CPU_ISA=AVX2``, which makes such a machine behave like an AVX2-only one)."""
    if not torch.backends.mkldnn.is_available() or not onednn_allows_bf16():
        return False
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # noqa: BLE001 - private probes may fail on exotic builds
            continue
    return False


def cpu_bf16_warning(device: torch.device, precision: str) -> str:
    """A one-line warning when ``precision`` is bf16 on a CPU without native bf16 ("" otherwise).

    Example:
        >>> cpu_bf16_warning(torch.device("cpu"), "fp32")
        ''
    """
    if device.type != "cpu" or precision != "bf16" or cpu_supports_bf16():
        return ""
    return ("this CPU has no native bf16 (AVX-512 BF16 or AMX), so bf16 is emulated and far slower than fp32 "
            "(176x measured on an AVX2-only EPYC); use --precision fp32 (or auto, which picks fp32 here)")


def cuda_supports_bf16(device: torch.device) -> bool:
    """Whether the CUDA device computes bfloat16 natively."""
    try:
        return bool(torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001
        return False


def describe_devices() -> str:
    """One line naming the usable devices and what ``auto`` would pick.

    Example:
        >>> describe_devices().startswith("cpu")
        True
    """
    parts = [f"cpu ({torch.get_num_threads()} threads{', bf16' if cpu_supports_bf16() else ''})"]
    if cuda_available():
        for i in range(torch.cuda.device_count()):
            parts.append(f"cuda:{i} ({torch.cuda.get_device_name(i)})")
    if mps_available():
        parts.append("mps")
    auto = resolve_device("auto")
    return f"{', '.join(parts)}; auto = {auto.type}, precision {resolve_precision('auto', auto)}"


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``auto|fp32|bf16|fp16`` into the precision used on ``device``.

    Raises:
        MrisrError: for an unknown name, fp16 on the CPU, or bf16 on a GPU
            that lacks it.

    Example:
        >>> resolve_precision("auto", torch.device("mps"))
        'fp32'
    """
    look_up_option(precision, PRECISIONS, "precision")
    kind = device.type
    if precision == "auto":
        if kind == "cpu":
            return "bf16" if cpu_supports_bf16() else "fp32"
        if kind == "cuda":
            return "bf16" if cuda_supports_bf16(device) else "fp16"
        return "fp32"
    if precision == "fp16" and kind == "cpu":
        raise MrisrError("precision 'fp16' is not supported on the CPU (half-precision convolutions are slow or "
                         "missing there); use 'bf16', 'fp32' or 'auto'")
    if precision == "bf16" and kind == "cuda" and not cuda_supports_bf16(device):
        raise MrisrError("precision 'bf16' is not supported by this GPU; use 'fp16', 'fp32' or 'auto'")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` (a no-op for fp32).

    Example:
        >>> with autocast(torch.device("cpu"), "fp32"):
        ...     pass
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Set ``torch.set_num_threads`` inside the block and restore it after.

    Raises:
        MrisrError: if ``threads`` is not a positive integer.

    Example:
        >>> with cpu_threads(1):
        ...     torch.get_num_threads()
        1
    """
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise MrisrError(f"threads must be a positive integer, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def available_ram() -> int:
    """Available RAM in bytes (``MemAvailable`` of /proc/meminfo, else sysconf)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return 8 * 1024**3


def memory_budget(device: torch.device) -> int:
    """Bytes one batch of patches may use on ``device``.

    CUDA: a fraction of the free memory (``torch.cuda.mem_get_info``); CPU and
    MPS (unified memory): ``min(available RAM / 4, 768 MB)``.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_BUDGET_FRACTION)
    return int(min(available_ram() // 4, CPU_BUDGET_CAP))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a GPU out-of-memory error worth retrying smaller."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def empty_cache(device: torch.device) -> None:
    """Release cached allocator memory on ``device`` (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
