"""``mrisr bids``: a BIDS app. Finds the anatomical images of a BIDS dataset and writes a derivatives dataset.

It follows the BIDS-Apps convention ``mrisr bids BIDS_DIR OUTPUT_DIR participant|group``:

* **participant** level: every ``sub-<label>/[ses-<label>/]anat/*.nii[.gz]``
  of ``BIDS_DIR`` whose suffix is asked for (default :data:`ANAT_SUFFIXES`)
  is upscaled to ``OUTPUT_DIR/sub-<label>/[ses-<label>/]anat/<source
  entities>_desc-mrisr_<suffix>.nii.gz``. Its JSON sidecar holds the source's
  metadata (the BIDS inheritance principle: the ``.json`` files of the same
  suffix from the dataset's top down to the image's own, later ones winning),
  ``Sources`` (a BIDS URI ``bids:raw:<path>``) and mrisr's record (settings,
  provenance). ``OUTPUT_DIR/dataset_description.json`` says
  ``DatasetType: derivative``, ``GeneratedBy`` mrisr and links ``raw`` to
  ``BIDS_DIR``.
* **group** level: one table ``OUTPUT_DIR/mrisr_summary.tsv`` with a row per
  source image found (the same selection): its output, status (``ok``,
  ``missing``) and the recorded spacing, method and model.

Nothing is ever written inside ``BIDS_DIR`` (an ``OUTPUT_DIR`` inside it is
refused), and the images are matched by their names only (no pybids needed):
``sub-<label>`` first, ``<key>-<label>`` entities, a suffix, ``.nii`` or
``.nii.gz``, inside the ``anat`` folder of their subject (and session).

Example:
    >>> parse_labels(["sub-01", "02,03"], "--participant-label")
    ['01', '02', '03']
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mrisr import __version__
from mrisr.errors import MrisrError
from mrisr.io.naming import (
    BIDS_DESC,
    NIFTI_EXTENSIONS,
    dataset_description,
    output_name,
    parse_bids_name,
    split_extension,
)

#: Analysis levels of the BIDS-Apps convention.
LEVELS = ("participant", "group")
#: Anatomical suffixes processed by default (BIDS 1.9 non-parametric structural images).
ANAT_SUFFIXES = ("T1w", "T2w", "PDw", "T2starw", "FLAIR", "inplaneT1", "inplaneT2", "PD", "PDT2", "T2star",
                 "angio")
#: Name of the dataset ``Sources`` URIs point into (``DatasetLinks`` of the derivatives' description).
RAW_LINK = "raw"
#: The group level's table.
SUMMARY_FILE = "mrisr_summary.tsv"
#: Columns of the group level's table.
SUMMARY_COLUMNS = ("participant_id", "session_id", "suffix", "source", "output", "status", "input_spacing",
                   "output_spacing", "method", "model", "settings_sha256")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class AnatImage:
    """One anatomical image of a BIDS dataset.

    Attributes:
        path: The image file.
        relative: Its path relative to the dataset root (POSIX form).
        subject: The ``sub`` label.
        session: The ``ses`` label, or ``None``.
        suffix: ``T1w``, ``T2w``...
    """

    path: Path
    relative: str
    subject: str
    session: str | None
    suffix: str

    @property
    def uri(self) -> str:
        """The BIDS URI of the image in the raw dataset (``bids:raw:sub-01/anat/sub-01_T1w.nii.gz``)."""
        return f"bids:{RAW_LINK}:{self.relative}"


def parse_labels(values: Iterable[str] | None, option: str, prefix: str = "sub-") -> list[str] | None:
    """Labels given as ``01 02``, ``01,02`` or ``sub-01``; ``None`` when none are given.

    Raises:
        MrisrError: a label that is not alphanumeric.

    Example:
        >>> parse_labels(None, "--session-label") is None
        True
    """
    if not values:
        return None
    labels = []
    for value in values:
        for part in re.split(r"[,\s]+", str(value).strip()):
            if not part:
                continue
            label = part[len(prefix):] if part.startswith(prefix) else part
            if not _LABEL.match(label):
                raise MrisrError(f"{option}: {part!r} is not a BIDS label (letters and digits, e.g. 01)")
            labels.append(label)
    return labels or None


def check_dataset(bids_dir: str | Path, output_dir: str | Path | None = None) -> Path:
    """Refuse what is not a BIDS dataset, and an ``output_dir`` inside it.

    Returns:
        ``bids_dir`` as an absolute path.

    Raises:
        MrisrError: no such folder, no ``dataset_description.json``, or an
            output folder inside the dataset (mrisr never writes there).
    """
    root = Path(bids_dir)
    if not root.is_dir():
        raise MrisrError(f"{root}: no such folder (BIDS_DIR must be a BIDS dataset)")
    if not (root / "dataset_description.json").is_file():
        raise MrisrError(f"{root}: no dataset_description.json, so not a BIDS dataset")
    root = root.absolute()
    if output_dir is not None:
        out = Path(output_dir).absolute()
        if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
            raise MrisrError(f"OUTPUT_DIR {output_dir} is inside BIDS_DIR {bids_dir}; mrisr never writes into the "
                             "raw dataset: choose a folder outside it (e.g. ../derivatives/mrisr)")
    return root


def find_anat(bids_dir: str | Path, *, participants: Sequence[str] | None = None,
              sessions: Sequence[str] | None = None, suffixes: Sequence[str] | None = None) -> list[AnatImage]:
    """The anatomical images of a BIDS dataset, sorted by path.

    Args:
        bids_dir: The dataset root.
        participants: ``sub`` labels to keep (default: all).
        sessions: ``ses`` labels to keep (default: all, and images without sessions).
        suffixes: Suffixes to keep (default :data:`ANAT_SUFFIXES`).

    Raises:
        MrisrError: a participant label with no ``sub-<label>`` folder, or no
            image at all (naming the filters).
    """
    root = Path(bids_dir)
    wanted = tuple(suffixes) if suffixes else ANAT_SUFFIXES
    if participants:
        missing = [p for p in participants if not (root / f"sub-{p}").is_dir()]
        if missing:
            known = ", ".join(sorted(d.name[4:] for d in root.glob("sub-*") if d.is_dir())) or "none"
            raise MrisrError(f"{root}: no participant {', '.join(missing)} (participants: {known})")
    found = []
    for anat in sorted(root.glob("sub-*/anat")) + sorted(root.glob("sub-*/ses-*/anat")):
        for path in sorted(anat.iterdir()):
            image = _anat_image(root, path)
            if image is None or image.suffix not in wanted:
                continue
            if participants and image.subject not in participants:
                continue
            if sessions and image.session not in sessions:
                continue
            found.append(image)
    if not found:
        what = [f"suffix {', '.join(wanted)}"]
        if participants:
            what.append(f"participant {', '.join(participants)}")
        if sessions:
            what.append(f"session {', '.join(sessions)}")
        raise MrisrError(f"{root}: no anatomical image (sub-*/[ses-*/]anat/*.nii[.gz]) with {'; '.join(what)}")
    return sorted(found, key=lambda im: im.relative)


def _anat_image(root: Path, path: Path) -> AnatImage | None:
    """The image's BIDS facts, or ``None`` for what is not a NIfTI image named for its folder."""
    stem, ext = split_extension(path.name, NIFTI_EXTENSIONS)
    if not ext or not path.is_file():
        return None
    name = parse_bids_name(stem)
    if name is None:
        return None
    entities = dict(name.entities)
    folders = path.relative_to(root).parts[:-2]  # ("sub-01",) or ("sub-01", "ses-1")
    if folders[0] != f"sub-{entities['sub']}":
        return None
    session = entities.get("ses")
    if (len(folders) == 2) != (session is not None) or (session is not None and folders[1] != f"ses-{session}"):
        return None
    return AnatImage(path=path, relative=path.relative_to(root).as_posix(), subject=entities["sub"],
                     session=session, suffix=name.suffix)


