"""One ``Error:`` line for the errors click finds while parsing a command line.

A missing file, a bad option value, an unknown option or subcommand: click (through Typer)
prints a usage block or a boxed panel for these. promptsieve's commands print every other bad
input as one ``Error: ...`` line on stderr with exit status 2, so these do the same, with a
hint naming the command's ``--help``. Used by the ``promptsieve`` group and by the
subcommands that run their own Typer app (``clean``, ``demo``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

__all__ = ["OneLineCommand", "OneLineGroup"]

#: click's ``ClickException``, wherever this Typer takes click from (newer Typers vendor click).
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


class _OneLineErrors:
    """``main`` runs the command without click's standalone error printing and prints a
    usage error as one line instead; help, ``typer.Exit`` codes and Ctrl-C are unchanged."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        run = super().main  # type: ignore[misc]
        extra["windows_expand_args"] = windows_expand_args
        if not standalone_mode:
            return run(args, prog_name, complete_var, False, **extra)
        try:
            rv = run(args, prog_name, complete_var, False, **extra)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        except _CLICK_ERROR as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # nothing asked: the help, as before
                return run(args, prog_name, complete_var, True, **extra)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
            typer.echo(f"Error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        sys.exit(rv if isinstance(rv, int) else 0)


class OneLineGroup(_OneLineErrors, TyperGroup):
    """A Typer group (``typer.Typer(cls=OneLineGroup)``) whose usage errors are one line."""


class OneLineCommand(_OneLineErrors, TyperCommand):
    """A single Typer command (``app.command(cls=OneLineCommand)``) whose usage errors are
    one line."""
