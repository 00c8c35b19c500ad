"""DICOM series with damaged slices, mixed matrix sizes, duplicate positions, and lone slices.

A damaged slice is never dropped silently: the folder is refused with the
file's name. Series are built with SimpleITK (GDCM) as in
``tests/test_reliability_cli.py``, then damaged byte by byte.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import write_dicom_slice
from mrisr.cli.app import app
from mrisr.errors import InputError
from mrisr.io.dicom import list_series, load_dicom_folder
from test_reliability_cli import JUNK_DICM, UID_A, UID_B, dicom_series, good_input

# Tags as they appear in GDCM's implicit-VR little-endian files.
SPACING_BETWEEN_SLICES = b"\x18\x00\x88\x00"
SLICE_THICKNESS = b"\x18\x00\x50\x00"


def upscale(*args):
    return CliRunner().invoke(app, ["upscale", *map(str, args), "--method", "spline", "--json", "--quiet"])


def refused(folder: Path) -> str:
    with pytest.raises(InputError) as info:
        load_dicom_folder(folder)
    assert info.value.path == folder
    return info.value.reason


def truncate(path: Path, keep: int) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[:keep if keep > 0 else len(blob) + keep])


def drop_element(path: Path, tag: bytes) -> None:
    """Remove one element (implicit VR: tag, 4-byte length, value) from a file."""
    blob = path.read_bytes()
    at = blob.index(tag, 132)
    (length,) = struct.unpack("<I", blob[at + 4:at + 8])
    path.write_bytes(blob[:at] + blob[at + 8 + length:])


# --------------------------------------------------------------------------- damaged slices


@pytest.mark.parametrize("index,keep", [(0, 200), (0, -1), (2, 500), (5, -1), (5, 300)],
                         ids=["first-cut-in-meta", "first-short-by-1", "middle-half", "last-short-by-1",
                              "last-cut-in-header"])
def test_damaged_slice_is_named_never_dropped(tmp_path, index, keep):
    folder = tmp_path / "series"
    dicom_series(folder, n_slices=6)
    damaged = sorted(folder.iterdir())[index]
    truncate(damaged, keep)
    text = refused(folder)
    assert text.startswith(f"{damaged.name} is a truncated or corrupt DICOM image"), text
    assert "cannot be left out silently" in text
    good = good_input(tmp_path)
    result = upscale(folder, good, "--spacing", "1.5", "--output-dir", tmp_path / "out")
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert lines == [f"mrisr: error: {folder}: {text}"]
    recs = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert recs["series"]["status"] == "failed" and recs["good.nii.gz"]["status"] == "ok"


def test_several_damaged_slices_are_all_counted(tmp_path):
    folder = tmp_path / "series"
    dicom_series(folder, n_slices=5)
    for f in sorted(folder.iterdir())[1:4]:
        truncate(f, -10)
    assert "im001.dcm is a truncated" in (text := refused(folder))
    assert "(and 2 more damaged file(s): im002.dcm, im003.dcm)" in text


def test_damaged_slice_of_another_series_does_not_block_the_one_picked(tmp_path):
    folder = tmp_path / "two"
    dicom_series(folder, uid=UID_A, prefix="a")
    dicom_series(folder, uid=UID_B, prefix="b", description="T1 ax")
    truncate(folder / "b002.dcm", -1)
    vol = load_dicom_folder(folder, series=UID_A)
    assert vol.data.shape == (4, 5, 4)
    with pytest.raises(InputError, match="b002.dcm is a truncated or corrupt DICOM image"):
        load_dicom_folder(folder, series=UID_B)


def test_folder_whose_only_image_is_damaged_names_it(tmp_path):
    folder = tmp_path / "one"
    dicom_series(folder, n_slices=1)
    truncate(folder / "im000.dcm", -4)
    assert refused(folder).startswith("im000.dcm is a truncated or corrupt DICOM image")


def test_non_image_dicom_files_are_still_ignored(tmp_path):
    folder = tmp_path / "series"
    data = dicom_series(folder)
    (folder / "DICOMDIR").write_bytes(JUNK_DICM)
    # A directory record with an icon image (Rows, Pixel Data tags) under another name: still not a slice.
    meta = b"\x02\x00\x02\x00UI\x14\x001.2.840.10008.1.3.10"
    (folder / "index.dir").write_bytes(b"\0" * 128 + b"DICM" + meta + b"\x28\x00\x10\x00\xe0\x7f\x10\x00junk")
    vol = load_dicom_folder(folder)
    np.testing.assert_array_equal(vol.data, data.astype(np.float32))
    assert [s.n_slices for s in list_series(folder)] == [4]


# --------------------------------------------------------------------------- slices that do not stack


def test_mixed_matrix_sizes_name_the_odd_slice(tmp_path):
    import SimpleITK as sitk

    folder = tmp_path / "series"
    dicom_series(folder, n_slices=4)
    odd = sitk.GetImageFromArray(np.zeros((1, 5, 6), np.int16))
    odd.SetSpacing((1.0, 1.25, 2.5))
    odd.SetOrigin((10.0, -20.0, 40.0))
    write_dicom_slice(folder / "im004.dcm", odd, UID_A, 5)
    text = refused(folder)
    assert text == ("the slices have different sizes (columns x rows): [(4, 5), (6, 5)]; 4 are 4 x 5, unlike "
                    "im004.dcm (6 x 5)")


def test_duplicate_positions_name_both_files(tmp_path):
    folder = tmp_path / "series"
    dicom_series(folder, n_slices=3)
    (folder / "im009.dcm").write_bytes((folder / "im001.dcm").read_bytes())  # the same slice twice
    text = refused(folder)
    assert text.startswith("1 pair(s) of images share a slice position (im001.dcm/im009.dcm)"), text


# --------------------------------------------------------------------------- a lone slice


@pytest.mark.parametrize("edit,step,warned", [
    (None, 2.5, False),                                                    # SpacingBetweenSlices 2.5
    (lambda f: f.write_bytes(f.read_bytes().replace(SPACING_BETWEEN_SLICES, SLICE_THICKNESS)), 2.5, False),
    (lambda f: drop_element(f, SPACING_BETWEEN_SLICES), 1.0, True),        # neither tag
], ids=["spacing-between-slices", "slice-thickness-only", "no-thickness"])
def test_single_slice_step_comes_from_its_tags(tmp_path, edit, step, warned):
    folder = tmp_path / "one"
    dicom_series(folder, n_slices=1, step=2.5)
    if edit is not None:
        edit(folder / "im000.dcm")
    vol = load_dicom_folder(folder)
    assert vol.data.shape == (4, 5, 1)
    np.testing.assert_allclose(vol.affine[:3, 2], [0.0, 0.0, step])
    assert any("single slice without SliceThickness" in w for w in vol.warnings) == warned
    result = upscale(folder, "--factor", "1", "-o", tmp_path / "o.nii.gz")
    assert result.exit_code == 0, result.output
    assert nib.load(tmp_path / "o.nii.gz").header.get_zooms()[2] == pytest.approx(step)
