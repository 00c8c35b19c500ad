"""QC pictures: the input, the plain spline, the super-resolved result and their difference.

One PNG (:data:`PNG_SIZE` pixels) with a row per orthogonal world plane
(axial, coronal, sagittal) through a point (default: the centre of the
output's field of view) and four columns:

1. **input**, sampled nearest-neighbour, so its coarse voxels stay visible;
2. **spline**: the B-spline interpolation onto the output grid, recomputed
   from the input with the run's order and anti-aliasing (cheap; no network);
3. **result**: the output image (super-resolved);
4. **result - spline**: what the network added, in a diverging colormap with
   limits symmetric about zero.

Every image is sampled on the same world-aligned plane (RAS mm) through the
inverse of its own affine, so oblique and sheared inputs and outputs line up
and look anatomically upright. Rows are labelled with the plane and its world
coordinate, panel edges with orientation letters (R/L, A/P, S/I). The default
display is neurological (patient's left on the image's left); pass
``radiological=True`` to mirror axial and coronal slices. Sagittal slices show
anterior on the left.

With ``method="spline"`` the result *is* the spline, so the spline column
shows the result and the difference is zero; the figure says so.

matplotlib is an optional dependency (``pip install "mrisr[qc]"``); without it
:func:`require_matplotlib` raises :class:`QCUnavailableError`. Drawing uses
matplotlib's object API with the Agg canvas (no pyplot, no global backend),
under a lock, so threads of a parallel batch can each make their picture.

Example:
    >>> qc_path("out/sub-01_desc-mrisr_T2w.nii.gz").name
    'sub-01_desc-mrisr_T2w_qc.png'
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from mrisr.errors import MrisrError
from mrisr.geometry.grid import TargetGrid, voxel_sizes
from mrisr.io.naming import sidecar_path, split_extension
from mrisr.options import METHODS
from mrisr.volume import Volume

#: Appended to the output's stem to name its picture.
QC_SUFFIX = "_qc.png"
#: Figure size in inches and resolution: the PNG is :data:`PNG_SIZE` pixels.
FIGSIZE_IN = (16.0, 13.0)
DPI = 100
#: ``(width, height)`` of every QC picture, in pixels.
PNG_SIZE = (int(FIGSIZE_IN[0] * DPI), int(FIGSIZE_IN[1] * DPI))
#: Largest side of a sampled plane, in pixels (the panels are about 380 px wide).
MAX_PLANE_SIDE = 400
#: What to run when matplotlib is missing.
INSTALL_HINT = 'pip install "mrisr[qc]"'
#: Percentiles of the input that set the grey-scale limits.
GREY_PERCENTILES = (0.5, 99.5)
#: Percentile of |result - spline| (on the shown planes) that sets the difference limits.
DIFF_PERCENTILE = 99.5

_RENDER_LOCK = threading.Lock()
_LETTERS = {(0, 1): "R", (0, -1): "L", (1, 1): "A", (1, -1): "P", (2, 1): "S", (2, -1): "I"}


class QCUnavailableError(MrisrError):
    """matplotlib, needed for QC pictures, is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`QCUnavailableError` unless matplotlib can be imported.

    Example:
        >>> require_matplotlib()   # matplotlib installed: nothing happens
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise QCUnavailableError(f"QC pictures need matplotlib, which is not installed: {INSTALL_HINT}") from None


def qc_path(output: str | Path) -> Path:
    """Where the picture of an output image goes: ``<output stem>_qc.png`` beside it.

    Example:
        >>> qc_path("t2_sr.nii.gz").name
        't2_sr_qc.png'
    """
    p = Path(output)
    return p.with_name(split_extension(p.name)[0] + QC_SUFFIX)


def read_sidecar(output: str | Path) -> dict | None:
    """The provenance record next to an output image, or ``None`` if absent or unreadable."""
    path = sidecar_path(output)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


