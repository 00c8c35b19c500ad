"""The models shipped with mrisr: listing, lookup, loading, trained ranges.

Shipped models live in the package data ``mrisr._models`` (the repository's
top-level ``models/`` folder), one folder per model holding ``card.json`` and
the weights (see :mod:`mrisr.inference.model_card` and ``docs/models.md``).
``load_model`` also takes the path of any model folder or ``card.json``.

Example:
    >>> from mrisr.inference.registry import models_dir
    >>> models_dir().name in ("models", "_models")
    True
"""

from __future__ import annotations

import difflib
import importlib.resources
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mrisr.errors import ModelError
from mrisr.inference.model_card import CARD_FILE, LoadedModel, ModelCard, instantiate, read_card, real_head_gains

#: Relative tolerance when comparing spacings and factors with trained ranges.
RANGE_TOLERANCE = 0.02


def models_dir() -> Path:
    """Folder of the shipped models.

    Installed (``pip install .``), that is the package ``mrisr._models``; when
    ``mrisr`` is imported straight from a source checkout (running the tests
    from the repository root), it is the checkout's top-level ``models/``.
    """
    try:
        root = importlib.resources.files("mrisr._models")
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "models"  # <repo>/mrisr/inference/registry.py
        if checkout.is_dir():
            return checkout
        raise ModelError("the bundled models (package mrisr._models) are missing from this installation; "
                         "reinstall mrisr") from None
    return root if isinstance(root, Path) else Path(str(root))


def list_models() -> list[ModelCard]:
    """Cards of the shipped models, sorted by name.

    Raises:
        ModelError: for an invalid card, two models with one name, or more
            than one default model (packaging errors, named precisely).

    Example:
        >>> isinstance(list_models(), list)
        True
    """
    root = models_dir()
    cards = [read_card(p) for p in sorted(root.glob(f"*/{CARD_FILE}"))]
    seen: dict[str, Path | None] = {}
    for card in cards:
        if card.name in seen:
            raise ModelError(f"two shipped models are named {card.name!r}: {seen[card.name]} and {card.path}")
        seen[card.name] = card.path
    defaults = [c.name for c in cards if c.default]
    if len(defaults) > 1:
        raise ModelError(f"more than one shipped model is marked default: {', '.join(defaults)}")
    return sorted(cards, key=lambda c: c.name)


def custom_model_warning(loaded: LoadedModel | Any) -> str | None:
    """A warning when a model from outside the shipped folder carries a shipped model's name.

    The record then tells the two apart by ``model_path``; the warning says
    whether the weights are the shipped ones (a copy) or not.

    Example:
        >>> custom_model_warning(load_model()) is None   # the shipped default model
        True
    """
    folder, name = getattr(loaded, "path", None), getattr(loaded, "name", None)
    if folder is None or name is None:
        return None
    try:
        shipped = {c.name: c for c in list_models()}
        root = models_dir().resolve()
    except ModelError:
        return None
    card = shipped.get(name)
    if card is None or Path(folder).resolve().is_relative_to(root):
        return None
    same = "the same weights (a copy)" if card.sha256 == getattr(loaded, "sha256", None) else "different weights"
    return (f"model {name!r} was loaded from {folder}, not from the shipped model of that name "
            f"({card.folder}); it has {same}")


def real_heads_warning(card: ModelCard) -> str | None:
    """A warning when the model's own card shows it below the cubic spline on real heads
    (``validation.real_heads``, :mod:`mrisr.training.real_heads`).

    Example:
        >>> real_heads_warning(find_card()) is None   # the shipped default: above the spline on every row
        True
        >>> print(real_heads_warning(find_card("rrlsrn-2x2x2")))  # doctest: +ELLIPSIS
        Model 'rrlsrn-2x2x2' was below the cubic spline on 11 of its 12 real-head validation rows (worst -0.67 dB, ...
    """
    gains = real_head_gains(card.validation)
    below = [g for g in gains if g < 0]
    if not below:
        return None
    return (f"Model {card.name!r} was below the cubic spline on {len(below)} of its {len(gains)} real-head "
            f"validation rows (worst {min(gains):+.2f} dB, mean {sum(gains) / len(gains):+.2f} dB; its "
            "validation.md): on real scans prefer the default model, or --method spline.")


