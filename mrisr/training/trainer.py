"""The training loop: Adam, warm-up + cosine schedule, bf16 autocast, checkpoints, resume.

A run folder holds ``config.toml`` (the exact configuration), ``checkpoint.pt``
(model, optimiser, step: written every ``checkpoint_every`` steps, atomically),
``best.pt`` (weights of the best validation so far), ``average.pt`` (with
``train.average_from``: the running mean of the weights since that step, also
kept in the checkpoint) and ``log.jsonl`` (one
record per logged step and per validation). Resuming from a checkpoint
continues bit-for-bit: each step's batch depends only on (seed, step).

The network is the one ``[model]`` describes (:mod:`mrisr.training.networks`):
interpolated-input networks learn the residual over the spline, learned-upsampling
ones map LR patches to HR patches (:func:`network_loss`); the GAN modes are
trained by :mod:`mrisr.training.gan_trainer`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mrisr.inference.model_card import LoadedModel, atomic_save
from mrisr.inference.upsampling import upsampling_scale
from mrisr.training.config import Config
from mrisr.training.data import PatchSampler, load_subjects, validation_cases
from mrisr.training.gan_trainer import train_gan
from mrisr.training.losses import loss_fn, resolve_loss
from mrisr.training.networks import build_network, trainable
from mrisr.training.runs import (
    RunState,
    WeightAverage,
    autocast,
    factor_condition,
    init_from,
    log_record,
    lr_at,
    open_run,
    save_checkpoint,
    validation_point,
)

__all__ = ["build_network", "network_loss", "train"]


def network_loss(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, factors: np.ndarray, criterion,
                 precision: str, intermediate_weight: float = 1.0) -> torch.Tensor:
    """The training loss of one batch.

    Interpolated-input networks: ``criterion(x + residual, y)``. Learned-upsampling
    ones: ``criterion(net(x), y)``, plus ``intermediate_weight * criterion(intermediate, y)``
    for networks with ``forward_with_intermediate`` (Georgescu et al., Eq. 3: the
    intermediate image is on the output grid, compared with the same target).
    """
    if upsampling_scale(net) is None:
        with autocast(precision):
            res = net(x, factor_condition(net, factors))
        return criterion(x[:, :1] + res.float(), y)
    if hasattr(net, "forward_with_intermediate"):
        with autocast(precision):
            mid, out = net.forward_with_intermediate(x)
        return criterion(out.float(), y) + intermediate_weight * criterion(mid.float(), y)
    with autocast(precision):
        out = net(x)
    return criterion(out.float(), y)


def train(cfg: Config, run_dir: Path, config_path: Path | None = None, resume: bool = False,
          on_step: Callable[[int, float, float | None], None] | None = None,
          stop_after: int | None = None, init: LoadedModel | None = None) -> Path:
    """Train per ``cfg`` into ``run_dir``; returns the path of the best weights.

    GAN modes (``model.arch`` ``mdcsrn-gan``, ``gan-cpce-wgan``, ``gan-circle``) are trained by
    :func:`mrisr.training.gan_trainer.train_gan`, with the same arguments.

    Args:
        cfg: Validated configuration.
        run_dir: Output folder (created).
        config_path: Copied into the run folder for reproducibility.
        resume: Continue from ``run_dir/checkpoint.pt`` (refused if missing).
        on_step: Called with (step, loss, mean validation gain or None).
        stop_after: Stop (with a checkpoint) after this many steps of this call.
        init: Start from this trained model's weights (fine-tuning) instead
            of a random initialisation; recorded in ``run_dir/init.json``.
            Ignored on resume (the checkpoint holds the weights).
    """
    if trainable(cfg).mode == "gan":
        return train_gan(cfg, run_dir, config_path, resume, on_step, stop_after, init)
    torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    net = build_network(cfg).to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr, betas=(0.9, 0.999))
    state = RunState(step=0, best_gain=-math.inf)
    ckpt = run_dir / "checkpoint.pt"
    saved = open_run(cfg, run_dir, config_path, resume, init, lambda model: init_from(net, model))
    average = WeightAverage() if cfg.train.average_from > 0 else None
    if saved is not None:
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state = RunState(step=int(saved["step"]), best_gain=float(saved["best_gain"]))
        if average is not None and "average" in saved:
            average.load_state_dict(saved["average"])
    subjects = load_subjects(cfg)
    scale = upsampling_scale(net)
    sampler = PatchSampler(cfg, subjects, scale=scale)
    cases = validation_cases(cfg, subjects, cfg.train.validation_cases, scale=scale)
    criterion = loss_fn(*resolve_loss(cfg))
    net.train()
    end = cfg.train.steps if stop_after is None else min(cfg.train.steps, state.step + stop_after)
    t0 = time.time()
    while state.step < end:
        x, y, f = sampler.batch(state.step)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        xt = xt.contiguous(memory_format=torch.channels_last_3d)
        for g in opt.param_groups:
            g["lr"] = lr_at(state.step, cfg)
        loss = network_loss(net, xt, yt, f, criterion, cfg.train.precision, cfg.train.intermediate_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.grad_clip)
        opt.step()
        state.step += 1
        if average is not None and state.step >= cfg.train.average_from:
            average.update(net)
        gain = None
        if state.step % cfg.train.validate_every == 0 or state.step == cfg.train.steps:
            gain = validation_point(run_dir, net, cases, cfg, state, time.time() - t0)
        if state.step % 20 == 0:
            log_record(run_dir, {"step": state.step, "loss": loss.item(), "lr": lr_at(state.step - 1, cfg),
                                 "time": time.time() - t0})
        if state.step % cfg.train.checkpoint_every == 0 or state.step == end:
            save_checkpoint(ckpt, net, opt, state, cfg, average)
            if average is not None and average.count:
                atomic_save(average.state_dict()["weights"], run_dir / "average.pt")
        if on_step is not None:
            on_step(state.step, loss.item(), gain)
    return run_dir / "best.pt"
