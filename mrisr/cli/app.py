"""The ``mrisr`` command: a thin Typer front end over the Python API.

Each command lives in its own module of ``mrisr.cli`` and imports heavy
libraries (torch, SimpleITK) inside its function, so ``mrisr --help`` stays
fast. Exit codes: 0 success, 1 at least one input failed, 2 usage error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.exceptions import TyperException

from mrisr.cli.common import CONTEXT_SETTINGS, MrisrCommand, PlainHelpGroup


class MrisrGroup(PlainHelpGroup):
    """The ``mrisr`` group: one-line usage errors, and SIGTERM/SIGHUP handled like Ctrl-C.

    Typer would draw a framed, multi-line box for its own usage errors; mrisr's
    convention is one ``mrisr: error:`` line on stderr (exit 2), whoever finds
    the error. SIGINT, SIGTERM and SIGHUP stop the run the same way: the output
    being written is abandoned (its temporary file removed), one line says so,
    and the exit code is 128 + the signal (130, 143, 129).
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,  # type: ignore[override]  # noqa: D102
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        from mrisr.cli.common import interrupted_exit, print_error, report_click_error, stop_signals

        with stop_signals() as got:
            try:
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except TyperException as exc:
                sys.exit(report_click_error(exc))
            except typer.Abort:  # end of input at a prompt
                print_error("aborted")
                sys.exit(1)
            code = rv if isinstance(rv, int) else 0
            sys.exit(interrupted_exit(got, code) if got or code == 130 else code)


app = typer.Typer(
    name="mrisr",
    cls=MrisrGroup,
    help="Super-resolution of brain MRI with exact geometry: spline interpolation plus a bundled 3D CNN.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT_SETTINGS,
)


def _print_version(value: bool) -> None:
    if not value:
        return
    import mrisr

    line = f"mrisr {mrisr.__version__}"
    try:
        import torch

        from mrisr.inference.device import describe_devices

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
from mrisr.cli import bids_cmd, degrade_cmd, evaluate_cmd, info_cmd, models_cmd, qc_cmd, train_cmd, upscale_cmd  # noqa: E402

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
