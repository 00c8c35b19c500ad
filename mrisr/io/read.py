"""Reading images into mrisr's one internal convention (:class:`~mrisr.volume.Volume`).

This module is the input half of the I/O boundary. Whatever the format, a
successful read gives a :class:`Volume` with RAS world coordinates in mm,
voxel centres at integer indices, a 4x4 float64 affine and float32 data with
the spatial axes first. Anything mrisr cannot process faithfully is refused
with an :class:`~mrisr.errors.InputError` that names the file and the reason,
before any expensive work starts.

Formats:

* NIfTI-1 / NIfTI-2 (``.nii``, ``.nii.gz``): read by our own code on top of
  nibabel's header classes, so that every byte is checked (truncated gzip,
  short data, corrupt header fields) and nothing nibabel would silently
  "fix" (zero voxel sizes) slips through.
* MGH (``.mgz``, ``.mgh``): nibabel (SimpleITK has no MGH reader).
* NRRD, MetaImage (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) and anything else
  SimpleITK reads: SimpleITK, converted by :func:`mrisr.io.sitk.sitk_to_ras`.
* DICOM (a file, or a folder holding one series): :mod:`mrisr.io.dicom`.

Inputs are only ever opened read-only. See ``docs/inputs-and-outputs.md``.

Example:
    >>> from mrisr.io.read import load_volume
    >>> from mrisr.io.sample import sample_path
    >>> vol = load_volume(sample_path())
    >>> vol.data.shape, vol.spacing.tolist()
    ((98, 116, 94), [2.0, 2.0, 2.0])
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mrisr.errors import InputError
from mrisr.io.checks import as_float32, check_array, check_readable, finish_volume, native_dtype
from mrisr.io.dicom import is_dicom_file, load_dicom_file, load_dicom_folder
from mrisr.io.nifti import gzip_errors, load_nifti, looks_like_nifti
from mrisr.io.sitk import read_sitk_image, sitk_volume
from mrisr.volume import Volume

#: Suffixes read as NIfTI (longest first).
NIFTI_SUFFIXES = (".nii.gz", ".nii")


#: Suffixes read with nibabel's MGH reader.
MGH_SUFFIXES = (".mgz", ".mgh")


#: Suffixes read with SimpleITK.
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


#: Suffixes taken as DICOM files.
DICOM_SUFFIXES = (".dcm", ".ima")


def load_volume(path: str | os.PathLike[str], *, series: str | None = None, nan_to_num: bool = False,
                allow_uneven: bool = False) -> Volume:
    """Read an image file or DICOM folder into a :class:`Volume`.

    Args:
        path: A NIfTI / MGH / NRRD / MetaImage / DICOM file, or a folder holding
            DICOM files.
        series: SeriesInstanceUID to read from a DICOM folder holding several
            series (ignored, with a warning, for other inputs).
        nan_to_num: Replace NaN/Inf voxels with 0 (with a warning) instead of
            refusing the file.
        allow_uneven: DICOM only: resample a series with missing slices or
            uneven slice spacing onto a regular grid instead of refusing it.

    Returns:
        The volume: float32 data ``(X, Y, Z)`` or ``(X, Y, Z, T)``, RAS affine.

    Raises:
        InputError: naming the file and the reason, for anything unreadable or
            refused (see ``docs/inputs-and-outputs.md``).

    Example:
        >>> from mrisr.io.sample import sample_path
        >>> vol = load_volume(sample_path())
        >>> vol.affine.shape, vol.data.dtype
        ((4, 4), dtype('float32'))
    """
    p = Path(path).expanduser()
    check_readable(p)
    if p.is_dir():
        vol = load_dicom_folder(p, series=series, allow_uneven=allow_uneven)
    else:
        vol = _load_file(p)
        if series is not None:
            vol.warnings.append(f"series {series!r} ignored: {p.name} is not a DICOM folder")
    return finish_volume(vol, p, nan_to_num)


def _suffix(p: Path) -> str:
    name = p.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else p.suffix.lower()


def _load_file(p: Path) -> Volume:
    """Read one file, choosing the reader by suffix, then by content."""
    if p.stat().st_size == 0:
        raise InputError(p, "file is empty (0 bytes)")
    suffix = _suffix(p)
    if suffix in NIFTI_SUFFIXES:
        return load_nifti(p)
    if suffix in MGH_SUFFIXES:
        return _load_mgh(p)
    if suffix in DICOM_SUFFIXES or is_dicom_file(p):
        return load_dicom_file(p)
    if suffix not in SITK_SUFFIXES and looks_like_nifti(p):
        return load_nifti(p)
    return _load_sitk(p)


def _load_mgh(p: Path) -> Volume:
    """FreeSurfer MGH/MGZ through nibabel (its affine is already RAS)."""
    import nibabel as nib

    try:
        with gzip_errors(p):
            img = nib.MGHImage.from_filename(str(p))
            data = np.asarray(img.dataobj)
    except InputError:
        raise
    except Exception as e:
        raise InputError(p, f"not a readable MGH/MGZ image ({e})") from None
    check_array(p, data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    meta = {"format": "mgh"}
    if data.ndim == 4:
        meta.update(tr=float(img.header["tr"]) / 1000.0, time_units="sec")
    return Volume(data=as_float32(p, data), affine=np.asarray(img.affine, dtype=np.float64),
                  source_dtype=native_dtype(data.dtype), meta=meta)


def _load_sitk(p: Path) -> Volume:
    vol = sitk_volume(p, read_sitk_image(p))
    vol.meta["format"] = _suffix(p).lstrip(".") or "sitk"
    return vol
