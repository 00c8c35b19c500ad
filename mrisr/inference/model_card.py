"""Model cards: what a bundled model is, how it was trained, and its weights.

A model is a folder holding ``card.json`` and a weights file (``model.pt``, a
``state_dict`` saved with :func:`torch.save`). The card names the
architecture and its constructor parameters, the SHA-256 of the weights, the
training data and trained ranges, a free-form validation table and the
intensity normalisation::

    {
      "name": "my-model", "version": "1.0.0", "description": "...",
      "default": true,
      "architecture": {"name": "recnn", "params": {"depth": 8, "width": 32, "kernel": 3, "in_channels": 1}},
      "receptive_radius": 8,
      "weights": "model.pt",
      "sha256": "3f2a...",
      "training": {"data": "...", "licence": "...", "degradations": ["box", "gaussian"],
                   "input_spacing_mm": [1.0, 4.0], "factor": [1.0, 4.0]},
      "validation": {...},
      "normalisation": {"method": "robust_scale", "percentile": 99}
    }

Unknown top-level keys are kept in :attr:`ModelCard.extra` and written back,
so older readers never lose fields newer writers add.

This module imports torch only inside the functions that need it, so listing
models (``mrisr models``) stays fast.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrisr.errors import ModelError
from mrisr.inference.intensity import NORMALISATIONS as _INTENSITY_SCALES

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

#: Name of the card file inside a model folder.
CARD_FILE = "card.json"
#: Default name of the weights file inside a model folder.
WEIGHTS_FILE = "model.pt"

#: Architecture registry: card name -> ``"module:Class"``. Resolved lazily by
#: :func:`architecture_class` so that reading cards never imports torch.
ARCHITECTURES: dict[str, str] = {
    "recnn": "mrisr.archs.recnn:ReCNN",
    "recnn-s2d": "mrisr.archs.s2d:ReCNNS2D",
    "srcnn3d": "mrisr.archs.srcnn3d:SRCNN3D",
    "mdcsrn": "mrisr.archs.mdcsrn:MDCSRN",
    "rrlsrn": "mrisr.archs.rrlsrn:RRLSRN",
    "georgescu": "mrisr.archs.georgescu:Georgescu",
    "gan-cpce": "mrisr.archs.lyu:GanCpceGenerator",
    "gan-circle": "mrisr.archs.lyu:GANCircle",
    "gan-circle-generator": "mrisr.archs.lyu:GANCircleGenerator",
}

#: Largest magnitude of a number in ``architecture.params`` (a width, a depth, a kernel).
MAX_PARAM_VALUE = 1_000_000
#: Largest network a card may describe (parameters; 2 GB as float32). Shipped models hold under 2 million.
MAX_NETWORK_PARAMETERS = 500_000_000

#: Normalisation methods the engine knows how to apply.
NORMALISATIONS = tuple(_INTENSITY_SCALES)  # defined once, in mrisr.inference.intensity

_REQUIRED = ("name", "version", "description", "architecture", "receptive_radius", "weights", "sha256",
             "training", "normalisation")
_OPTIONAL = ("default", "validation")
_RANGES = ("input_spacing_mm", "factor")
_LFS_MAGIC = b"version https://git-lfs"


def register_architecture(name: str, target: str | type) -> None:
    """Add an architecture to :data:`ARCHITECTURES`.

    Args:
        name: The name model cards use (``architecture.name``).
        target: The ``nn.Module`` class, or ``"module:Class"`` to import lazily.

    Example:
        >>> register_architecture("recnn", "mrisr.archs.recnn:ReCNN")
    """
    if isinstance(target, type):
        target = f"{target.__module__}:{target.__qualname__}"
    ARCHITECTURES[name] = target


def architecture_class(name: str) -> type:
    """The ``nn.Module`` class registered under ``name`` (imports it).

    Raises:
        ModelError: for an unknown name, listing the known ones.

    Example:
        >>> architecture_class("recnn").__name__
        'ReCNN'
    """
    if name not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    module, _, attr = ARCHITECTURES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def architecture_name(network: object) -> str:
    """The registry name of ``network``'s class.

    Raises:
        ModelError: if the class is not registered.
    """
    cls = type(network)
    target = f"{cls.__module__}:{cls.__qualname__}"
    for name, path in ARCHITECTURES.items():
        if path == target:
            return name
    raise ModelError(f"architecture {cls.__qualname__} is not registered; "
                     f"add it with register_architecture(); known: {', '.join(sorted(ARCHITECTURES))}")


@dataclass(frozen=True)
class ModelCard:
    """The parsed, validated content of a model's ``card.json``.

    Attributes:
        name: Unique model name (what ``--model`` takes).
        version: Model version (free text, e.g. ``"1.0.0"``).
        description: One or two sentences for humans.
        default: Whether this is the model used when none is named.
        architecture: ``{"name": <registry name>, "params": {constructor kwargs}}``.
        receptive_radius: Voxels of context on each side of an output voxel.
        weights: Weights file name, relative to the card's folder.
        sha256: Hex SHA-256 of the weights file.
        training: Training facts: ``data``, ``licence``, ``degradations``,
            ``input_spacing_mm`` ``[min, max]``, ``factor`` ``[min, max]``, ...
        validation: Free-form validation results (table rows, metrics).
        normalisation: ``{"method": "robust_scale", "percentile": 99}``.
        extra: Unknown top-level keys, preserved when the card is written.
        path: The ``card.json`` the card was read from (``None`` if built in memory).
    """

    name: str
    version: str
    description: str
    architecture: dict
    receptive_radius: int
    weights: str
    sha256: str
    training: dict
    normalisation: dict
    default: bool = False
    validation: Any = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    @property
    def folder(self) -> Path | None:
        """Folder holding the card and weights (``None`` for an in-memory card)."""
        return None if self.path is None else self.path.parent

    @property
    def weights_path(self) -> Path | None:
        """Absolute path of the weights file (``None`` for an in-memory card)."""
        return None if self.folder is None else self.folder / self.weights

    @property
    def input_spacing_range(self) -> tuple[float, float]:
        """Trained input voxel sizes ``(min, max)`` in mm."""
        lo, hi = self.training["input_spacing_mm"]
        return float(lo), float(hi)

    @property
    def factor_range(self) -> tuple[float, float]:
        """Trained upsampling factors ``(min, max)`` (input / output spacing)."""
        lo, hi = self.training["factor"]
        return float(lo), float(hi)

    def to_dict(self) -> dict:
        """The card as written to ``card.json`` (``path`` excluded).

        Example:
            >>> card = example_card()
            >>> ModelCard.from_dict(card.to_dict()) == card
            True
        """
        out = {k: getattr(self, k) for k in ("name", "version", "description", "default", "architecture",
                                             "receptive_radius", "weights", "sha256", "training",
                                             "validation", "normalisation")}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path = "<card>") -> ModelCard:
        """Validate ``data`` and build a card.

        Args:
            data: The decoded JSON object.
            source: Where it came from, for error messages (and ``path``).

        Raises:
            ModelError: naming the missing or invalid field and ``source``.
        """
        if not isinstance(data, Mapping):
            raise ModelError(f"{source}: a model card must be a JSON object, got {type(data).__name__}")
        for key in _REQUIRED:
            if key not in data:
                raise ModelError(f"{source}: model card is missing the field {key!r}")
        where = str(source)
        name = _text(data, "name", where)
        default = data.get("default", False)
        if not isinstance(default, bool):
            raise ModelError(f"{where}: field 'default' must be true or false, got {default!r}")
        radius = data["receptive_radius"]
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
            raise ModelError(f"{where}: field 'receptive_radius' must be an integer >= 0, got {radius!r}")
        sha = _text(data, "sha256", where).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ModelError(f"{where}: field 'sha256' must be 64 hex digits, got {data['sha256']!r}")
        weights = _text(data, "weights", where)
        if Path(weights).is_absolute() or ".." in Path(weights).parts:
            raise ModelError(f"{where}: field 'weights' must be a file name inside the model folder, got {weights!r}")
        extra = {k: v for k, v in data.items() if k not in _REQUIRED + _OPTIONAL}
        return cls(
            name=name, version=_text(data, "version", where), description=_text(data, "description", where, empty=True),
            architecture=_check_architecture(data["architecture"], where), receptive_radius=radius,
            weights=weights, sha256=sha, training=_check_training(data["training"], where),
            normalisation=_check_normalisation(data["normalisation"], where), default=default,
            validation=data.get("validation", {}), extra=extra,
            path=Path(source) if str(source).endswith(".json") else None,
        )


def _text(data: Mapping, key: str, where: str, empty: bool = False) -> str:
    value = data[key]
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ModelError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def _check_architecture(arch: Any, where: str) -> dict:
    if not isinstance(arch, Mapping) or "name" not in arch:
        raise ModelError(f"{where}: field 'architecture' must be an object with 'name' and 'params', got {arch!r}")
    if arch["name"] not in ARCHITECTURES:
        raise ModelError(f"{where}: unknown architecture {arch['name']!r} in field 'architecture.name'; "
                         f"known: {', '.join(sorted(ARCHITECTURES))}")
    params = arch.get("params", {})
    if not isinstance(params, Mapping):
        raise ModelError(f"{where}: field 'architecture.params' must be an object, got {params!r}")
    for key, value in params.items():
        _check_param_value(value, f"architecture.params.{key}", where)
    return {"name": arch["name"], "params": dict(params)}


def _check_param_value(value: Any, field: str, where: str) -> None:
    """Numbers in the architecture's params (also inside lists) must be finite and at most MAX_PARAM_VALUE."""
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_param_value(item, field, where)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not math.isfinite(value) or abs(value) > MAX_PARAM_VALUE:
        raise ModelError(f"{where}: field {field!r} is {value!r}, outside the sane range (|value| <= "
                         f"{MAX_PARAM_VALUE:,}); the card is corrupt")