# ----------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Plane:
    """A world-aligned plane sampled on a square pixel grid.

    Attributes:
        name: ``axial``, ``coronal`` or ``sagittal``.
        axis: World axis (0 x, 1 y, 2 z) held fixed.
        value: World coordinate of the plane along ``axis`` (mm).
        points: ``(rows, cols, 3)`` world coordinates (mm) of the pixel
            centres; row 0 is the bottom row (``origin="lower"``).
        extent: ``(left, right, bottom, top)`` in mm along the plane's axes.
        edges: Orientation letters ``(left, right, bottom, top)``.
    """

    name: str
    axis: int
    value: float
    points: np.ndarray
    extent: tuple[float, float, float, float]
    edges: tuple[str, str, str, str]


def _letter(direction: np.ndarray, sign: int) -> str:
    axis = int(np.argmax(np.abs(direction)))
    return _LETTERS[(axis, int(np.sign(direction[axis])) * sign)]


def fov_corners(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World coordinates (mm) of the 8 outer corners (voxel edges) of a grid.

    Example:
        >>> fov_corners(np.eye(4), (2, 2, 2)).min(axis=0).tolist()
        [-0.5, -0.5, -0.5]
    """
    n = np.asarray(shape[:3], dtype=np.float64)
    idx = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)
    vox = -0.5 + idx * n
    return vox @ np.asarray(affine, dtype=np.float64)[:3, :3].T + np.asarray(affine, dtype=np.float64)[:3, 3]


def grid_centre(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World coordinates (mm) of the centre of a grid's field of view."""
    c = (np.asarray(shape[:3], dtype=np.float64) - 1) / 2
    return np.asarray(affine, dtype=np.float64)[:3, :3] @ c + np.asarray(affine, dtype=np.float64)[:3, 3]


def inside_fov(point: Sequence[float], affine: np.ndarray, shape: Sequence[int]) -> bool:
    """Whether a world point (mm) lies within a grid's outer voxel edges.

    Example:
        >>> inside_fov([0.4, 0, 0], np.eye(4), (1, 1, 1)), inside_fov([0.6, 0, 0], np.eye(4), (1, 1, 1))
        (True, False)
    """
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    vox = inv[:3, :3] @ np.asarray(point, dtype=np.float64) + inv[:3, 3]
    n = np.asarray(shape[:3], dtype=np.float64)
    return bool(np.all(vox >= -0.5 - 1e-6) and np.all(vox <= n - 0.5 + 1e-6))


def make_planes(point: Sequence[float], corners: np.ndarray, pixel: float,
                radiological: bool = False) -> list[Plane]:
    """Axial, coronal and sagittal planes through ``point`` covering ``corners``.

    Args:
        point: World point (mm, RAS) the three planes pass through.
        corners: World points whose projections the planes must cover.
        pixel: Pixel size in mm (raised so no side exceeds :data:`MAX_PLANE_SIDE`).
        radiological: Mirror axial and coronal planes (patient's right on the left).

    Example:
        >>> planes = make_planes([0, 0, 0], fov_corners(np.eye(4), (4, 4, 4)), 1.0)
        >>> [p.name for p in planes], planes[0].points.shape, planes[0].edges
        (['axial', 'coronal', 'sagittal'], (6, 6, 3), ('L', 'R', 'P', 'A'))
    """
    p = np.asarray(point, dtype=np.float64)
    rel = np.asarray(corners, dtype=np.float64) - p
    x = np.array([-1.0 if radiological else 1.0, 0.0, 0.0])
    layouts = (("axial", 2, x, np.array([0.0, 1.0, 0.0])),
               ("coronal", 1, x, np.array([0.0, 0.0, 1.0])),
               ("sagittal", 0, np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])))
    span = max(float(np.ptp(rel @ h)) for _, _, h, _ in layouts) if len(rel) else 1.0
    span = max(span, float(max(np.ptp(rel, axis=0)))) if len(rel) else span
    pixel = max(float(pixel), span / MAX_PLANE_SIDE, 1e-3)
    planes = []
    for name, axis, h, v in layouts:
        hs = _steps(rel @ h, pixel)
        vs = _steps(rel @ v, pixel)
        pts = p + hs[None, :, None] * h + vs[:, None, None] * v
        extent = (hs[0] - pixel / 2, hs[-1] + pixel / 2, vs[0] - pixel / 2, vs[-1] + pixel / 2)
        edges = (_letter(h, -1), _letter(h, 1), _letter(v, -1), _letter(v, 1))
        planes.append(Plane(name, axis, float(p[axis]), pts, tuple(float(e) for e in extent), edges))  # type: ignore[arg-type]
    return planes


