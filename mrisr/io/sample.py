"""The sample volume that ships with mrisr, for first runs and examples.

``sample_t1_2mm.nii.gz`` is the MNI ICBM152 2009a T1 template block-averaged
to 2 mm with 1% Rician noise (``tools/make_sample.py``); its copyright notice
is in ``mrisr/data/NOTICE``.

Example:
    >>> sample_path().name
    'sample_t1_2mm.nii.gz'
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

SAMPLE = "sample_t1_2mm.nii.gz"


def sample_path() -> Path:
    """Path of the shipped 2 mm sample T1 volume."""
    return Path(str(importlib.resources.files("mrisr.data") / SAMPLE))
