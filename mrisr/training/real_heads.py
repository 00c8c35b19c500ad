"""Validation on real heads: individual people's scans the models never saw.

The template slab (:func:`mrisr.training.data.validation_cases`) is an
average brain and flatters every model; these are single subjects, one of
them a whole head with bright scalp fat. They live outside the package and
the repository (``../shared/data/`` beside the checkout, or the folder in
``$MRISR_VALIDATION_DATA``), are checksummed, and are used only to measure:
never for training, never shipped.

- :data:`HEADS`: the simulated-acquisition truths (their own contrast, T1):
  each volume is degraded by the named acquisitions of
  :data:`~mrisr.training.data.VALIDATION_CASES` (factors in the head's own
  voxels), spline-interpolated back, and the model runs through the code of
  ``mrisr upscale``; PSNR/SSIM over the automatic head mask
  (:func:`mrisr.evaluation.masks.head_mask`, as ``mrisr evaluate`` uses).
- :data:`REAL_LR`: a real thick-slice acquisition of the same subject; its
  in-plane axes are high-resolution, so thickening one in-plane axis to the
  through-plane spacing with the slice profile gives a real-contrast,
  real-noise self-consistency truth (rows ``inplane0-slice``, ``inplane1-slice``).

Example:
    >>> sorted(HEADS)
    ['chris_t1_088mm', 'mr_gd_1mm']
    >>> REAL_CASES[:2]
    ['iso2-box', 'iso2-gaussian']
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrisr.evaluation.masks import head_mask
from mrisr.geometry.resample import resample_to_grid
from mrisr.training.data import VALIDATION_CASES, Acquisition, ValidationCase, scaled_cases, simulate
from mrisr.training.lr_pairs import crop_to_scale, degrade_to_lr, hr_grid_of_lr
from mrisr.training.wholehead import verified


@dataclass(frozen=True)
class HeadFile:
    """One validation volume: file name, sha256, what it is, and its licence."""

    name: str
    sha256: str
    what: str
    licence: str


#: Real high-resolution heads for simulated acquisitions (README of the data folder).
HEADS: dict[str, HeadFile] = {
    "chris_t1_088mm": HeadFile("chris_t1_088mm.nii.gz",
                               "534a240d1d41881bd33ae5b48ac22051836968775275f1261c4115dca0099649",
                               "T1 MPRAGE, whole head with scalp fat and neck, 0.88 mm, one adult",
                               "CC BY-NC 4.0, images courtesy of Chris Rorden"),
    "mr_gd_1mm": HeadFile("mr_gd_1mm.nii.gz",
                          "65cf8cff601a428be887483a06e422fa1d879246cc6fa50a04abd7d60b437b8c",
                          "T1 after gadolinium, skull-stripped, 1 mm, one patient",
                          "BSD-2-Clause (niivue-demo-images)"),
}
#: A real thick-slice scan (PD, 0.86 x 0.86 x 2.4 mm) of the same subject as chris_t1_088mm.
REAL_LR = HeadFile("chris_pd_thick.nii.gz", "d6d7fcbd5c2fee665ad5214a8a396c6ed10a366f663c05428f5437be7aa0c5fc",
                   "PD, real 2.4 mm slices, same subject and session as chris_t1_088mm",
                   "CC BY-NC 4.0, images courtesy of Chris Rorden")
#: Acquisitions simulated on every real head (isotropic, thick along each axis, 2x2x1 k-space, noise).
REAL_CASES = ["iso2-box", "iso2-gaussian", "iso3-box", "thick4-box", "thick4-slice", "thick4x-slice",
              "thick5y-gaussian", "kspace2x2-kspace", "iso2-box-noise", "thick4-slice-noise"]
#: A short subset for checks during training.
QUICK_CASES = ["iso2-box", "thick4-box", "kspace2x2-kspace"]
#: Environment variable naming the validation folder.
ENV = "MRISR_VALIDATION_DATA"


def data_folder() -> Path:
    """``$MRISR_VALIDATION_DATA``, else ``../shared/data`` beside the repository checkout."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def available(folder: Path | None = None) -> bool:
    """Whether every validation file is present (not checksummed here).

    Example:
        >>> available(Path("/nonexistent"))
        False
    """
    folder = data_folder() if folder is None else Path(folder)
    return all((folder / h.name).is_file() for h in [*HEADS.values(), REAL_LR])


def read_head(folder: Path, head: HeadFile) -> np.ndarray:
    """The volume, checksummed, divided by its robust maximum (so that an acquisition's ``noise`` is a
    fraction of it, as :func:`mrisr.acquisition.degrade.degrade` defines; PSNR does not depend on the scale)."""
    import nibabel as nib

    from mrisr.inference.intensity import robust_scale

    path = verified(Path(folder) / head.name, head.sha256, f"set {ENV} to the folder of the real validation heads")
    data = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    return (data / np.float32(robust_scale(data))).astype(np.float32)


