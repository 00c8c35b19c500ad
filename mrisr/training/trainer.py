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

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mrisr.errors import ConfigError
from mrisr.evaluation.metrics import psnr
from mrisr.inference.device import autocast as device_autocast
from mrisr.inference.model_card import LoadedModel, architecture_name, atomic_save
from mrisr.inference.upsampling import upsampling_scale
from mrisr.training.config import Config
from mrisr.training.data import PatchSampler, ValidationCase, load_subjects, validation_cases
from mrisr.training.losses import loss_fn, resolve_loss
from mrisr.training.networks import build_network, trainable

__all__ = ["build_network", "init_from", "train", "validate"]


def init_from(net: torch.nn.Module, model: LoadedModel) -> None:
    """Start ``net`` from a trained model's weights (fine-tuning).

    A guided network (``in_channels`` 2) may start from the same network with
    one input channel: the weights are copied and the first convolution's
    weights for the reference channel start at zero, so the guided network
    starts exactly as the single-input model and learns to use the reference.

    Raises:
        ConfigError: when the model's architecture is another one, or naming
            each constructor argument where the configuration's network differs
            from the model's card.
    """
    ours, theirs = architecture_name(net), model.card.architecture["name"]
    if ours != theirs:
        raise ConfigError(f"--init: model {model.name!r} is a {theirs!r} network; the config's [model] builds "
                          f"a {ours!r} network")
    mine, other = net.config(), model.network.config()
    widen = mine.get("in_channels") == 2 and other.get("in_channels") == 1
    diffs = [f"{k} {mine.get(k)!r} vs {other.get(k)!r}" for k in sorted(set(mine) | set(other))
             if mine.get(k) != other.get(k) and not (widen and k == "in_channels")]
    if diffs:
        raise ConfigError(f"--init: the config's [model] does not match model {model.name!r} "
                          f"(config vs model: {'; '.join(diffs)}); copy the model's train.toml [model] section")
    state = model.network.state_dict()
    if widen:
        state = _widen_first_conv(net, state)
    net.load_state_dict(state)


def _widen_first_conv(net: torch.nn.Module, state: dict) -> dict:
    """``state`` with the first convolution's weight given zero weights for a second input channel."""
    ours = net.state_dict()
    out = dict(state)
    for key, value in state.items():
        if key in ours and value.dim() == 5 and ours[key].shape[1] == 2 * value.shape[1]:
            out[key] = torch.cat([value, torch.zeros_like(value)], dim=1)
    return out


def factor_condition(net: torch.nn.Module, factors: np.ndarray) -> torch.Tensor | None:
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


def autocast(precision: str):
    """bf16 autocast on the CPU when ``precision`` is ``bf16`` (a no-op context for ``fp32``).

    Training runs on the CPU: :func:`mrisr.inference.device.autocast` with the CPU device.
    """
    return device_autocast(torch.device("cpu"), precision)


def predict_volume(net: torch.nn.Module, inp: np.ndarray, factors, precision: str = "bf16",
                   reference: np.ndarray | None = None) -> np.ndarray:
    """Whole-volume residual prediction added to the input (no tiling; validation only)."""
    x = np.stack([inp] if reference is None else [inp, reference])[None]
    with torch.inference_mode(), autocast(precision):
        res = net(torch.from_numpy(x), factor_condition(net, np.asarray([factors])))
    return inp + res.float()[0, 0].numpy()


def predict_upsampled(net: torch.nn.Module, lr: np.ndarray, precision: str = "bf16") -> np.ndarray:
    """Whole-volume output of a learned-upsampling network for an LR volume (validation only)."""
    with torch.inference_mode(), autocast(precision):
        out = net(torch.from_numpy(np.ascontiguousarray(lr, np.float32))[None, None])
    return out.float()[0, 0].numpy()


def validate(net: torch.nn.Module, cases: list[ValidationCase], precision: str) -> dict[str, dict[str, float]]:
    """PSNR of spline and network per case, and the gain (on the HR grid; for a learned-upsampling
    network the spline is that of the same LR volume)."""
    net.eval()
    out = {}
    for c in cases:
        if c.lr is not None:
            sr = predict_upsampled(net, c.lr, precision)
        else:
            sr = predict_volume(net, c.inp, c.acquisition.factors, precision, c.reference)
        p_spline = psnr(c.inp, c.target, mask=c.mask)
        p_net = psnr(sr, c.target, mask=c.mask)
        out[f"{c.contrast}:{c.name}"] = {"spline": p_spline, "net": p_net, "gain": p_net - p_spline}
    net.train()
    return out


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


@dataclass
class RunState:
    """What a checkpoint holds besides the configuration."""

    step: int
    best_gain: float


