"""The savings report: one HTML page from a verdict store and its savings ledger.

``promptsieve report --html out.html --store FILE`` (``pip install 'promptsieve[report]'``)
reads the SQLite verdict store (states, ratios, comparison counts, noise-floor counts) and
the savings ledger kept in the same file by :class:`~promptsieve.savings.SavingsLedger`
(per hour: requests, tokens before/after, screening calls and tokens). No prompt or answer
text is read, because none is stored.

Per task (task name × target model) it shows the verdict state and ratio; the comparisons,
the agreement at the ratio in focus with its Wilson 95 % interval (``scipy.stats.binomtest(
...).proportion_ci(method="wilson")``) next to the store's anytime-valid bounds; the noise
floor once measured; tokens saved; the money at a price table (USD per million input
tokens); the screening cost and the break-even point; and a plot of cumulative net savings
over time (matplotlib, inlined as SVG). The page is rendered with a Jinja2 template with
autoescaping on.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import math
import numbers
import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptsieve._errors import ConfigError, StoreError, missing_extra
from promptsieve.savings import LedgerRow, _sqlite_file, read_ledger

__all__ = ["Prices", "ReportData", "TaskSummary", "load_prices", "read_report", "render_html"]


@dataclass(frozen=True)
class Prices:
    """USD per million input tokens by model; ``fallback`` for models not in the table."""

    usd_per_million: Mapping[str, float] = field(default_factory=dict)
    fallback: float | None = None
    as_of: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        """ConfigError for a price that is not a finite number >= 0 (a negative or NaN
        price would turn every money figure of the report into nonsense)."""
        if not isinstance(self.usd_per_million, Mapping):
            raise ConfigError(
                f"prices must map model names to USD per million input tokens, got "
                f"{type(self.usd_per_million).__name__}"
            )
        for model, usd in self.usd_per_million.items():
            _check_price(usd, f"the price of {model!r}")
        if self.fallback is not None:
            _check_price(self.fallback, "the fallback price")

    def price(self, model: str) -> float | None:
        if model in self.usd_per_million:
            return float(self.usd_per_million[model])
        return self.fallback


def _check_price(usd: object, what: str) -> None:
    """ConfigError unless ``usd`` is a finite real number >= 0 (int, float, Decimal,
    Fraction; not a bool or a string)."""
    try:
        ok = (
            not isinstance(usd, bool)
            and isinstance(usd, numbers.Real | decimal.Decimal)
            and math.isfinite(float(usd))
            and float(usd) >= 0
        )
    except (OverflowError, ValueError):  # an int past float's range
        ok = False
    if not ok:
        raise ConfigError(
            f"{what} must be a finite number >= 0 (USD per million input tokens), got {usd!r}"
        )


def load_prices(
    path: Path | None = None, *, price_as: str | None = None, flat: float | None = None
) -> Prices:
    """A price table from a JSON file (``{"usd_per_million_input_tokens": {model: usd}}``,
    the format of ``benchmarks/prices.json``); models missing from it are priced as
    ``price_as`` (a model of the table) or at ``flat`` USD per million tokens.

    Raises :class:`ConfigError` for an unreadable file, a bad table or an unknown ``price_as``.
    """
    table: dict[str, float] = {}
    as_of = None
    if path is not None:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            table = {str(k): float(v) for k, v in raw["usd_per_million_input_tokens"].items()}
            as_of = raw.get("as_of")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"cannot read the price table {path}: expected JSON with "
                f'"usd_per_million_input_tokens": {{model: USD}} ({type(exc).__name__}: {exc})'
            ) from exc
    fallback = flat
    if price_as is not None:
        if price_as not in table:
            raise ConfigError(f"--price-as {price_as!r} is not in the price table {sorted(table)}")
        fallback = table[price_as]
    if fallback is not None and (not math.isfinite(fallback) or fallback < 0):
        raise ConfigError(f"a price must be a non-negative number, got {fallback}")
    source = str(path) if path is not None else ""
    if price_as is not None:
        source += f" (other models priced as {price_as})"
    elif flat is not None:
        source += f" (other models at {flat:g} USD per million tokens)"
    try:
        return Prices(table, fallback, as_of, source.strip())
    except ConfigError as exc:  # a negative or NaN price in the file
        raise ConfigError(f"bad price table {path}: {exc}") from None


@dataclass
class TaskSummary:
    """One row of the report: a task on a target model (its newest verdict)."""

    task: str
    target_model: str
    state: str = "none"
    ratio: float | None = None  # applied ratio (passed) or best so far
    testing: float | None = None
    focus: float | None = None  # the ratio the agreement figures are about
    comparisons: int = 0  # all paired comparisons in the current generation
    agree: int = 0  # at ``focus``
    n: int = 0  # at ``focus``
    ci: tuple[float, float] | None = None  # Wilson 95 % of agree / n
    cs: tuple[float | None, float | None] = (None, None)  # the store's anytime-valid bounds
    monitor: tuple[int, int] = (0, 0)  # (agree, n) of monitoring
    noise: tuple[int, int] | None = None  # (agree, n) of noise-floor comparisons
    noise_ci: tuple[float, float] | None = None
    verdicts: int = 0  # verdicts on record for this task and model (proxy/settings variants)
    requests: int = 0
    compressed: int = 0
    tokens_before: int = 0
    tokens_after: int = 0
    screening_calls: int = 0
    screening_tokens: int = 0
    price: float | None = None  # USD per million input tokens
    break_even: str = ""

    @property
    def tokens_saved(self) -> int:
        return self.tokens_before - self.tokens_after

    @property
    def net_saved(self) -> int:
        return self.tokens_saved - self.screening_tokens

    @property
    def rate(self) -> float | None:
        return self.agree / self.n if self.n else None

    def usd(self, tokens: int) -> float | None:
        return None if self.price is None else tokens * self.price / 1e6


@dataclass
class ReportData:
    """Everything the page shows, read from one store file."""

    store: str  # the file or URL read
    tasks: list[TaskSummary]
    ledger: list[LedgerRow]
    prices: Prices
    generated: dt.datetime

    def total(self, name: str) -> int:
        return sum(int(getattr(t, name)) for t in self.tasks)

    def total_usd(self, name: str) -> float | None:
        vals = [t.usd(int(getattr(t, name))) for t in self.tasks]
        known = [v for v in vals if v is not None]
        return sum(known) if known else None

    def states(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for t in self.tasks:
            out[t.state] += 1
        return dict(out)


def _wilson(agree: int, n: int) -> tuple[float, float] | None:
    if n <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(agree, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _read_verdicts(path: Path) -> list[dict[str, Any]]:
    """Raw verdict rows with their current generation's counters (no prompt text exists)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise StoreError(f"verdict store {path}: {exc}") from exc
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "verdicts" not in tables:
            return []
        rows = []
        for vid, task, model, gen, meta in conn.execute(
            "SELECT id, task, target_model, generation, meta FROM verdicts"
        ):
            counters: dict[str, tuple[int, int]] = {}
            if "counts" in tables:
                for slot, n, agree in conn.execute(
                    "SELECT slot, n, agree FROM counts WHERE id = ? AND generation = ?", (vid, gen)
                ):
                    counters[str(slot)] = (int(n), int(agree))
            rows.append(
                {"task": task, "model": model, "meta": json.loads(meta), "counters": counters}
            )
        return rows
    except (sqlite3.Error, TypeError, ValueError) as exc:
        raise StoreError(f"verdict store {path}: {exc}") from exc
    finally:
        conn.close()