def output_path(image: AnatImage, output_dir: str | Path) -> Path:
    """``OUTPUT_DIR/sub-XX/[ses-YY/]anat/<source entities>_desc-mrisr_<suffix>.nii.gz``.

    Example:
        >>> im = AnatImage(Path("/d/sub-01/ses-2/anat/sub-01_ses-2_T2w.nii"), "sub-01/ses-2/anat/sub-01_ses-2_T2w.nii",
        ...                "01", "2", "T2w")
        >>> output_path(im, "/out").as_posix()
        '/out/sub-01/ses-2/anat/sub-01_ses-2_desc-mrisr_T2w.nii.gz'
    """
    return Path(output_dir) / Path(image.relative).parent / output_name(image.path)


def source_metadata(root: str | Path, image: AnatImage) -> dict:
    """The image's JSON metadata by the BIDS inheritance principle.

    The ``.json`` files whose entities are a subset of the image's and whose
    suffix is the image's, found in the dataset's root, the subject's and the
    session's folder and the image's own folder, are merged from the top
    down (the nearest wins).

    Raises:
        MrisrError: a sidecar that is not valid JSON (naming it).
    """
    root = Path(root)
    own = dict(parse_bids_name(split_extension(image.path.name, NIFTI_EXTENSIONS)[0]).entities)  # type: ignore[union-attr]
    folders = [root, root / f"sub-{image.subject}"]
    if image.session is not None:
        folders.append(folders[-1] / f"ses-{image.session}")
    folders.append(image.path.parent)
    merged: dict = {}
    for folder in dict.fromkeys(folders):
        for candidate in sorted(folder.glob(f"*{image.suffix}.json")):
            if _applies(candidate.name[:-5], own, image.suffix):
                merged.update(_read_json(candidate))
    return merged


