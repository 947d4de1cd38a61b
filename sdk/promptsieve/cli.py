"""The ``promptsieve`` command line: compress, explain, screen, demo, bench."""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from promptsieve._cli_errors import OneLineGroup
from promptsieve._export_cli import export_command
from promptsieve._report_cli import report_command

if TYPE_CHECKING:
    from promptsieve.compressor import Compressor

app = typer.Typer(
    name="promptsieve",
    help="Compress LLM prompts where a fidelity test against the target has passed.",
    no_args_is_help=True,
    add_completion=False,
    cls=OneLineGroup,
)


def _read_text(path: Path) -> str:
    """The file's (or stdin's, for '-') bytes decoded as UTF-8; a clear error otherwise."""
    stdin = str(path) == "-"
    try:
        data = sys.stdin.buffer.read() if stdin else path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from exc
    name = "stdin" if stdin else str(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise typer.BadParameter(
            f"{name} is not UTF-8 text "
            f"(byte {exc.start}: {data[exc.start : exc.start + 1]!r}); "
            "convert it first, e.g. iconv -t UTF-8"
        ) from exc
    if (nul := text.find("\0")) >= 0:  # valid UTF-8, but no prompt: binary, or UTF-16
        raise typer.BadParameter(
            f"{name} is binary or UTF-16, not UTF-8 text (NUL at character {nul}); "
            "UTF-16 converts with iconv -f UTF-16 -t UTF-8"
        )
    return text


@contextmanager
def _bad_input() -> Iterator[None]:
    """A ConfigError inside (bad settings, a proxy folder without artifacts, a cache path
    that is not a folder, a question that is not valid Unicode, ...) becomes one ``Error:``
    line on stderr and exit status 2."""
    from promptsieve._errors import ConfigError

    try:
        yield
    except ConfigError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None


def _compressor(scorer: str | None, *, reorder: bool = False) -> Compressor:
    """A Compressor for ``scorer`` with its proxy loaded; bad configuration (construction or
    while the proxy loads) is one ``Error:`` line and exit 2."""
    from promptsieve.compressor import Compressor, CompressorConfig

    with _bad_input():
        comp = Compressor(CompressorConfig(scorer=scorer, reorder=reorder))  # type: ignore[arg-type]
        comp.proxy  # noqa: B018 - loads now, so a missing or broken proxy is reported here
        return comp


def _prompt(file: Path, what: str) -> str:
    """The prompt file's text; a file with no text is bad input (exit 2) where there is
    nothing to report on (``explain``)."""
    text = _read_text(file)
    if not text.strip():
        name = "stdin" if str(file) == "-" else str(file)
        typer.echo(f"Error: {name} holds no text to {what}", err=True)
        raise typer.Exit(2)
    return text


def _question(question: str | None) -> str | None:
    """``--question`` as given; bytes that are not UTF-8 (they arrive from argv as
    surrogateescape characters) are bad input (exit 2), before the proxy loads."""
    if question is not None:
        from promptsieve._errors import ConfigError
        from promptsieve.segment import check_text

        try:
            check_text(question, "--question")
        except ConfigError as exc:  # without the library's advice on decoding a source
            typer.echo(f"Error: {str(exc).partition(';')[0]}", err=True)
            raise typer.Exit(2) from None
    return question


def _ratio(value: float) -> float:
    if not 0 < value <= 1:
        raise typer.BadParameter(f"ratio must be in (0, 1], got {value}")
    return value


@app.command()
def compress(
    file: Annotated[Path, typer.Argument(help="UTF-8 text file holding the prompt ('-' = stdin)")],
    ratio: Annotated[
        float, typer.Option(callback=_ratio, help="share of compressible tokens kept")
    ] = 0.5,
    question: Annotated[
        str | None, typer.Option(help="the question the prompt must answer")
    ] = None,
    scorer: Annotated[
        str | None,
        typer.Option(
            help="head | attribution | sentence | relevance; default: the SDK's default "
            "(sentence + coarse-to-fine, head on few-shot demonstrations)"
        ),
    ] = None,
    reorder: Annotated[
        bool,
        typer.Option(
            help="put the kept passages most relevant first, the question's passage and "
            "what follows it in place (LongLLMLingua's reordering; default and relevance "
            "scorers; needs a question)"
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON report")] = False,
) -> None:
    """Compress a prompt file and print the shorter prompt."""
    if reorder and scorer in ("head", "attribution", "sentence"):
        raise typer.BadParameter(
            f"--reorder works with the default scorer or --scorer relevance, not {scorer}"
        )
    text = _read_text(file)  # empty text compresses to itself (exit 0), as in the library
    question = _question(question)
    comp = _compressor(scorer, reorder=reorder)
    with _bad_input():
        result = comp.compress(text, ratio=ratio, question=question)
    if as_json:
        report = {
            "text": result.text,
            "tokens_before": result.tokens_before,
            "tokens_after": result.tokens_after,
            "ratio": round(result.ratio, 4),
            "scorer": result.scorer,
            "provider": comp.proxy.provider,
            "timings_ms": {k: round(v * 1000, 2) for k, v in result.timings.items()},
            "dropped": [{"text": s.text, "score": round(s.score, 4)} for s in result.dropped],
        }
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    typer.echo(result.text, nl=not result.text.endswith("\n"))  # the text as it was ended
    typer.echo(
        f"-- {result.tokens_before} -> {result.tokens_after} tokens "
        f"({result.ratio:.0%}), {result.timings['total'] * 1000:.0f} ms",
        err=True,
    )


@app.command()
def explain(
    file: Annotated[Path, typer.Argument(help="UTF-8 text file holding the prompt")],
    question: Annotated[
        str | None, typer.Option(help="the question the prompt must answer")
    ] = None,
    scorer: Annotated[
        str, typer.Option(help="head | attribution | sentence | relevance")
    ] = "relevance",
    ratio: Annotated[
        float, typer.Option(help="keep ratio whose decisions the heat map shows", callback=_ratio)
    ] = 0.5,
    html: Annotated[Path | None, typer.Option(help="write an HTML heat map here")] = None,
) -> None:
    """Show what the proxy finds important; --html: passage, sentence and token decisions."""
    from promptsieve._heatmap import render_decisions_html
    from promptsieve._paths import unwritable

    if scorer not in ("head", "attribution", "sentence", "relevance"):
        raise typer.BadParameter("scorer must be 'head', 'attribution', 'sentence' or 'relevance'")
    if html is not None and (problem := unwritable(html, "--html")) is not None:
        typer.echo(f"Error: {problem}", err=True)  # before minutes of scoring, not after
        raise typer.Exit(2)
    text = _prompt(file, "explain")
    question = _question(question)
    comp = _compressor(scorer)
    if html is not None:
        with _bad_input():
            expl = comp.explain_decisions(text, question=question, ratio=ratio)
        try:
            html.write_text(render_decisions_html(expl, title=file.name), encoding="utf-8")
        except OSError as exc:
            typer.echo(f"Error: cannot write {html}: {exc.strerror}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(f"wrote {html}")
        return
    with _bad_input():
        scores = comp.explain(text, question=question)
    # the 20 most important words: the segmenter's units (CJK words too), each scored as the
    # compressor scores a unit, the mean of its proxy tokens (TokenScores.unit_scores)
    from promptsieve.segment import segment

    seg = segment(scores.text)
    if seg.text == scores.text:
        spans = [(u.start, u.end) for u in seg.units]
    else:  # pragma: no cover - the segmenter keeps text it has segmented once
        spans = [m.span() for m in re.finditer(r"\S+", scores.text)]
    per_word = scores.unit_scores(spans)
    for i in per_word.argsort(kind="stable")[::-1][:20]:
        s, e = spans[i]
        typer.echo(f"{per_word[i]:+.4f}  {scores.text[s:e]!r}")


# `promptsieve screen`: its options and glue live beside offline screening.
from promptsieve.fidelity._screen_cli import screen_command  # noqa: E402

app.command("screen")(screen_command)


# -- optional subcommands ----------------------------------------------------------------------
#: Subcommands that need an optional extra, imported only when run:
#: name -> ("module:function", extra, help). ``function(argv)`` parses its own options
#: (``--help`` included). Add a subcommand with one line here.
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": (
        "promptsieve_openai._demo:main",
        "openai,local",
        "Start the local target, wrap an OpenAI client, screen a task, print the savings.",
    ),
    "bench": (
        "promptsieve_bench.run:main",
        "bench,local",
        "Benchmark token savings at verified fidelity (options: promptsieve bench --help).",
    ),
    "clean": ("promptsieve._clean_cli:main", "cpu", "Drop negatively attributed demonstrations."),
}


def _add_lazy(name: str, target: str, extra: str, help_text: str) -> None:
    @app.command(
        name,
        help=help_text,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def run(ctx: typer.Context) -> None:
        module, _, attr = target.partition(":")
        try:
            function = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            typer.echo(
                f"Error: 'promptsieve {name}' needs the {extra} extra ({exc.name} is missing): "
                f"pip install 'promptsieve[{extra}]'",
                err=True,
            )
            raise typer.Exit(2) from exc
        function(list(ctx.args))


for _name, (_target, _extra, _help) in LAZY_COMMANDS.items():
    _add_lazy(_name, _target, _extra, _help)


# Subcommands that live in their own modules (one line each).
app.command("export")(export_command)
app.command("report")(report_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
