"""The settings of :func:`mrisr.upscale` checked before any work: spacing or factor, method and model,
reference and registration, consistency and ensemble, adaptation; and the output grid (:func:`plan_grid`).

Each check runs before any file is read, so bad values fail fast (the command line's exit code 2):
:class:`mrisr.pipeline.settings.UpscaleOptions` runs them when it is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mrisr.errors import MrisrError, look_up_option
from mrisr.geometry.grid import DEFAULT_MAX_VOXELS, TargetGrid, parse_spacing, spacing_from_factor, target_grid
from mrisr.options import COMBINES, METHODS, NETWORK_METHODS, PSF_CHOICES, REGISTRATIONS

if TYPE_CHECKING:  # pragma: no cover
    pass







def check_spacing_args(spacing: float | Sequence[float] | None,
                       factor: float | Sequence[float] | None) -> None:
    """Check that exactly one of ``spacing``/``factor`` is given, with valid values.

    Runs before any file is read, so bad values fail fast.

    Raises:
        MrisrError: neither or both given; GeometryError for a wrong count or a
            value that is zero, negative or not finite.

    Example:
        >>> check_spacing_args(1.0, None)
        >>> check_spacing_args(None, None)
        Traceback (most recent call last):
        ...
        mrisr.errors.MrisrError: give exactly one of spacing (target voxel size in mm) or factor (e.g. 2), not neither
    """
    if (spacing is None) == (factor is None):
        which = "neither" if spacing is None else "both"
        raise MrisrError(f"give exactly one of spacing (target voxel size in mm) or factor (e.g. 2), not {which}")
    if spacing is not None:
        parse_spacing(spacing, "spacing")
    else:
        parse_spacing(factor, "factor")  # type: ignore[arg-type]


def plan_grid(affine: np.ndarray, shape: Sequence[int], *, spacing: float | Sequence[float] | None = None,
              factor: float | Sequence[float] | None = None,
              max_voxels: int = DEFAULT_MAX_VOXELS) -> TargetGrid:
    """The output grid for an image, from a target ``spacing`` or a ``factor``.

    Args:
        affine: Input affine.
        shape: Input shape (the first three values are used).
        spacing: Target voxel size(s) in mm (1 or 3 values).
        factor: Divide the voxel sizes by this (1 or 3 values; 2 halves them).
        max_voxels: Refuse outputs with more voxels than this.

    Raises:
        MrisrError: bad arguments, or a grid above ``max_voxels``.

    Example:
        >>> plan_grid(np.diag([1.0, 1.0, 3.0, 1.0]), (8, 8, 4), factor=[1, 1, 3]).shape
        (8, 8, 12)
    """
    check_spacing_args(spacing, factor)
    target = spacing if spacing is not None else spacing_from_factor(affine, factor)  # type: ignore[arg-type]
    return target_grid(affine, shape[:3], target, max_voxels=max_voxels)


def resolve_method(method: str | None, model: Any = None, guided: bool = False) -> tuple[str, Any]:
    """Choose the method and the model to use.

    ``method=None`` means ``"cnn"`` when a model is given or a default model
    ships, else ``"spline"``. With ``guided`` (a reference was given) and no
    model, it means ``"transfer"`` (the reference's detail, chosen per scan
    with the default single-input network: :mod:`mrisr.inference.transfer`);
    a model given with a reference is a guided network (``"cnn"``), and
    ``"cnn"`` with a reference and no model the first shipped guided model.

    Returns:
        ``(method, model)``: ``model`` is what was given, or the default
        (guided) model's name for ``"cnn"``, the default model's (or None
        when none ships) for ``"transfer"``; ``None`` for ``"spline"``.

    Raises:
        MrisrError: an unknown method, ``"cnn"`` with no model available, a
            model or a reference given together with ``"spline"``,
            ``"transfer"`` without a reference.
        ModelError: ``"cnn"`` with a reference, without a model, when no guided model ships.

    Example:
        >>> resolve_method("spline")
        ('spline', None)
        >>> resolve_method(None, guided=True)[0], resolve_method("cnn", "m", guided=True)
        ('transfer', ('cnn', 'm'))
    """
    if method is not None:
        look_up_option(method, METHODS, "method")
    if method == "transfer" or (method is None and guided and model is None):
        if not guided:
            raise MrisrError("method 'transfer' moves a reference scan's detail into the input: give a reference "
                             "(--reference PATH)")
        if model is not None:
            return "transfer", model
        from mrisr.inference.registry import default_model_name

        return "transfer", default_model_name()
    if method == "spline":
        if model is not None:
            raise MrisrError(f"a model was given ({_model_label(model)}) but the method is 'spline'; "
                             "drop the model or use method 'cnn'")
        if guided:
            raise MrisrError("a reference was given but the method is 'spline', which cannot use it; drop the "
                             "reference or use method 'transfer' (the default with a reference) or 'cnn'")
        return "spline", None
    if model is not None:
        return "cnn", model
    if guided:
        return "cnn", _default_guided_model()
    from mrisr.inference.registry import default_model_name

    default = default_model_name()
    if default is not None:
        return "cnn", default
    if method == "cnn":
        raise MrisrError("method 'cnn' needs a model, but no default model ships with this installation; "
                         "name one (a model folder or its card.json) or use method 'spline'")
    return "spline", None


def _default_guided_model() -> str:
    from mrisr.errors import ModelError
    from mrisr.inference.registry import guided_model_names

    names = guided_model_names()
    if not names:
        raise ModelError("no guided model ships with this installation; pass --model (model= in Python): a model "
                         "folder whose card has architecture params in_channels 2")
    return names[0]


def check_guide_args(guided: bool, register: str | None, ensemble: str | None, method: str | None = None) -> str:
    """Validate the reference options; returns the registration to run (``"none"`` or ``"rigid"``).

    ``register=None`` means ``"rigid"`` for ``method="transfer"`` with a reference (its detail must sit where the
    input's anatomy is: a reference 3 degrees or one slice off made the result worse than the default, registered
    it gained, docs/guided.md) and ``"none"`` otherwise.

    Raises:
        MrisrError: an unknown registration, registration without a
            reference, or a reference with the flip ensemble.

    Example:
        >>> check_guide_args(True, None, None), check_guide_args(True, None, None, "transfer")
        ('none', 'rigid')
        >>> check_guide_args(False, "rigid", None)
        Traceback (most recent call last):
        ...
        mrisr.errors.MrisrError: register 'rigid' aligns a reference image to the input, but no reference was given
    """
    if register is None:
        register = "rigid" if guided and method == "transfer" else "none"
    register = look_up_option(register, REGISTRATIONS, "register")
    if register != "none" and not guided:
        raise MrisrError(f"register {register!r} aligns a reference image to the input, but no reference was given")
    if guided and ensemble is not None:
        raise MrisrError("the flip ensemble (uncertainty, ensemble) does not take a reference yet; "
                         "drop one of them")
    return register


def _model_label(model: Any) -> str:
    return str(getattr(model, "name", model))


def load_model_once(model: Any) -> Any:
    """A :class:`~mrisr.inference.model_card.LoadedModel` for a name, a path, a loaded or loading model.

    Batch callers load the model once and pass the result to every
    :func:`upscale_volume` call.
    """
    if hasattr(model, "network") and hasattr(model, "card"):
        return model
    from mrisr.inference.registry import PendingModel, load_model

    if isinstance(model, PendingModel):
        return model.result()
    return load_model(model)


def check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= int(order) <= 5:
        raise MrisrError(f"interpolation order must be an integer from 0 to 5, got {order!r}")
    return int(order)


def resolve_consistency(consistency: bool | None, method: str) -> bool:
    """Whether the consistency projection runs: as given, or by default with the network only.

    The default follows a measurement on real heads (docs/trust.md): with the network it adds 0.13 to
    0.73 dB on every row measured; the spline alone is left as the plain interpolation.

    Example:
        >>> resolve_consistency(None, "cnn"), resolve_consistency(None, "spline"), resolve_consistency(False, "cnn")
        (True, False, False)
        >>> resolve_consistency(None, "transfer")
        True
    """
    return method in NETWORK_METHODS if consistency is None else bool(consistency)


def check_adapt_args(adapt: Any, method: str, guided: bool) -> Any:
    """``adapt`` as :class:`~mrisr.inference.adapt.AdaptOptions` (seconds or options given), or None.

    Raises:
        MrisrError: adaptation with ``method="spline"`` or with a reference, or a bad time budget.

    Example:
        >>> check_adapt_args(None, "cnn", False) is None
        True
        >>> check_adapt_args(30, "cnn", False).seconds
        30.0
    """
    if adapt is None or adapt is False:
        return None
    from mrisr.inference.adapt import AdaptOptions

    if guided:
        raise MrisrError("--adapt does not take a reference yet: the internal pairs are made from the input "
                         "alone, with no second scan to pair with (run the guided model without --adapt)")
    if method != "cnn":
        raise MrisrError("--adapt fine-tunes the network: it needs --method cnn")
    return adapt if isinstance(adapt, AdaptOptions) else AdaptOptions(seconds=adapt)


def check_learned(loaded: Any, grid: TargetGrid) -> None:
    """Refuse what a learned-upsampling model cannot do: factors below its scale in every order of the axes."""
    from mrisr.inference.upsampling import placement, upsampling_scale

    scale = upsampling_scale(loaded.network)
    if scale is None:
        return
    placement(scale, [1.0 / r for r in grid.ratios], f"model {loaded.name!r}")


def check_trust_args(method: str, consistency: bool, consistency_psf: str, uncertainty: bool,
                     ensemble: str | None) -> str | None:
    """Validate the consistency and ensemble options; returns the combine rule to run (or None).

    Raises:
        MrisrError: an unknown PSF or combine rule, or the flip ensemble
            without the network.

    Example:
        >>> check_trust_args("cnn", False, "box", True, None)
        'mean'
    """

    look_up_option(consistency_psf, PSF_CHOICES, "consistency psf")
    if ensemble is not None:
        look_up_option(ensemble, COMBINES, "ensemble")
    if uncertainty and ensemble is None:
        ensemble = "mean"
    if ensemble is not None and method != "cnn":
        what = "uncertainty" if uncertainty else "the flip ensemble"
        raise MrisrError(f"{what} needs the network (method 'cnn'); the method is {method!r}")
    return ensemble
