"""Writing NIfTI outputs (and JSON sidecars) safely and with exact geometry.

This module is the output half of the I/O boundary (see :mod:`mrisr.io.read`).

Header policy (``docs/inputs-and-outputs.md`` has the full story):

* A template read from NIfTI lends its header (units, TR, intent, dim_info,
  extensions); its ``descrip`` (often the acquisition's parameters, e.g.
  dcm2niix's ``TE=..;Time=..``) describes the input, not the output, and is
  replaced by ``mrisr super-resolution``. The new affine goes into BOTH sform and qform,
  and the template's ``sform_code`` / ``qform_code`` are restored (nibabel
  would reset them). If both codes were 0, both become 2 (aligned): the
  output's grid is only meaningful with its affine.
* Templates without a NIfTI header (DICOM, NRRD...) give codes 1 (scanner)
  and units mm / s.
* Sheared affines: the sform holds them exactly; the qform, which cannot hold
  shear, gets the closest rigid-plus-scaling affine (nibabel's polar
  decomposition), so tools that only read the qform (ITK, ANTs) still get a
  nearly right, orthogonal geometry. If the template had no sform, the sform
  is switched on (with the qform's code) so the shear is not lost.
* Data is float32 with no scaling (``scl_slope`` NaN, ``scl_inter`` 0) unless
  ``dtype`` asks otherwise; ``dtype="input"`` casts back to the template's
  on-disk type, rounding and clipping (re-using the template's scl_slope /
  scl_inter if it had them).

Writes are atomic: the image goes to a hidden temporary file in the
destination folder, is flushed, fsync'ed, re-read and checked, and only then
renamed onto the final name. On any failure (including Ctrl-C) the temporary
file is removed and an earlier output stays untouched.

Example:
    >>> from mrisr.io.read import load_volume
    >>> from mrisr.io.sample import sample_path
    >>> from mrisr.io.writer import save_volume
    >>> vol = load_volume(sample_path())
    >>> save_volume(vol.data, vol.affine, "out_sr.nii.gz", template=vol)
    PosixPath('out_sr.nii.gz')
"""

from __future__ import annotations

import gzip
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mrisr.errors import MrisrError, OutputError, look_up_option
from mrisr.geometry.grid import check_affine
from mrisr.io.nifti import has_shear, nifti_affine
from mrisr.options import DTYPES, OUTPUT_SUFFIXES
from mrisr.volume import Volume

#: gzip level of ``.nii.gz`` outputs (nibabel's default: fast, float data barely compresses).
GZIP_LEVEL = 1
#: Largest size of a NIfTI-1 dimension; bigger outputs are written as NIfTI-2.
_NIFTI1_MAX_DIM = 32767


# --------------------------------------------------------------------------- public


