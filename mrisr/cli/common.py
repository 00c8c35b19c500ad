"""Helpers shared by the ``mrisr`` commands: stderr console, errors, exit codes,
and options that take one or three numbers.

Conventions of every command:

- Data (JSON records, ``info`` output) go to stdout; progress, warnings,
  errors and summaries go to stderr.
- An error is one line on stderr, ``mrisr: error: <file>: <reason>``.
- Exit codes: :data:`EXIT_OK` (0), :data:`EXIT_FAILED` (1, at least one input
  failed), :data:`EXIT_USAGE` (2, bad option values or arguments).

Options such as ``--spacing`` take one or three numbers. Click options cannot
take a variable number of values, so :class:`MultiValueCommand` joins the
numbers that follow such an option into one token before parsing
(``--spacing 1 1 3`` becomes ``--spacing 1,1,3``) and :func:`parse_numbers`
splits it again. ``1,1,3`` and ``1x1x3`` work as typed.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import typer
from typer.core import TyperCommand, TyperGroup

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Options that take up to three numbers, and how many.
MULTI_VALUE_OPTIONS = {"--spacing": 3, "--factor": 3}

_NUMBER = re.compile(r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|nan|inf|infinity)$", re.IGNORECASE)


def looks_like_number(token: str) -> bool:
    """Whether a command-line token is a number (including ``nan``, ``-1``).

    Example:
        >>> [looks_like_number(t) for t in ("1", "-0.5", "1e-3", "NaN", "in.nii")]
        [True, True, True, True, False]
    """
    return bool(_NUMBER.match(token))


def join_multi_values(args: Sequence[str], options: dict[str, int] | None = None) -> list[str]:
    """Join the numbers following a multi-value option into one comma-separated token.

    The first token after the option is always its value; up to ``n - 1``
    further tokens are added while they look like numbers. Nothing after
    ``--`` is touched.

    Example:
        >>> join_multi_values(["in.nii", "--spacing", "1", "1", "3", "-o", "x.nii"])
        ['in.nii', '--spacing', '1,1,3', '-o', 'x.nii']
        >>> join_multi_values(["--spacing=1", "2", "3", "in.nii"])
        ['--spacing=1,2,3', 'in.nii']
        >>> join_multi_values(["--spacing", "2", "in.nii"])
        ['--spacing', '2', 'in.nii']
    """
    options = MULTI_VALUE_OPTIONS if options is None else options
    args = list(args)
    out: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            return out + args[i:]
        name, eq, value = tok.partition("=")
        if name not in options:
            out.append(tok)
            i += 1
            continue
        if not eq:
            if i + 1 >= len(args):
                return out + args[i:]
            value, i = args[i + 1], i + 1
        values, i = [value], i + 1
        while i < len(args) and len(values) < options[name] and looks_like_number(args[i]):
            values.append(args[i])
            i += 1
        joined = ",".join(values)
        out += [f"{name}={joined}"] if eq else [name, joined]
    return out


def join_list_values(args: Sequence[str], options: Sequence[str]) -> list[str]:
    """Join the values following a list option (up to the next ``-`` token) into one comma-separated token.

    Nothing after ``--`` is touched. ``--opt=a`` keeps its single value.

    Example:
        >>> join_list_values(["ds", "out", "participant", "--participant-label", "01", "02", "-q"],
        ...                  ["--participant-label"])
        ['ds', 'out', 'participant', '--participant-label', '01,02', '-q']
    """
    out: list[str] = []
    collecting = False
    for n, tok in enumerate(args):
        if tok == "--":
            return out + list(args[n:])
        if collecting and not tok.startswith("-"):
            if out[-1] in options:
                out.append(tok)
            else:
                out[-1] += "," + tok
            continue
        collecting = tok in options
        out.append(tok)
    return out


#: ``-h`` as well as ``--help`` on every command (the root's context settings are inherited).
def choices(table: tuple[str, ...]) -> Any:
    """The type of an option that takes one value of ``table``: Typer offers exactly those (a ``click.Choice``).

    The option sets are defined once (:mod:`mrisr.options`); the command line reads them from there instead of
    spelling them out again as ``Literal[...]``.

    Example:
        >>> choices(("mean", "median"))
        typing.Literal['mean', 'median']
    """
    return Literal[table]  # Literal[("a", "b")] is Literal["a", "b"]


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


@contextmanager
def plain_help(*objects: Any) -> Iterator[None]:
    """Show help texts as typed while rich renders them, then restore them.

    Typer renders help with rich markup, which eats square brackets
    (``pip install "mrisr[qc]"`` would print as ``pip install "mrisr"``):
    the ``help`` of each command and parameter given is escaped meanwhile.
    Flags also lose the ``<bool>`` type Typer would show for them.

    Example:
        >>> from types import SimpleNamespace
        >>> opt = SimpleNamespace(is_flag=True, metavar=None, help='needs "mrisr[qc]"')
        >>> with plain_help(opt):
        ...     print(opt.help, repr(opt.metavar))
        needs "mrisr\\[qc]" ''

        >>> opt.help, opt.metavar
        ('needs "mrisr[qc]"', None)
    """
    from rich.markup import escape

    saved: list[tuple[Any, str, Any]] = []
    for obj in objects:
        for attr in ("help", "short_help"):
            value = getattr(obj, attr, None)
            if isinstance(value, str):
                saved.append((obj, attr, value))
                setattr(obj, attr, escape(value))
        if getattr(obj, "is_flag", False) and getattr(obj, "metavar", "") is None:
            saved.append((obj, "metavar", None))
            obj.metavar = ""
    try:
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


class MrisrCommand(TyperCommand):
    """A Typer command whose help prints brackets as typed and flags without ``<bool>``."""

    def format_help(self, ctx: Any, formatter: Any) -> None:  # noqa: D102
        with plain_help(self, *self.get_params(ctx)):
            return super().format_help(ctx, formatter)


class PlainHelpGroup(TyperGroup):
    """A Typer group whose command list prints the commands' help as typed (the ``mrisr`` group's base)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:  # noqa: D102
        with plain_help(self, *self.get_params(ctx), *self.commands.values()):
            return super().format_help(ctx, formatter)