def _applies(stem: str, entities: dict, suffix: str) -> bool:
    """Whether a sidecar named ``stem`` (entities + suffix, or the bare suffix) applies to an image."""
    parts = stem.split("_")
    if parts[-1] != suffix:
        return False
    for part in parts[:-1]:
        key, sep, label = part.partition("-")
        if not sep or entities.get(key) != label:
            return False
    return True


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MrisrError(f"{path}: cannot read the JSON sidecar ({exc})") from None
    if not isinstance(value, dict):
        raise MrisrError(f"{path}: the JSON sidecar is not an object")
    return value


def bids_jobs(images: Sequence[AnatImage], bids_dir: str | Path, output_dir: str | Path) -> list:
    """One :class:`mrisr.pipeline.jobs.Job` per image, its sidecar carrying the source's metadata and ``Sources``."""
    from mrisr.pipeline.jobs import Job

    jobs = []
    for image in images:
        extra = {**source_metadata(bids_dir, image), "Sources": [image.uri]}
        extra.pop("Description", None)  # the source's own description is not the output's
        jobs.append(Job(image.path, output_path(image, output_dir), sidecar_extra=extra))
    return jobs


def derivative_description(bids_dir: str | Path) -> dict:
    """The derivatives' ``dataset_description.json``: mrisr's, plus the link to the raw dataset.

    Example:
        >>> d = derivative_description("/data/ds001")
        >>> d["DatasetType"], d["DatasetLinks"]["raw"], d["GeneratedBy"][0]["Name"]
        ('derivative', 'file:///data/ds001', 'mrisr')
    """
    desc = dataset_description(__version__)
    desc["GeneratedBy"][0]["Description"] = "mrisr bids: super-resolution of the anatomical images"
    desc["SourceDatasets"] = [{"URL": Path(bids_dir).absolute().as_uri()}]
    desc["DatasetLinks"] = {RAW_LINK: Path(bids_dir).absolute().as_uri()}
    return desc


def write_description(output_dir: str | Path, bids_dir: str | Path) -> Path | None:
    """Write ``OUTPUT_DIR/dataset_description.json`` unless one is there (another shard may have written it)."""
    from mrisr.errors import OutputError
    from mrisr.io.writer import save_json_atomic
    from mrisr.pipeline.batch import DATASET_DESCRIPTION

    path = Path(output_dir) / DATASET_DESCRIPTION
    if path.exists():
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_json_atomic(derivative_description(bids_dir), path, force=False)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot create the output folder ({exc.strerror or exc})") from None
    except OutputError:
        if path.exists():
            return None
        raise


def summary_rows(images: Sequence[AnatImage], output_dir: str | Path) -> list[dict]:
    """One row per image for the group table: ``ok`` with its recorded facts when its output and sidecar exist."""
    from mrisr.io.naming import sidecar_path

    rows = []
    for image in images:
        out = output_path(image, output_dir)
        row = dict.fromkeys(SUMMARY_COLUMNS, "n/a")
        row.update(participant_id=f"sub-{image.subject}", session_id=f"ses-{image.session}" if image.session else "n/a",
                   suffix=image.suffix, source=image.relative, output=out.relative_to(output_dir).as_posix(),
                   status="missing")
        if out.is_file() and sidecar_path(out).is_file():
            rec = _read_json(sidecar_path(out))
            row["status"] = rec.get("status") or "ok"
            for key in ("input_spacing", "output_spacing"):
                if isinstance(rec.get(key), list):
                    row[key] = "x".join(f"{v:g}" for v in rec[key])
            row["method"] = rec.get("method") or "n/a"
            row["model"] = rec.get("model") or "n/a"
            row["settings_sha256"] = rec.get("settings_sha256") or "n/a"
        rows.append(row)
    return rows


def write_summary(rows: Sequence[dict], output_dir: str | Path) -> Path:
    """Write the group table (tab-separated, ``n/a`` for unknown values) atomically; replaces an older one."""
    from mrisr.io.writer import save_bytes_atomic

    lines = ["\t".join(SUMMARY_COLUMNS)] + ["\t".join(str(row[c]) for c in SUMMARY_COLUMNS) for row in rows]
    return save_bytes_atomic(("\n".join(lines) + "\n").encode("utf-8"), Path(output_dir) / SUMMARY_FILE, force=True)


__all__ = ["LEVELS", "ANAT_SUFFIXES", "AnatImage", "parse_labels", "check_dataset", "find_anat", "output_path",
           "source_metadata", "bids_jobs", "derivative_description", "write_description", "summary_rows",
           "write_summary", "BIDS_DESC"]