def _acquisitions(names: list[str], scale: tuple[int, int, int] | None) -> dict[str, Acquisition]:
    return {n: VALIDATION_CASES[n] for n in names} if scale is None else scaled_cases(names, scale)


def head_cases(name: str, volume: np.ndarray, names: list[str],
               scale: tuple[int, int, int] | None = None) -> list[ValidationCase]:
    """The named acquisitions of one real head (see the module docstring).

    Example:
        >>> vol = np.zeros((24, 24, 24), np.float32); vol[4:20, 4:20, 4:20] = 1.0
        >>> [c.name for c in head_cases("cube", vol, ["iso2-box"])]
        ['iso2-box']
    """
    hr = np.asarray(volume, np.float32)  # noise levels are fractions of its scale: pass it normalised
    mask = head_mask(hr)
    out = []
    for label, acq in _acquisitions(names, scale).items():
        if scale is None:
            out.append(ValidationCase(label, name, acq, simulate(hr, acq, np.random.default_rng(1234)), hr, mask))
            continue
        h, m = crop_to_scale(hr, scale), crop_to_scale(mask, scale)
        lr = degrade_to_lr(h, acq, np.random.default_rng(1234))
        inp = resample_to_grid(lr, hr_grid_of_lr(lr.shape, scale), order=3)
        out.append(ValidationCase(label, name, acq, inp, h, m, lr=lr))
    return out


def inplane_cases(volume: np.ndarray, thickness: float, scale: tuple[int, int, int] | None = None
                  ) -> list[ValidationCase]:
    """Self-consistency truths of a real thick-slice scan: each in-plane axis
    (0 and 1) thickened to ``thickness`` of its voxels with the slice profile.

    A learned-upsampling network gets the integer factor it was trained for
    instead (its own ``scale``), when the scale is thick along one axis only:
    the volume is turned so that the in-plane axis lies along the network's
    thick axis.

    Example:
        >>> vol = np.zeros((12, 16, 8), np.float32); vol[2:10, 3:13, 2:6] = 1.0
        >>> [(c.name, c.lr.shape) for c in inplane_cases(vol, 2.4, scale=(1, 1, 4))]
        [('inplane0-slice', (16, 8, 3)), ('inplane1-slice', (12, 8, 4))]
    """
    hr = np.asarray(volume, np.float32)
    mask = head_mask(hr)
    out = []
    for axis in (0, 1):
        factors = [1.0, 1.0, 1.0]
        factors[axis] = float(thickness)
        acq = Acquisition(tuple(factors), "slice")  # type: ignore[arg-type]
        label = f"inplane{axis}-slice"
        if scale is None:
            out.append(ValidationCase(label, "chris_pd_thick", acq, simulate(hr, acq, np.random.default_rng(1234)),
                                      hr, mask))
            continue
        if sorted(scale)[:2] != [1, 1]:
            continue  # an isotropic specialist has no in-plane truth here
        # the network's thick axis is fixed: turn the volume so that this in-plane axis lies along it
        # (PSNR and SSIM over the whole volume do not depend on the axis order)
        thick = int(np.argmax(scale))
        turned, turned_mask = np.moveaxis(hr, axis, thick), np.moveaxis(mask, axis, thick)
        acq = Acquisition(tuple(float(v) for v in scale), "slice")  # type: ignore[arg-type]
        h, m = crop_to_scale(turned, scale), crop_to_scale(turned_mask, scale)
        lr = degrade_to_lr(h, acq, np.random.default_rng(1234))
        inp = resample_to_grid(lr, hr_grid_of_lr(lr.shape, scale), order=3)
        out.append(ValidationCase(label, "chris_pd_thick", acq, inp, h, m, lr=lr))
    return out


def all_cases(names: list[str] | None = None, folder: Path | None = None,
              scale: tuple[int, int, int] | None = None, inplane: bool = True,
              crop: Callable[[np.ndarray], np.ndarray] | None = None) -> list[ValidationCase]:
    """Every real-head case: :data:`HEADS` x ``names`` (default :data:`REAL_CASES`), then the
    in-plane truths of :data:`REAL_LR`. ``crop`` (optional) cuts each volume first (quick checks)."""
    import nibabel as nib

    folder = data_folder() if folder is None else Path(folder)
    names = list(REAL_CASES) if names is None else names
    cases = []
    for key, head in HEADS.items():
        vol = read_head(folder, head)
        cases += head_cases(key, vol if crop is None else crop(vol), names, scale)
    if inplane:
        vol = read_head(folder, REAL_LR)
        zooms = nib.load(str(folder / REAL_LR.name)).header.get_zooms()[:3]
        cases += inplane_cases(vol if crop is None else crop(vol), float(zooms[2] / zooms[0]), scale)
    return cases
