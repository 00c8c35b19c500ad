"""RRLSRN: the robust residual-learning network of Song et al., in 3D.

Song et al., "Deep Robust Residual Network for Brain MRI Super-Resolution",
section "Methods / MR Image Super-Resolution Framework" (Eq. 1, Fig. 2b) and
"Training details": the network takes the *low-resolution* image, extracts
features at the coarse resolution with 13 convolutional layers of 64 3x3
filters and leaky ReLU (slope 0.2, zero padding), and has two transposed
convolutions (4x4, stride 2): one upsamples the features, the other the
image; the features predict the residual ``r`` that is added to the
upsampled image (``y = u x + r``). The network is initialised from, and
follows, one level of LapSRN (Lai et al., their ref. 7).

Our reading, in 3D (Song et al.'s network is 2D, for slice stacks):

* ``depth`` (13) convolutions in all: ``depth - 1`` 3x3x3 convolutions on the
  coarse grid (the first from the input channels to ``width``), then the
  feature transposed convolution and leaky ReLU, then one 3x3x3 convolution
  on the fine grid from ``width`` features to the residual (LapSRN's residual
  layer);
* one integer ``scale`` per axis (e.g. ``(2, 2, 2)`` or ``(1, 1, 4)``); the
  transposed convolutions have, per axis, kernel ``2s - s % 2`` (4 for the
  paper's s = 2, 1 for an axis that is not upsampled) and padding
  ``(kernel - s) / 2``, so the output has exactly ``s`` times the input's
  voxels and is aligned with it (cell-centred);
* the image transposed convolution is initialised to linear interpolation,
  as in LapSRN, and stays learnable; the residual layer starts small, so the
  untrained network is close to linear interpolation.

Song et al. train with Charbonnier plus gradient difference loss
(:mod:`mrisr.training.losses`). Receptive radius, in low-resolution voxels:
``depth`` for every scale of the form used here (12 coarse convolutions, plus
one voxel from the upsampling and fine convolution), computed by
:func:`mrisr.archs.receptive.lr_radius`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.archs.receptive import UpStage, lr_radius


def check_scale(scale: Sequence[int]) -> tuple[int, int, int]:
    """``scale`` as three positive integers, at least one above 1.

    Raises:
        ValueError: otherwise.

    Example:
        >>> check_scale([1, 1, 4])
        (1, 1, 4)
    """
    try:
        out = tuple(int(s) for s in scale)
        ok = len(out) == 3 and all(s >= 1 and s == v for s, v in zip(out, scale)) and max(out) > 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"scale must be three positive integers (one per axis, not all 1), got {scale!r}")
    return out  # type: ignore[return-value]


def up_kernel(scale: int) -> tuple[int, int]:
    """``(kernel, padding)`` of a transposed convolution upsampling by ``scale``.

    Example:
        >>> up_kernel(2), up_kernel(1), up_kernel(3)
        ((4, 1), (1, 0), (5, 1))
    """
    kernel = 2 * scale - scale % 2
    return kernel, (kernel - scale) // 2


def linear_kernel(scale: int) -> torch.Tensor:
    """1D linear-interpolation weights of the transposed convolution of :func:`up_kernel`.

    Example:
        >>> linear_kernel(2).tolist()
        [0.25, 0.75, 0.75, 0.25]
    """
    kernel, _ = up_kernel(scale)
    centre = scale - 1 if kernel % 2 else scale - 0.5
    return 1 - (torch.arange(kernel, dtype=torch.float64) - centre).abs() / scale


class RRLSRN(nn.Module):
    """Coarse feature extraction, transposed-convolution upsampling, residual on the fine grid.

    Args:
        scale: Integer upsampling factor per axis.
        depth: Convolution layers (``depth - 1`` coarse, 1 fine), >= 2.
        width: Filters per coarse layer.
        in_channels: Input channels (the residual is added to channel 0, upsampled).
        slope: Negative slope of the leaky ReLUs.

    Example:
        >>> net = RRLSRN(scale=(1, 1, 2), depth=3, width=4)
        >>> net(torch.zeros(1, 1, 5, 5, 5)).shape, net.receptive_radius, net.upsampling
        (torch.Size([1, 1, 5, 5, 10]), 3, (1, 1, 2))
    """

    PRESETS: ClassVar[dict[str, dict]] = {"song": {"depth": 13, "width": 64, "slope": 0.2}}
    cond_dim = 0

    def __init__(self, scale: Sequence[int] = (2, 2, 2), depth: int = 13, width: int = 64, in_channels: int = 1,
                 slope: float = 0.2) -> None:
        super().__init__()
        if depth < 2 or width < 1:
            raise ValueError(f"invalid RRLSRN shape depth={depth} width={width}")
        self.scale, self.depth, self.width = check_scale(scale), int(depth), int(width)
        self.in_channels, self.slope = int(in_channels), float(slope)
        chans = [self.in_channels] + [self.width] * (depth - 1)
        self.coarse = nn.ModuleList(nn.Conv3d(a, b, 3, padding=1) for a, b in zip(chans[:-1], chans[1:]))
        kernels, pads = zip(*(up_kernel(s) for s in self.scale))
        self.up_features = nn.ConvTranspose3d(width, width, kernels, stride=self.scale, padding=pads)
        self.up_image = nn.ConvTranspose3d(1, 1, kernels, stride=self.scale, padding=pads)
        self.fine = nn.Conv3d(width, 1, 3, padding=1)
        self.reset_parameters()

    @property
    def upsampling(self) -> tuple[int, int, int]:
        """The integer upsampling factor per axis."""
        return self.scale

    def reset_parameters(self) -> None:
        """He initialisation; linear interpolation for the image branch; a small residual layer."""
        if self.fine.weight.is_meta:  # only counted (mrisr.inference.model_card.network_parameters): no values
            return
        for conv in [*self.coarse, self.up_features, self.fine]:
            nn.init.kaiming_normal_(conv.weight, a=self.slope, nonlinearity="leaky_relu")
            nn.init.zeros_(conv.bias)
        with torch.no_grad():
            self.fine.weight.mul_(0.1)
            kx, ky, kz = (linear_kernel(s) for s in self.scale)
            self.up_image.weight.copy_((kx[:, None, None] * ky[None, :, None] * kz[None, None, :])[None, None])
            self.up_image.bias.zero_()  # type: ignore[union-attr]  # the layer has a bias

    @property
    def receptive_radius(self) -> int:
        """Context, in low-resolution voxels, on each side of an output voxel's block."""
        return max(lr_radius([UpStage(s, *up_kernel(s), lr_radius=self.depth - 1, hr_radius=1)])
                   for s in self.scale)

    def forward(self, lr: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """High-resolution output ``(B, 1, X*sx, Y*sy, Z*sz)``; ``cond`` is ignored (the scale is fixed)."""
        h = lr
        for conv in self.coarse:
            h = F.leaky_relu(conv(h), self.slope)
        h = F.leaky_relu(self.up_features(h), self.slope)
        return self.up_image(lr[:, :1]) + self.fine(h)

    def config(self) -> dict:
        """Constructor arguments, as stored in model cards."""
        return {"scale": list(self.scale), "depth": self.depth, "width": self.width,
                "in_channels": self.in_channels, "slope": self.slope}
