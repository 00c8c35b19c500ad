"""Output names: plain ``_sr`` tags and BIDS ``desc-mrisr``."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrisr.io.naming import (
    dataset_description,
    is_bids_name,
    is_nifti_name,
    output_name,
    parse_bids_name,
    sidecar_path,
    split_extension,
)


@pytest.mark.parametrize("name,expected", [
    ("sub-01_ses-1_acq-tse_T2w.nii.gz", "sub-01_ses-1_acq-tse_desc-mrisr_T2w.nii.gz"),
    ("sub-01_T1w.nii", "sub-01_desc-mrisr_T1w.nii.gz"),
    ("sub-01_task-rest_run-2_bold.nii.gz", "sub-01_task-rest_run-2_desc-mrisr_bold.nii.gz"),
    ("sub-01_desc-preproc_T1w.nii.gz", "sub-01_desc-preprocMrisr_T1w.nii.gz"),
    ("sub-01_desc-preproc_space-MNI_T1w.nii.gz", "sub-01_space-MNI_desc-preprocMrisr_T1w.nii.gz"),
    ("t2_tse.nii.gz", "t2_tse_sr.nii.gz"),
    ("T1.NII", "T1_sr.nii.gz"),
    ("brain.v2.nii.gz", "brain.v2_sr.nii.gz"),
    ("T2_AX", "T2_AX_sr.nii.gz"),                      # DICOM series folder
    ("ses-1_T1w.nii.gz", "ses-1_T1w_sr.nii.gz"),       # not BIDS: no sub- first
    ("sub-01_acq-a_b_T1w.nii.gz", "sub-01_acq-a_b_T1w_sr.nii.gz"),  # 'b' is not key-value
    ("sub-01_sub-02_T1w.nii.gz", "sub-01_sub-02_T1w_sr.nii.gz"),    # repeated entity
])
def test_output_name(name, expected):
    assert output_name(Path("some/dir") / name) == expected


def test_output_name_suffix():
    assert output_name("a.nii.gz", ".nii") == "a_sr.nii"
    with pytest.raises(ValueError, match=".nii.gz"):
        output_name("a.nii.gz", ".mgz")


def test_parse_bids_name_round_trips():
    b = parse_bids_name("sub-01_ses-1_acq-tse_T2w")
    assert b is not None
    assert b.entities == (("sub", "01"), ("ses", "1"), ("acq", "tse")) and b.suffix == "T2w"
    assert str(b) == "sub-01_ses-1_acq-tse_T2w"
    assert parse_bids_name("sub-01") is None and parse_bids_name("sub-01_T1w-x") is None


def test_split_extension_and_predicates():
    assert split_extension("a.nii.gz") == ("a", ".nii.gz")
    assert split_extension("a.NII.GZ") == ("a", ".NII.GZ")
    assert split_extension(".nii") == (".nii", "")
    assert is_nifti_name("x/y.nii") and not is_nifti_name("y.json") and not is_nifti_name("y.nii.bak")
    assert is_bids_name("sub-1_T1w.nii.gz") and not is_bids_name("T1w.nii.gz")


def test_sidecar_path():
    assert sidecar_path("out/sub-01_desc-mrisr_T2w.nii.gz") == Path("out/sub-01_desc-mrisr_T2w.json")
    assert sidecar_path("x_sr.nii") == Path("x_sr.json")


def test_dataset_description_is_a_derivative():
    d = dataset_description("9.9")
    assert d["DatasetType"] == "derivative" and d["BIDSVersion"]
    assert d["GeneratedBy"] == [{"Name": "mrisr", "Version": "9.9"}]