def save_volume(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike[str], *,
                template: Volume | None = None, dtype: str = "float32", force: bool = False,
                inputs: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """Write ``data`` with ``affine`` to a NIfTI file, atomically and verified.

    Args:
        data: Array ``(X, Y, Z)`` or ``(X, Y, Z, T)`` in mrisr's convention.
        affine: 4x4 voxel-to-RAS affine (voxel centres).
        path: Output file ending in ``.nii.gz`` or ``.nii``.
        template: The input volume; its NIfTI header, codes, units, TR and
            source dtype carry over (see the module docstring).
        dtype: ``"float32"`` (default), ``"float64"``, an integer type name
            (rounded and clipped) or ``"input"`` (the template's on-disk type).
        force: Overwrite an existing output.
        inputs: Input paths; the output may not be any of them.

    Returns:
        The output path.

    Raises:
        OutputError: bad suffix, output exists (without ``force``), output is an
            input, folder missing or unwritable, write or verification failure.
        GeometryError: invalid affine.
        MrisrError: unknown ``dtype``, or ``"input"`` without a template.

    Example:
        >>> import numpy as np
        >>> save_volume(np.zeros((4, 4, 4)), np.eye(4), "zeros.nii.gz", force=True)
        PosixPath('zeros.nii.gz')
    """
    out = check_output_path(path, force=force, inputs=inputs)
    aff = check_affine(affine, "output affine")
    arr = np.asarray(data)
    if arr.ndim not in (3, 4) or min(arr.shape) < 1:
        raise OutputError(f"{out}: data must be 3D or 4D with no empty axis, got shape {arr.shape}")
    raw, slope, inter = encode_data(arr, dtype, template)
    _check_finite(out, raw)
    img = _nifti_image(raw, aff, template, slope, inter)
    gz = out.name.lower().endswith(".gz")
    _atomic_write(out, force, lambda f: _write_nifti(img, f, gz), lambda tmp: _verify_nifti(tmp, raw, aff))
    return out


def _check_finite(out: Path, arr: np.ndarray) -> None:
    """Never store NaN or Inf in a float output (inputs are checked: non-finite results mean an overflow).

    Integer outputs need no check: :func:`encode_data` maps NaN to 0 and clips.
    """
    if arr.dtype.kind not in "fc":
        return
    n_bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if n_bad:
        raise OutputError(f"{out}: the result holds {n_bad:,} voxels that are not finite (NaN or Inf: an "
                          "overflow, the input's values being too close to the float32 limit?); nothing was written")


def nifti_image(data: np.ndarray, affine: np.ndarray, *, template: Volume | None = None,
                dtype: str = "float32") -> Any:
    """The nibabel image :func:`save_volume` would write, for in-memory use.

    Same header policy (codes, units, TR, scaling, dtype); ``img.affine`` is
    ``affine`` itself (float64), and the header's codes are those of the policy.

    Example:
        >>> img = nifti_image(np.zeros((2, 2, 2)), np.eye(4))
        >>> int(img.header["sform_code"]), img.get_data_dtype().name
        (1, 'float32')
    """
    aff = check_affine(affine, "output affine")
    raw, slope, inter = encode_data(np.asarray(data), dtype, template)
    built = _nifti_image(raw, aff, template, slope, inter)
    # The header's sform equals aff, so nibabel keeps the header's forms and codes.
    img = type(built)(built.dataobj, aff, built.header)
    img.header.set_slope_inter(math.nan if slope is None else slope, math.nan if inter is None else inter)
    return img


def save_json_atomic(obj: Any, path: str | os.PathLike[str], force: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically (temporary file + rename).

    NumPy scalars and arrays become numbers and lists, paths become strings,
    NaN and Inf become ``null`` (strict JSON).

    Raises:
        OutputError: output exists (without ``force``), folder missing or
            unwritable, write failure.
        TypeError: for objects JSON cannot represent.

    Example:
        >>> save_json_atomic({"psnr": 31.2}, "out_sr.json", force=True)
        PosixPath('out_sr.json')
    """
    out = check_output_path(path, force=force, suffixes=())
    text = json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"
    _atomic_write(out, force, lambda f: f.write(text.encode("utf-8")), lambda tmp: json.loads(tmp.read_bytes()))
    return out


def save_bytes_atomic(data: bytes, path: str | os.PathLike[str], *, force: bool = False,
                      verify: Callable[[Path], Any] | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in its folder + rename).

    ``verify(temporary path)`` may check the written file before the rename;
    the temporary file keeps ``path``'s extension.

    Raises:
        OutputError: output exists (without ``force``), folder missing or
            unwritable, write or verification failure.

    Example:
        >>> save_bytes_atomic(b"#Insight Transform File V1.0\\n", "x.tfm", force=True)
        PosixPath('x.tfm')
    """
    out = check_output_path(path, force=force, suffixes=())
    _atomic_write(out, force, lambda f: f.write(data), verify)
    return out


def check_output_path(path: str | os.PathLike[str], *, force: bool = False,
                      inputs: Sequence[str | os.PathLike[str]] = (),
                      suffixes: Sequence[str] = OUTPUT_SUFFIXES) -> Path:
    """Check, before any work, that an output can be written at ``path``.

    Args:
        path: The output file.
        force: Whether an existing file may be replaced.
        inputs: Paths the output must not be.
        suffixes: Accepted endings (empty: any).

    Returns:
        ``path`` as a :class:`~pathlib.Path` (``~`` expanded).

    Raises:
        OutputError: naming the output and the reason.

    Example:
        >>> check_output_path("/tmp/a_sr.nii.gz", force=True)
        PosixPath('/tmp/a_sr.nii.gz')
    """
    out = Path(path).expanduser()
    if suffixes and not any(out.name.lower().endswith(s) and len(out.name) > len(s) for s in suffixes):
        raise OutputError(f"{out}: outputs are NIfTI; the name must end in {' or '.join(suffixes)}")
    folder = out.parent
    if not folder.exists():
        raise OutputError(f"{out}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputError(f"{out}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: the folder {folder} is not writable")
    check_name_length(out)
    if out.is_dir():
        raise OutputError(f"{out} is a folder; give a file name")
    for inp in inputs:
        if _same_file(out, Path(inp)):
            raise OutputError(f"{out} is also an input; choose another output name")
    if (out.exists() or out.is_symlink()) and not force:
        raise OutputError(f"{out} already exists; use --force to overwrite it")
    return out


def check_name_length(path: str | os.PathLike[str]) -> None:
    """Refuse an output name longer than its folder's file-name limit (``NAME_MAX``, usually 255 bytes).

    Raises:
        OutputError: naming the output, its length and the limit.

    Example:
        >>> check_name_length("/tmp/" + "a" * 300 + ".nii.gz")
        Traceback (most recent call last):
        ...
        mrisr.errors.OutputError: /tmp/aaa...
    """
    out = Path(path)
    size, limit = len(os.fsencode(out.name)), name_max(out.parent)
    if size > limit:
        raise OutputError(f"{out}: the output name is {size} bytes long, above the file-name limit of {limit} "
                          "bytes here; give a shorter name with -o")


def encode_data(data: np.ndarray, dtype: str, template: Volume | None = None
                ) -> tuple[np.ndarray, float | None, float | None]:
    """Convert data to the on-disk type ``dtype`` names.

    Integers are rounded (half to even), NaN becomes 0, and values are clipped
    to the type's range. With ``dtype="input"`` and a template whose NIfTI
    header has a scaling (``scl_slope`` not 1 or ``scl_inter`` not 0), values
    are encoded with that same scaling.

    Returns:
        ``(raw, slope, inter)``: the array to store and the scaling to write
        (``None, None`` for none).

    Example:
        >>> raw, s, i = encode_data(np.array([[[-3.6, 2.5, 300.0]]]), "int8")
        >>> raw.tolist(), s, i
        ([[[-4, 2, 127]]], None, None)
    """
    name = look_up_option(dtype, DTYPES, "dtype")
    slope = inter = None
    if name == "input":
        if template is None:
            raise MrisrError("dtype 'input' needs the input volume as template")
        target = _storable(template.source_dtype)
        if target.kind in "iu":
            slope, inter = _template_scaling(template)
    else:
        target = np.dtype(name)
    arr = np.asarray(data)
    if target.kind == "f":
        return arr.astype(target, copy=False), None, None
    work = np.float64 if target.itemsize >= 4 or slope is not None else np.float32
    vals = arr.astype(work, copy=True)
    if slope is not None:
        vals -= inter
        vals /= slope
    np.rint(vals, out=vals)
    np.nan_to_num(vals, copy=False, nan=0.0)
    info = np.iinfo(target)
    hi = float(info.max)
    if hi > info.max:  # the float bound rounded up (64-bit types): step back inside
        hi = float(np.nextafter(hi, 0))
    np.clip(vals, float(info.min), hi, out=vals)
    return vals.astype(target), slope, inter


# --------------------------------------------------------------------------- NIfTI building


def _storable(dtype: Any) -> np.dtype:
    """The NIfTI-storable native type closest to ``dtype``."""
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return np.dtype(np.uint8)
    if dt.kind == "f":
        return np.dtype(np.float64) if dt.itemsize >= 8 else np.dtype(np.float32)
    if dt.kind in "iu":
        return dt.newbyteorder("=")
    return np.dtype(np.float32)


def _template_scaling(template: Volume) -> tuple[float | None, float | None]:
    hdr = _nifti_header_of(template)
    if hdr is None:
        return None, None
    try:
        slope, inter = hdr.get_slope_inter()
    except Exception:
        return None, None
    if slope is None or (slope, inter) == (1.0, 0.0):
        return None, None
    return float(slope), float(inter or 0.0)


def _nifti_header_of(template: Volume | None) -> Any:
    import nibabel as nib

    hdr = getattr(template, "header", None)
    return hdr if isinstance(hdr, nib.Nifti1Header) else None


def _output_codes(hdr: Any, affine: np.ndarray) -> tuple[int, int]:
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    if sform_code == 0 and qform_code == 0:
        return 2, 2
    if sform_code == 0 and has_shear(affine):
        sform_code = qform_code
    return sform_code, qform_code


#: The NIfTI ``descrip`` of every output (the sidecar holds the provenance).
OUTPUT_DESCRIPTION = b"mrisr super-resolution"


def _nifti_image(raw: np.ndarray, affine: np.ndarray, template: Volume | None,
                 slope: float | None, inter: float | None) -> Any:
    """A nibabel image whose header follows the module's header policy."""
    import nibabel as nib

    src = _nifti_header_of(template)
    if src is not None:
        hdr = src.copy()
    else:
        hdr = nib.Nifti1Header()
        hdr["sform_code"] = hdr["qform_code"] = 1
        hdr.set_xyzt_units("mm", "sec")
        tr = (template.meta.get("tr") if template is not None else None)
        if raw.ndim == 4 and tr:
            hdr["pixdim"][4] = float(tr)
    sform_code, qform_code = _output_codes(hdr, affine)
    if max(raw.shape) > _NIFTI1_MAX_DIM and not isinstance(hdr, nib.Nifti2Header):
        hdr = nib.Nifti2Header.from_header(hdr)
    old_shape = tuple(hdr.get_data_shape())
    hdr.set_data_shape(raw.shape)
    hdr.set_data_dtype(raw.dtype)
    hdr.set_sform(affine, code=sform_code)
    hdr.set_qform(affine, code=qform_code)  # strips shear: closest rigid + scaling
    hdr["cal_min"] = hdr["cal_max"] = 0  # display range of the old data
    hdr["descrip"] = OUTPUT_DESCRIPTION  # the input's acquisition description is not the output's
    if old_shape[:3] != raw.shape[:3]:
        hdr["slice_code"] = hdr["slice_start"] = hdr["slice_end"] = 0  # slice timing of the old grid
        hdr["slice_duration"] = 0
    klass = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    img = klass(raw, None, header=hdr)  # affine None: nibabel keeps our sform/qform/codes
    # After construction (nibabel resets scaling there). NaN means "no scaling": nibabel
    # then writes slope 1, inter 0 for data already in the on-disk type.
    img.header.set_slope_inter(math.nan if slope is None else slope, math.nan if inter is None else inter)
    return img


def _write_nifti(img: Any, f: BinaryIO, gz: bool) -> None:
    from nibabel.fileholders import FileHolder

    if not gz:
        img.to_file_map({"image": FileHolder(fileobj=f)})
        return
    # filename="" and mtime=0: no temporary name or time stamp in the gzip header.
    with gzip.GzipFile(filename="", fileobj=f, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as g:
        img.to_file_map({"image": FileHolder(fileobj=g)})


def _verify_nifti(tmp: Path, raw: np.ndarray, affine: np.ndarray) -> None:
    """Re-read the written file: shape, affine (1e-5 mm) and every stored value."""
    import nibabel as nib

    img = nib.load(tmp)
    if tuple(img.shape) != raw.shape:
        raise OutputError(f"shape {img.shape} read back, {raw.shape} written")
    got, _, _ = nifti_affine(img.header, raw.shape)
    if not np.allclose(got, affine, rtol=1e-6, atol=1e-5):
        raise OutputError(f"affine read back differs from the one written:\n{got}\nvs\n{affine}")
    stored = np.asarray(img.dataobj.get_unscaled())
    if not np.array_equal(stored, raw, equal_nan=raw.dtype.kind == "f"):
        raise OutputError("the data read back differs from the data written")


# --------------------------------------------------------------------------- atomic files


def _atomic_write(out: Path, force: bool, write: Callable[[BinaryIO], Any],
                  verify: Callable[[Path], Any] | None = None) -> None:
    """Write via a hidden temporary file in ``out``'s folder, then rename it.

    The temporary file is removed whatever happens (``finally``), so an
    exception or Ctrl-C leaves neither a partial output nor litter, and an
    existing ``out`` is only ever replaced by a complete, verified file.
    """
    prefix, ext = _temp_affixes(out)
    mode = _new_file_mode(out)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=prefix, suffix=ext)
    except OSError as e:
        raise OutputError(f"{out}: cannot create a file in {out.parent}: {e.strerror or e}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if verify is not None:
            try:
                verify(tmp)
            except Exception as e:
                raise OutputError(f"{out}: the written file failed its check ({e}); nothing was "
                                  "written") from e
        _publish(tmp, out, force)
        _fsync_folder(out.parent)
    except OSError as e:
        raise OutputError(f"{out}: writing failed: {e.strerror or e}") from e
    finally:
        with suppress(OSError):
            tmp.unlink()


#: Characters ``tempfile.mkstemp`` adds between prefix and suffix.
_TEMP_RANDOM_CHARS = 8


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` allows (255 when it does not say)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _temp_affixes(out: Path) -> tuple[str, str]:
    """Prefix and suffix of ``out``'s hidden temporary file: ``.<stem>.tmp-XXXXXXXX<ext>``.

    The stem is shortened so the whole name fits the file-name limit of the
    folder (a 250-character output name still gets a temporary file).
    """
    name = out.name
    ext = ".nii.gz" if name.lower().endswith(".nii.gz") else out.suffix
    stem = name[: len(name) - len(ext)] if ext else name
    room = name_max(out.parent) - len(f"..tmp-{ext}".encode()) - _TEMP_RANDOM_CHARS
    encoded = stem.encode()
    if len(encoded) > room:
        stem = encoded[:max(room, 1)].decode("utf-8", errors="ignore")
    return f".{stem}.tmp-", ext


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Move ``tmp`` onto ``out``; without ``force``, never clobber a file that appeared meanwhile."""
    if force:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)  # atomic and fails if out exists; finally removes tmp
    except FileExistsError:
        raise OutputError(f"{out} already exists (created while writing); use --force to overwrite it") from None
    except OSError:  # file system without hard links
        if out.exists():
            raise OutputError(f"{out} already exists; use --force to overwrite it") from None
        os.replace(tmp, out)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (best effort: not all systems allow it)."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _new_file_mode(out: Path) -> int:
    """Permissions for the output: the replaced file's, else 0666 minus the umask."""
    with suppress(OSError):
        return stat.S_IMODE(out.stat().st_mode)
    return 0o666 & ~_umask()


def _umask() -> int:
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    with suppress(OSError):
        if a.exists() and b.exists() and os.path.samefile(a, b):
            return True
    return a.resolve() == b.expanduser().resolve()


def jsonable(obj: Any, *, finite: bool = True) -> Any:
    """Plain JSON types: NumPy to Python, paths to strings, tuples and sets to lists, keys to strings.

    With ``finite`` (the sidecars: strict JSON) NaN and Inf become None; without, they stay floats
    (:meth:`mrisr.pipeline.report.UpscaleReport.to_dict`).

    Example:
        >>> jsonable({"spacing": np.array([1.0, 1.0, 2.0]), "psnr": np.float32(np.nan), 3: Path("a.nii")})
        {'spacing': [1.0, 1.0, 2.0], 'psnr': None, '3': 'a.nii'}
        >>> jsonable([np.float64(np.inf)], finite=False)
        [inf]
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v, finite=finite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v, finite=finite) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), finite=finite)
    if isinstance(obj, np.generic):
        return jsonable(obj.item(), finite=finite)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if finite and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


__all__ = ["save_volume", "nifti_image", "save_json_atomic", "save_bytes_atomic", "jsonable", "check_output_path",
           "check_name_length", "name_max", "encode_data",
           "has_shear", "OUTPUT_SUFFIXES", "DTYPES"]