def _skip_init_on_meta() -> Any:
    """A torch function mode that skips in-place ops (``normal_``, ``zero_``...) on meta tensors.

    On the meta device an initialiser computes nothing, yet torch routes it through its Python
    reference implementations, whose first call imports ``torch._dynamo`` (one to two seconds of every
    ``mrisr upscale`` run); skipping them leaves the parameter count unchanged.
    """
    from torch.overrides import TorchFunctionMode

    class SkipInitOnMeta(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            first = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by keyword
            if name.endswith("_") and not name.endswith("__") and getattr(first, "is_meta", False):
                return first
            return func(*args, **kwargs)

    return SkipInitOnMeta()


def network_parameters(cls: type, params: Mapping[str, Any]) -> int | None:
    """Parameters of ``cls(**params)``, counted without allocating them (torch's meta device).

    Returns None when the architecture cannot be built on the meta device
    (the real construction then reports any problem).

    Raises:
        TypeError, ValueError: from the constructor, for params that do not fit.
    """
    import torch

    try:
        with torch.device("meta"), _skip_init_on_meta():
            network = cls(**params)
    except (TypeError, ValueError):
        raise
    except Exception:  # noqa: BLE001 - an architecture that needs real tensors to build
        return None
    return int(sum(p.numel() for p in network.parameters()))


def _check_range(training: Mapping, key: str, where: str) -> list[float]:
    if key not in training:
        raise ModelError(f"{where}: model card is missing the field 'training.{key}'")
    value = training[key]
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    nums = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)] if ok else []
    if len(nums) != 2 or not all(math.isfinite(v) and v > 0 for v in nums) or nums[0] > nums[1]:
        raise ModelError(f"{where}: field 'training.{key}' must be [min, max] with 0 < min <= max, got {value!r}")
    return [float(nums[0]), float(nums[1])]


