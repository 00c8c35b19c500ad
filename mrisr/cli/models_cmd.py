"""``mrisr models``: the models shipped with this installation.

Reads model cards only (no torch import), so it is instant.
"""

from __future__ import annotations

import json
from typing import Any

import typer


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


def models(
    json_output: bool = typer.Option(False, "--json", help="Print the model cards as JSON."),
) -> None:
    """List the bundled super-resolution models and their trained ranges."""
    from mrisr.errors import MrisrError
    from mrisr.registry import list_models

    try:
        cards = list_models()
    except MrisrError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if json_output:
        rows = [{**c.to_dict(), "path": str(c.folder) if c.folder else None} for c in cards]
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not cards:
        console.print("No models ship with this installation yet.")
        return
    table = Table(title="mrisr models")
    for col in ("name", "default", "architecture", "params", "receptive field", "trained spacing", "factors",
                "validation"):
        table.add_column(col, overflow="fold")
    for c in cards:
        table.add_row(
            f"{c.name} {c.version}", "yes" if c.default else "", c.architecture["name"], _params(c.architecture),
            f"{c.receptive_radius} vox", _fmt_range(c.training.get("input_spacing_mm"), " mm"),
            _fmt_range(c.training.get("factor"), "x"), validation_summary(c.validation),
        )
    console.print(table)
