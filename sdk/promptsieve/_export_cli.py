"""``promptsieve export``: build every proxy artifact once (needs ``promptsieve[export]``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["export_command"]


def export_command(
    out: Annotated[
        Path | None,
        typer.Option(
            help="folder to build into (then set PROMPTSIEVE_PROXY_DIR to it); "
            "default: the export cache"
        ),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option(help="build only this artifact (repeatable)")
    ] = None,
    fp16: Annotated[bool, typer.Option(help="float16 graphs (for GPU runtimes)")] = False,
    scorer_int8: Annotated[
        bool, typer.Option(help="int8-quantised scorer graph (CPU, opt-in)")
    ] = False,
) -> None:
    """Build the proxy artifacts (ONNX graphs) so that a torch-free install can run them."""
    from promptsieve._errors import ConfigError
    from promptsieve.proxy._artifacts import ARTIFACTS, export_all
    from promptsieve.proxy._export import PROXY_DIR_ENV
    from promptsieve.proxy._runtime import ProxyConfig

    # The folder being built is not read as a prebuilt one (it may not exist yet).
    saved = os.environ.pop(PROXY_DIR_ENV, None)
    try:
        try:
            config = ProxyConfig(fp16=fp16, scorer_int8=scorer_int8)
        finally:
            if saved is not None:
                os.environ[PROXY_DIR_ENV] = saved
        names = ", ".join(a.name for a in ARTIFACTS if not only or a.name in only)
        if names:  # an unknown name is refused by export_all, below
            typer.echo(f"building: {names}", err=True)
        done = export_all(out, config, only=only)
    except ConfigError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    for b in done:
        state = "built" if b.built else "present"
        typer.echo(f"{b.name:10s} {state:8s} {b.seconds:6.1f} s  {b.folder}")
    if out is not None:
        typer.echo(f"run with: export {PROXY_DIR_ENV}={out.expanduser().resolve()}", err=True)