def _check_training(training: Any, where: str) -> dict:
    if not isinstance(training, Mapping):
        raise ModelError(f"{where}: field 'training' must be an object, got {training!r}")
    out = dict(training)
    for key in _RANGES:
        out[key] = _check_range(training, key, where)
    return out


def _check_normalisation(norm: Any, where: str) -> dict:
    if not isinstance(norm, Mapping) or "method" not in norm:
        raise ModelError(f"{where}: field 'normalisation' must be an object with a 'method', got {norm!r}")
    if norm["method"] not in NORMALISATIONS:
        raise ModelError(f"{where}: unknown normalisation {norm['method']!r}; known: {', '.join(NORMALISATIONS)}")
    return dict(norm)


def real_head_gains(validation: Any) -> list[float]:
    """The PSNR gains (dB over the cubic spline) of a card's real-head rows; empty if never measured.

    Example:
        >>> real_head_gains({"real_heads": {"rows": [{"psnr_gain": 0.11}, {"case": "x"}]}}), real_head_gains({})
        ([0.11], [])
    """
    rows = (validation.get("real_heads") or {}).get("rows") if isinstance(validation, dict) else None
    return [float(r["psnr_gain"]) for r in rows or [] if isinstance(r, dict) and "psnr_gain" in r]


def read_card(path: str | Path) -> ModelCard:
    """Read and validate a ``card.json`` (or the card of a model folder).

    Raises:
        ModelError: if the file is missing, is not JSON, or a field is invalid.
    """
    p = Path(path)
    if p.is_dir():
        p = p / CARD_FILE
    if not p.is_file():
        raise ModelError(f"{p}: no model card found (expected a model folder holding {CARD_FILE})")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{p}: cannot read the model card: {exc}") from None
    return ModelCard.from_dict(data, source=p.resolve())


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, or of a folder's files (names and contents, sorted), read in chunks.

    Example:
        >>> import tempfile, os
        >>> with tempfile.NamedTemporaryFile(delete=False) as f: _ = f.write(b"abc")
        >>> file_sha256(f.name)[:16]
        'ba7816bf8f01cfea'
        >>> os.unlink(f.name)
    """
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(q for q in p.iterdir() if q.is_file())
    for f in files:
        if p.is_dir():
            h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def atomic_save(obj: object, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`mrisr.io.writer.save_bytes_atomic`: never a half-written
    file, an earlier one replaced only by a complete one).

    Example:
        >>> atomic_save({"step": 3}, "state.pt")
        >>> import torch; torch.load("state.pt")
        {'step': 3}
    """
    import io

    import torch

    from mrisr.io.writer import save_bytes_atomic

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    save_bytes_atomic(buffer.getvalue(), path, force=True)


