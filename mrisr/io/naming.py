"""Output file names: ``<stem>_sr.nii.gz``, or BIDS names with ``desc-mrisr``.

Plain inputs get a ``_sr`` tag before the extension::

    t2_tse.nii      -> t2_tse_sr.nii.gz
    scans/T2_AX/    -> T2_AX_sr.nii.gz        (a DICOM series folder)

BIDS-named inputs keep their entities and gain a ``desc`` entity right before
the suffix (``desc`` is the last entity in the BIDS order), so the output can
sit in a BIDS derivatives folder::

    sub-01_ses-1_acq-tse_T2w.nii.gz -> sub-01_ses-1_acq-tse_desc-mrisr_T2w.nii.gz

An input that already has a ``desc`` label keeps it, extended in camelCase
(``desc-preproc`` -> ``desc-preprocMrisr``), so two inputs that differ only in
their ``desc`` never map to the same output.

A DICOM series chosen with ``--series UID`` is named too, so two series of
one folder never share an output::

    dicom/ (series 1.2.3.4) -> dicom_series-1.2.3.4_sr.nii.gz
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mrisr.options import OUTPUT_SUFFIXES

#: Extensions recognised as NIfTI (longest first).
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
#: Image files a folder is searched for (what :func:`mrisr.io.read.load_volume` reads besides DICOM).
IMAGE_EXTENSIONS = NIFTI_EXTENSIONS + (".mgz", ".mgh", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Extensions stripped from input names (images and single DICOM files).
INPUT_EXTENSIONS = IMAGE_EXTENSIONS + (".dcm", ".ima")
#: Tag of plain (non-BIDS) outputs.
PLAIN_TAG = "_sr"
#: The ``desc`` label of BIDS outputs.
BIDS_DESC = "mrisr"

_LABEL = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class BidsName:
    """A parsed BIDS file name (without extension).

    Attributes:
        entities: ``(key, label)`` pairs in file order, starting with ``sub``.
        suffix: The suffix after the last underscore (``T1w``, ``bold``...).
    """

    entities: tuple[tuple[str, str], ...]
    suffix: str

    def __str__(self) -> str:
        return "_".join([f"{k}-{v}" for k, v in self.entities] + [self.suffix])

    def with_desc(self, label: str) -> BidsName:
        """Copy with a ``desc`` entity set (or extended) right before the suffix.

        Example:
            >>> str(parse_bids_name("sub-01_T1w").with_desc("mrisr"))
            'sub-01_desc-mrisr_T1w'
            >>> str(parse_bids_name("sub-01_desc-preproc_T1w").with_desc("mrisr"))
            'sub-01_desc-preprocMrisr_T1w'
        """
        old = dict(self.entities).get("desc")
        new = label if old is None else old + label[:1].upper() + label[1:]
        kept = tuple((k, v) for k, v in self.entities if k != "desc")
        return BidsName(entities=kept + (("desc", new),), suffix=self.suffix)


def split_extension(name: str, extensions: tuple[str, ...] = INPUT_EXTENSIONS) -> tuple[str, str]:
    """Split a file name into stem and image extension (``""`` if none).

    Example:
        >>> split_extension("sub-01_T1w.nii.gz")
        ('sub-01_T1w', '.nii.gz')
        >>> split_extension("brain.mgz")
        ('brain', '.mgz')
        >>> split_extension("T2_AX")
        ('T2_AX', '')
    """
    lower = name.lower()
    for ext in extensions:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext):]
    return name, ""


def is_nifti_name(name: str | Path) -> bool:
    """Whether a file name ends in ``.nii`` or ``.nii.gz`` (any case).

    Example:
        >>> is_nifti_name("a.NII.GZ"), is_nifti_name("a.json"), is_nifti_name("a.mgz")
        (True, False, False)
    """
    return split_extension(Path(name).name, NIFTI_EXTENSIONS)[1] != ""


def is_image_name(name: str | Path) -> bool:
    """Whether a file name has an image extension mrisr reads (NIfTI, MGH, NRRD, MetaImage).

    Example:
        >>> is_image_name("a.mgz"), is_image_name("a.raw")
        (True, False)
    """
    return split_extension(Path(name).name, IMAGE_EXTENSIONS)[1] != ""


def parse_bids_name(stem: str) -> BidsName | None:
    """Parse ``sub-<label>[_<key>-<label>...]_<suffix>``; ``None`` if not BIDS.

    Example:
        >>> parse_bids_name("sub-01_ses-1_acq-tse_T2w").suffix
        'T2w'
        >>> parse_bids_name("t2_tse") is None
        True
    """
    parts = stem.split("_")
    if len(parts) < 2 or not _LABEL.match(parts[-1]):
        return None
    entities = []
    for part in parts[:-1]:
        key, sep, label = part.partition("-")
        if not sep or not _LABEL.match(key) or not _LABEL.match(label):
            return None
        entities.append((key, label))
    if entities[0][0] != "sub" or len({k for k, _ in entities}) != len(entities):
        return None
    return BidsName(entities=tuple(entities), suffix=parts[-1])


def series_tag(series: str) -> str:
    """The part of an output name that names a DICOM series: ``series-<UID>``.

    Characters other than letters, digits, dots and hyphens become ``-``.

    Example:
        >>> series_tag("1.2.840.113619.2.55")
        'series-1.2.840.113619.2.55'
    """
    return "series-" + re.sub(r"[^A-Za-z0-9.-]", "-", str(series).strip())


def output_stem(input_path: str | Path, series: str | None = None) -> str:
    """Stem (no extension) of the output written for ``input_path``.

    With ``series``, plain names get ``_series-<UID>`` before ``_sr``; BIDS
    names get it in their ``desc`` label (``desc-mrisrSeries1234``: BIDS
    labels are alphanumeric).

    Example:
        >>> output_stem("data/t2_tse.nii.gz")
        't2_tse_sr'
        >>> output_stem("sub-01_ses-1_acq-tse_T2w.nii.gz")
        'sub-01_ses-1_acq-tse_desc-mrisr_T2w'
        >>> output_stem("dicom/T2_AX/")
        'T2_AX_sr'
        >>> output_stem("dicom/", series="1.2.3")
        'dicom_series-1.2.3_sr'
    """
    stem, _ = split_extension(Path(input_path).name)
    bids = parse_bids_name(stem)
    if bids is not None:
        label = BIDS_DESC if series is None else BIDS_DESC + "Series" + re.sub(r"[^A-Za-z0-9]", "", str(series))
        return str(bids.with_desc(label))
    return stem + ("" if series is None else "_" + series_tag(series)) + PLAIN_TAG


def output_name(input_path: str | Path, suffix: str = ".nii.gz", series: str | None = None) -> str:
    """File name of the output written for ``input_path``.

    Args:
        input_path: A NIfTI file or a DICOM series folder.
        suffix: ``".nii.gz"`` or ``".nii"``.
        series: The DICOM series chosen (``--series``), named in the output.

    Raises:
        ValueError: for any other suffix.

    Example:
        >>> output_name("t2.nii", ".nii")
        't2_sr.nii'
    """
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"output suffix must be one of {', '.join(OUTPUT_SUFFIXES)}, got {suffix!r}")
    return output_stem(input_path, series) + suffix


def sidecar_path(output: str | Path) -> Path:
    """The JSON sidecar next to an output image (same stem, ``.json``).

    Example:
        >>> sidecar_path("out/sub-01_desc-mrisr_T1w.nii.gz").name
        'sub-01_desc-mrisr_T1w.json'
    """
    p = Path(output)
    stem, _ = split_extension(p.name)
    return p.with_name(stem + ".json")


def is_bids_name(path: str | Path) -> bool:
    """Whether the file (or folder) name of ``path`` follows the BIDS pattern.

    Example:
        >>> is_bids_name("sub-01_T1w.nii.gz"), is_bids_name("brain.nii.gz")
        (True, False)
    """
    return parse_bids_name(split_extension(Path(path).name)[0]) is not None


def dataset_description(version: str) -> dict:
    """A minimal BIDS derivatives ``dataset_description.json`` for mrisr outputs.

    Example:
        >>> dataset_description("0.1.0")["DatasetType"]
        'derivative'
    """
    return {
        "Name": "mrisr super-resolution",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "mrisr", "Version": version}],
    }