def default_model_name() -> str | None:
    """Name of the default model, or ``None`` when no model ships yet."""
    for card in list_models():
        if card.default:
            return card.name
    return None


def is_guided(card: ModelCard) -> bool:
    """Whether a model is guided: its network takes a reference as a second input channel.

    Example:
        >>> from mrisr.inference.model_card import example_card
        >>> is_guided(example_card())
        False
    """
    return card_channels(card) == 2


def card_channels(card: ModelCard) -> int:
    """The input channels a card's network takes (``architecture.params.in_channels``, 1 if absent)."""
    return int(card.architecture.get("params", {}).get("in_channels", 1))


def guided_model_names() -> list[str]:
    """Names of the shipped guided models (``in_channels`` 2 in their card), sorted.

    Example:
        >>> isinstance(guided_model_names(), list)
        True
    """
    return [card.name for card in list_models() if is_guided(card)]


def _looks_like_path(value: str | Path) -> bool:
    if isinstance(value, Path):
        return True
    return value.endswith(".json") or "/" in value or "\\" in value or Path(value).exists()


def find_card(name_or_path: str | Path | None = None) -> ModelCard:
    """The card of a shipped model by name, of a model folder or ``card.json``
    path, or of the default model (``None``).

    Raises:
        ModelError: for an unknown name (listing the known ones, with the
            closest match), a path without a card, or no default model.
    """
    if name_or_path is None:
        cards = list_models()
        for card in cards:
            if card.default:
                return card
        known = ", ".join(c.name for c in cards) or "none"
        raise ModelError(f"no default model ships with this installation (shipped models: {known}); "
                         "pass a model name or the path of a model folder")
    if _looks_like_path(name_or_path):
        return read_card(name_or_path)
    by_name = {c.name: c for c in list_models()}
    if name_or_path in by_name:
        return by_name[str(name_or_path)]
    close = difflib.get_close_matches(str(name_or_path), list(by_name), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    known = ", ".join(by_name) or "none shipped"
    raise ModelError(f"unknown model {name_or_path!r}; known models: {known}.{hint} "
                     "A path to a model folder or card.json also works.")


def load_model(name_or_path: str | Path | None = None) -> LoadedModel:
    """Load a model: verify its checksum, build the network, load the weights.

    Args:
        name_or_path: A shipped model's name, the path of a model folder or
            of its ``card.json``, or ``None`` for the default model.

    Returns:
        The :class:`~mrisr.inference.model_card.LoadedModel` (network in eval mode, CPU).

    Raises:
        ModelError: unknown name (with the known ones and a suggestion),
            checksum mismatch, unreadable or incompatible weights.
    """
    return instantiate(find_card(name_or_path))


class PendingModel:
    """A model whose card is read and checked now and whose network loads in a background thread.

    Loading a network first imports torch (about 1.7 s on a laptop CPU), which a caller can overlap with
    work that releases the GIL (reading a gzipped input, spline interpolation). :meth:`result` waits and
    returns the :class:`~mrisr.inference.model_card.LoadedModel`, or raises what loading raised.

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> from mrisr.inference.model_card import example_card
        >>> m = LoadedModel("demo", example_card(), ReCNN(3, 4), "0" * 64, None)
        >>> PendingModel.loading(m).result() is m
        True
    """

    def __init__(self, card: ModelCard, loaded: LoadedModel | None = None) -> None:
        self.card = card
        self._outcome: dict[str, Any] = {} if loaded is None else {"model": loaded}
        self._thread: threading.Thread | None = None
        if loaded is None:
            self._thread = threading.Thread(target=self._load, name="mrisr-model-load", daemon=True)
            self._thread.start()

    @classmethod
    def loading(cls, model: Any) -> PendingModel:
        """Start loading ``model`` (a shipped name, a folder or card path, None for the default), or wrap
        one already loaded.

        Raises:
            ModelError: at once, for what the card alone shows (unknown name, missing folder or card).
        """
        if isinstance(model, PendingModel):
            return model
        if hasattr(model, "network") and hasattr(model, "card"):
            return cls(model.card, model)
        return cls(find_card(model))

    def _load(self) -> None:
        try:
            self._outcome["model"] = instantiate(self.card)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._outcome["error"] = exc

    @property
    def failed(self) -> bool:
        """Whether loading ended in an error (a model error of the whole batch, not of one input)."""
        if self._thread is not None:
            self._thread.join()
        return "error" in self._outcome

    def result(self) -> LoadedModel:
        """The loaded model, once loading ends (re-raising its error)."""
        if self._thread is not None:
            self._thread.join()
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["model"]


def channel_error(name: str, channels: int, guided: bool) -> str | None:
    """Why a model of ``channels`` input channels cannot run with (``guided``) or without a reference, or None.

    Example:
        >>> channel_error("m", 1, False) is None, channel_error("m", 2, False).split(":")[0]
        (True, "model 'm' is guided (2 input channels)")
    """
    if channels not in (1, 2):
        return (f"model {name!r} takes {channels} input channels; enhance feeds one or two "
                "(the image, and a reference for guided models)")
    if channels == 2 and not guided:
        return (f"model {name!r} is guided (2 input channels): it needs a reference image (a finer "
                "scan of the same head, e.g. a 1 mm T1) as its second input; pass --reference "
                "(reference= in Python)")
    if channels == 1 and guided:
        names = guided_model_names()
        shipped = f"guided models: {', '.join(names)}" if names else "no guided model ships with this installation"
        return (f"model {name!r} is not guided (it takes one input channel) and cannot use a "
                f"reference; {shipped}")
    return None


def check_card_channels(card: ModelCard, guided: bool) -> None:
    """:func:`channel_error` from a card alone (no network, no torch).

    Raises:
        ModelError: a guided model without a reference, or a single-input model with one.
    """
    error = channel_error(card.name, card_channels(card), guided)
    if error is not None:
        raise ModelError(error)


def _fmt(values: Iterable[float]) -> str:
    return " x ".join(f"{v:g}" for v in values)


def _axes(bad: list[int]) -> str:
    return f"axis {bad[0]}" if len(bad) == 1 else f"axes {', '.join(map(str, bad))}"


def _outside(value: float, lo: float, hi: float) -> bool:
    return value < lo * (1 - RANGE_TOLERANCE) or value > hi * (1 + RANGE_TOLERANCE)


def range_warnings(card: ModelCard, input_spacing: Sequence[float], output_spacing: Sequence[float]) -> list[str]:
    """Plain-language warnings when a job lies outside the model's training.

    Args:
        card: The model's card.
        input_spacing: Input voxel sizes in mm (3 values).
        output_spacing: Output voxel sizes in mm (3 values).

    Returns:
        One sentence per problem (empty when everything is in range).

    Example:
        >>> from mrisr.inference.model_card import example_card
        >>> range_warnings(example_card(), (1, 1, 2), (1, 1, 1))
        []
        >>> len(range_warnings(example_card(), (1, 1, 6), (1, 1, 1)))
        2
    """
    sin = [float(v) for v in input_spacing]
    sout = [float(v) for v in output_spacing]
    if len(sin) != 3 or len(sout) != 3 or min(sin + sout) <= 0:
        raise ModelError(f"spacings must be 3 positive values, got input {sin} and output {sout}")
    factors = [a / b for a, b in zip(sin, sout)]
    out = []
    lo, hi = card.input_spacing_range
    bad = [i for i, s in enumerate(sin) if _outside(s, lo, hi)]
    if bad:
        out.append(f"The input voxel size ({_fmt(sin)} mm) is outside what model {card.name!r} was trained on "
                   f"({lo:g} to {hi:g} mm) along {_axes(bad)}; its output may be less reliable.")
    flo, fhi = card.factor_range
    bad = [i for i, f in enumerate(factors) if _outside(f, flo, fhi)]
    if bad:
        out.append(f"The upsampling factor ({_fmt(round(f, 3) for f in factors)}) is outside what model "
                   f"{card.name!r} was trained on ({flo:g} to {fhi:g}) along {_axes(bad)}; "
                   "its output may be less reliable.")
    if any(f < 1 / (1 + RANGE_TOLERANCE) for f in factors):
        out.append(f"The output voxels ({_fmt(sout)} mm) are larger than the input's ({_fmt(sin)} mm) along some "
                   "axis: the network was trained to add detail, not to downsample.")
    return out
