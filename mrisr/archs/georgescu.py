"""Two-stage CNN with intermediate loss of Georgescu et al.

Georgescu et al., "Convolutional Neural Networks with Intermediate Loss for
3D Super-Resolution of CT and MRI Scans", section III.A (Figs. 1 to 4) and
III.B (Eqs. 3 to 5):

* two CNNs of the same design run one after the other: the first increases
  the resolution of the two in-plane axes, slice by slice, the second the
  third axis; both use 2D 3x3 filters, i.e. a 3D volume is processed as a
  stack of 2D images (section III.A: "decomposing the 3D convolutional
  filters in a product of two 2D convolutional filters");
* each CNN has 10 convolutional layers, each followed by ReLU. Block 1:
  layers 1 to 5 with 32 filters, a short skip from layer 1 to layer 3 and a
  long skip from layer 1 to layer 5 (sums), layer 6 with ``r*r`` (first CNN)
  or ``r`` (second CNN) filters; then a sub-pixel (pixel shuffle) layer,
  on two axes or on one; block 2: layers 7 to 9 with 32 filters and a short
  skip from layer 7 to layer 9, layer 10 with one filter;
* the loss is ``L(f(I), O) + lambda * L(f1(I), O)`` with ``f1`` the output of
  the sub-pixel layer (the *intermediate* image), ``lambda = 1``, mean
  absolute error.

Our 3D reading: the 2D filters are 3D convolutions with kernel 3 on the two
axes of a stage's plane and 1 on the third, so each slice is processed
independently, as in the paper. Stage 1 works in the planes of voxel axes
0 and 1 and upsamples them by ``scale[0], scale[1]``; stage 2 works in the
planes of axes 1 and 2 (the authors' code applies the second CNN to images
spanning width and depth) and upsamples axis 2 by ``scale[2]``. A stage
whose factors are all 1 is left out (``scale=(1, 1, 4)`` has only stage 2).
The pixel shuffle is :func:`mrisr.archs.shuffle.pixel_shuffle_3d`.

:meth:`Georgescu.forward_with_intermediate` returns ``(intermediate,
final)``, both on the output grid: the intermediate is the sub-pixel output
of the *last* stage, so Eq. 5 applies to the whole two-stage network trained
end to end. (The paper trains the two CNNs separately, each with its own
intermediate loss; the stages are available as :attr:`Georgescu.stages`
with their own ``forward_with_intermediate`` for that.) Every layer keeps
its ReLU, as in the paper and the authors' code, so outputs are
non-negative, like magnitude MRI. So that these ReLUs are not dead at
initialisation (an all-zero output has no gradient), the two
image-producing layers (6 and 10) start as non-negative weighted averages
of their inputs (He-initialised magnitudes, normalised to sum 1); the
others are He-initialised.

Georgescu et al. also blur training inputs with a random standard deviation
(section III.C: ``degradation.input_blur_probability`` and ``input_blur`` of
the training configuration, :func:`mrisr.acquisition.degrade.three_tap_blur`) and use
an 8-way flip self-ensemble combined by the median at test time (section
IV.E): :func:`mrisr.inference.upsampling.upscale_learned_ensemble`, ``mrisr upscale
--ensemble median``.

Parameters (width 32): 57,573 for a stage upsampling two axes by 2, 56,995
for a stage upsampling one axis by 2 (each slice-wise 3x3 layer has the
paper's ``3*3*32 + 1 = 289`` weights per filter). Receptive radius, in
low-resolution voxels: see :attr:`Georgescu.receptive_radius`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from mrisr.archs.receptive import UpStage, lr_radius
from mrisr.archs.rrlsrn import check_scale
from mrisr.archs.shuffle import pixel_shuffle_3d


class GeorgescuStage(nn.Module):
    """One of the two CNNs: 6 layers, sub-pixel upsampling, 4 layers, slice-wise 3x3 filters.

    Args:
        scale: Upsampling per axis (1 on the axis outside ``plane``).
        plane: The two voxel axes the 2D filters span.
        in_channels: Input channels.
        width: Filters of the hidden layers (32 in the paper).

    Example:
        >>> st = GeorgescuStage((2, 2, 1), plane=(0, 1), width=4)
        >>> [t.shape[2:] for t in st.forward_with_intermediate(torch.zeros(1, 1, 3, 3, 5))]
        [torch.Size([6, 6, 5]), torch.Size([6, 6, 5])]
    """

    def __init__(self, scale: Sequence[int], plane: Sequence[int], in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.scale, self.plane = tuple(int(s) for s in scale), tuple(sorted(int(a) for a in plane))
        if len(self.plane) != 2 or len(set(self.plane)) != 2 or not set(self.plane) <= {0, 1, 2} or any(
                s != 1 for a, s in enumerate(self.scale) if a not in self.plane):
            raise ValueError(f"invalid Georgescu stage: scale {list(scale)} outside plane {list(plane)}")
        kernel = tuple(3 if a in self.plane else 1 for a in range(3))
        pad = tuple(k // 2 for k in kernel)

        def conv(cin: int, cout: int) -> nn.Conv3d:
            layer = nn.Conv3d(cin, cout, kernel, padding=pad)
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
            return layer

        chans = [in_channels] + [width] * 5 + [math.prod(self.scale)]
        self.block1 = nn.ModuleList(conv(a, b) for a, b in zip(chans[:-1], chans[1:]))
        chans = [1] + [width] * 3 + [1]
        self.block2 = nn.ModuleList(conv(a, b) for a, b in zip(chans[:-1], chans[1:]))
        with torch.no_grad():  # image-producing layers 6 and 10 start as non-negative weighted averages
            for layer in (self.block1[-1], self.block2[-1]):
                layer.weight.abs_()
                layer.weight.div_(layer.weight.sum(dim=(1, 2, 3, 4), keepdim=True))

    def forward_with_intermediate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sub-pixel output, final output)`` of this stage."""
        c1, c2, c3, c4, c5, c6 = self.block1
        h1 = torch.relu(c1(x))
        h3 = torch.relu(c3(torch.relu(c2(h1)))) + h1  # short skip, layer 1 -> 3
        h5 = torch.relu(c5(torch.relu(c4(h3)))) + h1  # long skip, layer 1 -> 5
        mid = pixel_shuffle_3d(torch.relu(c6(h5)), self.scale)
        c7, c8, c9, c10 = self.block2
        h7 = torch.relu(c7(mid))
        h9 = torch.relu(c9(torch.relu(c8(h7)))) + h7  # short skip, layer 7 -> 9
        return mid, torch.relu(c10(h9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's final output."""
        return self.forward_with_intermediate(x)[1]

    def up_stages(self, axis: int) -> UpStage:
        """This stage along voxel ``axis``, for :func:`mrisr.archs.receptive.lr_radius`."""
        if axis not in self.plane:
            return UpStage(1, 1, 0, 0, 0)
        s = self.scale[axis]
        return UpStage(s, s, 0, lr_radius=6, hr_radius=4)


class Georgescu(nn.Module):
    """In-plane stage (axes 0, 1), then through-plane stage (axis 2), sub-pixel upsampling.

    Args:
        scale: Integer upsampling factor per axis.
        width: Filters of the hidden layers.
        in_channels: Input channels of the first stage.

    Example:
        >>> net = Georgescu(scale=(2, 2, 2), width=4)
        >>> mid, out = net.forward_with_intermediate(torch.zeros(1, 1, 4, 4, 3))
        >>> mid.shape[2:], out.shape[2:], net.upsampling, net.receptive_radius
        (torch.Size([8, 8, 6]), torch.Size([8, 8, 6]), (2, 2, 2), 13)
    """

    PRESETS: ClassVar[dict[str, dict]] = {"georgescu": {"width": 32}}
    cond_dim = 0

    def __init__(self, scale: Sequence[int] = (2, 2, 2), width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"invalid Georgescu width {width}")
        self.scale, self.width, self.in_channels = check_scale(scale), int(width), int(in_channels)
        sx, sy, sz = self.scale
        stages = []
        if sx > 1 or sy > 1:
            stages.append(GeorgescuStage((sx, sy, 1), (0, 1), self.in_channels, width))
        if sz > 1:
            stages.append(GeorgescuStage((1, 1, sz), (1, 2), 1 if stages else self.in_channels, width))
        self.stages = nn.ModuleList(stages)

    @property
    def upsampling(self) -> tuple[int, int, int]:
        """The integer upsampling factor per axis."""
        return self.scale

    @property
    def receptive_radius(self) -> int:
        """Context, in low-resolution voxels, on each side of an output voxel's block (max over axes)."""
        return max(lr_radius([st.up_stages(a) for st in self.stages]) for a in range(3))

    def forward_with_intermediate(self, lr: torch.Tensor,
                                  cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(intermediate, final)``: the last stage's sub-pixel output and the network's output."""
        x = lr
        for stage in self.stages:
            mid, x = stage.forward_with_intermediate(x)
        return mid, x

    def forward(self, lr: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """High-resolution output ``(B, 1, X*sx, Y*sy, Z*sz)``; ``cond`` is ignored (the scale is fixed)."""
        return self.forward_with_intermediate(lr)[1]

    def config(self) -> dict:
        """Constructor arguments, as stored in model cards."""
        return {"scale": list(self.scale), "width": self.width, "in_channels": self.in_channels}
