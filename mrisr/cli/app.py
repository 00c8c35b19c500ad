"""The ``mrisr`` command: a thin Typer front end over the Python API.

Each command lives in its own module of ``mrisr.cli`` and imports heavy
libraries (torch, SimpleITK) inside its function, so ``mrisr --help`` stays
fast. Exit codes: 0 success, 1 at least one input failed, 2 usage error.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="mrisr",
    help="Super-resolution of brain MRI with exact geometry: spline interpolation plus a bundled 3D CNN.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

# --- command registrations (one line per command module) ---
# --- end of command registrations ---


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
