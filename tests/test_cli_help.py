"""Help a person can read: ``-h``, option panels, brackets printed as typed, the models and
architectures listings at 80 columns."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mrisr.cli.app import app
from mrisr.cli.models_cmd import TRAINABLE_ARCHS, use_for
from mrisr.inference.registry import list_models
from mrisr.training.trainables import TRAINABLE

UPSCALE_PANELS = ("Input and output", "Target grid", "Model", "Trust the result", "Batch", "Performance",
                  "Rarely needed")


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_dash_h_is_help_on_every_command():
    assert invoke("-h") == invoke("--help")
    for command in ("upscale", "info", "models", "qc", "degrade", "evaluate", "train"):
        text = invoke(command, "-h")
        assert text == invoke(command, "--help") and f"Usage: mrisr {command}" in text


def test_upscale_help_is_short_grouped_and_keeps_brackets():
    text = invoke("upscale", "--help")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert len(lines) < 130  # 223 before the panels
    positions = [text.index(f"─ {panel} ─") for panel in UPSCALE_PANELS]
    assert positions == sorted(positions)  # in this order, the rare options last
    assert '"mrisr[qc]"' in text  # rich markup no longer eats [qc]
    assert "<bool>" not in text and "…" not in text
    rare = text[text.index("─ Rarely needed ─"):]
    assert "--nan-to-num" in rare and "--allow-uneven" in rare and "--spacing" not in rare
    for option in ("--inputs-from", "--overwrite", "--skip-existing", "--json", "--shard"):
        assert option in text
    assert "--force" not in text.split("Rarely needed")[0].split("Input and output")[1]  # a hidden alias


def test_train_help_keeps_model_in_brackets():
    text = " ".join(invoke("train", "--help").split())
    assert "config's [model] must match it" in text and "--list-archs" in text


def test_models_table_fits_80_columns_and_says_what_each_is_for():
    text = invoke("models")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "use for" in text
    for card in list_models():
        assert any(line.split()[:2] == [card.name, card.architecture["name"]] for line in lines if line.split())
    use = use_for_column(text)
    assert use["rrlsrn-1x1x4"] == "thick slices: factor 1x1x4 (4x on voxel axis 2)"
    assert use["recnn-guided-d8w32"] == "guided by a 1 mm T1 of the head (--reference)"
    assert use["recnn-d8w32"] == "any factor 1-6x, inputs of 1-6 mm (default)"
    assert use["georgescu-2x2x2"] == "factor 2x2x2 only (e.g. 2 mm to 1 mm)"


def use_for_column(text: str) -> dict[str, str]:
    """Model name -> its "use for" cell, its wrapped lines joined."""
    lines = text.splitlines()
    header = next(line for line in lines if "use for" in line)
    start, end = header.index("use for"), header.index("template dB")
    cells: dict[str, list[str]] = {}
    name = None
    for line in lines[lines.index(header) + 2:]:
        if not line.strip() or line.lstrip().startswith("dB:"):
            break
        if line[:start].strip():
            name = line.split()[0]
        cells.setdefault(name, []).append(line[start:end].strip())
    return {k: " ".join(v) for k, v in cells.items()}


@pytest.mark.parametrize("args", [("models", "--archs"), ("train", "--list-archs")])
def test_every_trainable_architecture_is_listed_with_its_paper(args):
    assert tuple(TRAINABLE_ARCHS) == TRAINABLE
    text = invoke(*args)
    assert max(len(line) for line in text.splitlines()) <= 80
    names = [line.split()[0] for line in text.splitlines() if line.split() and line.split()[0] in TRAINABLE]
    assert names == list(TRAINABLE)
    flat = " ".join(text.split())
    for author in ("Pham et al.", "Chen et al.", "Lyu et al.", "Song et al.", "Georgescu et al."):
        assert author in flat


def test_use_for_of_a_card_without_scale_or_reference():
    from mrisr.inference.model_card import example_card

    card = example_card(training={**example_card().training, "factor": [1.0, 6.0]})
    assert use_for(card).startswith("any factor 1-6x")