def _steps(projections: np.ndarray, pixel: float) -> np.ndarray:
    lo = np.floor(projections.min() / pixel)
    hi = np.ceil(projections.max() / pixel)
    return np.arange(lo, hi + 1) * pixel


def sample_plane(data: np.ndarray, affine: np.ndarray, points: np.ndarray, order: int) -> np.ndarray:
    """Sample a 3D array at world ``points`` through the inverse of its affine.

    Points outside the grid's outer voxel edges get NaN. ``order`` 0 is
    nearest neighbour, 1 linear (no spline prefilter: this is display).

    Example:
        >>> data = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
        >>> sample_plane(data, np.eye(4), np.array([[[0.0, 0, 1], [5.0, 0, 0]]]), 0).tolist()
        [[1.0, nan]]
    """
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    flat = points.reshape(-1, 3)
    vox = flat @ inv[:3, :3].T + inv[:3, 3]
    n = np.asarray(data.shape[:3], dtype=np.float64)
    tol = 1e-4  # points on the outer voxel edges are inside, whatever the rounding of the inverse
    inside = np.all((vox >= -0.5 - tol) & (vox <= n - 0.5 + tol), axis=1)
    coords = np.clip(vox, 0.0, n - 1).T
    values = ndimage.map_coordinates(np.asarray(data, dtype=np.float32), coords, order=order, mode="nearest",
                                     prefilter=False).astype(np.float32)
    values[~inside] = np.nan
    return values.reshape(points.shape[:2])


def spline_on_grid(data: np.ndarray, affine: np.ndarray, out_shape: Sequence[int], out_affine: np.ndarray,
                   order: int = 3, antialias: bool = True) -> np.ndarray:
    """The B-spline interpolation of ``data`` onto another grid.

    When the output grid's axes are parallel to the input's (always so for
    mrisr outputs: the geometry contract only scales and shifts voxel axes),
    this is :func:`mrisr.geometry.resample.resample_to_grid`, the pipeline's own
    interpolation. Otherwise ``scipy.ndimage.affine_transform`` with the same
    order and reflective boundary (no anti-aliasing).

    Example:
        >>> from mrisr.geometry.grid import target_grid
        >>> g = target_grid(np.eye(4), (4, 4, 4), 0.5)
        >>> spline_on_grid(np.ones((4, 4, 4), np.float32), np.eye(4), g.shape, g.affine).shape
        (8, 8, 8)
    """
    from mrisr.geometry.resample import resample_to_grid

    m = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(out_affine, dtype=np.float64)
    lin, offset = m[:3, :3], m[:3, 3]
    diag = np.diag(lin)
    shape = tuple(int(v) for v in out_shape[:3])
    if np.allclose(lin, np.diag(diag), atol=1e-7) and np.all(diag > 0):
        grid = TargetGrid(shape=shape, affine=np.asarray(out_affine, dtype=np.float64),  # type: ignore[arg-type]
                          ratios=tuple(float(r) for r in diag),  # type: ignore[arg-type]
                          offsets=tuple(float(o) for o in offset),  # type: ignore[arg-type]
                          spacing=tuple(float(s) for s in voxel_sizes(out_affine)))  # type: ignore[arg-type]
        return resample_to_grid(data, grid, order=order, antialias=antialias)
    out = ndimage.affine_transform(np.asarray(data, dtype=np.float32), lin, offset=offset, output_shape=shape,
                                   order=order, mode="reflect")
    return np.asarray(out, dtype=np.float32)


