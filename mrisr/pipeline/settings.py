"""The settings of a batch (:class:`BatchSettings`, one for every input) and the fingerprint of those
that shape an output, with which a later run tells a stale output from a current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrisr.errors import MrisrError
from mrisr.geometry.grid import DEFAULT_MAX_VOXELS
from mrisr.pipeline.checks import (
    check_adapt_args,
    check_guide_args,
    check_spacing_args,
    check_trust_args,
    resolve_consistency,
    resolve_method,
)


@dataclass
class BatchSettings:
    """Processing settings shared by every job of a batch.

    The fields mirror the arguments of :func:`mrisr.pipeline.upscale.upscale`, plus
    ``dtype`` (``"float32"`` or ``"input"``) and ``force`` for the writer,
    and ``qc``: also draw a QC picture beside each output (:mod:`mrisr.evaluation.qc`).
    ``consistency``/``consistency_psf`` and ``uncertainty``/``ensemble`` are
    those of :func:`mrisr.pipeline.upscale.upscale_volume`; with ``uncertainty`` the
    std map is written beside each output (:func:`mrisr.inference.ensemble.std_path`).
    ``reference`` (a path) and ``register`` (``"none"`` or ``"rigid"``) guide
    a guided model (``docs/guided.md``); with ``rigid`` the transform is
    written beside the output (:func:`mrisr.trust.registration.transform_path`).
    """

    spacing: Any = None
    factor: Any = None
    method: str | None = None
    order: int = 3
    model: Any = None
    device: str = "auto"
    precision: str = "auto"
    patch_size: Any = None
    batch_size: int | None = None
    threads: int | None = None
    antialias: bool = True
    series: str | None = None
    nan_to_num: bool = False
    allow_uneven: bool = False
    max_voxels: int = DEFAULT_MAX_VOXELS
    dtype: str = "float32"
    force: bool = False
    qc: bool = False
    consistency: bool | None = None   # None: on with the network (pipeline.resolve_consistency)
    consistency_psf: str = "auto"
    uncertainty: bool = False
    ensemble: str | None = None
    reference: Any = None
    register: str | None = None
    adapt: float | None = None   # seconds of per-scan adaptation (mrisr.inference.adapt); None: off

    def check(self) -> None:
        """Validate the settings that need no file (spacing, order, method).

        Raises:
            MrisrError: naming the bad value.
        """
        check_spacing_args(self.spacing, self.factor)
        if self.dtype not in ("float32", "input"):
            raise MrisrError(f"dtype must be 'float32' or 'input', got {self.dtype!r}")
        guided = self.reference is not None
        self.method, self.model = resolve_method(self.method, self.model, guided=guided)
        self.consistency = resolve_consistency(self.consistency, self.method)
        self.ensemble = check_trust_args(self.method, self.consistency, self.consistency_psf, self.uncertainty,
                                         self.ensemble)
        self.register = check_guide_args(guided, self.register, self.ensemble)
        check_adapt_args(self.adapt, self.method, guided)


#: The :class:`BatchSettings` fields that shape an output. The others (device, precision, threads, patch
#: and batch sizes, qc, force) change how fast it is made (and at most its last bits: the arithmetic),
#: or what is written beside it, not what the image is.
OUTPUT_SETTINGS = ("spacing", "factor", "method", "order", "model", "antialias", "series",
                   "nan_to_num", "allow_uneven", "dtype", "consistency", "consistency_psf", "uncertainty",
                   "ensemble", "reference", "register", "adapt")


def output_settings(settings: BatchSettings) -> dict:
    """The settings that shape an output, as recorded in its sidecar (``settings``).

    Spacings and factors are written per axis (``1`` and ``1 1 1`` are one
    setting), the model as the name, version and weights SHA-256 of its card
    (a re-trained model with the same name is another setting) and the
    reference as an absolute path. Call it on checked settings
    (:meth:`BatchSettings.check`).

    Example:
        >>> s = output_settings(BatchSettings(spacing=(1.0,), method="spline"))
        >>> s["spacing"], s["method"], s["model"]
        ([1.0, 1.0, 1.0], 'spline', None)
    """
    values = {name: getattr(settings, name) for name in OUTPUT_SETTINGS}
    for name in ("spacing", "factor"):
        if values[name] is not None:
            numbers = [float(v) for v in values[name]]
            values[name] = numbers * 3 if len(numbers) == 1 else numbers
    values["model"] = _model_identity(settings.model) if settings.method == "cnn" else None
    if values["reference"] is not None:
        values["reference"] = str(Path(values["reference"]).absolute())
    return values


def _model_identity(model: Any) -> dict | str | None:
    """Name, version and weights checksum of a model (a name, a folder, or a loaded model)."""
    card = getattr(model, "card", None)
    if card is None and model is not None:
        from mrisr.inference.registry import find_card

        try:
            card = find_card(model)
        except MrisrError:
            return str(model)  # loading it reports the problem
    if card is None:
        return None
    return {"name": card.name, "version": card.version, "sha256": card.sha256}


def settings_fingerprint(values: dict | None) -> str | None:
    """SHA-256 of :func:`output_settings` (keys sorted), or ``None``.

    Example:
        >>> a = settings_fingerprint({"order": 3, "method": "spline"})
        >>> a == settings_fingerprint({"method": "spline", "order": 3}), len(a)
        (True, 64)
    """
    if values is None:
        return None
    import hashlib
    import json

    text = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def settings_changes(old: dict, new: dict) -> list[str]:
    """``"name: old -> new"`` for every setting that differs, in :data:`OUTPUT_SETTINGS` order.

    Example:
        >>> settings_changes({"order": 3, "method": "spline"}, {"order": 1, "method": "spline"})
        ['order: 3 -> 1']
    """
    def show(value: Any) -> str:
        if isinstance(value, dict) and "name" in value:
            return f"{value['name']} {value.get('version', '')}".strip()
        if isinstance(value, list):
            return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        return str(value)

    names = [n for n in OUTPUT_SETTINGS if n in old or n in new]
    names += sorted((set(old) | set(new)) - set(names))
    return [f"{n}: {show(old.get(n))} -> {show(new.get(n))}" for n in names if old.get(n) != new.get(n)]
