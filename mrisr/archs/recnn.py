"""Residual 3D CNN of Pham et al. (ReCNN).

Pham et al., "Multiscale brain MRI super-resolution using deep 3D
convolutional networks", section 3 (baseline 10L-ReCNN: 3x3x3 convolutions,
64 filters, ReLU, MSRA initialisation, residual learning of ``X - Z`` where
``Z`` is the spline-interpolated input). Depth and width are parameters; the
shipped models choose them by measurement.

The network returns only the residual ``network(Z)``; the engine adds it to
``Z`` in float32 so that reduced-precision convolutions never touch the
interpolated image itself.

Optionally (``cond_dim=3``) the network is conditioned on the upsampling
factor along each voxel axis, which ``upscale`` always knows (input voxel size
over output voxel size): ``log2`` of the factors goes through a linear layer
that adds a per-channel bias after the first convolution. The network then
knows which axes were acquired coarsely and by how much, instead of having to
guess it from the image; the point-spread function stays unknown to it.

Presets (:data:`PRESETS`): ``pham-10l`` (the paper's baseline 10L-ReCNN,
section 3.2) and ``pham-20l`` (20L-ReCNN, the depth the paper recommends in
section 7), both 64 filters of 3x3x3: 888,769 and 1,995,329 parameters,
receptive radius 10 and 20 voxels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn


class ReCNN(nn.Module):
    """``depth`` convolution layers (3x3x3 by default), ReLU between them.

    Args:
        depth: Number of convolution layers (>= 2).
        width: Filters per hidden layer.
        kernel: Cubic kernel size (odd).
        in_channels: Input channels (1; 2 for the guided variant).
        cond_dim: 3 to condition on the per-axis upsampling factors, 0 for none.

    Example:
        >>> net = ReCNN(depth=3, width=8)
        >>> net(torch.zeros(1, 1, 9, 9, 9)).shape
        torch.Size([1, 1, 9, 9, 9])
        >>> net.receptive_radius
        3
    """

    #: Named constructor arguments (see the module docstring).
    PRESETS: ClassVar[dict[str, dict]] = {"pham-10l": {"depth": 10, "width": 64, "kernel": 3},
                                          "pham-20l": {"depth": 20, "width": 64, "kernel": 3}}
    #: Input is the interpolated volume on the output grid (no learned upsampling).
    upsampling = None

    def __init__(self, depth: int = 20, width: int = 64, kernel: int = 3, in_channels: int = 1,
                 cond_dim: int = 0) -> None:
        super().__init__()
        if depth < 2 or width < 1 or kernel % 2 == 0 or cond_dim not in (0, 3):
            raise ValueError(f"invalid ReCNN shape depth={depth} width={width} kernel={kernel} cond_dim={cond_dim}")
        self.depth, self.width, self.kernel, self.in_channels = depth, width, kernel, in_channels
        self.cond_dim = cond_dim
        self.cond = nn.Linear(cond_dim, width) if cond_dim else None
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
            nn.init.zeros_(m.bias)  # type: ignore[arg-type]  # the layers have biases
        with torch.no_grad():
            convs[-1].weight.mul_(0.1)
        if self.cond is not None:
            nn.init.normal_(self.cond.weight, std=0.1)
            nn.init.zeros_(self.cond.bias)

    @property
    def receptive_radius(self) -> int:
        """Voxels of context on each side that influence one output voxel."""
        return self.depth * (self.kernel // 2)

    def encode_factors(self, factors: Sequence[float]) -> torch.Tensor | None:
        """Condition vector ``(1, 3)`` for per-axis upsampling ``factors`` (None if unconditioned).

        Factors below 1 (an axis being made coarser) count as 1.

        Example:
            >>> ReCNN(3, 4, cond_dim=3).encode_factors([1, 1, 4]).tolist()
            [[0.0, 0.0, 2.0]]
        """
        if not self.cond_dim:
            return None
        if len(factors) != self.cond_dim:
            raise ValueError(f"expected {self.cond_dim} factors, got {list(factors)}")
        return torch.tensor([[math.log2(max(1.0, float(f))) for f in factors]], dtype=torch.float32)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Residual prediction for input ``x`` of shape ``(B, C, X, Y, Z)``.

        ``cond`` (``(B, 3)`` or ``(1, 3)``, from :meth:`encode_factors`) is
        required when the network is conditioned, ignored otherwise.
        """
        if self.cond is None:
            return self.body(x)
        if cond is None:
            raise ValueError("this network is conditioned on the upsampling factors: pass cond")
        h = self.body[0](x)
        bias = self.cond(cond.to(device=h.device, dtype=self.cond.weight.dtype))
        h = h + bias.to(h.dtype)[:, :, None, None, None]
        return self.body[1:](h)

    def config(self) -> dict:
        """Constructor arguments, as stored in model cards."""
        return {"depth": self.depth, "width": self.width, "kernel": self.kernel, "in_channels": self.in_channels,
                "cond_dim": self.cond_dim}


#: Named constructor arguments of :class:`ReCNN`.
PRESETS = ReCNN.PRESETS
