"""SRCNN3D: the 3-layer baseline of Pham et al.

Pham et al., "Multiscale brain MRI super-resolution using deep 3D
convolutional networks", section 2.2 (Eq. 6 and the remark after it): SRCNN
is the baseline architecture with ``f1 = 9, f2 = 1, f3 = 5`` (cubic kernel
sides), ``n1 = 64, n2 = 32`` filters, ReLU after the first two layers, and
*no skip connection*; section 3.2 benchmarks it as SRCNN3D (their ref. [38]).
Its input is the spline-interpolated volume ``Z`` and its output the
high-resolution estimate itself.

mrisr's engine adds the network's output to ``Z``, so :meth:`SRCNN3D.forward`
returns ``srcnn(Z) - Z``: the engine's ``Z + residual`` is then exactly the
paper's ``srcnn(Z)``, and training against ``X - Z`` trains the paper's
network. Convolutions are zero-padded to keep the volume's size (the usual
"same" choice, which makes the network tileable); weights use MSRA
initialisation, as Pham et al. use for all their networks (section 3.4).

Receptive radius: ``4 + 0 + 2 = 6`` voxels. Parameters: 52,801.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from mrisr.archs.conditioning import FactorBias, check_cond_dim, encode_factors


class SRCNN3D(nn.Module):
    """Three 3D convolutions (9^3, 1^3, 5^3 by default), ReLU after the first two.

    Args:
        widths: Filters of the first two layers (``n1, n2``).
        kernels: Cubic kernel sides of the three layers (odd).
        in_channels: Input channels.
        cond_dim: 3 to condition on the per-axis upsampling factors
            (a bias after the first layer), 0 for none.

    Example:
        >>> net = SRCNN3D(widths=(4, 2))
        >>> x = torch.zeros(1, 1, 8, 8, 8)
        >>> net(x).shape, net.receptive_radius, net.upsampling
        (torch.Size([1, 1, 8, 8, 8]), 6, None)
    """

    PRESETS: ClassVar[dict[str, dict]] = {"pham": {"widths": [64, 32], "kernels": [9, 1, 5]}}
    upsampling = None

    def __init__(self, widths: Sequence[int] = (64, 32), kernels: Sequence[int] = (9, 1, 5), in_channels: int = 1,
                 cond_dim: int = 0) -> None:
        super().__init__()
        self.widths, self.kernels = [int(w) for w in widths], [int(k) for k in kernels]
        if len(self.widths) != 2 or len(self.kernels) != 3 or min(self.widths) < 1 or any(
                k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"invalid SRCNN3D shape widths={list(widths)} kernels={list(kernels)}")
        self.in_channels, self.cond_dim = int(in_channels), check_cond_dim(cond_dim)
        chans = [self.in_channels, *self.widths, 1]
        self.convs = nn.ModuleList(nn.Conv3d(chans[i], chans[i + 1], k, padding=k // 2)
                                   for i, k in enumerate(self.kernels))
        self.cond = FactorBias(cond_dim, self.widths[0]) if cond_dim else None
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")  # type: ignore[arg-type]
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]

    @property
    def receptive_radius(self) -> int:
        """Voxels of context on each side that influence one output voxel."""
        return sum(k // 2 for k in self.kernels)

    def encode_factors(self, factors: Sequence[float]) -> torch.Tensor | None:
        """Condition vector ``(1, 3)`` for per-axis upsampling ``factors`` (None if unconditioned)."""
        return encode_factors(factors, self.cond_dim) if self.cond_dim else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``srcnn(x) - x[:, :1]``: the residual the engine adds to ``x``."""
        h = self.convs[0](x)
        if self.cond is not None:
            h = self.cond(h, cond)
        h = torch.relu(self.convs[1](torch.relu(h)))
        return self.convs[2](h) - x[:, :1]

    def config(self) -> dict:
        """Constructor arguments, as stored in model cards."""
        return {"widths": list(self.widths), "kernels": list(self.kernels), "in_channels": self.in_channels,
                "cond_dim": self.cond_dim}
