"""``mrisr bids BIDS_DIR OUTPUT_DIR participant|group``: the BIDS app."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli.app import app
from mrisr.errors import MrisrError
from mrisr.pipeline.bids import find_anat, source_metadata


def _image(path: Path, seed: int, zooms=(2.0, 2.0, 3.0)) -> None:
    data = np.random.default_rng(seed).normal(100, 20, size=(6, 5, 4)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), path)


def _json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "ds"
    _json(root / "dataset_description.json", {"Name": "toy", "BIDSVersion": "1.9.0"})
    _json(root / "T2w.json", {"MagneticFieldStrength": 3, "EchoTime": 0.1})  # inherited by every T2w
    _image(root / "sub-01/anat/sub-01_T1w.nii.gz", 1)
    _json(root / "sub-01/anat/sub-01_T1w.json", {"RepetitionTime": 2.3, "Manufacturer": "X"})
    _image(root / "sub-02/ses-1/anat/sub-02_ses-1_acq-fast_T2w.nii.gz", 2)
    _json(root / "sub-02/ses-1/anat/sub-02_ses-1_acq-fast_T2w.json", {"EchoTime": 0.09})  # nearest wins
    _image(root / "sub-02/ses-2/anat/sub-02_ses-2_FLAIR.nii", 3)
    _image(root / "sub-02/ses-1/dwi/sub-02_ses-1_dwi.nii.gz", 4)  # not anatomical
    _image(root / "sub-01/anat/sub-02_T1w.nii.gz", 5)  # named for another subject: not this folder's
    _image(root / "derivatives/old/sub-01/anat/sub-01_desc-x_T1w.nii.gz", 6)  # never an input
    return root


def bids(*args):
    return CliRunner().invoke(app, ["bids", *map(str, args)])


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_participant_level_writes_a_derivatives_dataset(dataset, tmp_path):
    raw_before = tree(dataset)
    out = tmp_path / "derivatives" / "mrisr"
    result = bids(dataset, out, "participant", "--spacing", "1", "--method", "spline", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["output"]).relative_to(out).as_posix() for r in records] == [
        "sub-01/anat/sub-01_desc-mrisr_T1w.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_acq-fast_desc-mrisr_T2w.nii.gz",
        "sub-02/ses-2/anat/sub-02_ses-2_desc-mrisr_FLAIR.nii.gz"]
    assert all(r["status"] == "ok" for r in records)
    assert nib.load(out / "sub-01/anat/sub-01_desc-mrisr_T1w.nii.gz").shape == (12, 10, 12)
    t1 = json.loads((out / "sub-01/anat/sub-01_desc-mrisr_T1w.json").read_text())
    assert t1["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz"]
    assert t1["RepetitionTime"] == 2.3 and t1["Manufacturer"] == "X"  # the source's metadata
    assert t1["settings"]["spacing"] == [1.0, 1.0, 1.0] and t1["status"] == "ok"  # and mrisr's record
    t2 = json.loads((out / "sub-02/ses-1/anat/sub-02_ses-1_acq-fast_desc-mrisr_T2w.json").read_text())
    assert t2["MagneticFieldStrength"] == 3 and t2["EchoTime"] == 0.09  # inherited, nearest wins
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "mrisr"
    assert desc["DatasetLinks"]["raw"] == dataset.absolute().as_uri()
    assert tree(dataset) == raw_before  # nothing written inside BIDS_DIR
    again = bids(dataset, out, "participant", "--spacing", "1", "--method", "spline", "--json")
    assert again.exit_code == 0 and {json.loads(x)["status"] for x in again.stdout.splitlines()} == {"skipped"}


def test_selection_by_participant_session_and_suffix(dataset, tmp_path):
    out = tmp_path / "out"
    result = bids(dataset, out, "participant", "--participant_label", "sub-02", "--session-label", "1", "2",
                  "--suffix", "T2w", "FLAIR", "--factor", "2", "--method", "spline", "--json")
    assert result.exit_code == 0, result.output
    assert [Path(json.loads(x)["input"]).name for x in result.stdout.splitlines()] == [
        "sub-02_ses-1_acq-fast_T2w.nii.gz", "sub-02_ses-2_FLAIR.nii"]
    only_t1 = [im.relative for im in find_anat(dataset, suffixes=["T1w"])]
    assert only_t1 == ["sub-01/anat/sub-01_T1w.nii.gz"]


def test_group_level_writes_one_summary_table(dataset, tmp_path):
    out = tmp_path / "out"
    assert bids(dataset, out, "participant", "--participant-label", "01", "--spacing", "1", "--method",
                "spline").exit_code == 0
    group = bids(dataset, out, "group")
    assert group.exit_code == 1  # two images have no output yet
    lines = (out / "mrisr_summary.tsv").read_text().splitlines()
    header, rows = lines[0].split("\t"), [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]
    assert header[:3] == ["participant_id", "session_id", "suffix"]
    assert [(r["participant_id"], r["session_id"], r["suffix"], r["status"]) for r in rows] == [
        ("sub-01", "n/a", "T1w", "ok"), ("sub-02", "ses-1", "T2w", "missing"), ("sub-02", "ses-2", "FLAIR", "missing")]
    assert rows[0]["output_spacing"] == "1x1x1" and rows[0]["method"] == "spline"
    assert bids(dataset, out, "participant", "--spacing", "1", "--method", "spline").exit_code == 0
    assert bids(dataset, out, "group").exit_code == 0


@pytest.mark.parametrize("case, words", [
    ("inside", "is inside BIDS_DIR"), ("not-bids", "no dataset_description.json"),
    ("level", "unknown analysis level 'participants'"), ("label", "no participant 07"),
])
def test_refusals_are_usage_errors_and_write_nothing(dataset, tmp_path, case, words):
    before = tree(tmp_path)
    args = {"inside": [dataset, dataset / "derivatives" / "mrisr", "participant"],
            "not-bids": [tmp_path / "ds" / "sub-01", tmp_path / "out", "participant"],
            "level": [dataset, tmp_path / "out", "participants"],
            "label": [dataset, tmp_path / "out", "participant", "--participant-label", "07"]}[case]
    result = bids(*args, "--spacing", "1", "--method", "spline")
    assert result.exit_code == 2 and words in result.stderr, result.output
    assert tree(tmp_path) == before


def test_source_metadata_inherits_from_the_top_down(dataset):
    image = [im for im in find_anat(dataset) if im.suffix == "T2w"][0]
    assert source_metadata(dataset, image) == {"MagneticFieldStrength": 3, "EchoTime": 0.09}
    (dataset / "T2w.json").write_text("{not json")
    with pytest.raises(MrisrError, match="T2w.json: cannot read the JSON sidecar"):
        source_metadata(dataset, image)
