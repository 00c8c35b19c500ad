"""DICOM input: series discovery, slice checks and stacking into a Volume.

A folder is read as ONE series. Its files are grouped by SeriesInstanceUID
(files that are not DICOM images are ignored); several series are refused
with a list of them, and ``series=UID`` picks one. Within the series,
localizer images (ImageType contains LOCALIZER, or an orientation other than
the majority's) are dropped with a warning, the slices are sorted along the
slice normal, and missing slices or uneven spacing are refused with the
measured gaps unless ``allow_uneven=True``, which resamples the stack onto a
regular grid along the normal (linear interpolation).

Pixel data is decoded by SimpleITK (GDCM), one file at a time, and every
slice goes through :func:`mrisr.io.sitk.sitk_to_ras`, the single LPS-to-RAS
conversion. The slice direction of the affine is the mean step between slice
origins, so a gantry tilt gives a (correct) sheared affine.

The folder is scanned without descending into sub-folders; hidden files are
skipped. Files count as DICOM when they carry the ``DICM`` marker at byte 128.

Example (``scans/T2_AX`` a folder of DICOM slices)::

    from mrisr.io.dicom import list_series
    [(s.uid, s.n_slices) for s in list_series("scans/T2_AX")]   # [('1.3.12.2.1107...', 30)]
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrisr.errors import InputError
from mrisr.io.sitk import read_sitk_image, sitk_to_ras, sitk_volume
from mrisr.volume import Volume

#: Relative deviation from the typical gap above which slice spacing is uneven.
GAP_TOLERANCE = 0.01
#: Absolute slack (mm) added to the gap tolerance (DICOM decimal rounding).
GAP_SLACK_MM = 1e-3

# Tags (group|element) as SimpleITK names them.
_UID = "0020|000e"
_DESCRIPTION = "0008|103e"
_IPP = "0020|0032"
_IOP = "0020|0037"
_IMAGE_TYPE = "0008|0008"
_ROWS = "0028|0010"
_COLUMNS = "0028|0011"
_PIXEL_SPACING = "0028|0030"
_MODALITY = "0008|0060"
_SLICE_THICKNESS = "0018|0050"
_SLICE_SPACING = "0018|0088"

# Byte patterns that mark a file as (part of) an image even when it cannot be
# parsed: the Rows and Pixel Data tags (little and big endian) and the prefix
# of the image storage SOP classes (minus the non-image ones listed after it).
_IMAGE_MARKS = (b"\x28\x00\x10\x00", b"\x00\x28\x00\x10", b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")
_IMAGE_SOP_PREFIX = b"1.2.840.10008.5.1.4.1.1."
_NON_IMAGE_SOP = (b"88.", b"104.", b"11.", b"9.", b"66", b"481.2", b"481.3", b"481.4", b"481.5")
# Media Storage Directory (DICOMDIR): its icon images carry Rows and Pixel Data tags too.
_DICOMDIR_SOP = b"1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder.

    Attributes:
        uid: SeriesInstanceUID (what ``--series`` takes).
        description: SeriesDescription (may be empty).
        n_slices: Number of image files in the series (localizers included).
        files: The image files, sorted by name.
    """

    uid: str
    description: str
    n_slices: int
    files: tuple[Path, ...]


@dataclass(frozen=True)
class _Damaged:
    """A file with the DICOM marker that cannot be parsed, though it looks like an image."""

    path: Path
    reason: str
    head: bytes


@dataclass(frozen=True)
class _Slice:
    """The header facts of one DICOM image file."""

    path: Path
    uid: str
    description: str
    modality: str
    image_type: str
    rows: int
    cols: int
    spacing: tuple[float, ...] | None
    iop: tuple[float, ...] | None
    ipp: tuple[float, ...] | None
    thickness: float | None = None

    @property
    def normal(self) -> np.ndarray:
        row, col = np.array(self.iop[:3]), np.array(self.iop[3:])  # type: ignore[index]
        n = np.cross(row, col)
        return n / np.linalg.norm(n)


