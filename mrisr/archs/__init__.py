"""Network architectures of mrisr, one module per family.

Interpolated-input networks (input: the spline-interpolated volume on the
output grid; ``forward(x, cond=None)`` returns the residual the engine adds
to ``x``; ``upsampling`` is None; ``receptive_radius`` in output voxels):

* ``recnn``: :class:`~mrisr.archs.recnn.ReCNN` (Pham et al.), presets ``pham-10l``, ``pham-20l``;
* ``srcnn3d``: :class:`~mrisr.archs.srcnn3d.SRCNN3D` (Pham et al.'s baseline);
* ``mdcsrn``: :class:`~mrisr.archs.mdcsrn.MDCSRN` (Chen et al.), presets ``b4u4``, ``b8u4``;
* ``gan-cpce``: :class:`~mrisr.archs.lyu.GanCpceGenerator` (Lyu et al.);
* ``gan-circle``: :class:`~mrisr.archs.lyu.GANCircle` (Lyu et al.; the G/F
  pair, ``forward`` is G's) and ``gan-circle-generator``:
  :class:`~mrisr.archs.lyu.GANCircleGenerator` (G alone).

Learned-upsampling networks (input: the low-resolution volume; constructor
``scale`` per axis; ``forward(lr, cond=None)`` returns the whole
high-resolution output; ``upsampling`` is the scale; ``receptive_radius`` in
low-resolution voxels):

* ``rrlsrn``: :class:`~mrisr.archs.rrlsrn.RRLSRN` (Song et al.);
* ``georgescu``: :class:`~mrisr.archs.georgescu.Georgescu` (Georgescu et al.).

Critics for adversarial training: :mod:`mrisr.archs.critics`.

Every class takes JSON-serialisable keyword arguments only, returns them from
``config()``, has an ``in_channels`` attribute and a ``PRESETS`` dict of
named arguments (:func:`from_preset`). All are trainable with ``mrisr train``
(``[model] arch``, ``preset``, ``params``: :mod:`mrisr.training.networks`);
learned-upsampling ones run in ``mrisr upscale`` through :mod:`mrisr.inference.upsampling`.
"""

from __future__ import annotations

from typing import Any


def from_preset(architecture: str, preset: str, **overrides: Any):
    """Build a registered architecture from one of its presets.

    Args:
        architecture: Registry name (see :data:`mrisr.inference.model_card.ARCHITECTURES`).
        preset: A key of the class's ``PRESETS``.
        **overrides: Constructor arguments added to or replacing the preset's
            (e.g. ``scale`` for learned-upsampling networks, ``cond_dim``).

    Raises:
        ModelError: for an unknown architecture.
        MrisrError: for an unknown preset (naming the known ones).

    Example:
        >>> from_preset("recnn", "pham-10l").config()["depth"]
        10
    """
    from mrisr.errors import look_up_option
    from mrisr.inference.model_card import architecture_class

    cls = architecture_class(architecture)
    presets = getattr(cls, "PRESETS", {})
    look_up_option(preset, presets, f"preset of {architecture}")
    return cls(**{**presets[preset], **overrides})
