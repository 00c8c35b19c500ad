"""The settings of one image's upscale (:class:`UpscaleOptions`, frozen, checked once when built), those of a
batch (:class:`BatchSettings`: the options plus what the writer needs) and the fingerprint of those that shape an
output, with which a later run tells a stale output from a current one.

The settings flow as one object: the command line (:mod:`mrisr.cli.upscale_cmd`) and the Python API
(:func:`mrisr.upscale`) build an :class:`UpscaleOptions` once, from their options or keywords, and it is passed down
to :func:`mrisr.pipeline.upscale.upscale_volume`. A new setting is a field here (and its check in
:meth:`UpscaleOptions.__post_init__`), plus what reads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mrisr.errors import MrisrError
from mrisr.geometry.grid import DEFAULT_MAX_VOXELS
from mrisr.options import CLI_DTYPES, NETWORK_METHODS
from mrisr.pipeline.checks import (
    check_adapt_args,
    check_guide_args,
    check_order,
    check_spacing_args,
    check_trust_args,
    resolve_consistency,
    resolve_method,
)


@dataclass(frozen=True)
class UpscaleOptions:
    """Every setting of one image's upscale, checked once, when built.

    :func:`mrisr.upscale` and :func:`~mrisr.pipeline.upscale.upscale_volume` take these as keywords (or one
    ``UpscaleOptions``); the command line builds one from its options. Building checks every value that needs no
    file and resolves the defaults: ``method`` and ``model`` (:func:`~mrisr.pipeline.checks.resolve_method`),
    ``consistency`` (:func:`~mrisr.pipeline.checks.resolve_consistency`), ``ensemble`` (``"mean"`` with
    ``uncertainty``) and ``register`` (``"none"``); ``spacing`` and ``factor`` become tuples of floats (1 or 3, as
    given). Change one with :func:`dataclasses.replace`, which checks again.

    Attributes:
        spacing: Target voxel size(s) in mm: one value (isotropic) or three (per voxel axis i, j, k). Exactly one of
            ``spacing``/``factor``.
        factor: Refinement factor(s): 2 halves every voxel size.
        method: ``"cnn"``, ``"spline"``, ``"transfer"`` (a reference's detail: :mod:`mrisr.inference.transfer`),
            or ``None`` (cnn when a model is available; transfer with a reference and no model).
        order: B-spline order 0 (nearest) to 5; 3 (cubic) by default.
        model: Model name, path or loaded model (``None``: the default model).
        antialias: Smooth axes made coarser before sampling.
        max_voxels: Refuse outputs larger than this (voxels per volume).
        device, precision, patch_size, batch_size, threads: Network settings, passed to
            :func:`mrisr.inference.engine.enhance` (``method="cnn"`` only; ``None`` chooses).
        consistency: Project the result onto the images whose simulated acquisition equals the input
            (:mod:`mrisr.trust.consistency`) and report the consistency errors. ``None``: on with the network, off
            for the spline.
        consistency_psf: Acquisition PSF of that projection: ``auto`` (the PSF that best explains the input),
            ``box``, ``gaussian``, ``kspace`` or ``slice``.
        uncertainty: Run the network under the 8 flips (:mod:`mrisr.inference.ensemble`) and keep their voxel-wise
            std (cnn only).
        ensemble: ``"mean"`` or ``"median"``: how the 8 flips are combined (given alone, runs the flip ensemble
            without keeping the std); ``None``: one pass, or ``"mean"`` with ``uncertainty``.
        reference: A finer scan of the same head (path, nibabel image or :class:`~mrisr.volume.Volume`, 3D)
            (``docs/guided.md``): without ``model`` (and ``method`` None or ``"transfer"``) its detail is
            transferred into the input, the default network scored beside it; with ``model``, a guided model.
        register: ``"none"`` (trust the headers) or ``"rigid"``: register the reference to the input first
            (:func:`mrisr.trust.registration.register_rigid`); ``None``: ``"rigid"`` for ``method="transfer"``,
            else ``"none"``.
        adapt: Per-scan adaptation (:mod:`mrisr.inference.adapt`): seconds of fine-tuning on pairs made from the
            input, or an :class:`~mrisr.inference.adapt.AdaptOptions`; ``None``: off (cnn only).
        series: DICOM series UID when a folder holds several (reading).
        nan_to_num: Replace NaN/Inf input values with 0 instead of refusing (reading, the reference's too).
        allow_uneven: Accept DICOM slices with uneven spacing (reading).

    Raises:
        MrisrError: naming the bad value (the subclasses of the checks in :mod:`mrisr.pipeline.checks`).

    Example:
        >>> opts = UpscaleOptions(spacing=1, method="spline")
        >>> opts.spacing, opts.method, opts.consistency, opts.register
        ((1.0,), 'spline', False, 'none')
        >>> opts.order = 1
        Traceback (most recent call last):
        ...
        dataclasses.FrozenInstanceError: cannot assign to field 'order'
        >>> dataclasses.replace(opts, order=7)
        Traceback (most recent call last):
        ...
        mrisr.errors.MrisrError: interpolation order must be an integer from 0 to 5, got 7
    """

    spacing: float | Sequence[float] | None = None
    factor: float | Sequence[float] | None = None
    method: str | None = None
    order: int = 3
    model: Any = None
    antialias: bool = True
    max_voxels: int = DEFAULT_MAX_VOXELS
    device: str = "auto"
    precision: str = "auto"
    patch_size: int | Sequence[int] | None = None
    batch_size: int | None = None
    threads: int | None = None
    consistency: bool | None = None   # None: on with the network (checks.resolve_consistency)
    consistency_psf: str = "auto"
    uncertainty: bool = False
    ensemble: str | None = None
    reference: Any = None
    register: str | None = None
    adapt: Any = None   # seconds of per-scan adaptation, or AdaptOptions; None: off
    series: str | None = None
    nan_to_num: bool = False
    allow_uneven: bool = False

    def __post_init__(self) -> None:
        check_spacing_args(self.spacing, self.factor)
        check_order(self.order)
        method, model = resolve_method(self.method, self.model, guided=self.guided)
        consistency = resolve_consistency(self.consistency, method)
        ensemble = check_trust_args(method, consistency, self.consistency_psf, self.uncertainty, self.ensemble)
        register = check_guide_args(self.guided, self.register, ensemble, method)
        check_adapt_args(self.adapt, method, self.guided)
        resolved = dict(spacing=_numbers(self.spacing), factor=_numbers(self.factor), method=method, model=model,
                        consistency=consistency, ensemble=ensemble, register=register)
        for name, value in resolved.items():
            object.__setattr__(self, name, value)

    @property
    def guided(self) -> bool:
        """Whether a reference guides the result (a guided network, or the transfer of its detail)."""
        return self.reference is not None

    @property
    def guided_network(self) -> bool:
        """Whether the reference feeds a guided network (``method="cnn"`` with a reference)."""
        return self.reference is not None and self.method == "cnn"

    @property
    def loads_model(self) -> bool:
        """Whether a network runs: ``cnn``, or ``transfer`` with a single-input model to score and use."""
        return self.method in NETWORK_METHODS and self.model is not None

    @property
    def adapt_options(self) -> Any:
        """``adapt`` as :class:`~mrisr.inference.adapt.AdaptOptions`, or ``None`` (off)."""
        return check_adapt_args(self.adapt, self.method, self.guided)  # type: ignore[arg-type]

    def engine_settings(self) -> dict[str, Any]:
        """The network's settings (device, precision, patch and batch sizes, threads), as keywords."""
        return {name: getattr(self, name) for name in ENGINE_SETTINGS}


#: The fields of :class:`UpscaleOptions`.
OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(UpscaleOptions))

#: The :class:`UpscaleOptions` passed to the network's runners (:func:`mrisr.inference.engine.enhance`).
ENGINE_SETTINGS = ("device", "precision", "patch_size", "batch_size", "threads")


def _numbers(value: Any) -> tuple[float, ...] | None:
    """A checked spacing or factor as a tuple of floats (1 or 3, as given)."""
    if value is None:
        return None
    values: list[Any] = [value] if np.isscalar(value) else list(value)
    return tuple(float(v) for v in values)


def make_options(options: UpscaleOptions | None = None, **settings: Any) -> UpscaleOptions:
    """``options`` with ``settings`` changed, or new options from ``settings`` (checked either way).

    Example:
        >>> make_options(factor=2, method="spline").factor
        (2.0,)
        >>> make_options(make_options(factor=2, method="spline"), order=1).order
        1
    """
    if options is None:
        return UpscaleOptions(**settings)
    return dataclasses.replace(options, **settings) if settings else options


@dataclass(frozen=True, init=False)
class BatchSettings:
    """Processing settings shared by every job of a batch: the :class:`UpscaleOptions` and the writer's.

    Built from an :class:`UpscaleOptions` or from its fields as keywords (``BatchSettings(spacing=1.5,
    method="spline")``), both checked when built. Besides the options: ``dtype`` (``"float32"`` or ``"input"``)
    and ``force`` for the writer, and ``qc``: also draw a QC picture beside each output
    (:mod:`mrisr.evaluation.qc`). With ``uncertainty`` the std map is written beside each output
    (:func:`mrisr.inference.ensemble.std_path`); with ``register="rigid"`` the reference's transform
    (:func:`mrisr.trust.registration.transform_path`).

    Example:
        >>> s = BatchSettings(spacing=1.5, method="spline", dtype="input")
        >>> s.options.spacing, s.dtype, s.force
        ((1.5,), 'input', False)
    """

    options: UpscaleOptions
    dtype: str = "float32"
    force: bool = False
    qc: bool = False

    def __init__(self, options: UpscaleOptions | None = None, *, dtype: str = "float32", force: bool = False,
                 qc: bool = False, **settings: Any) -> None:
        options = make_options(options, **settings)
        if dtype not in CLI_DTYPES:
            raise MrisrError(f"dtype must be 'float32' or 'input', got {dtype!r}")
        for name, value in (("options", options), ("dtype", dtype), ("force", force), ("qc", qc)):
            object.__setattr__(self, name, value)

    def check(self) -> None:
        """Nothing left to check: the settings were checked when built (kept for older callers)."""

    def with_options(self, **changes: Any) -> BatchSettings:
        """These settings with some :class:`UpscaleOptions` changed (checked again)."""
        return dataclasses.replace(self, options=dataclasses.replace(self.options, **changes))

    if not TYPE_CHECKING:  # older callers read the options on the settings (settings.method); mrisr reads options
        def __getattr__(self, name: str) -> Any:
            if name in OPTION_FIELDS:
                return getattr(self.options, name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


#: The settings that shape an output (``dtype`` is the :class:`BatchSettings`', the others its
#: :class:`UpscaleOptions`'). The others (device, precision, threads, patch and batch sizes, max_voxels, qc,
#: force) change how fast it is made (and at most its last bits: the arithmetic),
#: or what is written beside it, not what the image is.
OUTPUT_SETTINGS = ("spacing", "factor", "method", "order", "model", "antialias", "series",
                   "nan_to_num", "allow_uneven", "dtype", "consistency", "consistency_psf", "uncertainty",
                   "ensemble", "reference", "register", "adapt")


def output_settings(settings: BatchSettings) -> dict:
    """The settings that shape an output, as recorded in its sidecar (``settings``).

    Spacings and factors are written per axis (``1`` and ``1 1 1`` are one
    setting), the model as the name, version and weights SHA-256 of its card
    (a re-trained model with the same name is another setting) and the
    reference as an absolute path.

    Example:
        >>> s = output_settings(BatchSettings(spacing=(1.0,), method="spline"))
        >>> s["spacing"], s["method"], s["model"]
        ([1.0, 1.0, 1.0], 'spline', None)
    """
    options = settings.options
    values = {name: getattr(settings if name == "dtype" else options, name) for name in OUTPUT_SETTINGS}
    for name in ("spacing", "factor"):
        if values[name] is not None:
            numbers = [float(v) for v in values[name]]
            values[name] = numbers * 3 if len(numbers) == 1 else numbers
    values["model"] = _model_identity(options.model) if options.loads_model else None
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
