"""mrisr: super-resolution of brain MRI with exact geometry.

The public API is imported lazily so that ``import mrisr`` (and the command
line's ``--help``) does not pay for torch or SimpleITK.

Example:
    >>> import mrisr
    >>> mrisr.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "upscale": "mrisr.pipeline.upscale",
    "load_volume": "mrisr.io.read",
    "save_volume": "mrisr.io.writer",
    "Volume": "mrisr.volume",
    "target_grid": "mrisr.geometry.grid",
    "TargetGrid": "mrisr.geometry.grid",
    "resample_to_grid": "mrisr.geometry.resample",
    "degrade": "mrisr.acquisition.degrade",
    "evaluate": "mrisr.evaluation.metrics",
    "MrisrError": "mrisr.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mrisr' has no attribute {name!r}")
