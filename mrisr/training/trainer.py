"""The training loop: Adam, warm-up + cosine schedule, bf16 autocast, checkpoints, resume.

A run folder holds ``config.toml`` (the exact configuration), ``checkpoint.pt``
(model, optimiser, step: written every ``checkpoint_every`` steps, atomically),
``best.pt`` (weights of the best validation so far), and ``log.jsonl`` (one
record per logged step and per validation). Resuming from a checkpoint
continues bit-for-bit: each step's batch depends only on (seed, step).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..archs.recnn import ReCNN
from ..errors import ConfigError
from ..metrics import psnr
from ..model_card import LoadedModel
from .config import Config
from .data import PatchSampler, ValidationCase, load_subjects, validation_cases
from .losses import loss_fn


def build_network(cfg: Config) -> ReCNN:
    """The architecture named by ``cfg.model`` (MSRA-initialised)."""
    m = cfg.model
    if m.arch != "recnn":
        raise ConfigError(f"model.arch: {m.arch!r} is not trainable yet; valid: recnn")
    return ReCNN(depth=m.depth, width=m.width, kernel=m.kernel, in_channels=2 if cfg.data.reference else 1,
                 cond_dim=3 if m.condition else 0)


def init_from(net: torch.nn.Module, model: LoadedModel) -> None:
    """Start ``net`` from a trained model's weights (fine-tuning).

    Raises:
        ConfigError: naming each ``model.*`` field where the configuration's
            architecture differs from the model's card.
    """
    if not isinstance(model.network, ReCNN):
        raise ConfigError(f"--init: model {model.name!r} is a {model.card.architecture['name']!r} network; "
                          "model.arch here is 'recnn'")
    ours = net.config()
    theirs = model.network.config()
    diffs = [f"{k} {ours.get(k)!r} vs {theirs.get(k)!r}" for k in sorted(set(ours) | set(theirs))
             if ours.get(k) != theirs.get(k)]
    if diffs:
        raise ConfigError(f"--init: the config's [model] does not match model {model.name!r} "
                          f"(config vs model: {'; '.join(diffs)}); copy the model's train.toml [model] section")
    net.load_state_dict(model.network.state_dict())


def factor_condition(net: ReCNN, factors: np.ndarray) -> torch.Tensor | None:
    """Condition tensor (B, 3) for per-sample factors (B, 3), or None if unconditioned."""
    if not net.cond_dim:
        return None
    return torch.from_numpy(np.log2(np.maximum(1.0, np.asarray(factors, np.float32))).reshape(-1, 3))


def lr_at(step: int, cfg: Config) -> float:
    """Learning rate at ``step``: linear warm-up then cosine decay to ``min_lr``."""
    t = cfg.train
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    progress = min(1.0, (step - t.warmup) / max(1, t.steps - t.warmup))
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * progress))


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def predict_volume(net: ReCNN, inp: np.ndarray, factors, precision: str = "bf16",
                   reference: np.ndarray | None = None) -> np.ndarray:
    """Whole-volume residual prediction added to the input (no tiling; validation only)."""
    x = np.stack([inp] if reference is None else [inp, reference])[None]
    with torch.inference_mode(), _autocast(precision):
        res = net(torch.from_numpy(x), factor_condition(net, np.asarray([factors])))
    return inp + res.float()[0, 0].numpy()


def validate(net: torch.nn.Module, cases: list[ValidationCase], precision: str) -> dict[str, dict[str, float]]:
    """PSNR of spline and network per case, and the gain."""
    net.eval()
    out = {}
    for c in cases:
        sr = predict_volume(net, c.inp, c.acquisition.factors, precision, c.reference)
        p_spline = psnr(c.inp, c.target, mask=c.mask)
        p_net = psnr(sr, c.target, mask=c.mask)
        out[f"{c.contrast}:{c.name}"] = {"spline": p_spline, "net": p_net, "gain": p_net - p_spline}
    net.train()
    return out


@dataclass
class RunState:
    """What a checkpoint holds besides the configuration."""

    step: int
    best_gain: float


def same_config(saved: dict, cfg: Config) -> bool:
    """Whether a checkpoint's configuration equals ``cfg``; fields added to mrisr
    since the checkpoint was written count as their defaults."""
    filled = Config().to_dict()
    for section, values in saved.items():
        filled.setdefault(section, {}).update(values)
    return filled == cfg.to_dict()


def save_checkpoint(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, state: RunState, cfg: Config) -> None:
    """Write model, optimiser and step atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": state.step,
                "best_gain": state.best_gain, "config": cfg.to_dict()}, tmp)
    os.replace(tmp, path)


