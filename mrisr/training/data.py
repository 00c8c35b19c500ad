"""Training data: HR volumes, the held-out split, and per-patch simulated acquisitions.

Every training example is made the way ``mrisr upscale`` will see a real scan:
an HR crop is re-contrasted, bias-corrupted and intensity-jittered, degraded
with a random acquisition (:mod:`mrisr.acquisition.degrade`), given Rician noise, and
interpolated back onto the HR grid with the same
:func:`mrisr.geometry.resample.resample_to_grid` that ``upscale`` uses. The centre of
the crop is the network input; the (corrupted) HR crop is the target.

The held-out slab (the last ``holdout_fraction`` of ``holdout_axis``: the top
of the head for the template) is never touched by a training crop, margins
included.

Learned-upsampling networks get (LR patch, HR patch) pairs at their integer
scale instead, with no spline (``PatchSampler(..., scale=...)``; the rules
are in :mod:`mrisr.training.lr_pairs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrisr.acquisition.degrade import add_rician_noise
from mrisr.errors import ConfigError
from mrisr.geometry.grid import TargetGrid, target_grid
from mrisr.geometry.resample import resample_to_grid
from mrisr.inference.intensity import normalising_scale
from mrisr.training import augment, icbm152, labelheads, wholehead
from mrisr.training.config import Config, DegradationConfig
from mrisr.training.lr_pairs import (
    centre_pair,
    crop_to_scale,
    degrade_to_lr,
    fixed_scale,
    hr_grid_of_lr,
    pair_margin,
    scale_preserving_permutation,
)
from mrisr.training.synth import synthesize


@dataclass
class Subject:
    """One HR head: normalised T1-like image, optional tissue maps, head mask."""

    image: np.ndarray          # float32, normalised (data.normalisation scale == 1)
    gm: np.ndarray | None
    wm: np.ndarray | None
    head: np.ndarray           # bool head mask
    name: str
    holdout: bool = True       # the held-out slab of data.holdout_axis is never trained on
    group: str = "template"    # "template" (data.source), "wholehead" or "labels" (data.wholehead_dir)
    spline: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # cubic coefficients, for warps
    reference: np.ndarray | None = None  # guided: the T1 on this subject's grid (None: ``image`` itself)
    labels: np.ndarray | None = None     # synthetic heads: the label map (mrisr.training.labelheads)
    prior: np.ndarray | None = None      # and each label's mean T1 relative to white matter


@dataclass(frozen=True)
class Acquisition:
    """One simulated acquisition: LR voxel size in HR voxels, PSF, noise, and the training-only
    input blur (``blur``: sigma in LR voxels of :func:`~mrisr.acquisition.degrade.three_tap_blur`, after the noise)."""

    factors: tuple[float, float, float]
    psf: str
    fwhm: float = 1.0
    noise: float = 0.0
    blur: float = 0.0

    def describe(self) -> str:
        """Short human-readable label."""
        f = "x".join(f"{v:g}" for v in self.factors)
        return f"{f} {self.psf}" + (f" fwhm={self.fwhm:.2f}" if self.psf in ("gaussian", "slice") else "") + (
            f" noise={self.noise:.3f}" if self.noise else "") + (f" blur={self.blur:.2f}" if self.blur else "")


#: Fixed validation acquisitions (factors in HR voxels of 1 mm: spacing in mm).
VALIDATION_CASES: dict[str, Acquisition] = {
    "iso2-box": Acquisition((2, 2, 2), "box"),
    "iso2-gaussian": Acquisition((2, 2, 2), "gaussian"),
    "iso2-kspace": Acquisition((2, 2, 2), "kspace"),
    "iso3-box": Acquisition((3, 3, 3), "box"),
    "iso3-gaussian": Acquisition((3, 3, 3), "gaussian"),
    "iso2.5-slice": Acquisition((2.5, 2.5, 2.5), "slice"),
    "thick3-slice": Acquisition((1, 1, 3), "slice"),
    "thick4-slice": Acquisition((1, 1, 4), "slice"),
    "thick4-box": Acquisition((1, 1, 4), "box"),
    "thick6-slice": Acquisition((1, 1, 6), "slice"),
    "thick4x-slice": Acquisition((4, 1, 1), "slice"),
    "thick5y-gaussian": Acquisition((1, 5, 1), "gaussian"),
    "kspace2x2-kspace": Acquisition((2, 2, 1), "kspace"),
    "iso2-box-noise": Acquisition((2, 2, 2), "box", noise=0.02),
    "thick4-slice-noise": Acquisition((1, 1, 4), "slice", noise=0.03),
}


def head_mask(image: np.ndarray) -> np.ndarray:
    """Head mask of a normalised image: threshold, largest component, holes filled."""
    m = image > 0.1
    lab, n = ndimage.label(m)
    if n > 1:
        sizes = ndimage.sum(m, lab, range(1, n + 1))
        m = lab == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(ndimage.binary_closing(m, iterations=2)) | m


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.get_fdata(dtype=np.float32)), img.affine


def normalise(image: np.ndarray, cfg: Config) -> np.ndarray:
    """``image`` divided by its scale under ``data.normalisation`` (what the engine divides by), float32."""
    return (image / normalising_scale(image, cfg.data.normalisation)).astype(np.float32)


def _subject(image: np.ndarray, cfg: Config, name: str, **kw) -> Subject:
    """A subject from a raw volume: normalised; head mask at a tenth of the legacy (99th-percentile) scale."""
    from mrisr.inference.intensity import robust_scale

    img = normalise(image, cfg)
    return Subject(img, kw.pop("gm", None), kw.pop("wm", None), head_mask(img / robust_scale(img)), name, **kw)


#: Guided training on whole-head volumes: a non-T1 volume's T1 reference, a T1 of the same head on the
#: same grid (the ICBM 2009c T2 and T1 are one average, voxel for voxel). A T1 volume is its own reference
#: (same-contrast pairs: the reference an independently corrupted copy); a volume with neither is left out.
REFERENCE_PARTNERS = {"icbm2009c_t2": "icbm2009c_t1"}


def _guided_partners(subjects: list[Subject]) -> list[Subject]:
    """Whole-head subjects of a guided configuration, each with its T1 reference (see :data:`REFERENCE_PARTNERS`)."""
    contrast = {s.key: s.contrast for s in wholehead.SOURCES}
    by_name = {s.name: s for s in subjects}
    out = []
    for s in subjects:
        partner = REFERENCE_PARTNERS.get(s.name)
        if contrast.get(s.name) == "t1":
            s.reference = s.image
        elif partner in by_name and by_name[partner].image.shape == s.image.shape:
            s.reference = by_name[partner].image
        else:
            continue
        out.append(s)
    return out


def _wholehead_subjects(cfg: Config) -> list[Subject]:
    paths = wholehead.verify(Path(cfg.base_dir) / cfg.data.wholehead_dir)
    out = []
    for src in wholehead.SOURCES:
        img, _ = _load(paths[src.key])
        img = np.clip(img - np.float32(src.background), 0, None)
        out.append(_subject(img, cfg, src.key, holdout=src.holdout, group="wholehead"))
    return _guided_partners(out) if cfg.data.reference else out


def _label_subject(cfg: Config) -> Subject:
    """The synthetic-head subject: the 2009a whole-head T1 (for the head mask and crop choice) and its label map."""
    folder = Path(cfg.base_dir) / cfg.data.wholehead_dir
    hint = "run `mrisr train --config ... --fetch-data` first"
    t1_source = next(s for s in wholehead.SOURCES if s.key == "icbm2009a_t1_head")
    t1, _ = _load(wholehead.verified(folder / t1_source.file, t1_source.sha256, hint))
    brain, _ = _load(wholehead.verified(folder / wholehead.LABELS.file, wholehead.LABELS.sha256, hint))
    if brain.shape != t1.shape:
        raise ConfigError(f"{folder / wholehead.LABELS.file}: label map shape {brain.shape} is not the T1's {t1.shape}")
    subj = _subject(t1, cfg, "label-heads", holdout=True, group="labels")
    subj.labels, subj.prior = labelheads.head_labels(np.rint(brain).astype(np.uint8), t1, subj.head)
    return subj


def load_subjects(cfg: Config) -> list[Subject]:
    """HR subjects named by the config (checksummed template, or a folder of NIfTI files), then the
    whole-head volumes when ``data.wholehead_dir`` is set. The first subject holds the validation slab."""
    folder = Path(cfg.base_dir) / cfg.data.dir
    extra = _wholehead_subjects(cfg) if cfg.data.wholehead_dir else []
    if cfg.data.label_heads_probability > 0:
        extra.append(_label_subject(cfg))
    if cfg.data.source == "icbm152":
        paths = icbm152.verify(folder)
        t1, _ = _load(paths["t1"])
        gm, _ = _load(paths["gm"])
        wm, _ = _load(paths["wm"])
        return [_subject(t1, cfg, "icbm152", gm=np.clip(gm / 255.0, 0, 1), wm=np.clip(wm / 255.0, 0, 1)), *extra]
    files = sorted([*folder.glob("*.nii"), *folder.glob("*.nii.gz")])
    if not files:
        raise ConfigError(f"data.dir: no NIfTI files in {folder}")
    subjects = []
    for f in files:
        img, _ = _load(f)
        if img.ndim != 3:
            raise ConfigError(f"data.dir: {f} is not a 3D volume (shape {img.shape})")
        subjects.append(_subject(img, cfg, f.name))
    return subjects + extra


def split_index(shape: tuple[int, ...], cfg: Config) -> int:
    """First index of the held-out slab along ``data.holdout_axis``."""
    n = shape[cfg.data.holdout_axis]
    return int(math.floor(n * (1.0 - cfg.data.holdout_fraction)))


def _weighted_choice(weights: dict[str, float], rng: np.random.Generator) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def sample_acquisition(d: DegradationConfig, rng: np.random.Generator) -> Acquisition:
    """Draw one acquisition from the configured distribution."""
    kind = _weighted_choice(d.kinds, rng)
    if kind == "iso":
        f = rng.uniform(*d.iso_factor)
        factors = [f * rng.uniform(0.9, 1.1) for _ in range(3)]
        factors = [max(1.0, v) for v in factors]
        psf = _weighted_choice(d.psfs, rng)
    elif kind == "thick":
        factors = [1.0, 1.0, 1.0]
        factors[int(rng.integers(3))] = rng.uniform(*d.thick_factor)
        psf = _weighted_choice(d.psfs, rng)
    else:
        f = rng.uniform(*d.kspace_factor)
        factors = [f, f, f]
        factors[int(rng.integers(3))] = 1.0
        psf = "kspace"
    fwhm = float(rng.uniform(*d.gaussian_fwhm)) if psf in ("gaussian", "slice") else 1.0
    noise = float(rng.uniform(*d.noise)) if rng.random() < d.noise_probability else 0.0
    blur = 0.0
    if d.input_blur_probability > 0 and rng.random() < d.input_blur_probability:  # no draw when off
        blur = float(rng.uniform(*d.input_blur))
    return Acquisition(tuple(float(v) for v in factors), psf, fwhm, noise, blur)  # type: ignore[arg-type]


def random_flips(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flip input ``x`` (channels first) and target ``y`` together along each voxel axis with probability 1/2."""
    for ax in range(3):
        if rng.random() < 0.5:
            x, y = np.flip(x, ax + 1), np.flip(y, ax)
    return x, y