class MultiValueCommand(MrisrCommand):
    """A Typer command whose ``--spacing``/``--factor`` take 1 or 3 numbers."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # noqa: D102
        return super().parse_args(ctx, join_multi_values(args))


def parse_numbers(text: str | None, option: str) -> tuple[float, ...] | None:
    """Split ``"1"``, ``"1,1,3"``, ``"1x1x3"`` or ``"1 1 3"`` into numbers.

    Range checks are left to :func:`mrisr.geometry.grid.parse_spacing`.

    Raises:
        mrisr.errors.MrisrError: for a token that is not a number or a wrong count.

    Example:
        >>> parse_numbers("1x1x3", "--spacing")
        (1.0, 1.0, 3.0)
        >>> parse_numbers(None, "--spacing") is None
        True
    """
    from mrisr.errors import MrisrError

    if text is None:
        return None
    parts = [p for p in re.split(r"[,\sxX]+", text.strip()) if p]
    values = []
    for p in parts:
        try:
            values.append(float(p))
        except ValueError:
            raise MrisrError(f"{option} takes 1 or 3 numbers (e.g. 1, or 1 1 3), got {text!r}") from None
    if len(values) not in (1, 3):
        raise MrisrError(f"{option} takes 1 or 3 numbers (e.g. 1, or 1 1 3), got {len(values)}: {text!r}")
    return tuple(values)


def err_console() -> Any:
    """A rich console on stderr (created per call: tests swap ``sys.stderr``)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(message: str, console: Any = None) -> None:
    """Print one ``mrisr: error: ...`` line on stderr (no markup interpreted)."""
    line = "mrisr: error: " + " ".join(str(message).split())
    if console is None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    else:
        console.print(line, style="bold red", markup=False, highlight=False, soft_wrap=True)


def print_warning(message: str, console: Any = None) -> None:
    """Print one ``mrisr: warning: ...`` line on stderr."""
    line = "mrisr: warning: " + " ".join(str(message).split())
    if console is None:
        sys.stderr.write(line + "\n")
    else:
        console.print(line, style="yellow", markup=False, highlight=False, soft_wrap=True)


def usage_error(message: str, console: Any = None) -> typer.Exit:
    """Print ``message`` as an error and return the exit-2 exception to raise.

    Example:
        >>> usage_error("bad").exit_code   # prints "mrisr: error: bad" on stderr
        2
    """
    print_error(message, console)
    return typer.Exit(code=EXIT_USAGE)


#: Signals that stop a run like Ctrl-C: SIGTERM (``kill``, ``timeout``, SLURM) and SIGHUP (terminal closed).
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when a stop signal arrives (a KeyboardInterrupt, so every
    ``finally`` runs and the writer removes its temporary file, and no input is marked failed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_signals() -> Iterator[dict[str, int]]:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`Terminated` for the duration of a command.

    Yields a dict that gets ``"signum"`` once a signal arrived. Only the first
    signal raises: later ones (a second Ctrl-C, SLURM's repeated SIGTERM) are
    noted and ignored, so the clean-up already under way (removing the
    temporary file) is not cut short. The previous handlers are restored on
    exit. Outside the main thread (signals cannot be caught there) it does nothing.
    """
    got: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum: int, frame: Any) -> None:
        if "signum" in got:
            return
        got["signum"] = signum
        raise Terminated(signum)

    previous = {}
    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield got
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def interrupted_exit(got: dict[str, int], code: int) -> int:
    """Report a stop by signal on stderr; the exit code is 128 + the signal's number.

    ``code`` 130 without a caught signal (a KeyboardInterrupt raised some
    other way) is reported as SIGINT.
    """
    signum = got.get("signum", signal.SIGINT if code == 130 else None)
    if signum is None:
        return code
    name = signal.Signals(signum).name
    print_error(f"interrupted by {name}: the run stopped; outputs finished before it are kept, the input in "
                "progress left no output (and no temporary file)")
    return 128 + int(signum)


def report_click_error(exc: Any) -> int:
    """Print a usage error raised by Typer / Click itself as one line; return its exit code.

    Unknown options, bad option values, missing arguments: the same one-line
    ``mrisr: error: ...`` as mrisr's own usage errors, with a pointer to the
    command's ``--help`` (exit 2). A bare ``mrisr`` (help already shown) keeps
    its exit code and prints nothing more.

    Example:
        >>> from typer.exceptions import TyperException
        >>> report_click_error(TyperException("bad"))   # prints "mrisr: error: bad" on stderr
        1
    """
    code = int(getattr(exc, "exit_code", EXIT_USAGE))
    if type(exc).__name__ == "NoArgsIsHelpError":
        return code
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and code == EXIT_USAGE:
        message = f"{message} (see '{ctx.command_path} --help')"
    print_error(message)
    return code


def print_json(obj: Any) -> None:
    """Write one JSON record as a single line on stdout and flush it."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()
