"""Training configuration: a TOML file parsed into frozen dataclasses.

Every field has a default, so a config names only what it changes. Unknown
sections or fields, wrong types and out-of-range values are reported by their
dotted field name (``train.steps``) and the file, as :class:`ConfigError`.

``[model]`` names a trainable architecture (:data:`TRAINABLE`), optionally
one of its presets and a table of constructor overrides; their validity is
checked against the architecture itself (:mod:`mrisr.training.networks`).

Example:
    >>> cfg = config_from_dict({"train": {"steps": 10}})
    >>> cfg.train.steps, cfg.model.arch
    (10, 'recnn')
    >>> config_from_dict({"model": {"arch": "mdcsrn", "preset": "b4u4", "params": {"growth": 8}}}).model.params
    {'growth': 8}
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_type_hints

from mrisr.errors import ConfigError
from mrisr.inference.intensity import NORMALISATIONS
from mrisr.options import LOSSES, TRAIN_PRECISIONS
from mrisr.training.trainables import TRAINABLE


@dataclass(frozen=True)
class DataConfig:
    """Where the HR volumes come from and which part is held out."""

    source: str = "icbm152"          # "icbm152" (template + tissue maps) or "folder"
    dir: str = "data/icbm152"        # folder holding the files (relative to the config file)
    holdout_axis: int = 2            # voxel axis of the held-out slab (2 = axial for the template)
    holdout_fraction: float = 0.25   # top fraction of that axis never touched by training patches
    contrasts: dict[str, float] = field(default_factory=lambda: {
        "t1": 0.4, "t2": 0.15, "flair": 0.15, "pd": 0.1, "random": 0.2})
    reference: str = ""              # "t1": guided model, the HR T1 is a second input channel (icbm152 only)
    normalisation: str = "robust_scale"  # the network's intensity scale (mrisr.inference.intensity.NORMALISATIONS)
    wholehead_dir: str = ""          # folder of the whole-head volumes (mrisr.training.wholehead); "": none
    wholehead_probability: float = 0.0   # fraction of training crops drawn from those volumes
    label_heads_probability: float = 0.0  # fraction drawn as synthetic heads from a label map (training.labelheads)


@dataclass(frozen=True)
class DegradationConfig:
    """The distribution of simulated acquisitions, sampled per patch."""

    kinds: dict[str, float] = field(default_factory=lambda: {"iso": 0.35, "thick": 0.4, "kspace": 0.25})
    iso_factor: tuple[float, float] = (1.5, 4.0)
    thick_factor: tuple[float, float] = (2.0, 6.0)
    kspace_factor: tuple[float, float] = (1.5, 3.0)
    psfs: dict[str, float] = field(default_factory=lambda: {"box": 1.0, "gaussian": 1.0, "kspace": 1.0, "slice": 1.0})
    gaussian_fwhm: tuple[float, float] = (0.7, 1.5)
    noise: tuple[float, float] = (0.005, 0.04)
    noise_probability: float = 0.5
    # Georgescu et al.'s augmentation: the LR input blurred by a 3-tap Gaussian of random sigma (LR voxels)
    # with this probability (0: off; the paper: 0.5 and sigma in [0, 0.5]).
    input_blur: tuple[float, float] = (0.0, 0.5)
    input_blur_probability: float = 0.0
    bias_probability: float = 0.5
    bias_strength: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.4)
    scale: tuple[float, float] = (0.8, 1.25)
    flips: bool = True
    permute: bool = True
    # Guided models only: how the HR reference differs from a perfect copy of the anatomy.
    reference_shift: float = 0.5              # max misregistration per axis, in HR voxels
    reference_blur: tuple[float, float] = (0.0, 0.6)    # Gaussian sigma, HR voxels
    reference_noise: tuple[float, float] = (0.0, 0.02)  # Rician sigma, relative to the robust max
    reference_rotation: float = 0.0           # max rigid misregistration, degrees about each axis
    reference_elastic: float = 0.0            # max nonlinear misregistration, HR voxels
    reference_resolution: tuple[float, float] = (1.0, 1.0)  # the reference's own voxel size, HR voxels
    # The reference's own intensity jitter (None: the target's ``gamma`` / ``scale`` ranges). At inference the
    # reference is divided by its own scale, as training volumes are at load: ``reference_scale = [1, 1]``
    # shows the network its intensities exactly as ``mrisr upscale`` will.
    reference_gamma: tuple[float, float] | None = None
    reference_scale: tuple[float, float] | None = None
    # Anatomical variety (mrisr.training.augment): with this probability a crop is read through a random warp.
    warp_probability: float = 0.0
    rotation: float = 0.0                      # max degrees about each axis
    zoom: tuple[float, float] = (1.0, 1.0)     # scaling per axis
    asymmetry: float = 0.0                     # left-right difference of the scaling
    elastic: float = 0.0                       # max elastic displacement, HR voxels
    # Dynamic range: the brightest tissue boosted (factor range, level in units of the normalised scale),
    # and 8-bit saturation (clip level in the same units).
    brighten_probability: float = 0.0
    brighten: tuple[float, float] = (1.0, 3.0)
    brighten_level: tuple[float, float] = (1.3, 2.0)
    saturate_probability: float = 0.0
    saturate_level: tuple[float, float] = (1.4, 3.0)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and its size.

    ``depth``, ``width`` and ``kernel`` size a ``recnn`` without a preset;
    every other architecture (and a ``recnn`` preset) is sized by ``preset``
    and ``params`` (constructor arguments, overriding the preset's).
    """

    arch: str = "recnn"
    depth: int = 8
    width: int = 32
    kernel: int = 3
    condition: bool = True            # condition on log2 of the per-axis upsampling factors (where the arch can)
    preset: str = ""                  # a named constructor-argument set of the architecture (e.g. "pham-10l")
    params: dict[str, Any] = field(default_factory=dict)  # constructor overrides, e.g. { growth = 8 }


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, precision, checkpoints."""

    patch: int = 32
    batch: int = 8
    steps: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup: int = 100
    loss: str = "auto"                # auto (the architecture's own) | l1 | l2 | charbonnier | l1+gdl | charbonnier+gdl
    gdl_weight: float = 0.5           # weight of the gradient difference term of an explicit l1+gdl / charbonnier+gdl
    intermediate_weight: float = 1.0  # georgescu: weight of the intermediate (sub-pixel output) loss, Eq. 3's lambda
    precision: str = "bf16"           # bf16 (autocast on CPU/GPU) | fp32
    seed: int = 0
    threads: int = 2
    checkpoint_every: int = 200
    validate_every: int = 500
    validation_cases: list[str] = field(default_factory=lambda: ["iso2-box", "thick4-slice", "kspace2x2-kspace"])
    validation_contrasts: list[str] = field(default_factory=list)  # empty: the named contrasts trained on
    grad_clip: float = 1.0
    # Weight averaging (Polyak; SWA with a cosine tail): from this step on, the equal-weight running mean of the
    # weights after every step is kept and written as average.pt (0: off). Supervised modes only.
    average_from: int = 0


@dataclass(frozen=True)
class GanConfig:
    """Adversarial training modes only (``model.arch`` = ``mdcsrn-gan``, ``gan-cpce-wgan`` or ``gan-circle``).

    Unset schedule fields take the paper's value for the mode (see
    :func:`mrisr.training.gan_trainer.gan_schedule`).
    """

    n_critic: int = 5                 # critic updates per generator update (both papers)
    critic_warmup: int | None = None  # critic-only updates before the first generator update (Chen: 10000)
    extra_critic_every: int | None = None  # every this many generator updates... (Chen: 500)
    extra_critic_steps: int | None = None  # ...this many extra critic updates (Chen: 200)
    adv_weight: float | None = None   # weight of the adversarial term (Chen: 0.1; GAN-CPCE: 0.1; GAN-CIRCLE: 1)
    gp_weight: float = 10.0           # WGAN-GP penalty weight
    critic_lr: float = 1e-4
    critic_width: int = 64            # filters of the critics' first layers
    critic_flatten: bool = False      # flatten the last feature maps as the papers (fixed patch) instead of pooling


@dataclass(frozen=True)
class Config:
    """A whole training configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    base_dir: str = "."

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for checkpoints and model cards)."""
        d = dataclasses.asdict(self)
        d.pop("base_dir")
        return d


_CHOICES = {
    "data.source": ("icbm152", "folder"),
    "data.reference": ("", "t1"),
    "data.normalisation": tuple(NORMALISATIONS),
    "model.arch": TRAINABLE,
    "train.loss": ("auto", *LOSSES),
    "train.precision": TRAIN_PRECISIONS,
}


def _coerce(value: Any, typ: Any, name: str) -> Any:
    origin = getattr(typ, "__origin__", None)
    if origin is Union or isinstance(typ, types.UnionType):  # X | None: unset (None, from to_dict) or an X
        return None if value is None else _coerce(value, next(a for a in typ.__args__ if a is not type(None)), name)
    if origin is dict and typ.__args__[1] is Any:  # a free table (model.params)
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a table, got {value!r}")
        return dict(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ConfigError(f"{name}: expected [low, high], got {value!r}")
        lo, hi = (_coerce(v, float, name) for v in value)
        if lo > hi:
            raise ConfigError(f"{name}: low {lo} is above high {hi}")
        return (lo, hi)
    if origin is dict:
        if not isinstance(value, dict) or not value:
            raise ConfigError(f"{name}: expected a table of weights, got {value!r}")
        out = {str(k): _coerce(v, float, f"{name}.{k}") for k, v in value.items()}
        if min(out.values()) < 0 or sum(out.values()) <= 0:
            raise ConfigError(f"{name}: weights must be >= 0 with a positive sum, got {out}")
        return out
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return [_coerce(v, str, name) for v in value]
    raise ConfigError(f"{name}: unsupported type {typ}")  # pragma: no cover


def _section(cls: type, values: dict[str, Any], section: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"[{section}] must be a table, got {values!r}")
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}: unknown field; valid fields: {', '.join(sorted(known))}")
    kwargs = {}
    for key, value in values.items():
        name = f"{section}.{key}"
        kwargs[key] = _coerce(value, hints[key], name)
        if name in _CHOICES and kwargs[key] not in _CHOICES[name]:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(_CHOICES[name])}")
    return cls(**kwargs)


def _check_ranges(cfg: Config) -> None:
    t, d = cfg.train, cfg.data
    positive = {"train.patch": t.patch, "train.batch": t.batch, "train.steps": t.steps, "train.lr": t.lr,
                "train.threads": t.threads, "train.checkpoint_every": t.checkpoint_every,
                "train.validate_every": t.validate_every, "model.depth": cfg.model.depth,
                "model.width": cfg.model.width}
    for name, v in positive.items():
        if v <= 0:
            raise ConfigError(f"{name}: must be > 0, got {v}")
    if cfg.model.depth < 2:
        raise ConfigError(f"model.depth: must be >= 2, got {cfg.model.depth}")
    if cfg.model.kernel % 2 == 0 or cfg.model.kernel < 1:
        raise ConfigError(f"model.kernel: must be odd and >= 1, got {cfg.model.kernel}")
    if not 0 < d.holdout_fraction < 1:
        raise ConfigError(f"data.holdout_fraction: must be in (0, 1), got {d.holdout_fraction}")
    if d.holdout_axis not in (0, 1, 2):
        raise ConfigError(f"data.holdout_axis: must be 0, 1 or 2, got {d.holdout_axis}")
    for c in cfg.train.validation_contrasts:
        if c not in ("t1", "t2", "flair", "pd"):
            raise ConfigError(f"train.validation_contrasts: {c!r} is not one of t1, t2, flair, pd")
    if d.reference and d.source != "icbm152":
        raise ConfigError("data.reference: guided training synthesises its targets from tissue maps; "
                          "it needs data.source = 'icbm152'")
    dg = cfg.degradation
    if not 0 <= d.wholehead_probability <= 1 or (d.wholehead_probability > 0 and not d.wholehead_dir):
        raise ConfigError(f"data.wholehead_probability: must be in [0, 1] (and > 0 needs data.wholehead_dir), "
                          f"got {d.wholehead_probability}")
    if not 0 <= d.label_heads_probability <= 1 or (d.label_heads_probability > 0 and not d.wholehead_dir):
        raise ConfigError(f"data.label_heads_probability: must be in [0, 1] (and > 0 needs data.wholehead_dir, "
                          f"where the label map is fetched), got {d.label_heads_probability}")
    if d.label_heads_probability > 0 and d.reference:
        raise ConfigError("data.label_heads_probability: synthetic label heads have no reference scan; "
                          "a guided configuration (data.reference) cannot use them")
    if dg.zoom[0] <= 0 or dg.rotation < 0 or dg.asymmetry < 0 or dg.elastic < 0:
        raise ConfigError("degradation.zoom must be > 0; rotation, asymmetry and elastic >= 0")
    for name, p in {"noise_probability": dg.noise_probability, "bias_probability": dg.bias_probability,
                    "input_blur_probability": dg.input_blur_probability, "warp_probability": dg.warp_probability,
                    "brighten_probability": dg.brighten_probability,
                    "saturate_probability": dg.saturate_probability}.items():
        if not 0 <= p <= 1:
            raise ConfigError(f"degradation.{name}: must be in [0, 1], got {p}")
    if dg.input_blur[0] < 0:
        raise ConfigError(f"degradation.input_blur: sigmas must be >= 0, got {list(dg.input_blur)}")
    if cfg.degradation.reference_shift < 0:
        raise ConfigError(f"degradation.reference_shift: must be >= 0, got {cfg.degradation.reference_shift}")
    if dg.reference_rotation < 0 or dg.reference_elastic < 0 or dg.reference_resolution[0] <= 0:
        raise ConfigError("degradation.reference_rotation and reference_elastic must be >= 0, "
                          "reference_resolution > 0")
    if cfg.degradation.iso_factor[0] < 1 or cfg.degradation.thick_factor[0] < 1 or cfg.degradation.kspace_factor[0] < 1:
        raise ConfigError("degradation.*_factor: factors must be >= 1")
    g = cfg.gan
    for name, v in {"gan.n_critic": g.n_critic, "gan.critic_lr": g.critic_lr,
                    "gan.critic_width": g.critic_width}.items():
        if v <= 0:
            raise ConfigError(f"{name}: must be > 0, got {v}")
    for name in ("critic_warmup", "extra_critic_every", "extra_critic_steps", "adv_weight"):
        v = getattr(g, name)
        if v is not None and v < 0:
            raise ConfigError(f"gan.{name}: must be >= 0, got {v}")
    if not 0 <= t.average_from <= t.steps:
        raise ConfigError(f"train.average_from: must be in [0, train.steps = {t.steps}], got {t.average_from}")
    if t.intermediate_weight < 0 or t.gdl_weight < 0:
        raise ConfigError("train.intermediate_weight, train.gdl_weight: must be >= 0")


def config_from_dict(raw: dict[str, Any], base_dir: str = ".") -> Config:
    """Build a validated :class:`Config` from a parsed TOML dict."""
    sections = {"data": DataConfig, "degradation": DegradationConfig, "model": ModelConfig, "train": TrainConfig,
                "gan": GanConfig}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"[{unknown[0]}]: unknown section; valid sections: {', '.join(sections)}")
    parts = {name: _section(cls, raw.get(name, {}), name) for name, cls in sections.items()}
    cfg = Config(**parts, base_dir=base_dir)
    _check_ranges(cfg)
    from mrisr.training.networks import check_model  # imports torch: the architecture checks its own arguments

    check_model(cfg)
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML training configuration.

    Raises:
        ConfigError: naming the file and the offending field.
    """
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None
    try:
        return config_from_dict(raw, base_dir=str(p.resolve().parent))
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
