"""Adversarial training modes: ``mdcsrn-gan`` (Chen et al.), ``gan-cpce-wgan`` and ``gan-circle`` (Lyu et al.).

:func:`mrisr.training.trainer.train` hands a configuration whose
``model.arch`` is a GAN mode to :func:`train_gan`. One *step* of
``train.steps`` is one generator update, preceded by its critic updates
(:func:`critic_updates`); each update draws its own batch from the same
:class:`~mrisr.training.data.PatchSampler` as supervised training
(interpolated input, HR target), numbered by a running batch counter.

* ``mdcsrn-gan``: an :class:`~mrisr.archs.mdcsrn.MDCSRN` generator (sized by
  ``[model]`` like ``mdcsrn``) against :class:`~mrisr.archs.critics.SRGANCritic`,
  WGAN-GP; generator loss ``L1 + 0.1 * adversarial``
  (:func:`mrisr.training.gan.sr_gan_loss`). Chen et al. start from a trained
  mDCSRN: pass it with ``--init``. Their schedule (section 4.1): 10k
  critic-only updates first, then 5 critic updates per generator update, and
  200 extra critic updates after every 500 generator updates; generator Adam
  at 5e-6 (``train.lr``; not set for you).
* ``gan-cpce-wgan``: GAN-CPCE, the :class:`~mrisr.archs.lyu.CPCE` generator
  (``gan-cpce``, exported as such) against :class:`~mrisr.archs.critics.LyuCritic`
  (``"cpce"``: 6 convolutions and 2 fully-connected layers), WGAN-GP,
  5 critic updates per generator update. Lyu et al.'s loss is
  ``adversarial + lambda_p * perceptual`` with VGG-19 features, which cannot
  be downloaded here: :func:`~mrisr.training.gan.sr_gan_loss` keeps L1 as the
  content term (or features of a network of ours), so the balance is ours:
  ``L1 + 0.1 * adversarial``, as mDCSRN-GAN's (the paper gives no lambda_p).
  ``--init`` takes a trained ``gan-cpce`` model.
* ``gan-circle``: the :class:`~mrisr.archs.lyu.GANCircle` pair (G and F)
  against two :class:`~mrisr.archs.critics.LyuCritic` (``"circle"``; ``hr``
  judges G(x), ``lr`` judges F(y)), :func:`mrisr.training.gan.gan_circle_loss`,
  adversarial weight 1, 5 critic updates per generator update. Its critics
  halve the patch four times before instance normalisation, so
  ``train.patch`` must exceed 16. ``--init`` takes a ``gan-circle-generator``
  model (into G) or a ``gan-circle`` pair.

The ``[gan]`` section sets the schedule; unset fields take the paper's values
(:data:`PAPER_SCHEDULES`). Critics use Adam with betas (0.5, 0.9) at
``gan.critic_lr``; the generator the trainer's Adam, warm-up and cosine
schedule. ``train.precision`` applies to the whole step (bf16 autocast,
gradient penalty included); ``train.grad_clip`` does not apply.

The checkpoint holds the generator (the pair for ``gan-circle``), the
critic(s), both optimisers, the step, the batch counter and torch's random
state (the gradient penalty's mixing weights), so a resumed run continues
bit for bit. ``best.pt`` holds the exported generator only (MDCSRN, or G as
``gan-circle-generator``), which ``--export`` validates and writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mrisr.archs.critics import LyuCritic, SRGANCritic
from mrisr.inference.model_card import LoadedModel, architecture_name, atomic_save
from mrisr.training.config import Config
from mrisr.training.data import PatchSampler, load_subjects, validation_cases
from mrisr.training.gan import gan_circle_loss, gan_step, sr_gan_loss
from mrisr.training.networks import build_generator_pair, build_network
from mrisr.training.runs import (
    RunState,
    autocast,
    factor_condition,
    init_from,
    log_record,
    lr_at,
    open_run,
    validation_point,
)

#: The papers' schedules, for ``[gan]`` fields left unset.
PAPER_SCHEDULES: dict[str, dict[str, float]] = {
    "mdcsrn-gan": {"critic_warmup": 10000, "extra_critic_every": 500, "extra_critic_steps": 200, "adv_weight": 0.1},
    "gan-cpce-wgan": {"critic_warmup": 0, "extra_critic_every": 0, "extra_critic_steps": 0, "adv_weight": 0.1},
    "gan-circle": {"critic_warmup": 0, "extra_critic_every": 0, "extra_critic_steps": 0, "adv_weight": 1.0},
}


@dataclass(frozen=True)
class GanSchedule:
    """The resolved ``[gan]`` schedule of a run."""

    n_critic: int
    critic_warmup: int
    extra_critic_every: int
    extra_critic_steps: int
    adv_weight: float
    gp_weight: float


def gan_schedule(cfg: Config) -> GanSchedule:
    """``[gan]`` with unset fields filled from the mode's paper.

    Example:
        >>> from mrisr.training.config import config_from_dict
        >>> gan_schedule(config_from_dict({"model": {"arch": "mdcsrn-gan"}, "gan": {"critic_warmup": 0}})).adv_weight
        0.1
    """
    g, paper = cfg.gan, PAPER_SCHEDULES[cfg.model.arch]
    value = {k: paper[k] if getattr(g, k) is None else getattr(g, k) for k in paper}
    return GanSchedule(g.n_critic, int(value["critic_warmup"]), int(value["extra_critic_every"]),
                       int(value["extra_critic_steps"]), float(value["adv_weight"]), g.gp_weight)


def critic_updates(step: int, schedule: GanSchedule) -> int:
    """Critic updates before generator update ``step`` (0-based).

    Example:
        >>> s = GanSchedule(5, 100, 500, 200, 0.1, 10.0)
        >>> critic_updates(0, s), critic_updates(1, s), critic_updates(500, s)
        (105, 5, 205)
    """
    n = schedule.n_critic
    if step == 0:
        n += schedule.critic_warmup
    if schedule.extra_critic_every and step > 0 and step % schedule.extra_critic_every == 0:
        n += schedule.extra_critic_steps
    return n


def build_critic(cfg: Config) -> nn.Module:
    """The critic of the mode: an SRGAN or GAN-CPCE critic, or ``ModuleDict(hr=..., lr=...)`` of GAN-CIRCLE
    critics."""
    patch = cfg.train.patch if cfg.gan.critic_flatten else None
    if cfg.model.arch == "mdcsrn-gan":
        return SRGANCritic(width=cfg.gan.critic_width, patch_size=patch)
    if cfg.model.arch == "gan-cpce-wgan":
        return LyuCritic("cpce", width=cfg.gan.critic_width, patch_size=patch)
    return nn.ModuleDict({side: LyuCritic("circle", width=cfg.gan.critic_width, patch_size=patch)
                          for side in ("hr", "lr")})


def build_generator(cfg: Config) -> tuple[nn.Module, nn.Module, Callable]:
    """``(trained generator module, exported generator, generator loss function)`` of the mode."""
    if cfg.model.arch in ("mdcsrn-gan", "gan-cpce-wgan"):
        g = build_network(cfg)
        return g, g, sr_gan_loss(g)
    pair = build_generator_pair(cfg)
    return pair, pair.g, gan_circle_loss(pair)


class BatchStream:
    """Training batches ``(x, y, cond)`` as tensors, numbered by a counter that checkpoints keep."""

    def __init__(self, sampler: PatchSampler, conditioned: nn.Module, start: int = 0) -> None:
        self.sampler, self.net, self.count = sampler, conditioned, start

    def __iter__(self) -> Iterator:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x, y, f = self.sampler.batch(self.count)
        self.count += 1
        return torch.from_numpy(x), torch.from_numpy(y), factor_condition(self.net, f)


def _start(exported: nn.Module, trained: nn.Module) -> Callable[[LoadedModel], None]:
    """``--init``: into the exported generator when the model is one, else into the trained module."""
    def start(model: LoadedModel) -> None:
        same = model.card.architecture["name"] == architecture_name(exported)
        init_from(exported if same else trained, model)

    return start


def train_gan(cfg: Config, run_dir: Path, config_path: Path | None = None, resume: bool = False,
              on_step: Callable[[int, float, float | None], None] | None = None,
              stop_after: int | None = None, init: LoadedModel | None = None) -> Path:
    """Adversarial training per ``cfg``; arguments and result as :func:`mrisr.training.trainer.train`.

    ``on_step`` gets the generator loss (content + weighted adversarial).
    """
    torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    trained, exported, loss_of = build_generator(cfg)
    critic = build_critic(cfg)
    opt_g = torch.optim.Adam(trained.parameters(), lr=cfg.train.lr, betas=(0.9, 0.999))
    opt_c = torch.optim.Adam(critic.parameters(), lr=cfg.gan.critic_lr, betas=(0.5, 0.9))
    state, count = RunState(step=0, best_gain=-math.inf), 0
    saved = open_run(cfg, run_dir, config_path, resume, init, _start(exported, trained))
    if saved is not None:
        trained.load_state_dict(saved["generator"])
        critic.load_state_dict(saved["critic"])
        opt_g.load_state_dict(saved["opt_g"])
        opt_c.load_state_dict(saved["opt_c"])
        state, count = RunState(int(saved["step"]), float(saved["best_gain"])), int(saved["batches"])
        torch.set_rng_state(saved["rng"])
    subjects = load_subjects(cfg)
    batches = BatchStream(PatchSampler(cfg, subjects), trained, count)
    cases = validation_cases(cfg, subjects, cfg.train.validation_cases)
    schedule = gan_schedule(cfg)
    trained.train()
    end = cfg.train.steps if stop_after is None else min(cfg.train.steps, state.step + stop_after)
    t0 = time.time()
    while state.step < end:
        for group in opt_g.param_groups:
            group["lr"] = lr_at(state.step, cfg)
        with autocast(cfg.train.precision):
            stats = gan_step(loss_of, critic, opt_g, opt_c, batches, n_critic=critic_updates(state.step, schedule),
                             adv_weight=schedule.adv_weight, gp_weight=schedule.gp_weight)
        state.step += 1
        gain = None
        if state.step % cfg.train.validate_every == 0 or state.step == cfg.train.steps:
            gain = validation_point(run_dir, exported, cases, cfg, state, time.time() - t0)
        if state.step % 20 == 0:
            log_record(run_dir, {"step": state.step, **vars(stats), "lr": lr_at(state.step - 1, cfg),
                                 "time": time.time() - t0})
        if state.step % cfg.train.checkpoint_every == 0 or state.step == end:
            atomic_save({"generator": trained.state_dict(), "critic": critic.state_dict(),
                         "opt_g": opt_g.state_dict(), "opt_c": opt_c.state_dict(), "step": state.step,
                         "batches": batches.count, "best_gain": state.best_gain, "config": cfg.to_dict(),
                         "rng": torch.get_rng_state()}, run_dir / "checkpoint.pt")
        if on_step is not None:
            on_step(state.step, stats.generator_loss, gain)
    return run_dir / "best.pt"