def _resolved(d: dict) -> dict:
    """A config dict with ``train.loss = "auto"`` replaced by the architecture's loss (the same training)."""
    from mrisr.training.networks import TRAINABLES

    train = d.get("train", {})
    if train.get("loss") == "auto":
        spec = TRAINABLES.get(d.get("model", {}).get("arch", "recnn"))
        d = {**d, "train": {**train, "loss": spec.loss if spec is not None and spec.loss else "auto"}}
    return d


def same_config(saved: dict, cfg: Config) -> bool:
    """Whether a checkpoint's configuration equals ``cfg``; fields added to mrisr
    since the checkpoint was written count as their defaults, and ``train.loss``
    ``auto`` equals the loss it stands for (``l1`` for ``recnn``, the old default)."""
    filled = Config().to_dict()
    for section, values in saved.items():
        filled.setdefault(section, {}).update(values)
    return _resolved(filled) == _resolved(cfg.to_dict())


def save_checkpoint(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, state: RunState, cfg: Config,
                    average: WeightAverage | None = None) -> None:
    """Write model, optimiser, step (and the weight average) atomically (temp file + rename)."""
    extra = {} if average is None else {"average": average.state_dict()}
    atomic_save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": state.step,
                 "best_gain": state.best_gain, "config": cfg.to_dict(), **extra}, path)


class WeightAverage:
    """The equal-weight running mean of a network's weights over the steps it is updated at
    (``train.average_from``), in float32.

    Example:
        >>> net = torch.nn.Linear(1, 1, bias=False)
        >>> avg = WeightAverage()
        >>> for w in (1.0, 2.0, 6.0):
        ...     _ = net.weight.data.fill_(w); avg.update(net)
        >>> avg.count, float(avg.weights["weight"])
        (3, 3.0)
    """

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}
        self.count = 0

    def update(self, net: torch.nn.Module) -> None:
        """Fold the current weights into the mean."""
        self.count += 1
        with torch.no_grad():
            for name, value in net.state_dict().items():
                v = value.detach().float()
                if name not in self.weights:
                    self.weights[name] = v.clone()
                else:
                    self.weights[name] += (v - self.weights[name]) / self.count

    def state_dict(self) -> dict:
        """Weights (contiguous copies) and count, for a checkpoint or ``average.pt``."""
        return {"weights": {k: v.contiguous().clone() for k, v in self.weights.items()}, "count": self.count}

    def load_state_dict(self, saved: dict) -> None:
        """Restore from :meth:`state_dict`."""
        self.weights, self.count = dict(saved["weights"]), int(saved["count"])


def log_record(run_dir: Path, record: dict) -> None:
    """Append one JSON record to ``run_dir/log.jsonl``."""
    with open(run_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def open_run(cfg: Config, run_dir: Path, config_path: Path | None, resume: bool, init: LoadedModel | None,
             start: Callable[[LoadedModel], None]) -> dict | None:
    """Prepare ``run_dir``: on resume, the checkpoint (its configuration checked); else copy the
    configuration, start from ``init`` (``start(init)``, recorded in ``init.json``) and return None.

    Raises:
        ConfigError: no checkpoint to resume, or one made with another configuration.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoint.pt"
    if resume:
        if not ckpt.is_file():
            raise ConfigError(f"--resume: no checkpoint in {run_dir}")
        saved = torch.load(ckpt, weights_only=True)
        if not same_config(saved["config"], cfg):
            raise ConfigError(f"--resume: {ckpt} was made with a different configuration")
        return saved
    if config_path is not None:
        shutil.copyfile(config_path, run_dir / "config.toml")
    if init is not None:
        start(init)
        (run_dir / "init.json").write_text(json.dumps({"model": init.name, "sha256": init.sha256,
                                                       "version": init.card.version}) + "\n")
    else:
        (run_dir / "init.json").unlink(missing_ok=True)
    return None


def validation_point(run_dir: Path, net: torch.nn.Module, cases: list[ValidationCase], cfg: Config,
                     state: RunState, elapsed: float) -> float:
    """Validate ``net``, log the table, keep its weights as ``best.pt`` if the mean gain is the best;
    returns the mean gain."""
    table = validate(net, cases, cfg.train.precision)
    gain = float(np.mean([v["gain"] for v in table.values()]))
    log_record(run_dir, {"step": state.step, "validation": table, "mean_gain": gain, "time": elapsed})
    if gain > state.best_gain:
        state.best_gain = gain
        atomic_save(net.state_dict(), run_dir / "best.pt")
    return gain


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
        from mrisr.training.gan_trainer import train_gan

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
