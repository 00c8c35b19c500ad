"""``mrisr models``: the models shipped with this installation, and the trainable architectures.

Reads model cards only (no torch import), so it is instant. The table fits 80
columns: name, architecture, what each model is for, the range it was
trained on and its validation gain; ``--json`` gives the whole cards.
``mrisr models --archs`` (also ``mrisr train --list-archs``) lists every
architecture ``mrisr train`` builds, with its paper.

Examples::

    mrisr models
    mrisr models --archs
    mrisr models --json
"""

from __future__ import annotations

import json
from typing import Any

import typer

from mrisr.training.trainables import TRAINABLES


def _fmt_range(values: Any, unit: str = "") -> str:
    try:
        lo, hi = values
        return f"{lo:g}-{hi:g}{unit}" if lo != hi else f"{lo:g}{unit}"
    except (TypeError, ValueError):
        return "?"


def validation_summary(validation: Any, limit: int = 3) -> str:
    """One line summarising a card's free-form ``validation`` entry.

    A ``summary`` string wins; otherwise numeric entries come first, then short
    strings, then the number of table rows.

    Example:
        >>> validation_summary({"summary": "PSNR +2.1 dB over cubic"})
        'PSNR +2.1 dB over cubic'
        >>> validation_summary({"protocol": "x" * 80, "psnr_gain_mean": 2.1234, "rows": [{}, {}]})
        'psnr_gain_mean=2.12; 2 rows'
        >>> validation_summary([])
        '-'
    """
    if not validation:
        return "-"
    if isinstance(validation, str):
        return validation
    if isinstance(validation, list):
        return f"{len(validation)} rows"
    if not isinstance(validation, dict):
        return str(validation)
    if isinstance(validation.get("summary"), str):
        return validation["summary"]
    nums = [f"{k}={v:.3g}" for k, v in validation.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    short = [f"{k}={v}" for k, v in validation.items() if isinstance(v, str) and len(v) <= 40]
    items = (nums + short)[:limit]
    tables = [len(v) for v in validation.values() if isinstance(v, list)]
    if tables:
        items.append(f"{tables[0]} rows")
    return "; ".join(items) if items else f"{len(validation)} entries"


def _params(arch: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in arch.get("params", {}).items())


#: Every value of ``[model] arch`` that ``mrisr train`` builds: (input it sees, paper), read from
#: :data:`mrisr.training.trainables.TRAINABLES`; docs/models.md describes each one.
TRAINABLE_ARCHS: dict[str, tuple[str, str]] = {name: (spec.sees, spec.paper) for name, spec in TRAINABLES.items()}


def use_for(card: Any) -> str:
    """What a model is for, from its card: guided, a fixed learned scale, or any factor in its range.

    Example:
        >>> from mrisr.inference.model_card import example_card
        >>> use_for(example_card())
        'any factor 1-3x, inputs of 1-3 mm'
    """
    training = card.training or {}
    if training.get("reference"):
        return "guided by a 1 mm T1 of the head (--reference)"
    scale = (card.architecture.get("params") or {}).get("scale")
    if scale:
        fine = [i for i, v in enumerate(scale) if v != 1]
        if len(fine) == 1:
            return f"thick slices: factor {_x(scale)} ({scale[fine[0]]:g}x on voxel axis {fine[0]})"
        return f"factor {_x(scale)} only (e.g. 2 mm to 1 mm)" if _x(scale) == "2x2x2" else \
            f"factor {_x(scale)} only"
    text = (f"any factor {_fmt_range(training.get('factor'), 'x')}, inputs of "
            f"{_fmt_range(training.get('input_spacing_mm'), ' mm')}")
    return text + " (default)" if card.default else text


def _x(values: Any) -> str:
    return "x".join(f"{v:g}" for v in values)


def _gain(validation: Any) -> str:
    """``+min/+mean`` dB PSNR gain over the spline when the card has them, else the summary."""
    if isinstance(validation, dict) and {"psnr_gain_min", "psnr_gain_mean"} <= set(validation):
        return f"{validation['psnr_gain_min']:+.1f}/{validation['psnr_gain_mean']:+.1f}"
    return validation_summary(validation)


def real_head_gain(validation: Any) -> str:
    """``min/mean`` dB PSNR gain over the spline on the card's real validation heads, ``-`` if never measured.

    Example:
        >>> rows = [{"psnr_gain": 0.11}, {"psnr_gain": 0.52}]
        >>> real_head_gain({"real_heads": {"rows": rows}}), real_head_gain({"psnr_gain_min": 1.0})
        ('+0.1/+0.3', '-')
    """
    from mrisr.inference.model_card import real_head_gains

    gains = real_head_gains(validation)
    if not gains:
        return "-"
    return f"{min(gains):+.1f}/{sum(gains) / len(gains):+.1f}"


def print_architectures(console: Any = None) -> None:
    """Print the trainable architectures (``[model] arch``) with their input and paper."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="architectures of mrisr train (\\[model] arch)", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("arch", no_wrap=True, style="bold")
    table.add_column("input", no_wrap=True)
    table.add_column("paper")
    for name, (kind, paper) in TRAINABLE_ARCHS.items():
        table.add_row(name, kind, paper)
    console.print(table)
    console.print("interpolated: the spline-interpolated volume on the output grid; low-resolution: the input "
                  "itself (learned upsampling at a fixed scale). Details: docs/models.md, docs/training.md.",
                  highlight=False, markup=False)


def models(
    json_output: bool = typer.Option(False, "--json", help="Print the model cards as JSON."),
    archs: bool = typer.Option(False, "--archs", help="List the architectures mrisr train builds, with their "
                                                      "papers."),
) -> None:
    """List the bundled models: what each is for and the range it was trained on."""
    from mrisr.errors import MrisrError
    from mrisr.inference.registry import list_models

    if archs:
        if json_output:
            typer.echo(json.dumps([{"arch": k, "input": v[0], "paper": v[1]} for k, v in TRAINABLE_ARCHS.items()],
                                  indent=2))
        else:
            print_architectures()
        return
    try:
        cards = list_models()
    except MrisrError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if json_output:
        rows = [{**c.to_dict(), "path": str(c.folder) if c.folder else None, "use_for": use_for(c)} for c in cards]
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not cards:
        console.print("No models ship with this installation yet.")
        return
    table = Table(title="mrisr models (use with --model NAME)", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("arch", no_wrap=True)
    table.add_column("use for", ratio=1)
    table.add_column("template dB", no_wrap=True, justify="right")
    table.add_column("real dB", no_wrap=True, justify="right")
    for c in cards:
        table.add_row(c.name, c.architecture["name"], use_for(c), _gain(c.validation), real_head_gain(c.validation))
    console.print(table)
    console.print("dB: PSNR gain over the cubic spline, min/mean over the acquisitions, on the held-out slab of "
                  "the training template and on real single-subject heads never trained on (-: not measured; "
                  "docs/models.md). Versions, trained ranges and the whole cards: mrisr models --json. "
                  "Architectures to train: mrisr models --archs.", highlight=False, markup=False)
