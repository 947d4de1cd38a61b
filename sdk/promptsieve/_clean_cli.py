"""``promptsieve clean``: remove demonstrations that the LM proxy attributes negatively."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from promptsieve._paths import unwritable

__all__ = ["clean_command"]


def clean_command(
    demos: Annotated[Path, typer.Argument(help="demonstrations, JSONL: {input, output} a line")],
    validation: Annotated[
        Path,
        typer.Option(
            "--validation", help="validation requests, JSONL: {input, answer} (gold answers)"
        ),
    ],
    out: Annotated[
        Path | None, typer.Option(help="write the kept demonstrations here (JSONL)")
    ] = None,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="write the report as an HTML table here")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    header: Annotated[str, typer.Option(help="instruction text before the demonstrations")] = "",
    demo_template: Annotated[
        str, typer.Option(help="layout of one demonstration ({input}, {output})")
    ] = "Q: {input}\nA: {output}\n\n",
    query_template: Annotated[
        str, typer.Option(help="layout of the request ({input})")
    ] = "Q: {input}\nA:",
    chat: Annotated[
        bool, typer.Option(help="score inside the proxy's chat template (instruct targets)")
    ] = True,
    method: Annotated[str, typer.Option(help="auto | exact | kernel")] = "auto",
    pairs: Annotated[
        bool,
        typer.Option(
            help="demonstrations as user/assistant message pairs, as a chat client sends them "
            "(needs --chat; --header then ends the system message)"
        ),
    ] = False,
    samples: Annotated[int, typer.Option(help="Kernel SHAP coalitions")] = 1000,
    margin: Annotated[
        float, typer.Option(help="remove only values below -margin (nats, finite, >= 0)")
    ] = 0.0,
    max_validation: Annotated[int, typer.Option(help="validation requests used")] = 8,
    int8: Annotated[bool, typer.Option(help="int8 weights for the LM proxy (CPU)")] = False,
) -> None:
    """Rank demonstrations by Kernel SHAP attribution on the LM proxy; drop the negative ones.

    The value of a set of demonstrations is the proxy's mean log-probability of the
    validation answers; a demonstration with a negative Shapley value lowers it.
    """
    from promptsieve._errors import ConfigError
    from promptsieve.demos import (
        DemoAttributionConfig,
        DemoFormat,
        LMDemoScorer,
        clean_demos,
        load_demonstrations,
        load_validation,
    )
    from promptsieve.proxy.lm import LMProxyConfig

    problems = [
        problem
        for flag, path in (("--out", out), ("--html", html_path))
        if path is not None and (problem := unwritable(path, flag)) is not None
    ]
    if not (math.isfinite(margin) and margin >= 0):
        problems.append(f"--margin must be a finite number >= 0 (nats), got {margin}")
    if problems:  # before minutes of attribution, not after
        typer.echo(f"Error: {problems[0]}", err=True)
        raise typer.Exit(2)
    try:
        ds = load_demonstrations(demos)
        vs = load_validation(validation)
        fmt = DemoFormat(
            header=header, demo=demo_template, query=query_template, chat=chat, pairs=pairs
        )
        cfg = DemoAttributionConfig(
            method=method,  # type: ignore[arg-type]
            samples=samples,
            max_validation=max_validation,
        )
        if not vs:
            raise ConfigError(f"{validation} holds no validation request")
        scorer = LMDemoScorer(config=LMProxyConfig(int8=int8))
        report = clean_demos(ds, vs, fmt=fmt, config=cfg, scorer=scorer, margin=margin)
    except ConfigError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    if out is not None:
        _write(
            out,
            "".join(
                json.dumps({"input": d.input, "output": d.output}, ensure_ascii=False) + "\n"
                for d in report.cleaned
            ),
        )
    if html_path is not None:
        _write(html_path, report.to_html())
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
        return
    typer.echo(f"{'#':>4} {'value':>10}  decision  input")
    for r in report.rows(60):
        decision = "removed" if r["removed"] else "kept"
        text = r["input"].replace("\n", " ")
        typer.echo(f"{r['index']:>4} {r['value']:>+10.4f}  {decision:<8}  {text}")
    a = report.attribution
    typer.echo(
        f"-- {len(report.removed)} of {len(ds)} removed ({a.method}, {a.evaluations} "
        f"coalitions, {a.seconds:.1f} s{', cached' if a.cached else ''})",
        err=True,
    )


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"Error: cannot write {path}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None


def main(argv: list[str] | None = None) -> None:
    """``promptsieve clean`` as the CLI's lazy subcommand table calls it: ``main(argv)``."""
    from promptsieve._cli_errors import OneLineCommand

    app = typer.Typer(add_completion=False)
    app.command(cls=OneLineCommand)(clean_command)
    app(argv, prog_name="promptsieve clean")