def _ratio_of(slot: str) -> float | None:
    try:
        return round(float(slot[1:]), 6)
    except ValueError:
        return None


def _apply_verdict(t: TaskSummary, meta: Mapping[str, Any], counters: Mapping[str, Any]) -> None:
    t.state = str(meta.get("state") or "unscreened")
    t.ratio = meta.get("ratio")
    t.testing = meta.get("testing")
    t.cs = (meta.get("lower"), meta.get("upper"))
    screening: dict[float, tuple[int, int]] = {}
    for slot, (n, agree) in counters.items():
        r = _ratio_of(slot)
        if slot.startswith("s") and r is not None:
            screening[r] = (n, agree)
        elif slot.startswith("m") and r is not None:
            if t.ratio is not None and round(float(t.ratio), 6) == r:
                t.monitor = (agree, n)
        elif slot == "n":
            t.noise = (agree, n)
    t.comparisons = sum(n for n, _ in screening.values()) + t.monitor[1]
    focus = t.testing if t.testing is not None else t.ratio
    if focus is None and screening:
        focus = min(screening)  # the most aggressive ratio tried
    t.focus = focus
    if focus is not None:
        n, agree = screening.get(round(float(focus), 6), (0, 0))
        t.n, t.agree = n, agree
        t.ci = _wilson(agree, n)
    if t.noise is not None:
        t.noise_ci = _wilson(*t.noise)


