"""Receptive radius, in low-resolution voxels, of networks that upsample inside.

A learned-upsampling network is described, along one axis, as a chain of
:class:`UpStage`: convolutions on the coarse grid (``lr_radius`` voxels of
context), an upsampling layer (a transposed convolution of stride ``scale``,
``kernel`` and ``padding``; a sub-pixel shuffle is the transposed convolution
with ``kernel = scale`` and ``padding = 0``), then convolutions on the fine
grid (``hr_radius`` fine voxels of context).

The receptive radius ``R`` of the chain is the smallest integer such that
every output voxel of the block of low-resolution voxel ``m`` depends only on
low-resolution voxels ``m - R`` to ``m + R``. Shifting the input by one voxel
shifts the output by the total scale, so the block of voxel 0 suffices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class UpStage:
    """Coarse convolutions, one upsampling layer, fine convolutions (one axis).

    Attributes:
        scale: Upsampling factor (stride of the upsampling layer).
        kernel: Kernel size of the upsampling layer along the axis.
        padding: Padding of the (transposed) upsampling layer.
        lr_radius: Context of the convolutions before it, in input voxels.
        hr_radius: Context of the convolutions after it, in output voxels.
    """

    scale: int
    kernel: int
    padding: int
    lr_radius: int
    hr_radius: int

    def inputs(self, lo: int, hi: int) -> tuple[int, int]:
        """Input voxels ``(first, last)`` that outputs ``lo`` to ``hi`` depend on.

        Example:
            >>> UpStage(2, 2, 0, 0, 0).inputs(0, 1)  # pixel shuffle: block 0 comes from voxel 0
            (0, 0)
        """
        lo, hi = lo - self.hr_radius, hi + self.hr_radius
        s, k, p = self.scale, self.kernel, self.padding
        # A transposed convolution writes input i to outputs i*s - p .. i*s - p + k - 1.
        return math.ceil((lo + p - k + 1) / s) - self.lr_radius, (hi + p) // s + self.lr_radius


def lr_radius(stages: Sequence[UpStage]) -> int:
    """Receptive radius, in input voxels, of ``stages`` applied in order.

    Example:
        >>> lr_radius([UpStage(scale=2, kernel=4, padding=1, lr_radius=12, hr_radius=1)])
        13
    """
    total = math.prod(st.scale for st in stages)
    radius = 0
    for j in range(total):
        lo, hi = j, j
        for st in reversed(stages):
            lo, hi = st.inputs(lo, hi)
        radius = max(radius, -lo, hi)
    return radius
