"""Which network ``[model]`` describes, how it trains, and its constructor arguments.

Every value of ``model.arch`` (:data:`~mrisr.training.trainables.TRAINABLE`)
maps to a :class:`Trainable`: the registered architecture that is trained and
exported, the training *mode* and the loss of its paper:

* ``interpolated``: input the spline-interpolated volume, the network's
  residual is added to it (``recnn``, ``srcnn3d``, ``mdcsrn``, ``gan-cpce``,
  ``gan-circle-generator``);
* ``upsampling``: input the low-resolution volume at the network's integer
  ``scale``, output the whole high-resolution patch (``rrlsrn``,
  ``georgescu``; :mod:`mrisr.training.lr_pairs`);
* ``gan``: adversarial training of an interpolated-input generator
  (``mdcsrn-gan``, ``gan-cpce-wgan``, ``gan-circle``; :mod:`mrisr.training.gan_trainer`).

Constructor arguments: a ``recnn`` without a preset takes ``model.depth``,
``width`` and ``kernel`` (as before presets existed, so older configurations
build the same network); otherwise the preset's arguments (if any) on top of
the class defaults. ``model.params`` then overrides any argument;
``model.condition`` sets ``cond_dim`` (3 or 0) where the architecture has it
(learned-upsampling networks have a fixed scale, nothing to condition on);
``data.reference`` sets ``in_channels`` (2: guided).

Example:
    >>> from mrisr.training.config import config_from_dict
    >>> network_kwargs(config_from_dict({}))
    {'depth': 8, 'width': 32, 'kernel': 3, 'cond_dim': 3, 'in_channels': 1}
    >>> build_network(config_from_dict({"model": {"arch": "rrlsrn", "params": {"depth": 3, "width": 4}}})).upsampling
    (2, 2, 2)
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from torch import nn

from mrisr.errors import ConfigError, ModelError
from mrisr.inference.model_card import architecture_class
from mrisr.inference.upsampling import upsampling_scale
from mrisr.training.trainables import TRAINABLES, Trainable

if TYPE_CHECKING:  # annotations only: mrisr.training.config calls check_model, so it imports this module
    from mrisr.training.config import Config, ModelConfig

_RECNN_SIZE = ("depth", "width", "kernel")


def trainable(cfg: Config) -> Trainable:
    """The :class:`Trainable` of ``cfg.model.arch``."""
    return TRAINABLES[cfg.model.arch]


def _constructor_args(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]  # type: ignore[misc]


def _check_recnn_fields(m: ModelConfig) -> None:
    """``depth``/``width``/``kernel`` left at their defaults unless they size a preset-less recnn."""
    defaults = {f.name: f.default for f in fields(m)}
    for name in _RECNN_SIZE:
        if getattr(m, name) == defaults[name]:
            continue
        if m.arch != "recnn":
            raise ConfigError(f"model.{name}: sizes arch 'recnn' only; size {m.arch!r} with model.preset or "
                              f"model.params (e.g. params = {{ ... }}, see the architecture's arguments)")
        raise ConfigError(f"model.{name}: preset {m.preset!r} sets the size; override it with "
                          f"model.params.{name} instead")


def network_kwargs(cfg: Config) -> dict[str, Any]:
    """Constructor arguments of the trained (exported) network.

    Raises:
        ConfigError: naming ``model.preset``, ``model.params.<name>`` or the
            ``model`` field that does not fit the architecture, with the valid choices.
    """
    m, spec = cfg.model, trainable(cfg)
    cls = architecture_class(spec.architecture)
    args = _constructor_args(cls)
    presets = getattr(cls, "PRESETS", {})
    if m.preset and m.preset not in presets:
        valid = ", ".join(presets) if presets else "none"
        raise ConfigError(f"model.preset: {m.preset!r} is not a preset of {m.arch!r}; valid: {valid}")
    if m.arch == "recnn" and not m.preset:
        kwargs: dict[str, Any] = {"depth": m.depth, "width": m.width, "kernel": m.kernel}
    else:
        _check_recnn_fields(m)
        kwargs = dict(presets[m.preset]) if m.preset else {}
    if "cond_dim" in args:
        kwargs["cond_dim"] = 3 if m.condition else 0
    for key, value in m.params.items():
        if key not in args:
            raise ConfigError(f"model.params.{key}: not an argument of {m.arch!r} ({cls.__name__}); "
                              f"valid: {', '.join(a for a in args if a != 'in_channels')}")
        if key == "in_channels":
            raise ConfigError("model.params.in_channels: set by data.reference (2 for a guided model)")
        kwargs[key] = value
    kwargs["in_channels"] = 2 if cfg.data.reference else 1
    return kwargs


def _construct(cls: type, kwargs: dict[str, Any], arch: str) -> nn.Module:
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.params: {arch!r} cannot be built with {kwargs}: {e}") from None


def build_network(cfg: Config) -> nn.Module:
    """The network ``cfg.model`` describes (freshly initialised); for a GAN mode, the generator that is exported.

    Raises:
        ConfigError: naming the ``model`` field that does not fit.
    """
    spec = trainable(cfg)
    return _construct(architecture_class(spec.architecture), network_kwargs(cfg), cfg.model.arch)


def build_generator_pair(cfg: Config) -> nn.Module:
    """``gan-circle`` only: the :class:`~mrisr.archs.lyu.GANCircle` pair (G exported, F for the cycle losses)."""
    return _construct(architecture_class("gan-circle"), network_kwargs(cfg), cfg.model.arch)


def _check_patch(cfg: Config, scale: tuple[int, int, int]) -> None:
    p = cfg.train.patch
    for axis, s in enumerate(scale):
        if p % s:
            raise ConfigError(f"train.patch: {p} is not a multiple of the network's scale {s} along axis {axis} "
                              f"(scale {list(scale)}); the low-resolution patch must have whole voxels")


def check_model(cfg: Config) -> None:
    """Check ``[model]`` (and what it needs from the other sections) by building the network once.

    Raises:
        ConfigError: naming the field, with the valid choices.
    """
    spec = trainable(cfg)
    if cfg.data.reference and spec.mode != "interpolated":
        raise ConfigError(f"data.reference: guided training needs an interpolated-input network; "
                          f"model.arch {cfg.model.arch!r} trains in mode {spec.mode!r}")
    if spec.mode == "gan" and cfg.train.average_from:
        raise ConfigError(f"train.average_from: weight averaging is for supervised training; GAN mode "
                          f"{cfg.model.arch!r} does not average, got {cfg.train.average_from}")
    if spec.mode == "gan" and cfg.train.loss != "auto":
        raise ConfigError(f"train.loss: GAN mode {cfg.model.arch!r} uses its paper's losses (see the [gan] "
                          f"section); leave train.loss at 'auto', got {cfg.train.loss!r}")
    if cfg.model.arch == "gan-circle" and cfg.train.patch <= 16:
        raise ConfigError(f"train.patch: GAN-CIRCLE's critics halve the patch four times before instance "
                          f"normalisation; use a patch above 16 voxels, got {cfg.train.patch}")
    try:
        net = build_network(cfg)
    except ModelError as e:  # pragma: no cover - every TRAINABLE is registered
        raise ConfigError(f"model.arch: {e}") from None
    scale = upsampling_scale(net)
    if scale is not None:
        _check_patch(cfg, scale)
