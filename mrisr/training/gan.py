"""Adversarial training: WGAN-GP losses and the alternating critic/generator step.

Both GANs of the papers are Wasserstein GANs with gradient penalty
(Gulrajani et al.):

* mDCSRN-GAN (Chen et al., section 3.3, Eqs. 3 to 5; section 4.1): the
  generator loss is ``L1(SR, HR) + 0.1 * (-D(SR))``; training alternates 5
  critic steps and one generator step (after 10k critic-only steps, and with
  200 extra critic steps every 500 generator steps: schedules for the
  trainer, which can call :func:`critic_steps` on its own for them).
* GAN-CIRCLE (Lyu et al., section II.2, from You et al.): two critics, ``D_Y``
  on high-resolution volumes (judging ``G(x)``) and ``D_X`` on
  low-resolution ones (judging ``F(y)``); generator loss ``L_WGAN(D_Y, G) +
  L_WGAN(D_X, F) + l1 L_CYC + l2 L_IDT + l3 L_JST`` (:func:`gan_circle_loss`).
* GAN-CPCE (Lyu et al., section II.2): WGAN loss plus a VGG-19 perceptual
  loss, replaced by a content loss of our own (:func:`sr_gan_loss` with
  ``feature_net``; see :mod:`mrisr.archs.lyu`).

A *generator loss function* maps one batch to a :class:`Generated`: the
non-adversarial part of the generator's loss (``content``) and, per critic
name, the generated and real samples that critic compares. ``critic`` is one
module (named ``"hr"``) or an ``nn.ModuleDict`` of them; :func:`gan_step`
uses the same function for the critic steps (under ``no_grad``) and the
generator step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

#: Gradient-penalty weight of WGAN-GP (Gulrajani et al.'s lambda).
GP_WEIGHT = 10.0
#: Adversarial weight of mDCSRN-GAN (Chen et al., Eq. 3).
MDCSRN_ADV_WEIGHT = 0.1


@dataclass
class Generated:
    """What one generator pass produced for one batch.

    Attributes:
        content: Non-adversarial generator loss (scalar tensor).
        fake: Generated samples per critic name.
        real: Real samples per critic name (same keys as ``fake``).
    """

    content: torch.Tensor
    fake: dict[str, torch.Tensor]
    real: dict[str, torch.Tensor]


@dataclass
class GanStats:
    """Losses of one :func:`gan_step` (floats; critic values from the last critic step).

    Attributes:
        critic_loss: Critic loss (negative Wasserstein estimate plus penalty), summed over critics.
        wasserstein: ``mean D(real) - mean D(fake)``, summed over critics.
        gradient_penalty: Unweighted penalty, summed over critics.
        content: Content part of the generator loss.
        adversarial: ``-mean D(fake)`` summed over critics (unweighted).
        generator_loss: ``content + adv_weight * adversarial``.
    """

    critic_loss: float
    wasserstein: float
    gradient_penalty: float
    content: float
    adversarial: float
    generator_loss: float


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP penalty ``mean((|grad D(x_hat)|_2 - 1)^2)``, ``x_hat = eps*real + (1-eps)*fake``.

    Args:
        critic: Maps ``(B, ...)`` to ``(B,)`` (or ``(B, 1)``) scores.
        real: Real samples.
        fake: Generated samples (detached), same shape.
        eps: Per-sample mixing weights ``(B,)`` (uniform in [0, 1) if None).

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(8, 1))
        >>> with torch.no_grad(): _ = lin[1].weight.fill_(0.5)  # |grad| = 0.5 * sqrt(8)
        >>> round(gradient_penalty(lin, torch.ones(2, 1, 2, 2, 2), torch.zeros(2, 1, 2, 2, 2)).item(), 4)
        0.1716
    """
    if eps is None:
        eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    eps = eps.reshape(-1, *([1] * (real.dim() - 1)))
    mixed = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    score = critic(mixed)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                gp_weight: float = GP_WEIGHT) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, wasserstein, penalty)``: ``loss = mean D(fake) - mean D(real) + gp_weight * penalty``.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(1, 1))
        >>> loss, w, gp = critic_loss(lin, torch.ones(4, 1), torch.zeros(4, 1), gp_weight=0.0)
        >>> bool(torch.isclose(w, lin[1].weight.sum())), bool(torch.isclose(loss, -w))
        (True, True)
    """
    fake = fake.detach()
    wasserstein = critic(real).mean() - critic(fake).mean()
    penalty = gradient_penalty(critic, real, fake)
    return -wasserstein + gp_weight * penalty, wasserstein, penalty


def generator_adversarial_loss(critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """``-mean D(fake)`` (Chen et al., Eq. 5).

    Example:
        >>> float(generator_adversarial_loss(lambda x: x.flatten(1).sum(1), torch.ones(2, 1, 2)))
        -2.0
    """
    return -critic(fake).mean()


def _critics(critic: nn.Module) -> dict[str, nn.Module]:
    return dict(critic.items()) if isinstance(critic, nn.ModuleDict) else {"hr": critic}


def critic_steps(generator_loss_fn: Callable[[object], Generated], critic: nn.Module,
                 opt_c: torch.optim.Optimizer, batches: Iterator, n: int = 1,
                 gp_weight: float = GP_WEIGHT) -> tuple[float, float, float]:
    """``n`` critic updates, one batch each; the generator runs without gradients.

    Returns:
        ``(critic loss, wasserstein, penalty)`` of the last step, summed over critics.
    """
    critics = _critics(critic)
    critic.requires_grad_(True)
    out = (0.0, 0.0, 0.0)
    for _ in range(n):
        with torch.no_grad():
            gen = generator_loss_fn(next(batches))
        opt_c.zero_grad(set_to_none=True)
        parts = [critic_loss(d, gen.real[name], gen.fake[name], gp_weight) for name, d in critics.items()]
        loss = sum(p[0] for p in parts)
        loss.backward()
        opt_c.step()
        out = (loss.item(), sum(p[1].item() for p in parts), sum(p[2].item() for p in parts))
    return out


def generator_step(generator_loss_fn: Callable[[object], Generated], critic: nn.Module,
                   opt_g: torch.optim.Optimizer, batch: object,
                   adv_weight: float = MDCSRN_ADV_WEIGHT) -> tuple[float, float, float]:
    """One generator update with the critic frozen.

    Returns:
        ``(content, adversarial, generator loss)``.
    """
    critics = _critics(critic)
    critic.requires_grad_(False)
    try:
        opt_g.zero_grad(set_to_none=True)
        gen = generator_loss_fn(batch)
        adversarial = sum(generator_adversarial_loss(d, gen.fake[name]) for name, d in critics.items())
        loss = gen.content + adv_weight * adversarial
        loss.backward()
        opt_g.step()
    finally:
        critic.requires_grad_(True)
    return gen.content.item(), adversarial.item(), loss.item()


def gan_step(generator_loss_fn: Callable[[object], Generated], critic: nn.Module, opt_g: torch.optim.Optimizer,
             opt_c: torch.optim.Optimizer, batches: Iterator, *, n_critic: int = 5,
             adv_weight: float = MDCSRN_ADV_WEIGHT, gp_weight: float = GP_WEIGHT) -> GanStats:
    """``n_critic`` critic updates, then one generator update (``n_critic + 1`` batches).

    Args:
        generator_loss_fn: Batch -> :class:`Generated` (see :func:`sr_gan_loss`,
            :func:`gan_circle_loss`); its generator's parameters are ``opt_g``'s.
        critic: One critic (judging the key ``"hr"``) or an ``nn.ModuleDict``.
        opt_g: Optimizer of the generator(s).
        opt_c: Optimizer of the critic(s).
        batches: Iterator of batches, as ``generator_loss_fn`` takes them.
        n_critic: Critic updates per generator update (5 in both papers).
        adv_weight: Weight of the adversarial term (0.1 for mDCSRN-GAN, 1 for GAN-CIRCLE).
        gp_weight: Gradient-penalty weight.

    Example:
        >>> from mrisr.archs.srcnn3d import SRCNN3D
        >>> from mrisr.archs.critics import SRGANCritic
        >>> g, d = SRCNN3D(widths=(2, 2), kernels=(3, 1, 3)), SRGANCritic(width=1)
        >>> data = iter([(torch.rand(2, 1, 6, 6, 6), torch.rand(2, 1, 6, 6, 6))] * 6)
        >>> st = gan_step(sr_gan_loss(g), d, torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters()), data)
        >>> abs(st.generator_loss - (st.content + 0.1 * st.adversarial)) < 1e-5
        True
    """
    c_loss, wasserstein, penalty = critic_steps(generator_loss_fn, critic, opt_c, batches, n_critic, gp_weight)
    content, adversarial, g_loss = generator_step(generator_loss_fn, critic, opt_g, next(batches), adv_weight)
    return GanStats(c_loss, wasserstein, penalty, content, adversarial, g_loss)


def super_resolve(network: nn.Module, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """The network's output image: ``x + residual`` for interpolated-input networks, else its output.

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> super_resolve(ReCNN(2, 2), torch.zeros(1, 1, 4, 4, 4)).shape
        torch.Size([1, 1, 4, 4, 4])
    """
    out = network(x, cond) if cond is not None else network(x)
    return x[:, :1] + out if getattr(network, "upsampling", None) is None else out


def _unpack(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    x, y, *rest = batch
    return x, y, (rest[0] if rest else None)


def sr_gan_loss(generator: nn.Module, feature_net: nn.Module | None = None) -> Callable[[object], Generated]:
    """Generator loss function for mDCSRN-GAN and GAN-CPCE; batches are ``(x, y[, cond])``.

    ``content`` is ``L1(SR, y)`` (mDCSRN-GAN's intensity loss, Chen et al. Eq.
    4, and our substitute for GAN-CPCE's perceptual loss), or, with
    ``feature_net`` (a frozen module of our own, e.g. a trained network's
    first layers), ``mean((phi(SR) - phi(y))^2)`` in place of VGG features.
    The critic judges ``SR`` against ``y`` (key ``"hr"``).

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> fn = sr_gan_loss(ReCNN(2, 2))
        >>> sorted(fn((torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))).fake)
        ['hr']
    """
    def loss(batch) -> Generated:
        x, y, cond = _unpack(batch)
        sr = super_resolve(generator, x, cond)
        if feature_net is None:
            content = (sr - y).abs().mean()
        else:
            content = ((feature_net(sr) - feature_net(y)) ** 2).mean()
        return Generated(content, {"hr": sr}, {"hr": y})

    return loss


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute forward difference over the three spatial axes (anisotropic TV).

    Example:
        >>> float(total_variation(torch.arange(4.0).reshape(1, 1, 4, 1, 1)))
        1.0
    """
    return sum(torch.diff(x, dim=d).abs().mean() for d in (-3, -2, -1) if x.shape[d] > 1)


