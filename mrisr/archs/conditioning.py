"""Upsampling-factor conditioning shared by the interpolated-input networks.

The same scheme as :class:`mrisr.archs.recnn.ReCNN` (``cond_dim=3``):
``log2`` of the per-axis upsampling factors (input voxel size over output
voxel size, below 1 counted as 1) goes through a linear layer that adds a
per-channel bias to the output of a network's first convolution. The bias is
the same at every voxel, so it changes neither the receptive field nor the
exactness of tiled inference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def check_cond_dim(cond_dim: int) -> int:
    """``cond_dim`` if it is 0 (unconditioned) or 3 (one factor per axis).

    Raises:
        ValueError: for any other value.

    Example:
        >>> check_cond_dim(3)
        3
    """
    if isinstance(cond_dim, bool) or cond_dim not in (0, 3):
        raise ValueError(f"cond_dim must be 0 or 3, got {cond_dim!r}")
    return int(cond_dim)


def encode_factors(factors: Sequence[float], cond_dim: int = 3) -> torch.Tensor:
    """Condition vector ``(1, cond_dim)``: ``log2`` of the factors (at least 1).

    Example:
        >>> encode_factors([1, 2, 4]).tolist()
        [[0.0, 1.0, 2.0]]
    """
    if len(factors) != cond_dim:
        raise ValueError(f"expected {cond_dim} factors, got {list(factors)}")
    return torch.tensor([[math.log2(max(1.0, float(f))) for f in factors]], dtype=torch.float32)


class FactorBias(nn.Module):
    """Per-channel bias from the condition vector, added to a feature map.

    Args:
        cond_dim: Length of the condition vector (3).
        channels: Channels of the feature map it is added to.

    Example:
        >>> fb = FactorBias(3, 4)
        >>> h = torch.zeros(2, 4, 3, 3, 3)
        >>> fb(h, encode_factors([1, 1, 1])).abs().max().item()  # log2(1) = 0 and zero bias
        0.0
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(cond_dim, channels)
        nn.init.normal_(self.linear.weight, std=0.1)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """``h`` plus the bias of ``cond`` (``(B, cond_dim)`` or ``(1, cond_dim)``)."""
        if cond is None:
            raise ValueError("this network is conditioned on the upsampling factors: pass cond")
        bias = self.linear(cond.to(device=h.device, dtype=self.linear.weight.dtype))
        return h + bias.to(h.dtype)[:, :, None, None, None]
