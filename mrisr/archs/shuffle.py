"""Sub-pixel (pixel shuffle) upsampling of 3D feature maps, per axis.

Shi et al.'s sub-pixel layer rearranges ``r`` (1D) or ``r * r`` (2D) channels
into a block of voxels; Georgescu et al. (section III.A) use it on two axes
and, as a layer of their own, on one axis. :func:`pixel_shuffle_3d` takes one
integer factor per axis, so both cases (and isotropic 3D) are one function.
Channel ``c * sx*sy*sz + (i*sy + j)*sz + k`` goes to offset ``(i, j, k)`` of
each block of output channel ``c``; with ``sz = 1`` this is
:func:`torch.nn.functional.pixel_shuffle` applied to the first two axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def pixel_shuffle_3d(x: torch.Tensor, scale: Sequence[int]) -> torch.Tensor:
    """``(B, C*sx*sy*sz, X, Y, Z)`` -> ``(B, C, X*sx, Y*sy, Z*sz)``.

    Raises:
        ValueError: if the channels are not a multiple of ``sx*sy*sz``.

    Example:
        >>> x = torch.arange(4.0).reshape(1, 4, 1, 1, 1)
        >>> pixel_shuffle_3d(x, (1, 1, 4)).flatten().tolist()
        [0.0, 1.0, 2.0, 3.0]
        >>> pixel_shuffle_3d(x, (2, 2, 1))[0, 0, :, :, 0].tolist()
        [[0.0, 1.0], [2.0, 3.0]]
    """
    sx, sy, sz = (int(s) for s in scale)
    b, c, nx, ny, nz = x.shape
    block = sx * sy * sz
    if c % block:
        raise ValueError(f"pixel_shuffle_3d: {c} channels are not a multiple of {math.prod((sx, sy, sz))}")
    x = x.reshape(b, c // block, sx, sy, sz, nx, ny, nz)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c // block, nx * sx, ny * sy, nz * sz)
