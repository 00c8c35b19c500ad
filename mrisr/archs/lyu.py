"""GAN-CPCE and GAN-CIRCLE generators of Lyu et al., in 3D.

Lyu et al., "Super-resolution MRI through Deep Learning", section II.2: two
networks first built for CT are adapted to MRI, both mapping the
low-resolution image (k-space truncated to its central 25%, section II.1,
*same matrix size* as the high-resolution image) to the high-resolution one.
In mrisr their input is the spline-interpolated volume on the output grid,
like ReCNN's, and ``forward`` returns the residual the engine adds to it.

GAN-CPCE generator (:class:`GanCpceGenerator`; Lyu et al. Fig. 1, from Shan
et al., their ref. 23): four convolutional layers of 32 3x3 filters, three
deconvolutional (transposed) layers of 32 3x3 filters and one of a single
filter, all with stride 1; the convolutions are unpadded, so each shrinks the
image by 2 and each deconvolution grows it back; conveying paths copy the
outputs of convolutions 3, 2 and 1 and concatenate them to the outputs of
deconvolutions 1, 2 and 3, each concatenation followed by a 1x1 convolution
back to 32 channels (Shan et al.'s CPCE); ReLU after every layer but the
last. In 3D the filters are 3x3x3. The generator outputs the image; our
``forward`` returns ``cpce(x) - x`` so the engine's ``x + residual`` is that
image. The output layer is linear (no ReLU) so the residual can take any
sign. Inputs smaller than 9 voxels along an axis (the four unpadded
convolutions need 9) are zero-padded at the far end and cropped back.
Receptive radius 8 (8 layers of radius 1 on the longest path).

GAN-CIRCLE generators (:class:`GANCircleGenerator`, the pair
:class:`GANCircle`; Lyu et al. Fig. 2, from You et al., their ref. 26): a
feature extraction network of 12 blocks (3x3 convolution with bias, leaky
ReLU, dropout) whose outputs are all concatenated, and a reconstruction
network with two parallel branches (A: 1x1 convolution; B: 1x1 then 3x3
convolution) that are concatenated and merged to the output. G maps the
low-resolution image to the high-resolution one and F the reverse, each
learning the residual over its input; in Lyu's setting both grids are the
same, so You et al.'s upsampling layer is not needed and F has G's design.
Details not in the text we hold, and our choices: per-block filters
decreasing linearly from 64 to 16 (DCSCN-style; You et al.'s exact list is
not given by Lyu), 64 and 32 filters in branches A and B, a final 3x3x3
convolution to one channel, leaky ReLU slope 0.2, dropout probability 0 by
default (``dropout`` sets it; it is inactive at inference, so tiling stays
exact). Receptive radius ``blocks + 2`` (14).

Losses (:mod:`mrisr.training.gan`): GAN-CPCE's objective is a WGAN
adversarial loss plus a *perceptual* loss on the 16th convolutional layer of
an ImageNet-trained VGG-19. We cannot download VGG weights, and a 2D natural
image network is a poor fit for 3D MRI anyway, so the perceptual term is
replaced by a content loss: L1 on intensities by default, or the squared
distance between features of a network we trained ourselves (any frozen
module, e.g. the first layers of a trained ReCNN); see
:func:`mrisr.training.gan.sr_gan_loss`. (Lyu's formula compares
``phi[G(I_LR)]`` with ``phi[G(I_HR)]``; the comparison with ``phi[I_HR]`` of
Shan et al. is meant.) GAN-CIRCLE's objective (two WGAN-GP critics, cycle
consistency, identity and joint sparsifying transform (TV) losses) is
:func:`mrisr.training.gan.gan_circle_loss`.

No batch normalisation anywhere (GAN-CIRCLE's instance norm is in its
critic, :mod:`mrisr.archs.critics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.archs.conditioning import FactorBias, check_cond_dim, encode_factors

#: Unpadded 3x3x3 convolutions in the GAN-CPCE encoder.
CPCE_DEPTH = 4
#: Per-block filters of the GAN-CIRCLE feature extraction network (our choice, see the module docstring).
CIRCLE_WIDTHS = [64, 60, 55, 51, 47, 42, 38, 33, 29, 25, 20, 16]


def _init(conv: nn.Module, slope: float = 0.0) -> nn.Module:
    nn.init.kaiming_normal_(conv.weight, a=slope, nonlinearity="leaky_relu" if slope else "relu")
    nn.init.zeros_(conv.bias)
    return conv


class GanCpceGenerator(nn.Module):
    """Conveying-path convolutional encoder-decoder (CPCE), 3D.

    Args:
        width: Filters per hidden layer (32 in the paper).
        in_channels: Input channels.
        cond_dim: 3 to condition on the per-axis upsampling factors
            (a bias after the first layer), 0 for none.

    Example:
        >>> net = GanCpceGenerator(width=4)
        >>> net(torch.zeros(1, 1, 10, 5, 12)).shape, net.receptive_radius
        (torch.Size([1, 1, 10, 5, 12]), 8)
    """

    PRESETS: ClassVar[dict[str, dict]] = {"lyu": {"width": 32}}
    upsampling = None

    def __init__(self, width: int = 32, in_channels: int = 1, cond_dim: int = 0) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"invalid GanCpceGenerator width {width}")
        self.width, self.in_channels, self.cond_dim = int(width), int(in_channels), check_cond_dim(cond_dim)
        chans = [self.in_channels] + [self.width] * CPCE_DEPTH
        self.encoder = nn.ModuleList(_init(nn.Conv3d(a, b, 3)) for a, b in zip(chans[:-1], chans[1:]))
        self.decoder = nn.ModuleList(_init(nn.ConvTranspose3d(width, width, 3)) for _ in range(CPCE_DEPTH - 1))
        self.convey = nn.ModuleList(_init(nn.Conv3d(2 * width, width, 1)) for _ in range(CPCE_DEPTH - 1))
        self.out = _init(nn.ConvTranspose3d(width, 1, 3))
        with torch.no_grad():
            self.out.weight.mul_(0.1)
        self.cond = FactorBias(cond_dim, width) if cond_dim else None

    @property
    def receptive_radius(self) -> int:
        """Voxels of context on each side: 4 convolutions and 4 deconvolutions of radius 1."""
        return 2 * CPCE_DEPTH

    def encode_factors(self, factors: Sequence[float]) -> torch.Tensor | None:
        """Condition vector ``(1, 3)`` for per-axis upsampling ``factors`` (None if unconditioned)."""
        return encode_factors(factors, self.cond_dim) if self.cond_dim else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``cpce(x) - x[:, :1]``: the residual the engine adds to ``x``."""
        shape = x.shape[2:]
        need = 2 * CPCE_DEPTH + 1
        if min(shape) < need:
            x = F.pad(x, [p for n in reversed(shape) for p in (0, max(0, need - n))])
        h = self.encoder[0](x)
        if self.cond is not None:
            h = self.cond(h, cond)
        skips = [torch.relu(h)]
        for conv in self.encoder[1:]:
            skips.append(torch.relu(conv(skips[-1])))
        h = skips.pop()
        for deconv, convey in zip(self.decoder, self.convey):
            h = torch.relu(deconv(h))
            h = torch.relu(convey(torch.cat([h, skips.pop()], dim=1)))
        y = self.out(h) - x[:, :1]
        return y[:, :, :shape[0], :shape[1], :shape[2]]

    def config(self) -> dict:
        """Constructor arguments, as stored in model cards."""
        return {"width": self.width, "in_channels": self.in_channels, "cond_dim": self.cond_dim}