def save_model(network: nn.Module, folder: str | Path, **card_fields: Any) -> ModelCard:
    """Write ``network``'s weights and a validated ``card.json`` into ``folder``.

    ``architecture``, ``receptive_radius``, ``weights`` and ``sha256`` are
    filled in from the network and the written file; every other card field
    comes from ``card_fields`` (``training`` with ``input_spacing_mm`` and
    ``factor`` ranges is required). Defaults: ``name`` = the folder name,
    ``version`` = ``"0.1.0"``, ``description`` = ``""``, ``default`` = False,
    ``validation`` = ``{}``, ``normalisation`` = robust_scale at the 99th
    percentile. Extra keywords are kept as extra card fields. The card is
    validated before anything is written; both files are written atomically.

    Args:
        network: A module of a registered architecture (with ``config()``).
        folder: Model folder (created if needed).
        **card_fields: Card fields, see :class:`ModelCard`.

    Returns:
        The card, as :func:`read_card` would read it back.

    Raises:
        ModelError: for an unregistered architecture or an invalid field.

    Example:
        >>> import tempfile
        >>> from mrisr.archs.recnn import ReCNN
        >>> d = tempfile.mkdtemp()
        >>> card = save_model(ReCNN(3, 4), d, name="tiny",
        ...                   training={"data": "none", "input_spacing_mm": [1, 3], "factor": [1, 3]})
        >>> card.architecture["params"]["depth"], card.receptive_radius
        (3, 3)
    """
    import torch

    from mrisr.io.writer import save_bytes_atomic

    folder = Path(folder)
    weights = card_fields.pop("weights", WEIGHTS_FILE)
    for key in ("architecture", "receptive_radius", "sha256"):
        if key in card_fields:
            raise ModelError(f"save_model fills {key!r} from the network; do not pass it")
    if not hasattr(network, "config"):
        raise ModelError(f"{type(network).__qualname__} has no config() method giving its constructor parameters")
    fields = {"name": folder.name, "version": "0.1.0", "description": "", "default": False, "validation": {},
              "normalisation": {"method": "robust_scale", "percentile": _default_percentile()}}
    fields.update(card_fields)
    fields.update(architecture={"name": architecture_name(network), "params": dict(network.config())},  # type: ignore[operator]
                  receptive_radius=int(network.receptive_radius),  # type: ignore[arg-type]
                  weights=weights, sha256="0" * 64)
    ModelCard.from_dict(fields, source=folder / CARD_FILE)  # validate before writing anything
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() if v.is_floating_point() else v.detach().cpu()
             for k, v in network.state_dict().items()}
    atomic_save(state, folder / weights)
    fields["sha256"] = file_sha256(folder / weights)
    text = json.dumps(fields, indent=2, sort_keys=False) + "\n"
    save_bytes_atomic(text.encode("utf-8"), folder / CARD_FILE, force=True)
    return read_card(folder / CARD_FILE)


