"""The in-memory image every part of mrisr works on.

One convention inside mrisr: RAS world coordinates (mm), voxel centres at
integer indices, a 4x4 float64 affine, data as float32 with the three spatial
axes first (a 4th axis holds volumes of a time series). Readers convert to it
at the I/O boundary (``mrisr.io.read``) and the writer (``mrisr.io.writer``) converts
back; nothing in between deals with LPS or file formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Volume:
    """A 3D or 4D image in mrisr's internal convention.

    Attributes:
        data: float32 array, shape ``(X, Y, Z)`` or ``(X, Y, Z, T)``.
        affine: 4x4 float64 voxel-to-RAS affine (voxel centres).
        header: The source NIfTI header when read from NIfTI (copied into the
            output), else ``None``.
        path: Where it was read from, if anywhere.
        source_dtype: On-disk data type (``--dtype input`` casts back to it).
        warnings: Plain-language warnings raised while reading.
        meta: Extra facts from the reader (series UID, description, TR...).
    """

    data: np.ndarray
    affine: np.ndarray
    header: object | None = None
    path: Path | None = None
    source_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    warnings: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """The three spatial sizes."""
        return tuple(int(v) for v in self.data.shape[:3])  # type: ignore[return-value]

    @property
    def n_volumes(self) -> int:
        """Number of 3D volumes (1 for a 3D image)."""
        return 1 if self.data.ndim == 3 else int(self.data.shape[3])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel sizes in mm (norms of the affine's columns)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)