class GANCircleGenerator(nn.Module):
    """One GAN-CIRCLE generator: dense feature extraction, two-branch reconstruction, residual output.

    Args:
        widths: Filters of the feature extraction blocks (12 in the paper).
        recon: Filters of reconstruction branches A and B.
        in_channels: Input channels.
        cond_dim: 3 to condition on the per-axis upsampling factors
            (a bias after the first block's convolution), 0 for none.
        dropout: Dropout probability after every feature block (training only).
        slope: Negative slope of the leaky ReLUs.

    Example:
        >>> net = GANCircleGenerator(widths=[4, 3, 2], recon=[2, 2])
        >>> net(torch.zeros(1, 1, 6, 6, 6)).shape, net.receptive_radius
        (torch.Size([1, 1, 6, 6, 6]), 5)
    """

    PRESETS: ClassVar[dict[str, dict]] = {"lyu": {"widths": CIRCLE_WIDTHS, "recon": [64, 32]}}
    upsampling = None

    def __init__(self, widths: Sequence[int] = tuple(CIRCLE_WIDTHS), recon: Sequence[int] = (64, 32),
                 in_channels: int = 1, cond_dim: int = 0, dropout: float = 0.0, slope: float = 0.2) -> None:
        super().__init__()
        self.widths, self.recon = [int(w) for w in widths], [int(w) for w in recon]
        if not self.widths or min(self.widths) < 1 or len(self.recon) != 2 or min(self.recon) < 1:
            raise ValueError(f"invalid GANCircleGenerator shape widths={list(widths)} recon={list(recon)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.cond_dim = int(in_channels), check_cond_dim(cond_dim)
        self.dropout, self.slope = float(dropout), float(slope)
        chans = [self.in_channels, *self.widths]
        self.features = nn.ModuleList(_init(nn.Conv3d(a, b, 3, padding=1), slope)
                                      for a, b in zip(chans[:-1], chans[1:]))
        total, (a, b) = sum(self.widths), self.recon
        self.branch_a = _init(nn.Conv3d(total, a, 1), slope)
        self.branch_b1 = _init(nn.Conv3d(total, b, 1), slope)
        self.branch_b2 = _init(nn.Conv3d(b, b, 3, padding=1), slope)
        self.out = _init(nn.Conv3d(a + b, 1, 3, padding=1), slope)
        with torch.no_grad():
            self.out.weight.mul_(0.1)
        self.cond = FactorBias(cond_dim, self.widths[0]) if cond_dim else None

    @property
    def receptive_radius(self) -> int:
        """Voxels of context on each side: every block, branch B's 3x3x3 and the output layer."""
        return len(self.widths) + 2

    def encode_factors(self, factors: Sequence[float]) -> torch.Tensor | None:
        """Condition vector ``(1, 3)`` for per-axis upsampling ``factors`` (None if unconditioned)."""
        return encode_factors(factors, self.cond_dim) if self.cond_dim else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The residual over ``x`` (GAN-CIRCLE's residual learning)."""
        h, feats = x, []
        for i, conv in enumerate(self.features):
            h = conv(h)
            if i == 0 and self.cond is not None:
                h = self.cond(h, cond)
            h = F.dropout(F.leaky_relu(h, self.slope), self.dropout, self.training)
            feats.append(h)
        h = torch.cat(feats, dim=1)
        a = F.leaky_relu(self.branch_a(h), self.slope)
        b = F.leaky_relu(self.branch_b2(F.leaky_relu(self.branch_b1(h), self.slope)), self.slope)
        return self.out(torch.cat([a, b], dim=1))

    def config(self) -> dict:
        """Constructor arguments, as stored in model cards."""
        return {"widths": list(self.widths), "recon": list(self.recon), "in_channels": self.in_channels,
                "cond_dim": self.cond_dim, "dropout": self.dropout, "slope": self.slope}


class GANCircle(nn.Module):
    """The GAN-CIRCLE generator pair: ``g`` (low to high resolution) and ``f`` (high to low).

    ``forward`` is ``g``'s (the residual the engine adds to the interpolated
    input); ``f`` is used by the cycle-consistency and identity losses
    (:func:`mrisr.training.gan.gan_circle_loss`). Both share the constructor
    arguments.

    Example:
        >>> pair = GANCircle(widths=[4, 3], recon=[2, 2])
        >>> x = torch.zeros(1, 1, 6, 6, 6)
        >>> pair(x).shape == pair.f(x).shape, pair.receptive_radius
        (True, 4)
    """

    PRESETS: ClassVar[dict[str, dict]] = GANCircleGenerator.PRESETS
    upsampling = None

    def __init__(self, widths: Sequence[int] = tuple(CIRCLE_WIDTHS), recon: Sequence[int] = (64, 32),
                 in_channels: int = 1, cond_dim: int = 0, dropout: float = 0.0, slope: float = 0.2) -> None:
        super().__init__()
        kwargs = dict(widths=widths, recon=recon, in_channels=in_channels, cond_dim=cond_dim, dropout=dropout,
                      slope=slope)
        self.g = GANCircleGenerator(**kwargs)
        self.f = GANCircleGenerator(**kwargs)
        self.in_channels, self.cond_dim = self.g.in_channels, self.g.cond_dim

    @property
    def receptive_radius(self) -> int:
        """The receptive radius of ``g``."""
        return self.g.receptive_radius

    def encode_factors(self, factors: Sequence[float]) -> torch.Tensor | None:
        """Condition vector ``(1, 3)`` for per-axis upsampling ``factors`` (None if unconditioned)."""
        return self.g.encode_factors(factors)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``g``'s residual over ``x``."""
        return self.g(x, cond)

    def config(self) -> dict:
        """Constructor arguments, as stored in model cards."""
        return self.g.config()