def _default_percentile() -> float:
    from mrisr.inference.intensity import SCALE_PERCENTILE

    return SCALE_PERCENTILE


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for :func:`mrisr.inference.engine.enhance`.

    Attributes:
        name: The card's name.
        card: The model card.
        network: The network, in eval mode, on the CPU, gradients off.
        sha256: Verified SHA-256 of the weights.
        path: The model folder.
    """

    name: str
    card: ModelCard
    network: nn.Module
    sha256: str
    path: Path

    @property
    def receptive_radius(self) -> int:
        """Context voxels each side of an output voxel (the tiling halo)."""
        return self.card.receptive_radius


def verify_weights(card: ModelCard) -> Path:
    """Check that the card's weights file exists and matches its SHA-256.

    Returns:
        The weights path.

    Raises:
        ModelError: ``"checksum mismatch: expected X, got Y for FILE"``, or a
            missing file, or a Git LFS pointer in place of the weights.
    """
    path = card.weights_path
    if path is None:
        raise ModelError(f"model card {card.name!r} was not read from a folder; cannot find its weights")
    if not path.is_file():
        raise ModelError(f"{path}: weights file of model {card.name!r} is missing")
    with open(path, "rb") as fh:
        if fh.read(len(_LFS_MAGIC)) == _LFS_MAGIC:
            raise ModelError(f"{path}: is a Git LFS pointer, not the weights; run 'git lfs pull' or reinstall mrisr")
    got = file_sha256(path)
    if got != card.sha256:
        raise ModelError(f"checksum mismatch: expected {card.sha256}, got {got} for {path}")
    return path


def instantiate(card: ModelCard) -> LoadedModel:
    """Verify the weights, build the network and load them (CPU, eval mode).

    Weights are read with ``torch.load(..., weights_only=True)`` only after the
    checksum has been verified.

    Raises:
        ModelError: for a checksum mismatch, unreadable weights, weights that
            do not fit the architecture, or a wrong ``receptive_radius``.
    """
    import torch

    path = verify_weights(card)
    cls = architecture_class(card.architecture["name"])
    params = card.architecture["params"]
    try:
        n_params = network_parameters(cls, params)
    except (TypeError, ValueError) as exc:
        raise _misfit(card, cls, exc) from None
    if n_params is not None and n_params > MAX_NETWORK_PARAMETERS:
        raise ModelError(f"{card.path}: architecture.params {params} describe a network of {n_params:,} "
                         f"parameters ({n_params * 4 / 1e9:,.1f} GB as float32), above the limit of "
                         f"{MAX_NETWORK_PARAMETERS:,}; the card is corrupt or not meant for mrisr")
    try:
        network = cls(**params)
    except (TypeError, ValueError) as exc:
        raise _misfit(card, cls, exc) from None
    except (RuntimeError, MemoryError) as exc:  # torch's allocation failures
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise ModelError(f"{card.path}: cannot build the network of model {card.name!r} "
                         f"({type(exc).__name__}: {detail})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types here
        raise ModelError(f"{path}: cannot load the weights of model {card.name!r}: {exc}") from None
    actual = getattr(network, "receptive_radius", card.receptive_radius)
    if actual != card.receptive_radius:
        raise ModelError(f"{card.path}: receptive_radius is {card.receptive_radius} but the network's is {actual}")
    network.eval()
    network.requires_grad_(False)
    return LoadedModel(name=card.name, card=card, network=network, sha256=card.sha256, path=path.parent)


def _misfit(card: ModelCard, cls: type, exc: Exception) -> ModelError:
    return ModelError(f"{card.path}: architecture.params do not fit {cls.__name__}: {exc}")


def example_card(**overrides: Any) -> ModelCard:
    """A valid in-memory card for documentation and tests.

    Example:
        >>> example_card(name="demo").name
        'demo'
    """
    fields: dict[str, Any] = {
        "name": "example", "version": "0.0.0", "description": "Example card.", "default": False,
        "architecture": {"name": "recnn", "params": {"depth": 3, "width": 4, "kernel": 3, "in_channels": 1}},
        "receptive_radius": 3, "weights": WEIGHTS_FILE, "sha256": "0" * 64,
        "training": {"data": "synthetic", "licence": "CC0", "degradations": ["box"],
                     "input_spacing_mm": [1.0, 3.0], "factor": [1.0, 3.0]},
        "validation": {}, "normalisation": {"method": "robust_scale", "percentile": 99.0},
    }
    fields.update(overrides)
    return ModelCard.from_dict(fields)