# --------------------------------------------------------------------------- public


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a file with the DICOM marker (``DICM`` at byte 128).

    Example:
        >>> from mrisr.io.sample import sample_path
        >>> is_dicom_file(sample_path())   # a NIfTI file
        False

    and ``is_dicom_file("scans/T2_AX/IM0001")`` is True for a DICOM slice.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_folder(folder: str | os.PathLike[str]) -> bool:
    """True if ``folder`` is a folder holding at least one DICOM file (not recursive).

    Example:
        >>> from mrisr.io.sample import sample_path
        >>> is_dicom_folder(sample_path().parent)   # the folder of mrisr's NIfTI sample
        False

    and ``is_dicom_folder("scans/T2_AX")`` is True for a folder of DICOM slices.
    """
    p = Path(folder)
    return p.is_dir() and any(is_dicom_file(f) for f in _candidates(p))


def list_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The DICOM image series in ``folder``, sorted by UID.

    Args:
        folder: A folder of DICOM files (sub-folders are not searched).

    Returns:
        One :class:`SeriesInfo` per SeriesInstanceUID (empty if none).

    Raises:
        InputError: if the folder cannot be listed.

    Example:
        >>> from mrisr.io.sample import sample_path
        >>> list_series(sample_path().parent)   # no DICOM files there
        []

    and for a folder ``incoming/`` of DICOM slices::

        for s in list_series("incoming/"):
            print(s.uid, s.description, s.n_slices)
    """
    groups = _scan(Path(folder))
    return [SeriesInfo(uid=uid, description=sl[0].description, n_slices=len(sl),
                       files=tuple(s.path for s in sl)) for uid, sl in sorted(groups.items())]


def load_dicom_folder(folder: str | os.PathLike[str], *, series: str | None = None,
                      allow_uneven: bool = False) -> Volume:
    """Read one DICOM series from a folder (see the module docstring for the rules).

    Args:
        folder: The folder.
        series: SeriesInstanceUID to read when the folder holds several.
        allow_uneven: Resample missing slices / uneven spacing instead of refusing.

    Returns:
        The Volume (float32 data ``(columns, rows, slices)``, RAS affine); no
        NaN check here (:func:`mrisr.io.read.load_volume` does it).

    Raises:
        InputError: no DICOM images, several series and no ``series``, an
            unknown ``series``, inconsistent slices, uneven gaps, unreadable pixels.

    Example (``scans/T2_AX`` a folder of DICOM slices)::

        vol = load_dicom_folder("scans/T2_AX")
    """
    p = Path(folder)
    groups, damaged = _scan_all(p)
    if not groups:
        _check_damaged(p, damaged, groups, None)
    slices = _pick_series(p, groups, series)
    _check_damaged(p, damaged, groups, slices[0].uid)
    warnings: list[str] = []
    slices = _drop_localizers(p, slices, warnings)
    _check_consistent(p, slices)
    slices, positions = _sort_along_normal(p, slices)
    gaps = np.diff(positions)
    step = _regular_step(p, gaps, allow_uneven)
    data, affine, dtype = _read_stack(p, slices)
    if len(slices) == 1:
        affine = lone_slice_affine(affine, slices[0].thickness, warnings)
    if step is not None:
        data, affine = _resample_regular(data, affine, positions, step)
        warnings.append(f"uneven slice gaps ({_fmt_gaps(gaps)} mm): resampled onto {data.shape[2]} "
                        f"regular slices {_fmt(step)} mm apart along the slice normal (linear "
                        f"interpolation, --allow-uneven)")
    first = slices[0]
    meta = {"format": "dicom", "series_uid": first.uid, "series_description": first.description,
            "modality": first.modality, "n_slices": len(slices)}
    return Volume(data=data, affine=affine, source_dtype=dtype, warnings=warnings, meta=meta)


def load_dicom_file(path: str | os.PathLike[str]) -> Volume:
    """Read a single DICOM file (one slice, or a multi-frame image).

    Example (``scans/T2_AX/IM0001`` one DICOM slice)::

        vol = load_dicom_file("scans/T2_AX/IM0001")
        vol.data.shape   # (256, 256, 1)
    """
    p = Path(path)
    vol = sitk_volume(p, read_sitk_image(p))
    info = _read_tags(p)
    vol.meta.update(format="dicom")
    if isinstance(info, _Slice):
        if vol.data.ndim == 3 and vol.data.shape[2] == 1:
            vol.affine = lone_slice_affine(vol.affine, info.thickness, vol.warnings)
        vol.meta.update(series_uid=info.uid, series_description=info.description, modality=info.modality)
    return vol


def lone_slice_affine(affine: np.ndarray, thickness: float | None, warnings: list[str]) -> np.ndarray:
    """The affine of a single slice, its third column scaled to the slice's step.

    One slice has no neighbour to measure the step from, so the step is
    SpacingBetweenSlices, else SliceThickness; without either it stays 1 mm
    and a warning says so.

    Example:
        >>> float(lone_slice_affine(np.eye(4), 2.5, [])[2, 2])
        2.5
    """
    out = np.array(affine, dtype=np.float64)
    if thickness is None:
        warnings.append("a single slice without SliceThickness or SpacingBetweenSlices: its voxel size along "
                        "the slice normal is taken as 1 mm")
        return out
    out[:3, 2] *= thickness / np.linalg.norm(out[:3, 2])
    return out


# --------------------------------------------------------------------------- scanning


def _candidates(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise InputError(folder, f"cannot list the folder: {e.strerror or e}") from None
    return [f for f in entries if not f.name.startswith(".") and f.is_file()]


def _scan(folder: Path) -> dict[str, list[_Slice]]:
    """Header facts of every DICOM image in ``folder``, grouped by series UID."""
    return _scan_all(folder)[0]


def _scan_all(folder: Path) -> tuple[dict[str, list[_Slice]], list[_Damaged]]:
    """Like :func:`_scan`, plus the files that look like images but cannot be parsed."""
    groups: dict[str, list[_Slice]] = {}
    damaged: list[_Damaged] = []
    for f in _candidates(folder):
        if not is_dicom_file(f):
            continue
        info = _read_tags(f)
        if isinstance(info, _Damaged):
            damaged.append(info)
        elif info is not None:
            groups.setdefault(info.uid, []).append(info)
    return groups, damaged


def _read_tags(path: Path) -> _Slice | _Damaged | None:
    """The header facts of one file; a :class:`_Damaged` for an unparsable image; None if it holds no image."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return _damaged(path)  # a corrupt image; None for a DICOMDIR-like file
    keys = set(reader.GetMetaDataKeys())

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if key in keys else ""

    if not tag(_ROWS) or not tag(_COLUMNS):
        return None
    return _Slice(path=path, uid=tag(_UID) or "(no SeriesInstanceUID)", description=tag(_DESCRIPTION),
                  modality=tag(_MODALITY), image_type=tag(_IMAGE_TYPE).upper(), rows=int(tag(_ROWS)),
                  cols=int(tag(_COLUMNS)), spacing=_floats(tag(_PIXEL_SPACING), 2),
                  iop=_floats(tag(_IOP), 6), ipp=_floats(tag(_IPP), 3),
                  thickness=_thickness(tag(_SLICE_SPACING), tag(_SLICE_THICKNESS)))


