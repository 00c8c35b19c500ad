"""The ``mrisr`` command: a thin Typer front end over the Python API.

Each command lives in its own module of ``mrisr.cli`` and imports heavy
libraries (torch, SimpleITK) inside its function, so ``mrisr --help`` stays
fast. Exit codes: 0 success, 1 at least one input failed, 2 usage error.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mrisr.cli.common import CONTEXT_SETTINGS, MrisrCommand, PlainHelpGroup

app = typer.Typer(
    name="mrisr",
    help="Super-resolution of brain MRI with exact geometry: spline interpolation plus a bundled 3D CNN.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    cls=PlainHelpGroup,
    context_settings=CONTEXT_SETTINGS,
)



def _print_version(value: bool) -> None:
    if not value:
        return
    import mrisr

    line = f"mrisr {mrisr.__version__}"
    try:
        import torch

        from mrisr.device import describe_devices

        line += f", torch {torch.__version__}, devices: {describe_devices()}"
    except ImportError as e:  # torch missing or broken: still report what we know
        line += f", torch unavailable ({e})"
    typer.echo(line)
    raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the versions of mrisr and torch and the devices found.")] = False,
) -> None:
    """Super-resolution of brain MRI with exact geometry."""


# --- command registrations (in the order --help lists them) ---
from mrisr.cli import (bids_cmd, degrade_cmd, evaluate_cmd, info_cmd, models_cmd, qc_cmd,  # noqa: E402
                       train_cmd, upscale_cmd)

app.command("upscale", cls=upscale_cmd.UpscaleCommand)(upscale_cmd.upscale)
app.command("bids", cls=bids_cmd.BidsCommand)(bids_cmd.bids)
app.command("info", cls=info_cmd.InfoCommand)(info_cmd.info)
app.command("models", cls=MrisrCommand)(models_cmd.models)
app.command("qc", cls=qc_cmd.QCCommand)(qc_cmd.qc)
app.command("degrade", cls=degrade_cmd.DegradeCommand)(degrade_cmd.degrade)
app.command("evaluate", cls=MrisrCommand)(evaluate_cmd.evaluate)
app.command("train", cls=MrisrCommand)(train_cmd.train)
# --- end of command registrations ---


def main() -> None:
    """Console-script entry point (also ``python -m mrisr``)."""
    app(prog_name="mrisr")


if __name__ == "__main__":  # pragma: no cover
    main()