def _break_even(t: TaskSummary, rows: Sequence[LedgerRow]) -> str:
    if t.screening_tokens == 0:
        return "no screening cost recorded"
    saved = spent = 0
    for r in rows:
        saved += r.tokens_saved
        spent += r.screening_tokens
        if spent and saved >= spent:
            when = dt.datetime.fromtimestamp(r.bucket, tz=dt.timezone.utc)
            return f"paid back by {when:%Y-%m-%d %H:%M} UTC"
    if t.compressed == 0 or t.tokens_saved <= 0:
        return "not yet: no compressed request so far"
    per_request = t.tokens_saved / t.compressed
    more = math.ceil((t.screening_tokens - t.tokens_saved) / per_request)
    return f"after about {more} more compressed requests ({per_request:.0f} tokens saved each)"


def _redis_verdicts(url: str, prefix: str) -> list[dict[str, Any]]:
    """Verdict rows of a Redis store through its public listing (states, ratios, bounds;
    the listing carries no counts, so comparisons and agreement stay empty)."""
    from promptsieve.fidelity.store import RedisStore

    store = RedisStore(url, prefix=prefix)
    try:
        rows = []
        for sv in store.verdicts():
            v = sv.verdict
            meta = {"state": v.state.value, "ratio": v.ratio, "testing": v.testing,
                    "lower": v.lower, "upper": v.upper, "updated_at": v.updated_at}  # fmt: skip
            rows.append({"task": sv.task, "model": sv.target_model, "meta": meta, "counters": {}})
        return rows
    finally:
        store.close()


def read_report(
    store: Path | str,
    prices: Prices | None = None,
    *,
    savings: Path | str | None = None,
    redis_prefix: str = "promptsieve:",
) -> ReportData:
    """Gather the report's figures from a verdict store and a savings ledger.

    ``store``: a SQLite store file, or a ``redis://`` URL (states, ratios and bounds; the
    listing carries no counts, so comparisons and agreement are not shown). The ledger is read
    from the same place unless ``savings`` names another file or URL.

    Raises :class:`StoreError` when a file is missing or a store unreadable.
    """
    prices = prices or Prices()
    ledger_path: Path | str
    if isinstance(store, str) and store.startswith(("redis://", "rediss://", "unix://")):
        verdict_rows = _redis_verdicts(store, redis_prefix)
        ledger_path = store if savings is None else savings
    else:
        where = _sqlite_file(store)
        verdict_rows = _read_verdicts(where)
        ledger_path = where if savings is None else savings
    tasks: dict[tuple[str, str], TaskSummary] = {}
    newest: dict[tuple[str, str], float] = {}
    for row in verdict_rows:
        key = (row["task"], row["model"])
        t = tasks.setdefault(key, TaskSummary(*key))
        t.verdicts += 1
        try:  # a row written by something else, or gone bad: a clear StoreError, no traceback
            updated = float(row["meta"].get("updated_at") or 0.0)
            if updated >= newest.get(key, -1.0):
                newest[key] = updated
                _apply_verdict(t, row["meta"], row["counters"])
        except (AttributeError, TypeError, ValueError) as exc:
            raise StoreError(
                f"verdict store {store}: a corrupt verdict row (task {key[0]!r}, "
                f"model {key[1]!r}): {type(exc).__name__}: {exc}"
            ) from exc
    ledger = read_ledger(ledger_path, redis_prefix=redis_prefix)
    by_task: dict[tuple[str, str], list[LedgerRow]] = defaultdict(list)
    for r in ledger:
        by_task[(r.task, r.target_model)].append(r)
    for key, rows in by_task.items():
        t = tasks.setdefault(key, TaskSummary(*key))
        for r in rows:
            t.requests += r.requests
            t.compressed += r.compressed
            t.tokens_before += r.tokens_before
            t.tokens_after += r.tokens_after
            t.screening_calls += r.screening_calls
            t.screening_tokens += r.screening_tokens
    for key, t in tasks.items():
        t.price = prices.price(t.target_model)
        t.break_even = _break_even(t, by_task.get(key, []))
    ordered = sorted(tasks.values(), key=lambda t: (-t.net_saved, t.task, t.target_model))
    return ReportData(str(store), ordered, ledger, prices, dt.datetime.now(dt.timezone.utc))


