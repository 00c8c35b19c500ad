"""NIfTI-1 / NIfTI-2 reading, by mrisr's own code on nibabel's header classes: every byte checked."""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mrisr.errors import GeometryError, InputError
from mrisr.geometry.grid import check_affine
from mrisr.io.checks import MAX_ABS_VALUE, as_float32, check_readable, native_dtype
from mrisr.volume import Volume

#: qform and sform may differ by this much (mm, at the grid corners) silently.
QFORM_SFORM_TOLERANCE_MM = 1e-4


#: A sheared sform's qform is its closest rigid fit, recomputed from the float32
#: sform on reading; that fit is sensitive to the sform's rounding (1e-4 mm seen), so
#: the qform may differ from it by this much (mm, 1 micron) silently.
QFORM_RIGID_TOLERANCE_MM = 1e-3


#: Deflate cannot compress more than about 1032:1, so a .gz file holds at most this many times its size.
GZIP_MAX_RATIO = 1032


_GZIP_MAGIC = b"\x1f\x8b"


_CHUNK = 1 << 24


# NIfTI intent codes of non-scalar voxels (vector, symmetric matrix,
# displacement vector, RGB / RGBA vector).
_VECTOR_INTENTS = {1005: "symmetric matrix", 1006: "displacement vector", 1007: "vector",
                   2003: "RGB vector", 2004: "RGBA vector"}


def nifti_affine(header: Any, shape: tuple[int, ...] | None = None) -> tuple[np.ndarray, str, list[str]]:
    """The voxel-to-RAS affine a NIfTI header defines, and how it was chosen.

    The sform when ``sform_code > 0``, else the qform when ``qform_code > 0``,
    else nibabel's base affine (voxel sizes only). When both forms are set and
    place a corner of the grid more than :data:`QFORM_SFORM_TOLERANCE_MM` apart,
    the sform wins and a warning is returned.

    Args:
        header: A nibabel ``Nifti1Header`` or ``Nifti2Header``.
        shape: Spatial shape for the corner comparison (default: the header's).

    Returns:
        ``(affine, source, warnings)`` with ``source`` one of ``"sform"``,
        ``"qform"``, ``"base"``.

    Raises:
        GeometryError: corrupt sform (code set, all-zero matrix), singular
            affine, zero voxel size, NaN/Inf entries.

    Example:
        >>> import nibabel as nib
        >>> h = nib.Nifti1Header(); h.set_sform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
        >>> a, src, w = nifti_affine(h)
        >>> src, float(a[0, 0])
        ('sform', 2.0)
    """
    dims = tuple(header.get_data_shape()) if shape is None else tuple(shape)
    shp = (dims + (1, 1, 1))[:3]
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    if sform_code > 0:
        sform = header.get_sform()
        if not np.any(sform[:3, :3]):
            raise GeometryError(f"sform_code is {sform_code} but the sform matrix is all zeros (corrupt header)")
        sform = check_affine(sform, "sform")
        warnings = []
        if qform_code > 0:
            gap = _qform_gap(header, sform, shp)
            if gap is not None:
                warnings.append(f"qform and sform disagree ({gap}); using the sform (code {sform_code})")
        return sform, "sform", warnings
    if qform_code > 0:
        return check_affine(_qform(header), "qform"), "qform", []
    base = check_affine(_base_affine(header), "voxel sizes (pixdim)")
    return base, "base", ["no sform or qform (both codes 0): orientation unknown, using the voxel sizes only"]


def read_nifti_geometry(path: str | os.PathLike[str]) -> tuple[np.ndarray, tuple[int, ...]]:
    """The affine and data shape of a NIfTI file, from its header only (cheap).

    Applies the same checks and affine choice as :func:`load_volume`, without
    reading the data and without nibabel's automatic header fixes (nor its
    log messages), so callers can plan the work before reading anything.

    Returns:
        ``(affine, shape)``: the voxel-to-RAS affine and the 3D or 4D shape.

    Raises:
        InputError: naming the file and what is wrong with its header.

    Example:
        >>> from mrisr.io.sample import sample_path
        >>> affine, shape = read_nifti_geometry(sample_path())
        >>> affine.shape, shape
        ((4, 4), (98, 116, 94))
    """
    p = Path(path).expanduser()
    check_readable(p)
    with gzip_errors(p), _open_stream(p) as f:
        head = f.read(540)
    hdr = _parse_header(p, _nifti_header_class(p, head[:4], len(head)), head)
    shape = _check_nifti_header(p, hdr)
    _check_data_fits(p, hdr, shape)
    try:
        affine, _, _ = nifti_affine(hdr, shape)
    except GeometryError as e:
        raise InputError(p, str(e)) from None
    return affine, shape


