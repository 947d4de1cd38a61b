"""``promptsieve report``: figures from a known store, rendered in real headless Chromium."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from scipy.stats import binomtest
from typer.testing import CliRunner

from _ci import require, require_module
from promptsieve._events import ComparisonEvent, RequestEvent
from promptsieve._report import load_prices, read_report, render_html
from promptsieve.cli import app
from promptsieve.fidelity import Gate, GateConfig, RedisStore, SQLiteStore, VerdictKey
from promptsieve.savings import SavingsLedger, read_ledger
from test_store import redis_url  # noqa: F401 - the session's real redis-server fixture

require_module("jinja2", reason="the report extra (jinja2) is not installed")
require_module("matplotlib", reason="the report extra (matplotlib) is not installed")

PRICES = Path(__file__).resolve().parents[1] / "benchmarks" / "prices.json"
T0 = 1_767_225_600  # 2026-01-01 00:00 UTC
QA = VerdictKey("qa", "gpt-4o-mini", "fp-1", "settings-1")
SUM = VerdictKey("summarize", "gpt-4o", "fp-1", "settings-1")


def _until(gate: Gate, key: VerdictKey, agreed: bool, state: str) -> int:
    """Record comparisons until the verdict reaches ``state``; how many it took."""
    gate.decide(key)
    for n in range(1, 200):
        gate.record(key, 0.5, agreed)
        v = gate.verdict(key)
        if v is not None and v.state.value == state:
            return n
    raise AssertionError(f"{key.task} never reached {state}")


def _known_store(path: Path) -> tuple[int, int]:
    """Two tasks driven through the real gate and ledger: one passes, one fails."""
    store = SQLiteStore(path)
    gate = Gate(store, GateConfig(tau=0.6, delta=0.05, budget=40, ratios=(0.5,), seed=1))
    n_pass = _until(gate, QA, True, "passed")
    for i in range(10):
        gate.record_noise(QA, i != 0)  # 9 of 10 agree
    n_fail = _until(gate, SUM, False, "failed")
    store.close()

    ledger = SavingsLedger(path, bucket_s=3600, flush_interval_s=3600)
    for i in range(10):  # hour 0: qa screening (shadow), 500 screening tokens per comparison
        t = T0 + 60 * i
        ledger.on_request(
            RequestEvent("qa", "gpt-4o-mini", "chat", "shadow", "shadow", 0.5, 1000, 1000, time=t)
        )
        ledger.on_comparison(ComparisonEvent("qa", "gpt-4o-mini", "shadow", 0.5, True, 1, 500,
                                             time=t))  # fmt: skip
    for h in (1, 2):  # hours 1-2: qa applied, 1000 -> 500 tokens
        for i in range(10):
            ledger.on_request(RequestEvent("qa", "gpt-4o-mini", "chat", "apply", "applied", 0.5,
                                           1000, 500, time=T0 + 3600 * h + 60 * i))  # fmt: skip
    for i in range(5):  # summarize: shadow only, 1000 screening tokens each
        t = T0 + 3600 + 60 * i
        ledger.on_request(
            RequestEvent("summarize", "gpt-4o", "chat", "shadow", "shadow", 0.5, 2000, 2000, time=t)
        )
        ledger.on_comparison(
            ComparisonEvent("summarize", "gpt-4o", "shadow", 0.5, False, 1, 1000, time=t)
        )
    ledger.close()
    return n_pass, n_fail


@pytest.fixture()
def known_store(tmp_path: Path) -> tuple[Path, int, int]:
    path = tmp_path / "verdicts.sqlite3"
    return (path, *_known_store(path))


def test_figures_from_a_known_store(known_store: tuple[Path, int, int]) -> None:
    path, n_pass, n_fail = known_store
    data = read_report(path, load_prices(PRICES))
    by = {t.task: t for t in data.tasks}
    qa, sm = by["qa"], by["summarize"]
    assert qa.state == "passed" and qa.ratio == 0.5
    assert sm.state == "failed"
    assert (qa.agree, qa.n) == (n_pass, n_pass)
    assert qa.comparisons == n_pass
    ci = binomtest(n_pass, n_pass).proportion_ci(method="wilson")
    assert qa.ci == pytest.approx((ci.low, ci.high))
    assert qa.noise == (9, 10)
    assert (qa.requests, qa.compressed, qa.tokens_saved) == (30, 20, 10_000)
    assert (qa.screening_calls, qa.screening_tokens, qa.net_saved) == (10, 5_000, 5_000)
    assert qa.usd(qa.tokens_saved) == pytest.approx(10_000 * 0.15 / 1e6)
    assert qa.break_even == "paid back by 2026-01-01 01:00 UTC"
    assert (sm.n, sm.agree) == (n_fail, 0)
    assert sm.net_saved == -5_000
    assert sm.usd(sm.screening_tokens) == pytest.approx(5_000 * 2.5 / 1e6)
    assert sm.break_even.startswith("not yet")
    assert data.total("net_saved") == 0
    assert len(read_ledger(path)) == 4  # (hour, task) rows: counts only


def _chromium() -> str:
    return require(
        shutil.which("chromium") or shutil.which("chromium-browser"),
        "chromium is not installed (scripts/install.sh installs Debian's package)",
    )


def _browser(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=180)


def test_page_renders_in_headless_chromium(
    known_store: tuple[Path, int, int], tmp_path: Path
) -> None:
    exe = _chromium()
    store, n_pass, _ = known_store
    page = tmp_path / "report.html"
    r = CliRunner().invoke(
        app,
        ["report", "--html", str(page), "--store", str(store), "--prices", str(PRICES)],
    )
    assert r.exit_code == 0, r.output
    assert "2 tasks" in r.output

    dom = _browser(exe, tmp_path / "profile-dom", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "promptsieve savings report" in html
    for figure in (
        "10,000",  # qa tokens saved
        f"{n_pass}/{n_pass} = 100.0 %",  # qa agreement at 0.5
        "9/10",  # qa noise floor
        "$0.0015",  # 10,000 tokens at gpt-4o-mini's 0.15 USD / M
        "$0.0125",  # summarize's screening cost at gpt-4o's 2.5 USD / M
        "paid back by 2026-01-01 01:00 UTC",
        "-5,000",  # summarize's net
    ):
        assert figure in html, figure
    assert 'class="l passed"' in html and 'class="l failed"' in html
    assert "<svg" in html and "Savings over time" in html

    shot = tmp_path / "report.png"
    s = _browser(
        exe, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1400,1100",
        page.as_uri(),
    )  # fmt: skip
    assert s.returncode == 0, s.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(str(shot))
    assert img.shape[0] >= 1000 and img.shape[1] >= 1300
    ink = (img[..., :3].mean(axis=2) < 0.6).mean()  # share of dark pixels: text, lines
    assert 0.005 < ink < 0.5, ink


def test_cli_bad_input_is_a_clear_message(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    r = CliRunner().invoke(app, ["report", "--html", str(out), "--store", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no such store file" in r.output
    r = CliRunner().invoke(app, ["report", "--html", str(out), "--store", "redis://127.0.0.1:1/0"])
    assert r.exit_code == 2 and "Redis" in r.output
    bad = tmp_path / "prices.json"
    bad.write_text("{}")
    path = tmp_path / "v.sqlite3"
    SQLiteStore(path).close()
    r = CliRunner().invoke(
        app, ["report", "--html", str(out), "--store", str(path), "--prices", str(bad)]
    )
    assert r.exit_code == 2 and "usd_per_million_input_tokens" in r.output
    assert "Traceback" not in r.output
    assert not out.exists()


@pytest.mark.parametrize("meta", [None, "[]", '{"state": "passed", "ratio": "abc"}'])
def test_cli_store_with_a_corrupt_verdict_row_is_a_clear_message(
    tmp_path: Path, meta: str | None
) -> None:
    """A verdict row whose meta is NULL, not an object, or holds a ratio that is not a
    number (written by something else, or gone bad) printed a traceback."""
    path = tmp_path / "v.sqlite3"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("CREATE TABLE verdicts_loose AS SELECT * FROM verdicts WHERE 0")
        conn.execute("DROP TABLE verdicts")
        conn.execute("ALTER TABLE verdicts_loose RENAME TO verdicts")
        conn.execute("INSERT INTO verdicts VALUES ('v1', 't', 'm', 'p', 0, 1, ?)", (meta,))
    out = tmp_path / "r.html"
    r = CliRunner().invoke(app, ["report", "--html", str(out), "--store", str(path)])
    assert r.exit_code == 2, r.output
    assert "verdict store" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_empty_store_renders(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite3"
    SQLiteStore(path).close()
    html = render_html(read_report(path))
    assert "No savings recorded yet" in html


def test_ledger_sums_across_processes_and_flushes(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite3"
    a, b = SavingsLedger(path, flush_interval_s=3600), SavingsLedger(path, flush_interval_s=0)
    ev = RequestEvent("t", "m", "chat", "apply", "applied", 0.5, 100, 40, time=T0)
    a.on_request(ev)
    b.on_request(ev)  # flushed at once (interval 0)
    assert [r.tokens_saved for r in read_ledger(path)] == [60]
    a.close()
    (row,) = read_ledger(path)
    assert (row.requests, row.compressed, row.tokens_before, row.tokens_after) == (2, 2, 200, 80)


def test_a_busy_ledger_file_never_holds_the_callers_event(tmp_path: Path) -> None:
    """Another process holds the file's write lock: a due write waits on it in the
    ledger's thread, not in the caller's on_request (the sieve calls it on the request
    path, on the event loop for async calls); the counts land once the lock is gone."""
    path = tmp_path / "v.sqlite3"
    ledger = SavingsLedger(path, flush_interval_s=0.05)
    ev = RequestEvent("t", "m", "chat", "apply", "applied", 0.5, 100, 40, time=T0)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # held until this test lets go
    try:
        time.sleep(0.1)  # the next event finds a write due
        caller = threading.Thread(target=ledger.on_request, args=(ev,))
        caller.start()
        caller.join(5.0)
        assert not caller.is_alive()  # returned while the lock is still held
        assert ledger._writer is not None and ledger._writer is not threading.current_thread()
    finally:
        holder.execute("COMMIT")
        holder.close()
    deadline = time.monotonic() + 30
    while not read_ledger(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r.tokens_saved for r in read_ledger(path)] == [60]
    ledger.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_does_not_write_its_parents_counts(tmp_path: Path) -> None:
    """A pre-fork server (gunicorn --preload): the child inherited the parent's unwritten
    counts and its exit hook, so both wrote them (6 requests for 3). The child now starts
    empty and writes only its own, by its own writer thread."""
    path = tmp_path / "v.sqlite3"
    ledger = SavingsLedger(path, flush_interval_s=3600)
    ev = RequestEvent("t", "m", "chat", "apply", "applied", 0.5, 100, 40, time=T0)
    for _ in range(3):
        ledger.on_request(ev)
    pid = os.fork()
    if pid == 0:  # the child: one request of its own, then what its exit hook does
        code = 1
        try:
            ledger.on_request(ev)
            ledger.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ledger.close()
    (row,) = read_ledger(path)
    assert row.requests == 4 and row.tokens_before == 400


def test_redis_store_and_ledger(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    """A fleet: verdicts (states, ratios, bounds) and the savings ledger in one Redis."""
    prefix = f"report{time.monotonic_ns()}:"
    gate = Gate(RedisStore(redis_url, prefix=prefix),
                GateConfig(tau=0.6, delta=0.05, budget=40, ratios=(0.5,), seed=1))  # fmt: skip
    _until(gate, QA, True, "passed")
    _until(gate, SUM, False, "failed")
    ev = RequestEvent("qa", "gpt-4o-mini", "chat", "apply", "applied", 0.5, 1000, 400, time=T0)
    replicas = [SavingsLedger(redis_url, redis_prefix=prefix, flush_interval_s=0)
                for _ in range(2)]  # fmt: skip
    for ledger in replicas:  # two gateway replicas, one ledger
        ledger.on_request(ev)
    file_ledger = SavingsLedger(tmp_path / "savings.sqlite3", flush_interval_s=0)
    file_ledger.on_request(ev)
    page = tmp_path / "r.html"
    r = CliRunner().invoke(
        app, ["report", "--html", str(page), "--store", redis_url, "--redis-prefix", prefix]
    )
    assert r.exit_code == 0, r.output
    html = page.read_text()
    assert 'class="l passed"' in html and 'class="l failed"' in html
    assert "1,200" in html  # two replicas' savings, summed in Redis
    data = read_report(redis_url, redis_prefix=prefix)
    by = {t.task: t for t in data.tasks}
    assert (by["qa"].state, by["qa"].ratio, by["summarize"].state) == ("passed", 0.5, "failed")
    assert (by["qa"].requests, by["qa"].tokens_saved) == (2, 1200)
    assert by["qa"].cs[0] is not None  # the anytime bounds, from Redis
    assert by["qa"].n == 0  # the listing carries no counts: agreement is not shown
    other = read_report(redis_url, savings=tmp_path / "savings.sqlite3", redis_prefix=prefix)
    assert {t.task: t.tokens_saved for t in other.tasks}["qa"] == 600
