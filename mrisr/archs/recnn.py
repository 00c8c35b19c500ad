"""Residual 3D CNN of Pham et al. (ReCNN).

Pham et al., "Multiscale brain MRI super-resolution using deep 3D
convolutional networks", section 3 (baseline 10L-ReCNN: 3x3x3 convolutions,
64 filters, ReLU, MSRA initialisation, residual learning of ``X - Z`` where
``Z`` is the spline-interpolated input). Depth and width are parameters; the
shipped models choose them by measurement.

The network returns only the residual ``network(Z)``; the engine adds it to
``Z`` in float32 so that reduced-precision convolutions never touch the
interpolated image itself.
"""

from __future__ import annotations

import torch
from torch import nn


class ReCNN(nn.Module):
    """``depth`` convolution layers (3x3x3 by default), ReLU between them.

    Args:
        depth: Number of convolution layers (>= 2).
        width: Filters per hidden layer.
        kernel: Cubic kernel size (odd).
        in_channels: Input channels (1; 2 for the guided variant).

    Example:
        >>> net = ReCNN(depth=3, width=8)
        >>> net(torch.zeros(1, 1, 9, 9, 9)).shape
        torch.Size([1, 1, 9, 9, 9])
        >>> net.receptive_radius
        3
    """

    def __init__(self, depth: int = 20, width: int = 64, kernel: int = 3, in_channels: int = 1) -> None:
        super().__init__()
        if depth < 2 or width < 1 or kernel % 2 == 0:
            raise ValueError(f"invalid ReCNN shape depth={depth} width={width} kernel={kernel}")
        self.depth, self.width, self.kernel, self.in_channels = depth, width, kernel, in_channels
        pad = kernel // 2
        layers: list[nn.Module] = [nn.Conv3d(in_channels, width, kernel, padding=pad), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv3d(width, width, kernel, padding=pad), nn.ReLU(inplace=True)]
        layers.append(nn.Conv3d(width, 1, kernel, padding=pad))
        self.body = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MSRA (He) initialisation, zero biases; last layer scaled down so the
        untrained network starts close to the identity (output ~ input)."""
        convs = [m for m in self.body if isinstance(m, nn.Conv3d)]
        for m in convs:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
        with torch.no_grad():
            convs[-1].weight.mul_(0.1)

    @property
    def receptive_radius(self) -> int:
        """Voxels of context on each side that influence one output voxel."""
        return self.depth * (self.kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual prediction for input ``x`` of shape ``(B, C, X, Y, Z)``."""
        return self.body(x)

    def config(self) -> dict:
        """Constructor arguments, as stored in model cards."""
        return {"depth": self.depth, "width": self.width, "kernel": self.kernel, "in_channels": self.in_channels}
