"""Training losses: L1, L2, Charbonnier, and gradient difference.

Song et al. (RRLSRN) train with Charbonnier plus a gradient difference loss
(GDL) that penalises differences between the finite-difference gradients of
the prediction and the target, which keeps edges sharp (their Eq. 5-6, with
weight 1). Our GDL is the mean absolute difference of the signed forward
differences along the three axes (Song et al. square the difference of their
absolute values, in 2D); ``charbonnier+gdl`` is their combination.

``train.loss = "auto"`` picks the loss of the architecture's paper
(:data:`mrisr.training.trainables.TRAINABLES`, :func:`resolve_loss`).
"""

from __future__ import annotations

import torch

from mrisr.errors import look_up_option
from mrisr.options import LOSSES
from mrisr.training.trainables import TRAINABLES


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of sqrt((pred - target)^2 + eps^2): a smooth L1."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def gradient_difference(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of forward differences along the 3 spatial axes."""
    total = pred.new_zeros(())
    for dim in (-3, -2, -1):
        total = total + (torch.diff(pred, dim=dim) - torch.diff(target, dim=dim)).abs().mean()
    return total / 3


def loss_fn(name: str, gdl_weight: float = 0.5):
    """The loss callable ``(pred, target) -> scalar`` for a configured name.

    Example:
        >>> f = loss_fn("l1")
        >>> float(f(torch.zeros(1, 1, 2, 2, 2), torch.ones(1, 1, 2, 2, 2)))
        1.0
    """
    look_up_option(name, LOSSES, "loss")
    if name == "l1":
        return lambda p, t: (p - t).abs().mean()
    if name == "l2":
        return lambda p, t: ((p - t) ** 2).mean()
    if name == "charbonnier":
        return charbonnier
    if name == "charbonnier+gdl":
        return lambda p, t: charbonnier(p, t) + gdl_weight * gradient_difference(p, t)
    return lambda p, t: (p - t).abs().mean() + gdl_weight * gradient_difference(p, t)


def resolve_loss(cfg) -> tuple[str, float]:
    """``(loss name, gradient-difference weight)`` a configuration trains with.

    ``train.loss = "auto"`` gives the architecture's paper loss with the
    paper's weight; an explicit name uses ``train.gdl_weight``. GAN modes
    return ``("l1", 0)``: the content term of their own losses.

    Example:
        >>> from mrisr.training.config import config_from_dict
        >>> resolve_loss(config_from_dict({"model": {"arch": "rrlsrn"}}))
        ('charbonnier+gdl', 1.0)
        >>> resolve_loss(config_from_dict({"train": {"loss": "l2"}}))
        ('l2', 0.5)
    """
    if cfg.train.loss != "auto":
        return cfg.train.loss, cfg.train.gdl_weight
    spec = TRAINABLES[cfg.model.arch]
    return spec.loss or "l1", spec.paper_weight