# ----------------------------------------------------------------- the picture


@dataclass
class _Panels:
    plane: Plane
    images: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _first_volume(data: np.ndarray) -> np.ndarray:
    arr = np.asarray(data)
    return arr if arr.ndim == 3 else arr[..., 0]


def _fmt_mm(values: Sequence[float] | None) -> str:
    if values is None or len(values) == 0:
        return "?"
    return " x ".join(f"{float(v):.4g}" for v in values) + " mm"


def _grey_limits(data: np.ndarray) -> tuple[float, float]:
    step = max(1, int(round((data.size / 2e6) ** (1 / 3))))  # percentiles of about 2M voxels at most
    values = data[::step, ::step, ::step]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, GREY_PERCENTILES))
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def qc_picture(input: Volume, result: Volume, path: str | Path, *, spline: np.ndarray | None = None,
               method: str | None = None, model: str | None = None, order: int = 3, antialias: bool = True,
               point: Sequence[float] | None = None, radiological: bool = False,
               names: tuple[str, str] | None = None, note: str | None = None) -> Path:
    """Draw the QC picture of ``result`` (computed from ``input``) and write it as a PNG.

    Args:
        input: The image that was upscaled (a 4D image shows its first volume).
        result: The output image.
        path: Where to write the PNG (replaced if it exists; written atomically).
        spline: The spline volume on ``result``'s grid, if already at hand;
            ``None`` recomputes it with ``order`` and ``antialias`` (except
            for ``method="spline"``, where the result is the spline).
        method: ``"cnn"``, ``"spline"``, ``"transfer"`` or ``None`` (unknown).
        model: Model name, shown on the figure.
        order, antialias: The interpolation settings of the run.
        point: World point (mm, RAS) the slices go through; default the
            centre of the output's field of view.
        radiological: Mirror axial and coronal slices (patient's right on the left).
        names: ``(input name, output name)`` for the title.
        note: An extra line for the figure.

    Returns:
        The PNG path.

    Raises:
        QCUnavailableError: matplotlib is missing.
        MrisrError: a point outside the input's field of view.
        OutputError: the PNG cannot be written.
    """
    require_matplotlib()
    in_data = _first_volume(input.data)
    out_data = _first_volume(result.data)
    if point is None:
        point = grid_centre(result.affine, out_data.shape)
    point = np.asarray([float(v) for v in point], dtype=np.float64)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise MrisrError(f"the QC point takes 3 finite world coordinates (mm), got {point.tolist()}")
    if not inside_fov(point, input.affine, in_data.shape):
        raise MrisrError(f"the point ({', '.join(f'{v:g}' for v in point)}) mm lies outside the input's field of "
                         "view; give a point inside it (mrisr info shows the affine)")
    is_spline = method == "spline"
    if is_spline:
        spline = None
    elif spline is None:
        spline = spline_on_grid(in_data, input.affine, out_data.shape, result.affine, order, antialias)
    else:
        spline = _first_volume(spline)
    corners = np.vstack([fov_corners(input.affine, in_data.shape), fov_corners(result.affine, out_data.shape)])
    pixel = float(min(voxel_sizes(result.affine)))
    panels = []
    for plane in make_planes(point, corners, pixel, radiological):
        inp = sample_plane(in_data, input.affine, plane.points, 0)
        res = sample_plane(out_data, result.affine, plane.points, 1)
        spl = res if spline is None else sample_plane(spline, result.affine, plane.points, 1)
        panels.append(_Panels(plane, (inp, spl, res, res - spl)))
    lines = _title_lines(input, result, names, method, model, order, point, radiological)
    notes = [note] if note else []
    if is_spline:
        notes.append("method spline: the result is the spline itself, so the difference is zero")
    elif method is None:
        notes.append(f"method unknown (no sidecar): spline recomputed with order {order}")
    if np.ndim(input.data) == 4 or np.ndim(result.data) == 4:
        notes.append("4D image: the first volume is shown")
    png = _render(panels, _grey_limits(in_data), lines, notes, order, is_spline, model)
    return _write_atomic(Path(path), png)


