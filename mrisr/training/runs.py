"""A training run's folder and the steps every training loop shares.

The run folder (``config.toml``, ``checkpoint.pt``, ``best.pt``, ``average.pt``, ``log.jsonl``), the schedule,
validation on the held-out cases, initialisation from a trained model; used by :mod:`mrisr.training.trainer`
and :mod:`mrisr.training.gan_trainer`.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mrisr.errors import ConfigError
from mrisr.evaluation.metrics import psnr
from mrisr.inference.device import autocast as device_autocast
from mrisr.inference.model_card import LoadedModel, architecture_name, atomic_save
from mrisr.training.config import Config
from mrisr.training.data import ValidationCase
from mrisr.training.trainables import TRAINABLES


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


@dataclass
class RunState:
    """What a checkpoint holds besides the configuration."""

    step: int
    best_gain: float


def _resolved(d: dict) -> dict:
    """A config dict with ``train.loss = "auto"`` replaced by the architecture's loss (the same training)."""
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
