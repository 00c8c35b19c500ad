"""3D WGAN critics (discriminators) for adversarial training.

* :class:`SRGANCritic`: mDCSRN-GAN's discriminator. Chen et al., "MRI
  Super-Resolution with GAN and 3D Multi-Level DenseNet", section 3.3
  (GAN-guided training): built on SRGAN's discriminator (Ledig et al.): a
  3x3 convolution with 64 filters and leaky ReLU, then seven convolution,
  normalisation, leaky ReLU blocks with 64, 128, 128, 256, 256, 512, 512
  filters and strides 2, 1, 2, 1, 2, 1, 2, then dense layers of 1024 and 1
  units. WGAN-GP, so batch normalisation is replaced by layer normalisation
  (as the paper says, following Gulrajani et al.) and there is no sigmoid.
  Here in 3D (3x3x3 filters); layer normalisation over each sample's
  channels and voxels is ``GroupNorm(1, C)``.
* :class:`LyuCritic`: Lyu et al., "Super-resolution MRI through Deep
  Learning", section II.2. ``kind="cpce"``: GAN-CPCE's discriminator, 6
  convolutional layers with 64, 64, 128, 128, 256, 256 3x3 filters, stride 1
  for odd and 2 for even layers, then dense layers of 1024 and 1 units,
  leaky ReLU after every layer but the last. ``kind="circle"``: GAN-CIRCLE's
  (their Fig. 3, not in the text we hold): 4 stages of convolution (with
  bias), instance normalisation and leaky ReLU, then two dense layers; our
  choice is 3x3x3 filters with 64, 128, 256, 512 filters and stride 2
  (instance normalisation needs more than one voxel after the four halvings:
  patches longer than 16 voxels along some axis).

The dense layer after the convolutions needs a fixed input size: pass the
training ``patch_size`` to flatten the last feature maps as the papers do. In
3D this layer is large (512 x 3^3 x 1024 = 14M weights for mDCSRN-GAN's
40^3 patches), so ``patch_size=None`` (the default) instead averages the last
feature maps over the voxels first (global average pooling), which works for
any patch size; a deviation from the papers.

The leaky ReLU slope is 0.2 (SRGAN's; Lyu et al. do not give one). A
critic's output is one unbounded score per sample, shape ``(B,)``. The
critics are training-only and have no ``receptive_radius``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.errors import look_up_option


def _side_after(n: int, strides: Sequence[int]) -> int:
    for s in strides:
        n = (n - 1) // s + 1  # 3x3x3, padding 1
    return n


def _patch(patch_size: int | Sequence[int] | None) -> list[int] | None:
    if patch_size is None:
        return None
    sides = [patch_size] * 3 if isinstance(patch_size, int) else [int(p) for p in patch_size]
    if len(sides) != 3 or min(sides) < 1:
        raise ValueError(f"patch_size must be None, one positive integer or three, got {patch_size!r}")
    return sides


class _Critic(nn.Module):
    """Convolution stack plus dense head shared by the critics."""

    def __init__(self, in_channels: int, widths: Sequence[int], strides: Sequence[int], norm: str | None,
                 patch_size: int | Sequence[int] | None, slope: float) -> None:
        super().__init__()
        self.slope, self.patch = float(slope), _patch(patch_size)
        chans = [in_channels, *widths]
        self.convs = nn.ModuleList(nn.Conv3d(a, b, 3, stride=s, padding=1)
                                   for a, b, s in zip(chans[:-1], chans[1:], strides))
        self.norms = nn.ModuleList(self._norm(norm, w, i) for i, w in enumerate(widths))
        flat = widths[-1] * (math.prod(_side_after(n, strides) for n in self.patch) if self.patch else 1)
        self.dense = nn.Linear(flat, 1024)
        self.score = nn.Linear(1024, 1)

    @staticmethod
    def _norm(kind: str | None, channels: int, index: int) -> nn.Module:
        if kind == "layer" and index > 0:  # SRGAN: no normalisation after the first convolution
            return nn.GroupNorm(1, channels)
        if kind == "instance":
            return nn.InstanceNorm3d(channels, affine=True)
        return nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One score per sample, ``(B,)``."""
        if self.patch is not None and list(x.shape[2:]) != self.patch:
            raise ValueError(f"this critic takes patches of {self.patch} voxels, got {list(x.shape[2:])}")
        h = x
        for conv, norm in zip(self.convs, self.norms):
            h = F.leaky_relu(norm(conv(h)), self.slope)
        h = h.flatten(1) if self.patch is not None else h.mean(dim=(2, 3, 4))
        return self.score(F.leaky_relu(self.dense(h), self.slope)).squeeze(1)