def _damaged(path: Path) -> _Damaged | None:
    """A file GDCM cannot parse: damaged image if its bytes look like one, else None (not an image)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        return _Damaged(path, f"cannot be read ({e.strerror or e})", b"")
    body = head[132:]
    if path.name.upper() == "DICOMDIR" or _DICOMDIR_SOP in body:
        return None
    sop = body.find(_IMAGE_SOP_PREFIX)
    image_sop = sop >= 0 and not body[sop + len(_IMAGE_SOP_PREFIX):].startswith(_NON_IMAGE_SOP)
    if not image_sop and not any(mark in body for mark in _IMAGE_MARKS):
        return None
    return _Damaged(path, "is a truncated or corrupt DICOM image (it has the DICOM marker and image tags, "
                          "but the DICOM reader cannot parse it)", head)


def _thickness(spacing_between: str, thickness: str) -> float | None:
    """The slice step of a lone slice: SpacingBetweenSlices, else SliceThickness (mm, > 0), else None."""
    for text in (spacing_between, thickness):
        vals = _floats(text, 1)
        if vals is not None and vals[0] > 0:
            return vals[0]
    return None


def _floats(text: str, n: int) -> tuple[float, ...] | None:
    """A backslash-separated decimal string as ``n`` floats, or None."""
    try:
        vals = tuple(float(v) for v in text.split("\\"))
    except ValueError:
        return None
    return vals if len(vals) == n and all(np.isfinite(vals)) else None


# --------------------------------------------------------------------------- checks


def _check_damaged(folder: Path, damaged: list[_Damaged], groups: dict[str, list[_Slice]],
                   chosen: str | None) -> None:
    """Refuse damaged image files that may belong to the series being read (never drop them silently).

    A damaged file that names another series of the folder (and not ``chosen``) is left out.
    """
    suspects = [d for d in damaged if chosen is None or _names_uid(d.head, chosen)
                or not any(_names_uid(d.head, uid) for uid in groups if uid != chosen)]
    if not suspects:
        return
    first = suspects[0]
    more = (f" (and {len(suspects) - 1} more damaged file(s): {', '.join(d.path.name for d in suspects[1:6])})"
            if len(suspects) > 1 else "")
    raise InputError(folder, f"{first.path.name} {first.reason}{more}; a slice cannot be left out silently: "
                             "replace or remove the file")


def _names_uid(head: bytes, uid: str) -> bool:
    """Whether ``head`` holds ``uid`` as a whole UID (not as the prefix of a longer one)."""
    return re.search(rb"(?<![0-9.])" + re.escape(uid.encode()) + rb"(?![0-9.])", head) is not None


def _pick_series(folder: Path, groups: dict[str, list[_Slice]], series: str | None) -> list[_Slice]:
    if not groups:
        raise InputError(folder, "holds no DICOM image files")
    if series is not None:
        if series not in groups:
            raise InputError(folder, f"has no series with UID {series!r}; it holds:\n{_describe(groups)}")
        return groups[series]
    if len(groups) > 1:
        raise InputError(folder, f"holds {len(groups)} DICOM series; pick one with --series UID:\n"
                                 f"{_describe(groups)}")
    return next(iter(groups.values()))


def _describe(groups: dict[str, list[_Slice]]) -> str:
    return "\n".join(f"  {uid}  {sl[0].description or '(no description)'!r}  {len(sl)} slices"
                     for uid, sl in sorted(groups.items()))


def _drop_localizers(folder: Path, slices: list[_Slice], warnings: list[str]) -> list[_Slice]:
    """Drop LOCALIZER images and images oriented unlike the majority."""
    kept = [s for s in slices if "LOCALIZER" not in s.image_type]
    n_loc = len(slices) - len(kept)
    if not kept:
        raise InputError(folder, "the series holds only localizer images")
    if any(s.iop is None for s in kept) and len(kept) > 1:
        raise InputError(folder, "some slices lack ImageOrientationPatient; cannot stack them")
    counts = Counter(_orientation_key(s) for s in kept)
    (key, n), *rest = counts.most_common()
    if rest and rest[0][1] == n:
        raise InputError(folder, f"the slices have {len(counts)} orientations and none is the majority")
    odd = [s for s in kept if _orientation_key(s) != key]
    kept = [s for s in kept if _orientation_key(s) == key]
    if n_loc or odd:
        kept_paths = {s.path for s in kept}
        names = ", ".join(s.path.name for s in slices if s.path not in kept_paths)
        warnings.append(f"dropped {n_loc + len(odd)} localizer image(s) ({n_loc} marked LOCALIZER, "
                        f"{len(odd)} oriented unlike the other slices): {names}")
    return kept


def _orientation_key(s: _Slice) -> tuple[float, ...] | None:
    return None if s.iop is None else tuple(round(v, 3) for v in s.iop)


def _check_consistent(folder: Path, slices: list[_Slice]) -> None:
    sizes = Counter((s.cols, s.rows) for s in slices)
    if len(sizes) > 1:
        (common, n), *_ = sizes.most_common()
        odd = [f"{s.path.name} ({s.cols} x {s.rows})" for s in slices if (s.cols, s.rows) != common]
        more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
        raise InputError(folder, f"the slices have different sizes (columns x rows): {sorted(sizes)}; "
                                 f"{n} are {common[0]} x {common[1]}, unlike {', '.join(odd[:5])}{more}")
    spacings = {tuple(round(v, 4) for v in s.spacing) for s in slices if s.spacing is not None}
    if len(spacings) > 1:
        raise InputError(folder, f"the slices have different pixel spacings: {sorted(spacings)}")
    if len(slices) > 1 and any(s.ipp is None for s in slices):
        raise InputError(folder, "some slices lack ImagePositionPatient; cannot stack them")


def _sort_along_normal(folder: Path, slices: list[_Slice]) -> tuple[list[_Slice], np.ndarray]:
    """Sort by position along the slice normal; refuse duplicate positions."""
    if len(slices) == 1:
        return slices, np.zeros(1)
    normal = slices[0].normal
    pos = np.array([float(np.dot(s.ipp, normal)) for s in slices])  # type: ignore[arg-type]
    order = np.argsort(pos, kind="stable")
    slices, pos = [slices[i] for i in order], pos[order]
    dup = np.flatnonzero(np.diff(pos) < GAP_SLACK_MM)
    if dup.size:
        names = ", ".join(f"{slices[i].path.name}/{slices[i + 1].path.name}" for i in dup[:5])
        raise InputError(folder, f"{dup.size} pair(s) of images share a slice position ({names}): "
                                 "several echoes or time points in one series are not supported")
    return slices, pos


def _regular_step(folder: Path, gaps: np.ndarray, allow_uneven: bool) -> float | None:
    """None if the gaps are even; the regular step to resample to otherwise."""
    if gaps.size < 1:
        return None
    # The typical gap: the most common one (to 0.01 mm; the smallest on ties).
    rounded = np.round(gaps, 2)
    values, counts = np.unique(rounded, return_counts=True)
    expected = float(np.median(gaps[rounded == values[np.argmax(counts)]]))
    bad = np.flatnonzero(np.abs(gaps - expected) > GAP_TOLERANCE * expected + GAP_SLACK_MM)
    if bad.size == 0:
        return None
    if allow_uneven:
        return expected
    where = "; ".join(f"{_fmt(gaps[i])} mm between slices {i} and {i + 1}" for i in bad[:8])
    more = f" (and {bad.size - 8} more)" if bad.size > 8 else ""
    raise InputError(folder, f"missing slices or uneven slice spacing: expected gaps of {_fmt(expected)} mm "
                             f"along the slice normal, measured {where}{more}. All gaps (mm): "
                             f"{_fmt_gaps(gaps)}. Use --allow-uneven to resample onto a regular grid")


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _fmt_gaps(gaps: np.ndarray) -> str:
    shown = ", ".join(_fmt(g) for g in gaps[:20])
    return shown + (", ..." if gaps.size > 20 else "")


# --------------------------------------------------------------------------- pixels


def _read_stack(folder: Path, slices: list[_Slice]) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """Decode every slice; affine from the first slice's axes and the mean step."""
    data = np.empty((slices[0].cols, slices[0].rows, len(slices)), dtype=np.float32)
    origins = np.empty((len(slices), 3))
    first_affine, dtype = np.eye(4), np.dtype(np.float32)
    for k, s in enumerate(slices):
        image = read_sitk_image(s.path)
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(s.path, "is a colour (RGB) DICOM image; mrisr processes scalar images only")
        arr, aff = sitk_to_ras(image)
        if arr.shape[:2] != data.shape[:2] or arr.ndim != 3 or arr.shape[2] != 1:
            raise InputError(s.path, f"holds pixels of shape {arr.shape}, expected {data.shape[:2]} x 1")
        if arr.dtype.kind == "c":
            raise InputError(s.path, "holds complex pixels; mrisr processes real images only")
        data[:, :, k] = arr[:, :, 0]
        origins[k] = aff[:3, 3]
        if k == 0:
            first_affine, dtype = aff, np.dtype(arr.dtype).newbyteorder("=")
    affine = first_affine.copy()
    if len(slices) > 1:
        affine[:3, 2] = (origins[-1] - origins[0]) / (len(slices) - 1)
    return data, affine, dtype


def _resample_regular(data: np.ndarray, affine: np.ndarray, positions: np.ndarray,
                      step: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation along the slice axis onto evenly spaced positions.

    The new grid spans the first to the last slice; the step is the typical gap
    (adjusted so the span is a whole number of steps).
    """
    from scipy.interpolate import interp1d

    span = float(positions[-1] - positions[0])
    n_new = max(2, int(round(span / step)) + 1)
    new_pos = positions[0] + np.linspace(0.0, span, n_new)
    out = interp1d(positions, data, kind="linear", axis=2, assume_sorted=True)(new_pos).astype(np.float32)
    new_affine = affine.copy()
    # The third column spans the same first-to-last origins in n_new - 1 steps.
    new_affine[:3, 2] = affine[:3, 2] * (len(positions) - 1) / (n_new - 1)
    return out, new_affine