def _title_lines(input: Volume, result: Volume, names: tuple[str, str] | None, method: str | None,
                 model: str | None, order: int, point: np.ndarray, radiological: bool) -> list[str]:
    in_name, out_name = names or (str(input.path or "input"), str(result.path or "result"))
    shape_in = "x".join(str(int(v)) for v in np.shape(input.data)[:3])
    shape_out = "x".join(str(int(v)) for v in np.shape(result.data)[:3])
    how = {"cnn": f"method cnn, model {model or '?'}", "spline": f"method spline (order {order})",
           "transfer": f"method transfer (the reference's detail; network {model or 'none'})"}.get(
        str(method), "method unknown")
    view = "radiological (patient's right on the left)" if radiological else "neurological (patient's left on the left)"
    return [
        f"mrisr QC: {Path(in_name).name}  ->  {Path(out_name).name}",
        f"input {_fmt_mm(voxel_sizes(input.affine))} ({shape_in})  ->  output {_fmt_mm(voxel_sizes(result.affine))} "
        f"({shape_out}),  {how}",
        f"slices through ({', '.join(f'{v:.1f}' for v in point)}) mm RAS, {view}",
    ]


def _render(panels: list[_Panels], grey: tuple[float, float], lines: list[str], notes: list[str], order: int,
            is_spline: bool, model: str | None) -> bytes:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    diffs = np.concatenate([p.images[3][np.isfinite(p.images[3])].ravel() for p in panels])
    dlim = float(np.percentile(np.abs(diffs), DIFF_PERCENTILE)) if diffs.size else 0.0
    if not dlim > 0:
        dlim = max(0.05 * (grey[1] - grey[0]), 1e-6)
    titles = ("input (own grid, nearest)", f"spline (order {order})",
              "result (= spline)" if is_spline else f"super-resolved ({model or 'result'})", "result - spline")
    with _RENDER_LOCK:
        fig = Figure(figsize=FIGSIZE_IN, dpi=DPI)
        FigureCanvasAgg(fig)
        fig.subplots_adjust(left=0.05, right=0.98, top=0.875, bottom=0.085, wspace=0.04, hspace=0.12)
        axes = fig.subplots(3, 4, squeeze=False)
        grey_map = matplotlib.colormaps["gray"].with_extremes(bad="black")
        diff_map = matplotlib.colormaps["RdBu_r"].with_extremes(bad="black")
        shown = [None, None]
        for r, panel in enumerate(panels):
            for c, image in enumerate(panel.images):
                ax = axes[r][c]
                diff = c == 3
                shown[int(diff)] = ax.imshow(
                    image, origin="lower", extent=panel.plane.extent, cmap=diff_map if diff else grey_map,
                    vmin=-dlim if diff else grey[0], vmax=dlim if diff else grey[1],
                    interpolation="nearest" if c == 0 else "antialiased")
                ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)
                _edge_letters(ax, panel.plane.edges)
                if r == 0:
                    ax.set_title(titles[c], fontsize=12)
            plane = panel.plane
            axes[r][0].set_ylabel(f"{plane.name}\n{'xyz'[plane.axis]} = {plane.value:.1f} mm", fontsize=12)
        _colorbar(fig, axes, shown[0], range(0, 3), "intensity (input, spline, result)")
        _colorbar(fig, axes, shown[1], range(3, 4), "result - spline (red: result brighter)")
        fig.text(0.5, 0.985, lines[0], ha="center", va="top", fontsize=15, weight="bold")
        for i, text in enumerate(lines[1:] + notes):
            fig.text(0.5, 0.955 - 0.021 * i, text, ha="center", va="top", fontsize=11,
                     color="darkred" if i >= len(lines) - 1 else "black")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": "mrisr"})
    return buf.getvalue()


