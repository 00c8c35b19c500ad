"""mDCSRN: the multi-level densely connected network of Chen et al.

Chen et al., "MRI Super-Resolution with GAN and 3D Multi-Level DenseNet:
Smaller, Faster, and Better", section 3.3 (and Figs. 3 to 5, Table 1):

* stem: one 3x3x3 convolution with ``2k`` filters, growth rate ``k = 12``;
* ``b`` DenseBlocks of ``u`` DenseUnits (3x3x3, ``k`` filters, ELU), fully
  densely connected inside the block: every unit sees the block's input and
  every earlier unit; the block's output is its input plus all unit outputs
  (``2k + u*k`` channels);
* before each block a 1x1x1 *compressor* to ``2k`` channels, whose input is
  the stem and the outputs of all earlier blocks (multi-level dense
  connections);
* a DenseNet-BC 1x1x1 bottleneck with ``4k`` filters before a unit's 3x3x3
  convolution "when needed", which we read as: when the unit's input has
  more than ``4k`` channels (only the 4th unit of a ``u = 4`` block);
* reconstruction by *direct feature combination*: one 1x1x1 convolution of
  all the blocks' outputs to the image; no upsampling layer (the input is
  the low-resolution volume interpolated to the output grid).

Parameter counts of this reading (checked in the tests) against Table 1:
b4u4 227,809 (0.22M; 0.23M in Table 2), b6u4 351,745 (0.35M), b8u4 482,593
(0.49M), b4u4 with k=8 101,569 (0.10M) and k=16 404,353 (0.41M). The same
reading with the paper's optional reconstruction layer ("-r": a 1x1x1
bottleneck to ``8k``, then a 3x3x3 convolution) gives 0.26M, 0.35M and 0.24M
for b4u4-r, b1u16-r and b1u12-r (Table 1: 0.26M, 0.35M, 0.25M); without the
"when needed" bottleneck b1u16-r would have 0.62M, so that rule is the one
the paper used.

Deviations, and why:

* Batch normalisation: Chen et al.'s network has BN layers (DenseNet's
  BN-activation-convolution units; section 4.1 even keeps "the batch
  normalization layers in the model" in train mode at test time, i.e. uses
  each patch's statistics). Patch statistics make tiled inference depend on
  the tiling, so BN is dropped (no substitute): every convolution after the
  stem is pre-activated by ELU only.
* Output: the paper's network outputs the high-resolution image. The engine
  adds the network's output to the interpolated input, so by default
  (``global_skip=False``) :meth:`MDCSRN.forward` returns ``mdcsrn(x) - x``
  and ``x + residual`` is the paper's output. ``global_skip=True`` instead
  lets the 1x1x1 combination predict the residual itself (residual learning,
  as Pham et al.), usually easier to train from scratch; not the paper's design.
* Padding: zero "same" padding; inference at the paper's 70^3 patches with a
  margin of 3 is replaced by the engine's exact halo (the receptive radius).

Receptive radius: ``1 + b*u`` voxels (b4u4: 17; b8u4: 33).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.archs.conditioning import FactorBias, check_cond_dim, encode_factors


def _conv(cin: int, cout: int, kernel: int) -> nn.Conv3d:
    conv = nn.Conv3d(cin, cout, kernel, padding=kernel // 2)
    nn.init.kaiming_normal_(conv.weight)
    nn.init.zeros_(conv.bias)  # type: ignore[arg-type]  # the layer has a bias
    return conv


class DenseUnit(nn.Module):
    """ELU, [1x1x1 bottleneck to ``4k``, ELU,] 3x3x3 convolution to ``k`` channels.

    Example:
        >>> DenseUnit(60, 12).bottleneck is not None, DenseUnit(48, 12).bottleneck is None
        (True, True)
    """

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        mid = 4 * growth
        self.bottleneck = _conv(in_channels, mid, 1) if in_channels > mid else None
        self.conv = _conv(mid if self.bottleneck is not None else in_channels, growth, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The unit's ``k`` new feature maps."""
        h = F.elu(x)
        if self.bottleneck is not None:
            h = F.elu(self.bottleneck(h))
        return self.conv(h)