def hr_grid_in_lr(shape: tuple[int, int, int], lr_grid: TargetGrid) -> TargetGrid:
    """The HR crop's grid seen from the LR image's voxel coordinates.

    HR voxel ``i`` sits at LR coordinate ``(i - c0) / r``; interpolating the
    LR image on this grid is what ``upscale`` does when the factor divides the
    shape (it then builds exactly this grid from the contract).
    """
    r = np.asarray(lr_grid.ratios)
    c0 = np.asarray(lr_grid.offsets)
    return TargetGrid(shape=tuple(int(s) for s in shape), affine=np.eye(4),  # type: ignore[arg-type]
                      ratios=tuple(float(v) for v in 1.0 / r), offsets=tuple(float(v) for v in -c0 / r),
                      spacing=(1.0, 1.0, 1.0))


def simulate(hr: np.ndarray, acq: Acquisition, rng: np.random.Generator, order: int = 3) -> np.ndarray:
    """Degrade ``hr`` with ``acq`` and spline-interpolate it back onto its grid."""
    lr = degrade_to_lr(hr, acq, rng)
    lr_grid = target_grid(np.eye(4), hr.shape, acq.factors)
    return resample_to_grid(lr, hr_grid_in_lr(hr.shape, lr_grid), order=order)


def bias_field(shape: tuple[int, int, int], origin: tuple[int, int, int], full: tuple[int, ...],
               strength: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field exp(quadratic) in whole-volume coordinates, for a crop."""
    coords = [(np.arange(o, o + s) / max(n - 1, 1)) * 2 - 1 for o, s, n in zip(origin, shape, full)]
    x, y, z = np.meshgrid(*coords, indexing="ij", sparse=True)
    c = rng.uniform(-strength, strength, 9)
    log = (c[0] * x + c[1] * y + c[2] * z + c[3] * x * x + c[4] * y * y + c[5] * z * z
           + c[6] * x * y + c[7] * y * z + c[8] * x * z)
    return np.exp(log).astype(np.float32)


class PatchSampler:
    """Draws (input, target) training patches; deterministic per (seed, step).

    Example (``cfg`` a training :class:`Config` with its subjects on disk)::

        sampler = PatchSampler(cfg, load_subjects(cfg))
        x, y = sampler.batch(step=0)
    """

    def __init__(self, cfg: Config, subjects: list[Subject], scale: tuple[int, int, int] | None = None) -> None:
        self.cfg = cfg
        self.subjects = subjects
        self.scale = scale  # learned-upsampling networks: (LR, HR) pairs at this scale (lr_pairs)

    def _warping(self, rng: np.random.Generator) -> bool:
        d = self.cfg.degradation
        return d.warp_probability > 0 and rng.random() < d.warp_probability  # no draw when off

    def _reach(self, size: int) -> int:
        d = self.cfg.degradation
        return augment.reach(size, rotation=d.rotation, zoom=d.zoom, asymmetry=d.asymmetry, elastic=d.elastic)

    def _crop_origin(self, subj: Subject, size: int, rng: np.random.Generator,
                     reach: int = 0) -> tuple[int, int, int] | None:
        """A crop's origin with its centre mostly in the head; a warped crop (reading up to ``reach``
        voxels beyond its box) stays clear of the held-out slab too."""
        shape = subj.image.shape
        ax = self.cfg.data.holdout_axis
        limit = [s - size for s in shape]
        if subj.holdout:
            limit[ax] = split_index(shape, self.cfg) - size - reach
        if min(limit) < 0:
            return None
        p = self.cfg.train.patch
        lo = (size - p) // 2
        for _ in range(20):
            o = tuple(int(rng.integers(0, lim + 1)) for lim in limit)
            centre = subj.head[o[0] + lo:o[0] + lo + p, o[1] + lo:o[1] + lo + p, o[2] + lo:o[2] + lo + p]
            if centre.mean() > 0.3:
                return o  # type: ignore[return-value]
        return o  # type: ignore[return-value]

    def _read(self, subj: Subject, key: str, origin: tuple[int, int, int], size: int,
              coords: np.ndarray | None) -> np.ndarray:
        """A crop of the subject's image (``key`` "image") or tissue map, straight or through a warp.

        A warp reads the training region only (the volume cut at the held-out slab), so not even the
        cubic prefilter, which spreads every voxel along its axes, sees the slab."""
        volume = getattr(subj, key)
        if coords is None:
            return volume[tuple(slice(o, o + size) for o in origin)].astype(np.float32)
        if key not in subj.spline:
            region = self._training_region(subj, volume)
            if region is not volume:
                region = np.ascontiguousarray(region, dtype=np.float32)
            subj.spline[key] = (ndimage.spline_filter(region, order=3, output=np.float32, mode="constant")
                                if key == "image" else region)
        crop = augment.sample_crop(subj.spline[key], origin, coords, order=3 if key == "image" else 1)
        return np.clip(crop, 0, None) if key == "image" else crop

    def _training_region(self, subj: Subject, volume: np.ndarray) -> np.ndarray:
        """``volume`` cut at the held-out slab for a subject that holds one (a view), else ``volume`` itself."""
        if not subj.holdout:
            return volume
        cut = [slice(None)] * 3
        cut[self.cfg.data.holdout_axis] = slice(0, split_index(volume.shape, self.cfg))
        return volume[tuple(cut)]

    def _hr_crop(self, subj: Subject, origin: tuple[int, int, int], size: int, rng: np.random.Generator,
                 coords: np.ndarray | None = None) -> np.ndarray:
        if subj.labels is not None:
            return self._label_crop(subj, origin, size, rng, coords)
        kind = "t1"
        if subj.gm is not None:
            kind = _weighted_choice(self.cfg.data.contrasts, rng)
        image = self._read(subj, "image", origin, size, coords)
        if kind == "t1":
            return image
        seed = int(rng.integers(2**63))
        gm, wm = self._read(subj, "gm", origin, size, coords), self._read(subj, "wm", origin, size, coords)
        crop = synthesize(image, gm, wm, kind, np.random.default_rng(seed))
        # Normalise as the engine would: the scale of the whole synthesised
        # volume (subsampled), with the same contrast parameters (same seed).
        sub = (slice(None, None, 3),) * 3
        whole = synthesize(subj.image[sub], subj.gm[sub], subj.wm[sub], kind, np.random.default_rng(seed))
        return crop / normalising_scale(whole, self.cfg.data.normalisation)

    def _label_crop(self, subj: Subject, origin: tuple[int, int, int], size: int, rng: np.random.Generator,
                    coords: np.ndarray | None) -> np.ndarray:
        """A synthetic head drawn on the label map's crop, normalised as the engine would the whole volume."""
        assert subj.labels is not None and subj.prior is not None
        if coords is None:  # straight crops too are read off the label grid (by a random sub-voxel shift)
            coords = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32)] * 3, indexing="ij"))
            coords += rng.uniform(-0.5, 0.5, 3).astype(np.float32).reshape(3, 1, 1, 1)
        region = self._training_region(subj, subj.labels)  # outside it reads as air, as every read
        points = coords + np.asarray(origin, np.float32).reshape(3, 1, 1, 1)
        crop, whole = labelheads.random_head(region, subj.prior, points, subj.labels[(slice(None, None, 3),) * 3],
                                             rng)
        return crop / np.float32(normalising_scale(whole, self.cfg.data.normalisation))

    def _reference_crop(self, subj: Subject, origin: tuple[int, int, int], size: int,
                        rng: np.random.Generator) -> np.ndarray:
        """The HR T1 as a guided model's second channel: its own bias, intensity,
        slight misregistration, blur and noise (an independently acquired scan)."""
        d = self.cfg.degradation
        full, pad = size, 0
        if self._misregistering():  # only the centre is used: the patch and a little context for the blurs
            pad = max(0, (size - self.cfg.train.patch) // 2 - 8)
            origin, size = tuple(o + pad for o in origin), size - 2 * pad  # type: ignore[assignment]
            ref = self._misregistered_reference(subj, origin, size, rng, pad)
        else:
            ref = subj.image[tuple(slice(o, o + size) for o in origin)].astype(np.float32)
        if rng.random() < d.bias_probability:
            ref = ref * bias_field(ref.shape, origin, subj.image.shape, d.bias_strength, rng)
        gamma, scale = d.reference_gamma or d.gamma, d.reference_scale or d.scale
        ref = np.clip(ref, 0, None) ** rng.uniform(*gamma) * rng.uniform(*scale)
        if not self._misregistering():
            shift = rng.uniform(-d.reference_shift, d.reference_shift, 3)
            ref = ndimage.shift(ref, shift, order=1, mode="nearest")
        lo, hi = d.reference_resolution
        if hi > 1.0:  # acquired coarser than the output grid: its own voxel size, resampled onto the grid
            r = float(rng.uniform(lo, hi))
            if r > 1.02:  # finer than the grid (or about equal): nothing lost
                ref = np.clip(simulate(ref, Acquisition((r, r, r), "box"), rng), 0, None)
        sigma = rng.uniform(*d.reference_blur)
        if sigma > 0.05:
            ref = ndimage.gaussian_filter(ref, sigma, mode="nearest")
        noise = rng.uniform(*d.reference_noise)
        if noise > 0:
            ref = add_rician_noise(ref, noise, rng)
        if pad:
            ref = np.pad(ref, pad)
        assert ref.shape == (full,) * 3
        return ref.astype(np.float32)

    def _misregistering(self) -> bool:
        """Whether the reference is read through its own warp: the truth's warp (when the truth was warped,
        so the anatomy still matches) composed with a rigid + elastic misregistration."""
        d = self.cfg.degradation
        return d.reference_rotation > 0 or d.reference_elastic > 0 or getattr(self, "_coords", None) is not None

    def _reference_reach(self, size: int) -> int:
        """Voxels the misregistration may move a reference read beyond the truth's (an upper bound)."""
        d = self.cfg.degradation
        radius = (size - 1) / 2.0 * math.sqrt(3) * (2.0 if d.warp_probability > 0 else 1.0)
        return math.ceil(radius * 3 * math.radians(d.reference_rotation) + math.sqrt(3) * d.reference_shift
                         + math.sqrt(3) * d.reference_elastic + 2)

    def _misregistered_reference(self, subj: Subject, origin: tuple[int, int, int], size: int,
                                 rng: np.random.Generator, pad: int = 0) -> np.ndarray:
        """The reference (``subj.reference``, else ``subj.image``) read where the truth was read, moved by a
        random rigid transform about the crop's centre (shift up to ``reference_shift`` voxels per axis,
        rotation up to ``reference_rotation`` degrees per axis) and an elastic field (``reference_elastic``)."""
        d = self.cfg.degradation
        coords = getattr(self, "_coords", None)
        centre = (size - 1) / 2.0
        if coords is None:
            coords = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32)] * 3, indexing="ij"))
        else:  # the truth's coordinates (relative to its origin, ``pad`` voxels before ours), centre box
            inner = slice(pad, pad + size)
            coords = coords[:, inner, inner, inner] - np.float32(pad)
        rel = coords - np.float32(centre)
        m = augment.rotation_matrix(rng.uniform(-d.reference_rotation, d.reference_rotation, 3))
        shift = rng.uniform(-d.reference_shift, d.reference_shift, 3).astype(np.float32).reshape(3, 1, 1, 1)
        moved = np.tensordot(m.astype(np.float32), rel, axes=1) + np.float32(centre) + shift
        if d.reference_elastic > 0:
            n = augment.ELASTIC_POINTS
            coarse = rng.uniform(-d.reference_elastic, d.reference_elastic, (3, n, n, n))
            moved += np.stack([augment.upsample_field(c, size) for c in coarse]).astype(np.float32)
        volume = subj.reference if subj.reference is not None else subj.image
        if "reference" not in subj.spline:
            subj.spline["reference"] = (subj.spline["image"] if volume is subj.image and "image" in subj.spline
                                        else ndimage.spline_filter(volume, order=3, output=np.float32,
                                                                   mode="constant"))
        return np.clip(augment.sample_crop(subj.spline["reference"], origin, moved, order=3), 0, None)

    def _subject(self, rng: np.random.Generator) -> Subject:
        """A random subject: a synthetic label head with ``data.label_heads_probability``, else from the
        whole-head group with ``data.wholehead_probability`` (no draw for a probability of 0)."""
        q = self.cfg.data.label_heads_probability
        if q > 0 and rng.random() < q:
            return next(s for s in self.subjects if s.group == "labels")
        p = self.cfg.data.wholehead_probability
        pool = [s for s in self.subjects if s.group != "labels"]
        if p > 0:
            group = "wholehead" if rng.random() < p else "template"
            pool = [s for s in pool if s.group == group] or pool
        return pool[int(rng.integers(len(pool)))]

    def _dynamic_range(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightest tissue boosted, 8-bit saturation (each with its probability; no draw when off)."""
        d = self.cfg.degradation
        if d.brighten_probability > 0 and rng.random() < d.brighten_probability:
            hr = augment.brighten(hr, rng.uniform(*d.brighten), rng.uniform(*d.brighten_level))
        if d.saturate_probability > 0 and rng.random() < d.saturate_probability:
            hr = augment.saturate(hr, rng.uniform(*d.saturate_level))
        return hr

    def _truth(self, size: int, rng: np.random.Generator) -> tuple[Subject, tuple[int, int, int], np.ndarray]:
        """A random HR crop of ``size``^3, maybe warped, re-contrasted, bias-corrupted and intensity-jittered."""
        d = self.cfg.degradation
        subj = self._subject(rng)
        coords = None
        if self._warping(rng):
            coords = augment.random_warp(size, rng, rotation=d.rotation, zoom=d.zoom, asymmetry=d.asymmetry,
                                         elastic=d.elastic)
        self._coords = coords  # the reference of a guided model follows the same warp
        reach = self._reach(size) if coords is not None else 0
        if self.cfg.data.reference and self._misregistering():
            reach += self._reference_reach(size)
        origin = self._crop_origin(subj, size, rng, reach)
        if origin is None:
            p = self.cfg.train.patch
            raise ConfigError(f"train.patch: {p} plus margins ({size}) does not fit in the training region of "
                              f"{subj.name}")
        hr = self._hr_crop(subj, origin, size, rng, coords)
        if rng.random() < d.bias_probability:
            hr = hr * bias_field(hr.shape, origin, subj.image.shape, d.bias_strength, rng)
        hr = np.clip(hr, 0, None) ** rng.uniform(*d.gamma) * rng.uniform(*d.scale)
        return subj, origin, self._dynamic_range(hr.astype(np.float32), rng)

    def example(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One (input, target, per-axis factors) triple: input (C, P, P, P) with
        C = 2 for guided models (interpolated image, HR reference), target (P, P, P).
        With a ``scale``: input (1, P/sx, P/sy, P/sz), the LR patch (:meth:`lr_example`)."""
        if self.scale is not None:
            return self.lr_example(rng)
        d, p = self.cfg.degradation, self.cfg.train.patch
        acq = sample_acquisition(d, rng)
        margin = int(math.ceil(3 * max(acq.factors))) + 4
        size = p + 2 * margin
        subj, origin, hr = self._truth(size, rng)
        channels = [simulate(hr, acq, rng)]
        if self.cfg.data.reference:
            channels.append(self._reference_crop(subj, origin, size, rng))
        c = slice(margin, margin + p)
        x, y = np.stack([ch[c, c, c] for ch in channels]), hr[c, c, c]
        factors = np.asarray(acq.factors, dtype=np.float32)
        if d.permute:
            perm = tuple(int(v) for v in rng.permutation(3))
            x, y, factors = x.transpose((0, *(a + 1 for a in perm))), y.transpose(perm), factors[list(perm)]
        if d.flips:
            x, y = random_flips(x, y, rng)
        return np.ascontiguousarray(x), np.ascontiguousarray(y), factors

    def lr_example(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One (LR patch (1, P/sx, P/sy, P/sz), HR patch (P, P, P), scale) triple (see :mod:`.lr_pairs`)."""
        d, p, scale = self.cfg.degradation, self.cfg.train.patch, self.scale
        acq = fixed_scale(sample_acquisition(d, rng), scale)
        margin = pair_margin(scale)
        _, _, hr = self._truth(p + 2 * margin, rng)
        x, y = centre_pair(hr, degrade_to_lr(hr, acq, rng), margin, p, scale)
        x = x[None]
        if d.permute:
            perm = scale_preserving_permutation(scale, rng)
            x, y = x.transpose((0, *(a + 1 for a in perm))), y.transpose(perm)
        if d.flips:
            x, y = random_flips(x, y, rng)
        return np.ascontiguousarray(x), np.ascontiguousarray(y), np.asarray(scale, dtype=np.float32)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The batch of training step ``step``: inputs (B, C, P, P, P), targets (B, 1, P, P, P), factors (B, 3)."""
        rng = np.random.default_rng([self.cfg.train.seed, step])
        triples = [self.example(rng) for _ in range(self.cfg.train.batch)]
        x = np.stack([t[0] for t in triples])
        y = np.stack([t[1] for t in triples])[:, None]
        return x, y, np.stack([t[2] for t in triples])


#: Validation contrasts of guided models (the reference is the T1).
GUIDED_CONTRASTS = ("t2", "flair", "pd")
#: Contrasts with a fixed preset, which validation can reproduce.
NAMED_CONTRASTS = ("t1", "t2", "flair", "pd")


def training_contrasts(cfg: Config) -> tuple[str, ...]:
    """``train.validation_contrasts``, or else the preset contrasts among those
    the config trains on (T1 if none).

    Example:
        >>> from mrisr.training.config import config_from_dict
        >>> training_contrasts(config_from_dict({"data": {"contrasts": {"flair": 1.0, "random": 0.5}}}))
        ('flair',)
    """
    if cfg.train.validation_contrasts:
        return tuple(cfg.train.validation_contrasts)
    named = tuple(k for k in NAMED_CONTRASTS if cfg.data.contrasts.get(k, 0) > 0)
    return named or ("t1",)


@dataclass
class ValidationCase:
    """A held-out volume degraded one fixed way: interpolated input, truth, mask."""

    name: str
    contrast: str
    acquisition: Acquisition
    inp: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    reference: np.ndarray | None = None  # guided models: the clean HR T1 of the slab
    lr: np.ndarray | None = None         # learned-upsampling networks: the LR volume (``inp`` is its spline)


def holdout_slab(subj: Subject, cfg: Config) -> tuple[slice, ...]:
    """Index of the held-out slab of a subject."""
    sl = [slice(None)] * 3
    sl[cfg.data.holdout_axis] = slice(split_index(subj.image.shape, cfg), None)
    return tuple(sl)


def scaled_cases(names: list[str], scale: tuple[int, int, int]) -> dict[str, Acquisition]:
    """The named acquisitions with their factors set to a learned-upsampling network's ``scale``
    (PSF, FWHM and noise kept; duplicates dropped), named ``<scale>-<psf>[-noise]``.

    Example:
        >>> list(scaled_cases(["iso2-box", "iso3-box", "thick4-slice-noise"], (1, 1, 2)))
        ['1x1x2-box', '1x1x2-slice-noise']
    """
    out: dict[str, Acquisition] = {}
    for name in names:
        acq = fixed_scale(VALIDATION_CASES[name], scale)
        label = "x".join(str(s) for s in scale) + f"-{acq.psf}" + ("-noise" if acq.noise else "")
        if acq not in out.values():
            out[label if label not in out else f"{label}-{name}"] = acq
    return out


def _lr_case(name: str, contrast: str, acq: Acquisition, hr: np.ndarray, mask: np.ndarray,
             scale: tuple[int, int, int]) -> ValidationCase:
    """A learned-upsampling case: the slab cropped to whole LR voxels, its LR volume and that volume's spline."""
    hr, mask = crop_to_scale(hr, scale), crop_to_scale(mask, scale)
    lr = degrade_to_lr(hr, acq, np.random.default_rng(1234))
    inp = resample_to_grid(lr, hr_grid_of_lr(lr.shape, scale), order=3)  # what upscale's spline gives
    return ValidationCase(name, contrast, acq, inp, hr, mask, lr=lr)


def validation_cases(cfg: Config, subjects: list[Subject], names: list[str],
                     contrasts: tuple[str, ...] | None = None,
                     scale: tuple[int, int, int] | None = None) -> list[ValidationCase]:
    """Build the named validation cases on the held-out slab of the first subject.

    Contrasts default to the named ones the model trains on (T1, T2, FLAIR, PD:
    see :func:`training_contrasts`); guided models (``data.reference``) get the
    slab's T1 as the reference. With a learned-upsampling network's
    ``scale``, each case is acquired at that scale instead
    (:func:`scaled_cases`) and carries its LR volume.
    """
    subj = subjects[0]
    sl = holdout_slab(subj, cfg)
    if contrasts is None:
        contrasts = training_contrasts(cfg)
    for name in names:
        if name not in VALIDATION_CASES:
            raise ConfigError(f"train.validation_cases: unknown case {name!r}; valid: {', '.join(VALIDATION_CASES)}")
    acquisitions = {n: VALIDATION_CASES[n] for n in names} if scale is None else scaled_cases(names, scale)
    ref = subj.image[sl].astype(np.float32) if cfg.data.reference else None
    out = []
    for contrast in contrasts:
        if contrast == "t1" or subj.gm is None:
            hr = subj.image[sl].astype(np.float32)
        else:
            whole = synthesize(subj.image, subj.gm, subj.wm, contrast, None)
            hr = normalise(whole, cfg)[sl]
        mask = subj.head[sl]
        for name, acq in acquisitions.items():
            if scale is not None:
                out.append(_lr_case(name, contrast, acq, hr, mask, scale))
                continue
            inp = simulate(hr, acq, np.random.default_rng(1234))
            out.append(ValidationCase(name, contrast, acq, inp, hr, mask, ref))
    return out