def _edge_letters(ax: Any, edges: tuple[str, str, str, str]) -> None:
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    style = dict(transform=ax.transAxes, color="yellow", fontsize=10, weight="bold", path_effects=outline)
    ax.text(0.015, 0.5, edges[0], ha="left", va="center", **style)
    ax.text(0.985, 0.5, edges[1], ha="right", va="center", **style)
    ax.text(0.5, 0.015, edges[2], ha="center", va="bottom", **style)
    ax.text(0.5, 0.985, edges[3], ha="center", va="top", **style)


def _colorbar(fig: Any, axes: Any, mappable: Any, columns: range, label: str) -> None:
    first = axes[-1][columns[0]].get_subplotspec().get_position(fig)
    last = axes[-1][columns[-1]].get_subplotspec().get_position(fig)
    width = last.x1 - first.x0
    cax = fig.add_axes((first.x0 + 0.1 * width, 0.035, 0.8 * width, 0.012))
    bar = fig.colorbar(mappable, cax=cax, orientation="horizontal")
    bar.set_label(label, fontsize=10)


def _write_atomic(path: Path, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` via a temporary file in its folder (:func:`mrisr.io.writer.save_bytes_atomic`)."""
    from mrisr.io.writer import save_bytes_atomic

    return save_bytes_atomic(payload, path, force=True)


# ----------------------------------------------------------------- files


def qc_files(input: str | Path, output: str | Path, png: str | Path | None = None, *,
             point: Sequence[float] | None = None, radiological: bool = False) -> Path:
    """The QC picture of an output file and the input it came from.

    The method, model, order and anti-aliasing come from the output's JSON
    sidecar when there is one; otherwise the spacing is read from the headers,
    the method is reported as unknown and the spline is recomputed with
    order 3.

    Args:
        input: The image that was upscaled.
        output: The upscaled image.
        png: Where to write the picture (default :func:`qc_path` of ``output``).
        point: World point (mm, RAS) for the slices; default the output's centre.
        radiological: Mirror axial and coronal slices.

    Returns:
        The PNG path.

    Raises:
        QCUnavailableError: matplotlib is missing.
        InputError: an unreadable image.
        MrisrError: a point outside the input's field of view.
        OutputError: the PNG cannot be written.

    Example:
        >>> from mrisr.io.read import load_volume
        >>> from mrisr.io.sample import sample_path
        >>> from mrisr.io.writer import save_volume
        >>> vol = load_volume(sample_path())
        >>> save_volume(vol.data, vol.affine, "t2_sr.nii.gz")   # stands in for an output (no sidecar)
        PosixPath('t2_sr.nii.gz')
        >>> qc_files(sample_path(), "t2_sr.nii.gz")
        PosixPath('t2_sr_qc.png')
    """
    from mrisr.io.read import load_volume

    require_matplotlib()
    in_vol = load_volume(input, nan_to_num=True)
    out_vol = load_volume(output, nan_to_num=True)
    record = read_sidecar(output) or {}
    method = record.get("method") if record.get("method") in METHODS else None
    order = record.get("order")
    order = int(order) if isinstance(order, int) and 0 <= order <= 5 else 3
    antialias = bool(record.get("antialias", True))
    note = None
    if record and record.get("status") not in (None, "ok"):
        note = f"the sidecar says status {record.get('status')!r}: {record.get('error')}"
    return qc_picture(in_vol, out_vol, qc_path(output) if png is None else Path(png), method=method,
                      model=record.get("model"), order=order, antialias=antialias, point=point,
                      radiological=radiological, names=(str(input), str(output)), note=note)


__all__ = ["QCUnavailableError", "require_matplotlib", "qc_path", "read_sidecar", "make_planes", "sample_plane",
           "spline_on_grid", "qc_picture", "qc_files", "PNG_SIZE", "QC_SUFFIX", "INSTALL_HINT"]