class SRGANCritic(_Critic):
    """SRGAN-style 3D critic with layer normalisation (mDCSRN-GAN).

    Args:
        in_channels: Input channels.
        width: Filters of the first layers (64); later layers 2x, 4x, 8x.
        patch_size: Training patch side(s) to flatten as the paper, or None
            for global average pooling (any size).
        slope: Leaky ReLU slope.

    Example:
        >>> SRGANCritic(width=2)(torch.zeros(3, 1, 8, 8, 8)).shape
        torch.Size([3])
    """

    PRESETS: ClassVar[dict[str, dict]] = {"chen": {"width": 64}}

    def __init__(self, in_channels: int = 1, width: int = 64, patch_size: int | Sequence[int] | None = None,
                 slope: float = 0.2) -> None:
        widths = [width, width, 2 * width, 2 * width, 4 * width, 4 * width, 8 * width, 8 * width]
        super().__init__(in_channels, widths, [1, 2, 1, 2, 1, 2, 1, 2], "layer", patch_size, slope)
        self.in_channels, self.width = int(in_channels), int(width)

    def config(self) -> dict:
        """Constructor arguments."""
        return {"in_channels": self.in_channels, "width": self.width, "patch_size": self.patch, "slope": self.slope}


class LyuCritic(_Critic):
    """Lyu et al.'s critics: ``kind="cpce"`` (GAN-CPCE) or ``"circle"`` (GAN-CIRCLE).

    Args:
        kind: ``cpce`` or ``circle``.
        in_channels: Input channels.
        width: Filters of the first layer (64); later layers 2x, 4x (and 8x).
        patch_size: Training patch side(s) to flatten as the paper, or None
            for global average pooling (any size).
        slope: Leaky ReLU slope.

    Example:
        >>> LyuCritic("circle", width=2, patch_size=20)(torch.zeros(2, 1, 20, 20, 20)).shape
        torch.Size([2])
    """

    KINDS = ("cpce", "circle")
    PRESETS: ClassVar[dict[str, dict]] = {"gan-cpce": {"kind": "cpce", "width": 64},
                                          "gan-circle": {"kind": "circle", "width": 64}}

    def __init__(self, kind: str = "cpce", in_channels: int = 1, width: int = 64,
                 patch_size: int | Sequence[int] | None = None, slope: float = 0.2) -> None:
        look_up_option(kind, self.KINDS, "critic kind")
        spec: tuple[list[int], list[int], str | None]
        if kind == "cpce":
            spec = ([width, width, 2 * width, 2 * width, 4 * width, 4 * width], [1, 2, 1, 2, 1, 2], None)
        else:
            spec = ([width, 2 * width, 4 * width, 8 * width], [2, 2, 2, 2], "instance")
        super().__init__(in_channels, spec[0], spec[1], spec[2], patch_size, slope)
        self.kind, self.in_channels, self.width = kind, int(in_channels), int(width)

    def config(self) -> dict:
        """Constructor arguments."""
        return {"kind": self.kind, "in_channels": self.in_channels, "width": self.width, "patch_size": self.patch,
                "slope": self.slope}