def looks_like_nifti(p: Path) -> bool:
    """True if the file starts like an uncompressed or gzipped NIfTI header."""
    try:
        with open(p, "rb") as f:
            head = f.read(4)
            if head[:2] == _GZIP_MAGIC:
                f.seek(0)
                with gzip.GzipFile(fileobj=f) as g:
                    head = g.read(4)
    except (OSError, EOFError, zlib.error):
        return False
    return _nifti_header_size(head) is not None


def _nifti_header_size(head: bytes) -> int | None:
    """348 (NIfTI-1) or 540 (NIfTI-2) from the first 4 bytes, either endianness."""
    if len(head) < 4:
        return None
    for fmt in ("<i", ">i"):
        size = struct.unpack(fmt, head[:4])[0]
        if size in (348, 540):
            return int(size)
    return None


@contextmanager
def gzip_errors(p: Path) -> Iterator[None]:
    """Turn decompression failures into InputErrors with a plain reason."""
    try:
        yield
    except EOFError:
        raise InputError(p, "truncated or corrupt gzip stream: the file ends before the compressed "
                            "data does (incomplete download or copy?)") from None
    except gzip.BadGzipFile as e:
        if str(e).startswith("Not a gzipped file"):  # the first member was checked: this follows it
            raise InputError(p, "holds bytes after the end of its gzip data that are not gzip data (trailing "
                                "garbage: an appended or damaged file?); re-compress it with gzip") from None
        raise InputError(p, f"corrupt gzip data ({e})") from None
    except zlib.error as e:
        raise InputError(p, f"truncated or corrupt gzip data ({e})") from None
    except OSError as e:
        raise InputError(p, f"read error: {e.strerror or e}") from None