class DenseBlock(nn.Module):
    """1x1x1 compressor to ``2k`` then ``units`` fully densely connected DenseUnits.

    The output is the compressed input and every unit's output, concatenated
    (``2k + units*k`` channels).

    Example:
        >>> DenseBlock(24, 4, 12)(torch.zeros(1, 24, 3, 3, 3)).shape[1]
        72
    """

    def __init__(self, in_channels: int, units: int, growth: int) -> None:
        super().__init__()
        self.compressor = _conv(in_channels, 2 * growth, 1)
        self.units = nn.ModuleList(DenseUnit(2 * growth + i * growth, growth) for i in range(units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenation of the compressed input and all unit outputs."""
        feats = [self.compressor(F.elu(x))]
        for unit in self.units:
            feats.append(unit(torch.cat(feats, dim=1)))
        return torch.cat(feats, dim=1)


class MDCSRN(nn.Module):
    """Stem, ``blocks`` multi-level densely connected DenseBlocks, 1x1x1 combination.

    Args:
        blocks: Number of DenseBlocks (``b``).
        units: DenseUnits per block (``u``).
        growth: Growth rate ``k`` (the stem and compressors have ``2k`` filters).
        in_channels: Input channels.
        cond_dim: 3 to condition on the per-axis upsampling factors
            (a bias after the stem), 0 for none.
        global_skip: False (the paper): return ``mdcsrn(x) - x``; True: the
            network predicts the residual directly.

    Example:
        >>> net = MDCSRN(blocks=2, units=2, growth=4)
        >>> net(torch.zeros(1, 1, 6, 6, 6)).shape, net.receptive_radius
        (torch.Size([1, 1, 6, 6, 6]), 5)
    """

    PRESETS: ClassVar[dict[str, dict]] = {"b4u4": {"blocks": 4, "units": 4, "growth": 12},
                                          "b8u4": {"blocks": 8, "units": 4, "growth": 12}}
    upsampling = None

    def __init__(self, blocks: int = 4, units: int = 4, growth: int = 12, in_channels: int = 1, cond_dim: int = 0,
                 global_skip: bool = False) -> None:
        super().__init__()
        if blocks < 1 or units < 1 or growth < 1:
            raise ValueError(f"invalid MDCSRN shape blocks={blocks} units={units} growth={growth}")
        self.blocks, self.units, self.growth = int(blocks), int(units), int(growth)
        self.in_channels, self.cond_dim = int(in_channels), check_cond_dim(cond_dim)
        self.global_skip = bool(global_skip)
        self.stem = _conv(self.in_channels, 2 * growth, 3)
        self.cond = FactorBias(cond_dim, 2 * growth) if cond_dim else None
        block_out = 2 * growth + units * growth
        self.dense = nn.ModuleList(DenseBlock(2 * growth + i * block_out, units, growth) for i in range(blocks))
        self.combine = _conv(blocks * block_out, 1, 1)
        with torch.no_grad():
            self.combine.weight.mul_(0.1)

    @property
    def receptive_radius(self) -> int:
        """Voxels of context on each side: the stem and every 3x3x3 unit add one."""
        return 1 + self.blocks * self.units

    def encode_factors(self, factors: Sequence[float]) -> torch.Tensor | None:
        """Condition vector ``(1, 3)`` for per-axis upsampling ``factors`` (None if unconditioned)."""
        return encode_factors(factors, self.cond_dim) if self.cond_dim else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The residual the engine adds to ``x`` (see ``global_skip``)."""
        h = self.stem(x)
        if self.cond is not None:
            h = self.cond(h, cond)
        levels, outs = [h], []
        for block in self.dense:
            outs.append(block(torch.cat(levels, dim=1)))
            levels.append(outs[-1])
        y = self.combine(F.elu(torch.cat(outs, dim=1)))
        return y if self.global_skip else y - x[:, :1]

    def config(self) -> dict:
        """Constructor arguments, as stored in model cards."""
        return {"blocks": self.blocks, "units": self.units, "growth": self.growth, "in_channels": self.in_channels,
                "cond_dim": self.cond_dim, "global_skip": self.global_skip}