def _log(run_dir: Path, record: dict) -> None:
    with open(run_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def train(cfg: Config, run_dir: Path, config_path: Path | None = None, resume: bool = False,
          on_step: Callable[[int, float, float | None], None] | None = None,
          stop_after: int | None = None, init: LoadedModel | None = None) -> Path:
    """Train per ``cfg`` into ``run_dir``; returns the path of the best weights.

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
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    net = build_network(cfg).to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr, betas=(0.9, 0.999))
    state = RunState(step=0, best_gain=-math.inf)
    ckpt = run_dir / "checkpoint.pt"
    if resume:
        if not ckpt.is_file():
            raise ConfigError(f"--resume: no checkpoint in {run_dir}")
        saved = torch.load(ckpt, weights_only=True)
        if not same_config(saved["config"], cfg):
            raise ConfigError(f"--resume: {ckpt} was made with a different configuration")
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state = RunState(step=int(saved["step"]), best_gain=float(saved["best_gain"]))
    else:
        if config_path is not None:
            shutil.copyfile(config_path, run_dir / "config.toml")
        if init is not None:
            init_from(net, init)
            (run_dir / "init.json").write_text(json.dumps({"model": init.name, "sha256": init.sha256,
                                                           "version": init.card.version}) + "\n")
        else:
            (run_dir / "init.json").unlink(missing_ok=True)
    subjects = load_subjects(cfg)
    sampler = PatchSampler(cfg, subjects)
    cases = validation_cases(cfg, subjects, cfg.train.validation_cases)
    criterion = loss_fn(cfg.train.loss, cfg.train.gdl_weight)
    net.train()
    end = cfg.train.steps if stop_after is None else min(cfg.train.steps, state.step + stop_after)
    t0 = time.time()
    while state.step < end:
        x, y, f = sampler.batch(state.step)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        xt = xt.contiguous(memory_format=torch.channels_last_3d)
        for g in opt.param_groups:
            g["lr"] = lr_at(state.step, cfg)
        with _autocast(cfg.train.precision):
            res = net(xt, factor_condition(net, f))
        loss = criterion(xt[:, :1] + res.float(), yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.grad_clip)
        opt.step()
        state.step += 1
        gain = None
        if state.step % cfg.train.validate_every == 0 or state.step == cfg.train.steps:
            table = validate(net, cases, cfg.train.precision)
            gain = float(np.mean([v["gain"] for v in table.values()]))
            _log(run_dir, {"step": state.step, "validation": table, "mean_gain": gain, "time": time.time() - t0})
            if gain > state.best_gain:
                state.best_gain = gain
                torch.save(net.state_dict(), run_dir / ".best.pt.tmp")
                os.replace(run_dir / ".best.pt.tmp", run_dir / "best.pt")
        if state.step % 20 == 0:
            _log(run_dir, {"step": state.step, "loss": loss.item(), "lr": lr_at(state.step - 1, cfg),
                           "time": time.time() - t0})
        if state.step % cfg.train.checkpoint_every == 0 or state.step == end:
            save_checkpoint(ckpt, net, opt, state, cfg)
        if on_step is not None:
            on_step(state.step, loss.item(), gain)
    return run_dir / "best.pt"