@contextmanager
def _open_stream(p: Path) -> Iterator[BinaryIO]:
    """Open a NIfTI file read-only, decompressing when it is gzip."""
    with open(p, "rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        if p.name.lower().endswith(".gz") and magic[:2] != _GZIP_MAGIC:
            hint = (" (it looks like an uncompressed NIfTI: rename it to .nii)"
                    if _nifti_header_size(magic) else f" (it starts with bytes {magic!r})")
            raise InputError(p, f"named .gz but not gzip-compressed{hint}")
        if magic[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as g:
                yield g  # type: ignore[misc]
        else:
            yield raw


def _read_all(f: BinaryIO, buf: bytearray) -> None:
    while chunk := f.read(_CHUNK):
        buf += chunk


def load_nifti(p: Path) -> Volume:
    """Read a whole NIfTI-1/2 file, checking the header before the data."""
    with gzip_errors(p), _open_stream(p) as f:
        buf = bytearray(f.read(540))
        klass = _nifti_header_class(p, bytes(buf[:4]), len(buf))
        first = _parse_header(p, klass, bytes(buf))
        _check_data_fits(p, first, _check_nifti_header(p, first))  # refuse early, before reading the data
        _read_all(f, buf)
    end = max(int(first.get_data_offset()), len(first.binaryblock))
    hdr = _parse_header(p, klass, bytes(buf[:end]), with_extensions=True)
    shape = _check_nifti_header(p, hdr)
    data = _nifti_data(p, hdr, buf, shape)
    del buf
    try:
        affine, source, warnings = nifti_affine(hdr, shape)
    except GeometryError as e:
        raise InputError(p, str(e)) from None
    return Volume(data=data, affine=affine, header=hdr, source_dtype=native_dtype(hdr.get_data_dtype()),
                  warnings=warnings + _unit_warnings(hdr), meta=_nifti_meta(hdr, klass, source, shape))


def _nifti_header_class(p: Path, head: bytes, n: int) -> type:
    import nibabel as nib

    size = _nifti_header_size(head)
    if size is None:
        raise InputError(p, "not a NIfTI file (the header does not start with size 348 or 540)")
    if n < size:
        raise InputError(p, f"truncated: {n} bytes, shorter than a NIfTI header ({size} bytes)")
    return nib.Nifti1Header if size == 348 else nib.Nifti2Header


def _parse_header(p: Path, klass: type, raw: bytes, with_extensions: bool = False) -> Any:
    """Parse without nibabel's automatic fixes (they would hide zero voxel sizes)."""
    size = 348 if klass.__name__ == "Nifti1Header" else 540
    try:
        hdr = klass.from_fileobj(io.BytesIO(raw if with_extensions else raw[:size]), check=False)
    except Exception as e:  # nibabel raises several types for corrupt headers
        raise InputError(p, f"corrupt NIfTI header ({e})") from None
    magic = bytes(hdr["magic"]).rstrip(b"\x00")
    if magic not in (b"n+1", b"n+2"):
        detail = "a NIfTI pair (.hdr/.img) header" if magic in (b"ni1", b"ni2") else f"bad magic {magic!r}"
        raise InputError(p, f"not a single-file NIfTI ({detail})")
    return hdr


def _check_nifti_header(p: Path, hdr: Any) -> tuple[int, ...]:
    """Refuse what mrisr cannot process; return the data shape (3D or 4D)."""
    _check_datatype_code(p, hdr)
    try:
        dims = tuple(int(v) for v in hdr.get_data_shape())
        dtype = hdr.get_data_dtype()
    except Exception as e:
        raise InputError(p, f"corrupt NIfTI header: {e}") from None
    if any(d < 0 for d in dims):
        raise InputError(p, f"corrupt NIfTI header: negative dimension size in shape {dims}")
    if any(d == 0 for d in dims):
        raise InputError(p, f"has a zero-sized dimension: shape {dims}")
    intent = int(hdr["intent_code"])
    if intent in _VECTOR_INTENTS:
        raise InputError(p, f"holds {_VECTOR_INTENTS[intent]} voxels (NIfTI intent {intent}); "
                            "mrisr processes scalar images only")
    if len(dims) > 4 and any(d > 1 for d in dims[4:]):
        raise InputError(p, f"is a {len(dims)}D image (shape {dims}); mrisr processes 3D images and "
                            "4D time series only")
    if dtype.fields is not None:
        raise InputError(p, f"has RGB / structured voxels ({dtype}); convert to a scalar image first")
    if dtype.kind == "c":
        raise InputError(p, f"has complex voxels ({dtype}); save the magnitude as a real image first")
    if dtype.kind not in "iufb":
        from nibabel.nifti1 import data_type_codes

        code = int(hdr["datatype"])
        raise InputError(p, f"has unsupported voxel type {data_type_codes.label[code]} (NIfTI datatype {code}); "
                            "mrisr reads integer, float32 and float64 images")
    shape = dims[:4] + (1,) * (3 - len(dims))
    return shape[:3] if len(shape) == 4 and shape[3] == 1 else shape


def _data_extent(p: Path, hdr: Any, shape: tuple[int, ...]) -> tuple[int, int]:
    """``(offset, end)`` of the data block the header declares (exact integers, no overflow).

    Raises:
        InputError: a data offset that is not a number or lies inside the header.
    """
    vox_offset = float(hdr["vox_offset"])
    if not math.isfinite(vox_offset):
        raise InputError(p, f"corrupt NIfTI header: vox_offset is {vox_offset}")
    offset = int(hdr.get_data_offset())
    if offset < int(hdr["sizeof_hdr"]):
        raise InputError(p, f"corrupt NIfTI header: data offset {offset} lies inside the header")
    return offset, offset + math.prod(shape) * hdr.get_data_dtype().itemsize


def _check_data_fits(p: Path, hdr: Any, shape: tuple[int, ...]) -> None:
    """Refuse, from the file's size alone, a header that declares more data than the file can hold.

    An uncompressed file must hold the whole block; a gzip file can hold at
    most :data:`GZIP_MAX_RATIO` times its size (deflate's limit). So huge
    declared dimensions are found before any planning or reading.
    """
    _, need = _data_extent(p, hdr, shape)
    size = p.stat().st_size
    gz = p.name.lower().endswith(".gz")
    room = size * GZIP_MAX_RATIO if gz else size
    if need > room:
        what = f"at most {room:,} bytes uncompressed (gzip's limit)" if gz else f"{size:,}"
        raise InputError(p, f"truncated: the header promises {need:,} bytes (shape {shape}, "
                            f"{hdr.get_data_dtype()}), the file holds {what}")


def _check_datatype_code(p: Path, hdr: Any) -> None:
    """Refuse a datatype code NIfTI does not define, listing the ones it does."""
    from nibabel.nifti1 import data_type_codes

    code = int(hdr["datatype"])
    if code in data_type_codes.code:
        return
    known = ", ".join(f"{c} {data_type_codes.label[c]}" for c in sorted(data_type_codes.value_set("code")))
    raise InputError(p, f"corrupt NIfTI header: unknown datatype code {code} (NIfTI defines {known})")


def _nifti_data(p: Path, hdr: Any, buf: bytearray, shape: tuple[int, ...]) -> np.ndarray:
    """Decode the data block as float32, applying scl_slope / scl_inter."""
    dtype = hdr.get_data_dtype()
    offset, need = _data_extent(p, hdr, shape)
    n_vox = math.prod(shape)
    if len(buf) < need:
        raise InputError(p, f"truncated: the header promises {need:,} bytes (shape {shape}, {dtype}), "
                            f"the file holds {len(buf):,}")
    raw = np.frombuffer(buf, dtype=dtype, count=n_vox, offset=offset).reshape(shape, order="F")
    slope, inter = _scaling(p, hdr)
    if slope is None:
        return as_float32(p, raw)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = raw.astype(np.float64) * slope + inter  # float64: the range is checked before float32
    stored = scaled[np.isfinite(raw)] if raw.dtype.kind == "f" else scaled  # NaN/Inf voxels: finish_volume
    peak = float(np.max(np.abs(stored))) if stored.size else 0.0
    if peak > MAX_ABS_VALUE:
        raise InputError(p, f"scl_slope {slope:g} and scl_inter {inter:g} scale the stored values up to "
                            f"{peak:.3g}, above the {MAX_ABS_VALUE:.3g} mrisr accepts (it computes in float32): "
                            "the header's scaling is probably wrong; fix scl_slope (--nan-to-num would not help: "
                            "it would zero the image)")
    return scaled.astype(np.float32)


def _scaling(p: Path, hdr: Any) -> tuple[float | None, float]:
    """``(slope, inter)`` to apply, or ``(None, 0)`` for none.

    A ``scl_slope`` of 0 or NaN means no scaling (the NIfTI standard and
    nibabel); an infinite slope, or a non-finite intercept with a slope, is a
    corrupt header.
    """
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if math.isinf(slope):
        raise InputError(p, f"corrupt NIfTI header: scl_slope is {slope} (0 or NaN means no scaling)")
    if slope == 0 or math.isnan(slope):
        return None, 0.0
    if not math.isfinite(inter):
        raise InputError(p, f"corrupt NIfTI header: scl_inter is {inter} with scl_slope {slope:g}")
    return (None, 0.0) if (slope, inter) == (1.0, 0.0) else (slope, inter)


def _qform(header: Any) -> np.ndarray:
    """The qform affine, reading qfac 0 as 1 and negative pixdims as their size."""
    h = header.copy()
    if h["pixdim"][0] not in (-1, 1):
        h["pixdim"][0] = 1
    h["pixdim"][1:4] = np.abs(h["pixdim"][1:4])
    try:
        return h.get_qform()
    except Exception as e:
        raise GeometryError(f"corrupt qform ({e})") from None


def _base_affine(header: Any) -> np.ndarray:
    h = header.copy()
    h["pixdim"][1:4] = np.abs(h["pixdim"][1:4])
    return h.get_base_affine()


def _qform_gap(header: Any, sform: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """Describe how far the qform is from the sform, or None when they agree."""
    try:
        qform = _qform(header)
    except GeometryError as e:
        return str(e)
    dist = _corner_distance(qform, sform, shape)
    if dist <= QFORM_SFORM_TOLERANCE_MM:
        return None
    if _corner_distance(qform, _rigid_qform(sform), shape) <= QFORM_RIGID_TOLERANCE_MM:
        return None  # a qform cannot hold shear (however small): its closest rigid fit is the expected qform
    return f"they place the grid corners up to {dist:.4g} mm apart"


def _corner_distance(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between where ``a`` and ``b`` put the grid's corners."""
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    return float(np.max(np.linalg.norm((a @ corners - b @ corners)[:3], axis=0)))


def _rigid_qform(affine: np.ndarray) -> np.ndarray:
    """The qform nibabel (and mrisr's writer) store for ``affine``: shear stripped."""
    import nibabel as nib

    h = nib.Nifti1Header()
    h.set_qform(affine, code=1)
    return h.get_qform()


def has_shear(affine: np.ndarray, tol: float = 1e-6) -> bool:
    """True if the voxel axes of ``affine`` are not orthogonal.

    Example:
        >>> has_shear(np.diag([1.0, 2.0, 3.0, 1.0]))
        False
        >>> has_shear(np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
        True
    """
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    u = m / np.linalg.norm(m, axis=0)
    gram = u.T @ u
    return bool(np.max(np.abs(gram - np.diag(np.diag(gram)))) > tol)


def _xyzt_units(hdr: Any) -> tuple[str, str]:
    try:
        return hdr.get_xyzt_units()
    except Exception:
        return "unknown", "unknown"


def _unit_warnings(hdr: Any) -> list[str]:
    xyz, _ = _xyzt_units(hdr)
    if xyz in ("meter", "micron"):
        return [f"spatial units are {xyz}: mrisr reads the affine's numbers as mm, so spacings you "
                f"give are in {xyz} too"]
    return []


def _nifti_meta(hdr: Any, klass: type, source: str, shape: tuple[int, ...]) -> dict:
    xyz, t = _xyzt_units(hdr)
    meta = {"format": "nifti2" if klass.__name__ == "Nifti2Header" else "nifti1",
            "affine_source": source, "sform_code": int(hdr["sform_code"]),
            "qform_code": int(hdr["qform_code"]), "xyz_units": xyz, "time_units": t}
    if len(shape) == 4:
        meta["tr"] = float(hdr["pixdim"][4])
    return meta