def _plot_svg(data: ReportData, top: int = 6) -> str:
    """Cumulative net tokens saved (saved − screening) over time: all tasks, and the top ones."""
    if not data.ledger:
        return ""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    buckets = sorted({r.bucket for r in data.ledger})
    names = [(t.task, t.target_model) for t in data.tasks if t.requests or t.screening_tokens]
    shown = names[:top]
    per: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    total: dict[int, int] = defaultdict(int)
    for r in data.ledger:
        net = r.tokens_saved - r.screening_tokens
        per[(r.task, r.target_model)][r.bucket] += net
        total[r.bucket] += net
    times: Any = [dt.datetime.fromtimestamp(b, tz=dt.timezone.utc) for b in buckets]
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "promptsieve"}):
        fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
        try:

            def cumulative(series: Mapping[int, int]) -> list[int]:
                acc, out = 0, []
                for b in buckets:
                    acc += series.get(b, 0)
                    out.append(acc)
                return out

            ax.plot(times, cumulative(total), color="black", linewidth=2.2, label="all tasks",
                    marker="o", markersize=3)  # fmt: skip
            for key in shown:
                ax.plot(times, cumulative(per[key]), linewidth=1.2, marker=".",
                        label=f"{key[0] or '(unnamed)'} · {key[1]}")  # fmt: skip
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set_ylabel("net tokens saved (cumulative)")
            ax.set_xlabel("time (UTC)")
            ax.set_title("Savings over time, screening cost subtracted")
            ax.legend(loc="upper left", fontsize=8, frameon=False)
            fig.autofmt_xdate()
            fig.tight_layout()
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata={"Date": None})
        finally:
            plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.find("<svg") :]


#: The page's Jinja2 template, shipped beside this module (package data).
_TEMPLATE = Path(__file__).with_name("_report.html.j2")


def _fmt_int(v: int | None) -> str:
    return "—" if v is None else f"{v:,}"


def _fmt_usd(v: float | None) -> str:
    if v is None:
        return "—"
    sign = "−" if v < 0 else ""
    return f"{sign}${abs(v):,.4f}" if abs(v) < 1 else f"{sign}${abs(v):,.2f}"


def _fmt_pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _fmt_ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:g}"


def render_html(data: ReportData) -> str:
    """The report page as one self-contained HTML string (inline SVG, no scripts).

    Raises :class:`ConfigError` when the ``report`` extra (jinja2, matplotlib) is missing.
    """
    try:
        import jinja2
        import matplotlib  # noqa: F401 - checked here so the message names the extra
    except ImportError as exc:
        raise missing_extra(exc.name or "jinja2", "report") from exc
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(_TEMPLATE.read_text(encoding="utf-8"))
    return template.render(
        data=data,
        svg=_plot_svg(data),
        fmt_int=_fmt_int,
        fmt_usd=_fmt_usd,
        fmt_pct=_fmt_pct,
        fmt_ratio=_fmt_ratio,
    )
