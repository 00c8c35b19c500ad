"""Error types of mrisr.

Every error a user can provoke with bad input is a subclass of
:class:`MrisrError`, itself a :class:`ValueError`, so Python callers can catch
one type and the command line can turn it into a one-line message and a
non-zero exit code. Messages name the file (when there is one) and what is
wrong with it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class MrisrError(ValueError):
    """Base class of the errors mrisr raises on bad input or settings."""


class InputError(MrisrError):
    """An input file cannot be read or holds something mrisr refuses."""

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = None if path is None else Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class GeometryError(MrisrError):
    """An affine, a spacing or a grid is invalid (singular, zero, negative...)."""


class GridSizeError(GeometryError):
    """The requested output grid is out of range: too many voxels, or voxels too large.

    A usage problem rather than a bad input: the target spacing or factor does
    not fit the image, so the command line refuses it before any work (exit 2).
    """


class GridTooLargeError(GridSizeError):
    """The requested output grid is larger than allowed (the message gives its size).

    A usage problem rather than a bad input: the target spacing or factor is
    too fine for the image, so the command line refuses it before any work.
    """


class VoxelTooLargeError(GridSizeError):
    """The requested output voxels are larger than an image can describe (a spacing or factor far too coarse)."""


class OutputError(MrisrError):
    """An output cannot be written where asked (exists, unwritable, is an input)."""


class ModelError(MrisrError):
    """A model is unknown, corrupt (checksum mismatch) or incompatible."""


class ConfigError(MrisrError):
    """A training configuration field is missing or invalid."""


def look_up_option(value: str, options: Iterable[str], what: str = "option") -> str:
    """Return ``value`` if it is one of ``options``, else raise with suggestions.

    Args:
        value: The value given by the user.
        options: The valid values.
        what: What the value is, for the message ("method", "device", ...).

    Returns:
        ``value`` unchanged.

    Raises:
        MrisrError: naming the bad value, the valid ones and the closest match.

    Example:
        >>> look_up_option("cpu", ["auto", "cpu", "cuda"], "device")
        'cpu'
    """
    opts = list(options)
    if value in opts:
        return value
    close = difflib.get_close_matches(str(value), opts, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise MrisrError(f"unknown {what} {value!r}; valid: {', '.join(opts)}.{hint}")
