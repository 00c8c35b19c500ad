"""ReCNN on a coarser lattice: the residual network computed at half resolution (space to depth).

The default residual network (:class:`~mrisr.archs.recnn.ReCNN`) runs every
layer on the output grid, so its cost grows with the output voxels. This one
(``recnn-s2d``) reads the same input, the spline-interpolated volume on the
output grid, but first folds each ``2 x 2 x 2`` block of voxels into eight
channels (the inverse of Shi et al.'s sub-pixel layer, which
:func:`~mrisr.archs.shuffle.pixel_shuffle_3d` undoes at the end), runs its
hidden layers on that lattice of an eighth of the voxels, unfolds the
prediction back onto the output grid and refines it there with two small
full-resolution layers. Nothing is lost by the folding (eight channels hold
the eight voxels), each hidden layer costs an eighth per output voxel, and
its receptive field spans twice the distance in output voxels.

The blocks are aligned to the input's first voxel: a volume with an odd
side is padded at its far end by repeating the last slice, and the result
cropped back. Tiled inference is exact when every window starts at an even
offset and is even-sized (:attr:`ReCNNS2D.stride`: the engine aligns its
tiles to it).

Conditioning on the per-axis upsampling factors is :class:`~mrisr.archs.conditioning.FactorBias`, as in ReCNN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .conditioning import FactorBias, check_cond_dim, encode_factors
from .shuffle import pixel_shuffle_3d

#: Side of the folded blocks, in output voxels.
BLOCK = 2


def pixel_unshuffle_3d(x: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """``(B, C, X, Y, Z)`` -> ``(B, C*b^3, X/b, Y/b, Z/b)``, the inverse of :func:`pixel_shuffle_3d`.

    Example:
        >>> x = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
        >>> torch.equal(pixel_shuffle_3d(pixel_unshuffle_3d(x), (2, 2, 2)), x)
        True
    """
    b, c, nx, ny, nz = x.shape
    x = x.reshape(b, c, nx // block, block, ny // block, block, nz // block, block)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * block**3, nx // block, ny // block, nz // block)


class ReCNNS2D(nn.Module):
    """Residual CNN whose hidden layers run on ``2 x 2 x 2`` blocks of the output grid.

    Args:
        depth: Convolution layers on the coarse lattice (>= 2), 3x3x3.
        width: Filters per coarse hidden layer.
        tail: Filters of the full-resolution refinement layer (0: no refinement).
        in_channels: Input channels (1; 2 for a guided variant).
        cond_dim: 3 to condition on the per-axis upsampling factors, 0 for none.

    Example:
        >>> net = ReCNNS2D(depth=3, width=8, tail=4)
        >>> net(torch.zeros(1, 1, 9, 10, 7)).shape
        torch.Size([1, 1, 9, 10, 7])
        >>> net.receptive_radius, net.stride
        (9, 2)
    """

    #: Input is the interpolated volume on the output grid (no learned upsampling).
    upsampling = None
    #: Tiles must start at multiples of this many voxels and have sides that are multiples of it.
    stride: ClassVar[int] = BLOCK

    def __init__(self, depth: int = 8, width: int = 48, tail: int = 8, in_channels: int = 1,
                 cond_dim: int = 0) -> None:
        super().__init__()
        if depth < 2 or width < 1 or tail < 0 or in_channels < 1:
            raise ValueError(f"invalid ReCNNS2D shape depth={depth} width={width} tail={tail}")
        self.depth, self.width, self.tail, self.in_channels = depth, width, tail, in_channels
        self.cond_dim = check_cond_dim(cond_dim)
        folded = in_channels * BLOCK**3
        self.head = nn.Conv3d(folded, width, 3, padding=1)
        self.cond = FactorBias(cond_dim, width) if cond_dim else None
        body: list[nn.Module] = []
        for _ in range(depth - 2):
            body += [nn.Conv3d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*body)
        self.unfold = nn.Conv3d(width, BLOCK**3, 3, padding=1)
        self.refine = (nn.Sequential(nn.Conv3d(1 + in_channels, tail, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv3d(tail, 1, 3, padding=1)) if tail else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MSRA (He) initialisation, zero biases; the coarse output layer scaled down and the refinement's
        last layer zero, so the untrained network predicts a residual close to zero."""
        convs = [m for m in self.modules() if isinstance(m, nn.Conv3d)]
        for m in convs:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)  # type: ignore[arg-type]  # the layers have biases
        with torch.no_grad():
            self.unfold.weight.mul_(0.03)
            if self.refine is not None:
                last = self.refine[-1]
                assert isinstance(last, nn.Conv3d)  # built above: for the type checker
                last.weight.zero_()

    @property
    def feature_channels(self) -> int:
        """Feature maps per output voxel at the widest point (for the engine's memory estimate): the
        refinement's at full resolution, or the two coarse maps of ``width`` channels per eight voxels."""
        return max(self.tail + 1 + self.in_channels, -(-2 * self.width // BLOCK**3))

    @property
    def receptive_radius(self) -> int:
        """Output voxels of context on each side that influence one output voxel: ``depth`` coarse layers of
        radius one block, one more voxel for the block's own extent, two refinement layers."""
        return BLOCK * self.depth + (BLOCK - 1) + (2 if self.tail else 0)

    def encode_factors(self, factors: Sequence[float]) -> torch.Tensor | None:
        """Condition vector ``(1, 3)`` for per-axis upsampling ``factors`` (None if unconditioned).

        Example:
            >>> ReCNNS2D(3, 4, cond_dim=3).encode_factors([1, 1, 4]).tolist()
            [[0.0, 0.0, 2.0]]
        """
        return encode_factors(factors, self.cond_dim) if self.cond_dim else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Residual prediction for input ``x`` of shape ``(B, C, X, Y, Z)`` (any sides)."""
        shape = x.shape[2:]
        pad = [(-n) % BLOCK for n in shape]
        xp = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate") if any(pad) else x
        h = self.head(pixel_unshuffle_3d(xp))
        if self.cond is not None:
            h = self.cond(h, cond)
        h = self.body(F.relu(h))
        r = pixel_shuffle_3d(self.unfold(h), (BLOCK,) * 3)
        if self.refine is not None:
            r = r + self.refine(torch.cat([r, xp.to(r.dtype)], dim=1))
        return r[:, :, : shape[0], : shape[1], : shape[2]]

    def config(self) -> dict:
        """Constructor arguments, as stored in model cards."""
        return {"depth": self.depth, "width": self.width, "tail": self.tail, "in_channels": self.in_channels,
                "cond_dim": self.cond_dim}
