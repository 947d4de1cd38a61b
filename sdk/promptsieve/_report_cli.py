"""``promptsieve report``: the savings report as one HTML page (``promptsieve[report]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["report_command"]


def report_command(
    html: Annotated[Path, typer.Option(help="write the HTML page here")],
    store: Annotated[
        str,
        typer.Option(
            help="SQLite verdict store file (with its savings ledger), 'default', or redis://URL"
        ),
    ] = "default",
    savings: Annotated[
        str | None,
        typer.Option(help="savings ledger: a SQLite file or redis://URL (default: --store)"),
    ] = None,
    redis_prefix: Annotated[str, typer.Option(help="key prefix of a Redis store")] = "promptsieve:",
    prices: Annotated[
        Path | None,
        typer.Option(help='price table JSON: {"usd_per_million_input_tokens": {model: USD}}'),
    ] = None,
    price_as: Annotated[
        str | None, typer.Option(help="price models missing from the table as this model")
    ] = None,
    price_per_million: Annotated[
        float | None, typer.Option(help="USD per million input tokens for models not in a table")
    ] = None,
) -> None:
    """Write the savings report: verdicts, agreement, tokens and money saved, break-even."""
    from promptsieve._errors import ConfigError, StoreError
    from promptsieve._report import load_prices, read_report, render_html
    from promptsieve.fidelity._sqlite_store import check_store_location, is_redis_url

    path: Path | str
    try:
        for flag, value in (("--store", store), ("--savings", savings)):
            check_store_location(flag, value, redis=True)  # never echoes a URL's password
        if is_redis_url(store):
            path = store
        elif store == "default":
            from promptsieve.fidelity.store import default_store_path

            path = default_store_path()  # ConfigError: $PROMPTSIEVE_CACHE_DIR is not a folder
        else:
            path = Path(store).expanduser()
        table = load_prices(prices, price_as=price_as, flat=price_per_million)
        ledger = savings
        if ledger is not None and not is_redis_url(ledger):
            ledger = str(Path(ledger).expanduser())
        data = read_report(path, table, savings=ledger, redis_prefix=redis_prefix)
        page = render_html(data)
    except (ConfigError, StoreError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        html.write_text(page, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"Error: cannot write {html}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"wrote {html}: {len(data.tasks)} tasks, {data.total('tokens_saved'):,} tokens saved, "
        f"{data.total('screening_tokens'):,} spent screening"
    )