def gan_circle_loss(pair: nn.Module, cyc_weight: float = 1.0, idt_weight: float = 0.5, jst_weight: float = 1e-3,
                    tau: float = 0.9, supervised_weight: float = 1.0) -> Callable[[object], Generated]:
    """Generator loss function of GAN-CIRCLE; batches are ``(x, y[, cond])``.

    ``x`` is the interpolated low-resolution volume, ``y`` the high-resolution
    one; ``pair`` is a :class:`mrisr.archs.lyu.GANCircle` with ``G = x +
    pair.g(x)`` and ``F = y + pair.f(y)``. Lyu et al.'s terms (section II.2):

    * cycle consistency ``|F(G(x)) - x|_1 + |G(F(y)) - y|_1``;
    * identity ``|G(y) - y|_1 + |F(x) - x|_1``;
    * joint sparsifying transform ``tau TV(G(x)) + (1 - tau) TV(y - G(x))``;
    * plus, for paired data (Lyu et al. train supervised, section II.3),
      ``|G(x) - y|_1`` (GAN-CIRCLE's supervised term), weight ``supervised_weight``.

    The weights are not given by Lyu et al.; the defaults are ours. Critic
    ``"hr"`` (``D_Y``) judges ``G(x)`` against ``y``, critic ``"lr"``
    (``D_X``) judges ``F(y)`` against ``x``: pass ``nn.ModuleDict({"hr": D_Y,
    "lr": D_X})`` to :func:`gan_step` with ``adv_weight=1``.

    Example:
        >>> from mrisr.archs.lyu import GANCircle
        >>> fn = gan_circle_loss(GANCircle(widths=[2], recon=[2, 2]))
        >>> sorted(fn((torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))).real)
        ['hr', 'lr']
    """
    def loss(batch) -> Generated:
        x, y, cond = _unpack(batch)

        def g(v: torch.Tensor) -> torch.Tensor:
            return v[:, :1] + pair.g(v, cond)

        def f(v: torch.Tensor) -> torch.Tensor:
            return v[:, :1] + pair.f(v, cond)

        gx, fy = g(x), f(y)
        l1 = lambda a, b: (a - b).abs().mean()  # noqa: E731
        cycle = l1(f(gx), x[:, :1]) + l1(g(fy), y)
        identity = l1(g(y), y) + l1(f(x), x[:, :1])
        jst = tau * total_variation(gx) + (1 - tau) * total_variation(y - gx)
        content = cyc_weight * cycle + idt_weight * identity + jst_weight * jst + supervised_weight * l1(gx, y)
        return Generated(content, {"hr": gx, "lr": fy}, {"hr": y, "lr": x[:, :1]})

    return loss
