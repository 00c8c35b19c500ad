"""Skip that knows its settings, outputs named per DICOM series, inputs from list files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli.app import app
from mrisr.errors import MrisrError
from mrisr.pipeline.jobs import expand_inputs, plan_batch, read_input_list
from mrisr.pipeline.settings import BatchSettings, output_settings, settings_fingerprint


def _save(path: Path, seed: int = 0) -> None:
    data = np.random.default_rng(seed).normal(100, 20, size=(6, 5, 4)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), path)


def upscale(*args, input: str | None = None):
    return CliRunner().invoke(app, ["upscale", *map(str, args), "--method", "spline", "--json"], input=input)


def records(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_sidecar_records_the_settings_and_their_fingerprint(tmp_path):
    _save(tmp_path / "a.nii.gz")
    result = upscale(tmp_path / "a.nii.gz", "--spacing", "1.5")
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "a_sr.json").read_text())
    assert sidecar["settings"]["spacing"] == [1.5, 1.5, 1.5] and sidecar["settings"]["method"] == "spline"
    assert sidecar["settings"]["order"] == 3 and sidecar["settings"]["model"] is None
    assert sidecar["settings_sha256"] == settings_fingerprint(sidecar["settings"])
    assert sidecar == records(result)[0]
    # One value and three equal values are one setting: the second run skips.
    again = upscale(tmp_path / "a.nii.gz", "--spacing", "1.5", "1.5", "1.5")
    assert again.exit_code == 0 and records(again)[0]["status"] == "skipped"


@pytest.mark.parametrize("changed", [["--spacing", "1"], ["--order", "1"], ["--dtype", "input"],
                                     ["--no-antialias"]])
def test_other_settings_are_refused_then_redone_with_overwrite(tmp_path, changed):
    src, out = tmp_path / "a.nii.gz", tmp_path / "a_sr.nii.gz"
    _save(src)
    assert upscale(src, "--spacing", "1.5").exit_code == 0
    before = out.read_bytes()
    args = ["--spacing", "1.5", *changed] if changed[0] != "--spacing" else changed
    refused = upscale(src, *args, "-q")
    assert refused.exit_code == 1
    rec = records(refused)[0]
    assert rec["status"] == "failed" and "other settings" in rec["error"] and "--overwrite" in rec["error"]
    assert out.read_bytes() == before  # the stale output is left alone, never silently kept as "done"
    assert "error" in refused.stderr  # said even under -q
    old_settings = json.loads((tmp_path / "a_sr.json").read_text())["settings"]
    redone = upscale(src, *args, "--overwrite")
    assert redone.exit_code == 0 and records(redone)[0]["status"] == "ok"
    new_settings = json.loads((tmp_path / "a_sr.json").read_text())["settings"]
    assert new_settings == records(redone)[0]["settings"] != old_settings
    # --skip-existing (the default, spelled out) now skips it.
    assert records(upscale(src, *args, "--skip-existing"))[0]["status"] == "skipped"


def test_an_output_without_recorded_settings_is_refused(tmp_path):
    src = tmp_path / "a.nii.gz"
    _save(src)
    _save(tmp_path / "a_sr.nii.gz", seed=1)  # made by someone else (or an older mrisr): no settings
    result = upscale(src, "--spacing", "1")
    assert result.exit_code == 1 and "records no settings" in records(result)[0]["error"]


def test_settings_of_the_model_name_its_weights():
    from mrisr.inference.registry import find_card

    card = find_card("rrlsrn-2x2x2")
    values = output_settings(_checked(method="cnn", model="rrlsrn-2x2x2", factor=(2.0,)))
    assert values["model"] == {"name": card.name, "version": card.version, "sha256": card.sha256}
    assert values["factor"] == [2.0, 2.0, 2.0] and values["spacing"] is None


def _checked(**kw) -> BatchSettings:
    settings = BatchSettings(**kw)
    settings.check()
    return settings


def test_two_series_of_one_folder_get_two_outputs(tmp_path):
    from helpers import sitk_image, write_dicom_slice

    folder = tmp_path / "dicom"
    folder.mkdir()
    for uid in ("1.2.3.4", "1.2.3.5"):
        for k in range(3):
            affine = np.diag([1.0, 1.0, 3.0, 1.0])
            affine[2, 3] = 3.0 * k
            image = sitk_image(np.full((4, 5, 1), 10.0 * k, dtype=np.int16), affine)
            write_dicom_slice(folder / f"{uid}_{k}.dcm", image, uid, k + 1)
    names = {}
    for uid in ("1.2.3.4", "1.2.3.5"):
        jobs = plan_batch([folder], settings=_checked(spacing=(1.0,), method="spline", series=uid))
        names[uid] = jobs[0].output.name
    assert names == {"1.2.3.4": "dicom_series-1.2.3.4_sr.nii.gz", "1.2.3.5": "dicom_series-1.2.3.5_sr.nii.gz"}
    assert plan_batch([folder])[0].output.name == "dicom_sr.nii.gz"
    result = upscale(folder, "--spacing", "1.5", "--series", "1.2.3.5", "--output-dir", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert records(result)[0]["settings"]["series"] == "1.2.3.5"
    assert (tmp_path / "out" / "dicom_series-1.2.3.5_sr.nii.gz").is_file()


def test_inputs_from_a_list_file_at_sign_and_stdin(tmp_path, monkeypatch):
    for name in ("a.nii.gz", "b.nii.gz", "c.nii.gz"):
        _save(tmp_path / "scans" / name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.txt").write_text("# my subjects\nscans/a.nii.gz\n\n  scans/c.nii.gz  \n")
    out = tmp_path / "out"
    by_at = upscale("@list.txt", "--factor", "2", "--output-dir", out)
    assert by_at.exit_code == 0, by_at.output
    assert [Path(r["input"]).name for r in records(by_at)] == ["a.nii.gz", "c.nii.gz"]
    assert Path(records(by_at)[0]["input"]).is_absolute()
    by_option = upscale("--inputs-from", "list.txt", "scans/b.nii.gz", "--factor", "2", "--output-dir", out)
    assert [(Path(r["input"]).name, r["status"]) for r in records(by_option)] == [
        ("a.nii.gz", "skipped"), ("b.nii.gz", "ok"), ("c.nii.gz", "skipped")]
    by_stdin = upscale("--inputs-from", "-", "--factor", "2", "--output-dir", out, input="scans/b.nii.gz\n")
    assert [r["status"] for r in records(by_stdin)] == ["skipped"]
    by_at_stdin = upscale("@-", "--factor", "2", "--output-dir", out, input="scans/a.nii.gz\n")
    assert [Path(r["input"]).name for r in records(by_at_stdin)] == ["a.nii.gz"]


def test_bad_lists_are_usage_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    (tmp_path / "missing.txt").write_text("nope.nii.gz\n")
    for args, words in ((["@nolist.txt"], "nolist.txt: cannot read the list"),
                        (["--inputs-from", "empty.txt"], "empty.txt: the list of inputs is empty"),
                        (["@missing.txt"], "nope.nii.gz: no such file")):
        result = upscale(*args, "--spacing", "1")
        assert result.exit_code == 2 and words in result.stderr, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "missing.txt"]


def test_list_helpers():
    assert read_input_list("-", io.StringIO("x.nii\r\ny.nii\n")) == [Path("x.nii"), Path("y.nii")]
    with pytest.raises(MrisrError, match="standard input: the list of inputs is empty"):
        read_input_list("-", io.StringIO(""))
    with pytest.raises(MrisrError, match="no inputs given"):
        expand_inputs([])


def test_info_describes_each_series_of_a_study_folder(tmp_path):
    from test_cli_upscale import _dicom_series

    study = tmp_path / "study"
    _dicom_series(study / "T2_AX", "1.2.826.0.1.3680043.2.1125.9.1")
    _dicom_series(study / "T1_AX", "1.2.826.0.1.3680043.2.1125.9.2", spacing=(1.0, 1.0, 2.0))
    result = CliRunner().invoke(app, ["info", str(study), "--json"])
    assert result.exit_code == 0, result.output
    facts = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(f["file"]).name for f in facts] == ["T1_AX", "T2_AX"]
    assert [f["spacing"] for f in facts] == [[1.0, 1.0, 2.0], [1.0, 1.0, 3.0]]
    text = CliRunner().invoke(app, ["info", str(study)])
    assert text.exit_code == 0 and text.stdout.count("file ") == 2
    # One series folder is still one input.
    one = CliRunner().invoke(app, ["info", str(study / "T1_AX"), "--json"])
    assert one.exit_code == 0 and json.loads(one.stdout)["shape"] == [4, 5, 3]


def test_output_header_does_not_copy_the_acquisition_description(tmp_path):
    src = tmp_path / "a.nii.gz"
    img = nib.Nifti1Image(np.ones((6, 5, 4), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header["descrip"] = b"TE=90;Time=101010.000;phase=1"
    nib.save(img, src)
    assert upscale(src, "--spacing", "1").exit_code == 0
    assert nib.load(tmp_path / "a_sr.nii.gz").header["descrip"].tobytes().rstrip(b"\0") == b"mrisr super-resolution"
    assert nib.load(src).header["descrip"].tobytes().startswith(b"TE=90")  # the input is untouched


def test_records_name_the_threads_absolute_paths_and_round_float_noise(tmp_path, monkeypatch):
    import torch

    from mrisr.archs.recnn import ReCNN
    from mrisr.inference.model_card import save_model

    torch.manual_seed(0)
    training = {"data": "none", "licence": "none", "degradations": [], "input_spacing_mm": [1.0, 6.0],
                "factor": [1.0, 6.0]}
    save_model(ReCNN(2, 4), tmp_path / "tiny", name="tiny", training=training)
    _save(tmp_path / "a.nii.gz")
    monkeypatch.chdir(tmp_path)
    # 3 mm / 0.75 is float noise away from 4: the record says 0.75, not 0.7500000000000001.
    result = CliRunner().invoke(app, ["upscale", "a.nii.gz", "--factor", "1", "1", "4", "--model", "tiny",
                                      "--device", "cpu", "--precision", "fp32", "--json"])
    assert result.exit_code == 0, result.output
    rec = records(result)[0]
    assert rec["threads"] == torch.get_num_threads() and rec["method"] == "cnn"
    assert rec["input"] == str(tmp_path / "a.nii.gz") and rec["sidecar"] == str(tmp_path / "a_sr.json")
    assert rec["output_spacing"] == [2.0, 2.0, 0.75]
    assert rec["settings"]["model"]["name"] == "tiny" and len(rec["settings"]["model"]["sha256"]) == 64
