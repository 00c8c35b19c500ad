"""Model cards, saving and loading models, the registry and ``mrisr models``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from mrisr.archs.recnn import ReCNN
from mrisr.errors import ModelError
from mrisr.inference import registry
from mrisr.inference.model_card import ModelCard, architecture_class, example_card, read_card, save_model

TRAINING = {"data": "synthetic blobs", "licence": "CC0", "degradations": ["box"],
            "input_spacing_mm": [1.0, 3.0], "factor": [1.0, 3.0]}


@pytest.fixture()
def shelf(tmp_path, monkeypatch):
    """An empty models folder standing in for the installed package data."""
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setattr(registry, "models_dir", lambda: root)
    return root


def _save(folder, name="tiny", default=False, **kw):
    torch.manual_seed(0)
    return save_model(ReCNN(3, 4), folder / name, name=name, default=default, training=TRAINING, **kw)


def test_models_dir_is_package_data():
    root = registry.models_dir()
    assert root.is_dir() and (root / "__init__.py").is_file()


def test_save_and_load_round_trip(shelf):
    card = _save(shelf, validation={"summary": "PSNR +1 dB"}, created="today")
    assert card.architecture == {"name": "recnn", "params": ReCNN(3, 4).config()}
    assert card.receptive_radius == 3 and card.extra == {"created": "today"}
    loaded = registry.load_model(shelf / "tiny")
    assert loaded.name == "tiny" and loaded.sha256 == card.sha256 and not loaded.network.training
    torch.manual_seed(0)
    ref = ReCNN(3, 4)
    for a, b in zip(ref.state_dict().values(), loaded.network.state_dict().values()):
        assert torch.equal(a, b)
    assert registry.load_model(shelf / "tiny" / "card.json").sha256 == card.sha256
    assert json.loads((shelf / "tiny" / "card.json").read_text())["created"] == "today"


def test_load_by_name_and_default(shelf):
    assert registry.default_model_name() is None
    with pytest.raises(ModelError, match="no default model"):
        registry.load_model()
    _save(shelf, "alpha")
    _save(shelf, "beta", default=True)
    assert [c.name for c in registry.list_models()] == ["alpha", "beta"]
    assert registry.default_model_name() == "beta"
    assert registry.load_model().name == "beta"
    assert registry.load_model("alpha").name == "alpha"


def test_unknown_name_lists_known_and_suggests(shelf):
    _save(shelf, "recnn-t1")
    _save(shelf, "recnn-t2")
    with pytest.raises(ModelError, match=r"known models: recnn-t1, recnn-t2.*Did you mean 'recnn-t1'"):
        registry.load_model("recnn-t1x")


def test_checksum_mismatch_is_refused(shelf):
    card = _save(shelf)
    weights = shelf / "tiny" / "model.pt"
    weights.write_bytes(weights.read_bytes() + b"tampered")
    with pytest.raises(ModelError,
                       match=f"checksum mismatch: expected {card.sha256}, got [0-9a-f]{{64}} for .*model.pt"):
        registry.load_model("tiny")


def test_lfs_pointer_is_named(shelf):
    _save(shelf)
    (shelf / "tiny" / "model.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\n")
    with pytest.raises(ModelError, match="Git LFS pointer"):
        registry.load_model("tiny")


def test_missing_field_names_field_and_file(shelf):
    _save(shelf)
    path = shelf / "tiny" / "card.json"
    data = json.loads(path.read_text())
    del data["sha256"]
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"card.json: model card is missing the field 'sha256'"):
        read_card(path)
    data = json.loads((shelf / "tiny" / "card.json").read_text())
    data["sha256"] = "0" * 64
    del data["training"]["factor"]
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="training.factor"):
        registry.list_models()


@pytest.mark.parametrize("field,value,match", [
    ("architecture", {"name": "unet", "params": {}}, "unknown architecture 'unet'"),
    ("receptive_radius", -1, "receptive_radius"),
    ("sha256", "xyz", "64 hex digits"),
    ("normalisation", {"method": "zscore"}, "unknown normalisation"),
    ("default", "yes", "true or false"),
    ("weights", "../evil.pt", "inside the model folder"),
])
def test_invalid_fields_are_refused(field, value, match):
    with pytest.raises(ModelError, match=match):
        example_card(**{field: value})


def test_card_dict_round_trip():
    card = example_card(validation=[{"set": "a", "psnr": 30.1}], notes="kept")
    assert ModelCard.from_dict(card.to_dict()) == card


def test_save_model_validates_before_writing(tmp_path):
    with pytest.raises(ModelError, match="training"):
        save_model(ReCNN(3, 4), tmp_path / "m", name="m")
    assert not (tmp_path / "m").exists()


def test_wrong_params_for_weights_are_refused(shelf):
    _save(shelf)
    path = shelf / "tiny" / "card.json"
    data = json.loads(path.read_text())
    data["architecture"]["params"]["width"] = 5
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="cannot load the weights"):
        registry.load_model("tiny")


def test_two_defaults_are_refused(shelf):
    _save(shelf, "a", default=True)
    _save(shelf, "b", default=True)
    with pytest.raises(ModelError, match="more than one"):
        registry.list_models()


def test_architecture_registry():
    assert architecture_class("recnn") is ReCNN
    with pytest.raises(ModelError, match=r"known: .*\brecnn\b"):
        architecture_class("nope")


def test_range_warnings():
    card = example_card()  # spacing 1-3 mm, factor 1-3
    assert registry.range_warnings(card, (1, 1, 3), (1, 1, 1)) == []
    warns = registry.range_warnings(card, (0.5, 0.5, 5), (0.5, 0.5, 0.5))
    assert len(warns) == 2
    assert "input voxel size" in warns[0] and "axes 0, 1, 2" in warns[0]
    assert "upsampling factor" in warns[1] and "along axis 2;" in warns[1]
    assert any("larger than the input" in w for w in registry.range_warnings(card, (1, 1, 1), (2, 2, 2)))


def test_models_command_table_and_json(shelf):
    from mrisr.cli.app import app

    _save(shelf, "recnn-demo", default=True, validation={"psnr_gain_db": 1.5})
    runner = CliRunner()
    table = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "recnn-demo" in table.output and "psnr_gain_db=1.5" in table.output and "1-3 mm" in table.output
    js = runner.invoke(app, ["models", "--json"])
    rows = json.loads(js.output)
    assert js.exit_code == 0 and rows[0]["name"] == "recnn-demo" and rows[0]["default"] is True


def test_listing_models_does_not_import_torch():
    code = ("import sys; from mrisr.cli import models_cmd; from mrisr.inference.registry import list_models; "
            "list_models(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_source_checkout_finds_its_top_level_models_folder(monkeypatch):
    """Imported straight from the repository (no installed ``mrisr._models``): the checkout's ``models/``."""
    import importlib.resources
    from pathlib import Path

    import mrisr.inference.registry as registry_module

    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", missing)
    repo = Path(registry_module.__file__).resolve().parents[2]
    assert registry_module.models_dir() == repo / "models"
    assert (repo / "models" / "recnn-d8w32" / "card.json").is_file()
