"""Bad configuration raises ``ConfigError`` at construction, never on every request.

Adapters given something that is not a ``Sieve``; store locations that are folders, other
files or URLs; non-finite budgets; wrong-typed paths; malformed
``PROMPTSIEVE_*`` variables. Each check runs against the real parts: real SQLite files,
real OpenAI/Anthropic clients talking to scripted servers on 127.0.0.1, the real
``litellm`` handler. Also: ``ScriptedTarget`` counts the words of chat ``messages``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from anthropic import Anthropic
from openai import AsyncOpenAI, OpenAI

from _anthropic_server import AnthropicServer
from _scripted_server import ScriptedServer
from _sieve_helpers import ScriptedGate, WordDropCompressor, apply, words
from promptsieve import (
    ConfigError,
    Gate,
    RedisStore,
    SavingsLedger,
    Sieve,
    SieveConfig,
    SQLiteStore,
)
from promptsieve.fidelity import GateConfig, ScreenConfig
from promptsieve.testing import ScriptedTarget
from promptsieve_anthropic import sieve_of as anthropic_sieve_of
from promptsieve_anthropic import wrap_anthropic
from promptsieve_openai import sieve_of, wrap_openai

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import

#: A budget a cold CI runner meets.
SLOW_CI = 30_000.0
MESSAGES = [{"role": "user", "content": "one two three four five six seven eight"}]


@pytest.fixture()
def sieve() -> Iterator[Sieve]:
    s = Sieve(
        SieveConfig(scoring_budget_ms=SLOW_CI), compressor=WordDropCompressor(), gate=ScriptedGate()
    )
    yield s
    s.close()


@pytest.fixture()
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


# -- 1. adapters refuse what is not a Sieve ---------------------------------------------------


@pytest.mark.parametrize("bad", [SieveConfig(), "sieve", WordDropCompressor()])
def test_wrap_openai_refuses_a_non_sieve_and_keeps_the_client_working(
    bad: Any, sieve: Sieve, server: ScriptedServer
) -> None:
    client = OpenAI(base_url=server.url, api_key="x", max_retries=0)
    with pytest.raises(ConfigError, match=rf"wrap_openai: sieve must be a promptsieve Sieve, "
                                          rf"not {type(bad).__name__}"):  # fmt: skip
        wrap_openai(client, bad)
    assert sieve_of(client) is None  # nothing was patched
    wrap_openai(client, sieve)
    with pytest.raises(ConfigError, match="Sieve"):  # re-wrapping: the old sieve stays
        wrap_openai(client, bad)
    assert sieve_of(client) is sieve
    out = client.chat.completions.create(model="m", messages=MESSAGES)
    assert out.choices[0].message.content == "ok"
    assert server.bodies("/chat/completions")[0]["messages"] == MESSAGES
    assert sieve.stats.requests == 1 and sieve.stats.errors == 0


def test_wrap_openai_async_and_default_sieve(server: ScriptedServer) -> None:
    client = AsyncOpenAI(base_url=server.url, api_key="x")
    with pytest.raises(ConfigError, match=r"pass promptsieve\.Sieve\(config\) instead"):
        wrap_openai(client, SieveConfig(scoring_budget_ms=SLOW_CI))
    wrap_openai(client)  # None: a default Sieve
    default = sieve_of(client)
    assert isinstance(default, Sieve)
    default.close()


def test_wrap_anthropic_refuses_a_sieve_config(sieve: Sieve) -> None:
    with AnthropicServer(reply_text="fine") as srv:
        client = Anthropic(base_url=srv.url, api_key="x", max_retries=0)
        with pytest.raises(ConfigError, match=r"wrap_anthropic: sieve must be a promptsieve "
                                              r"Sieve, not SieveConfig"):  # fmt: skip
            wrap_anthropic(client, SieveConfig())
        assert anthropic_sieve_of(client) is None
        wrap_anthropic(client, sieve)
        msg = client.messages.create(model="claude", max_tokens=10, messages=MESSAGES)
        assert msg.content[0].text == "fine"
        assert srv.bodies("/messages")[0]["messages"] == MESSAGES
        assert sieve.stats.requests == 1 and sieve.stats.errors == 0


def test_litellm_handler_refuses_a_sieve_config() -> None:
    from promptsieve_litellm import PromptSieveLiteLLM

    with pytest.raises(ConfigError, match="PromptSieveLiteLLM: sieve must be a promptsieve Sieve"):
        PromptSieveLiteLLM(SieveConfig())
    with pytest.raises(ConfigError, match="not str"):
        PromptSieveLiteLLM("default")
    handler = PromptSieveLiteLLM(None)
    assert isinstance(handler.sieve, Sieve)
    handler.sieve.close()


@pytest.mark.parametrize("ttl", ["600", -1, 0, math.nan, math.inf, True, None])
def test_litellm_handler_refuses_a_bad_plan_ttl(sieve: Sieve, ttl: object) -> None:
    """A string failed the second of two concurrent requests with a TypeError (its shadow
    slot leaked); a negative TTL dropped every other pending plan, so screening never got a
    comparison; NaN never expired a plan. Each is now refused at construction."""
    from promptsieve_litellm import PromptSieveLiteLLM

    with pytest.raises(ConfigError, match=r"plan_ttl_s must be a finite number > 0"):
        PromptSieveLiteLLM(sieve, plan_ttl_s=ttl)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"PromptSieveLiteLLM: task must be a non-empty"):
        PromptSieveLiteLLM(sieve, task=" ")
    assert PromptSieveLiteLLM(sieve, task="qa", plan_ttl_s=30).plan_ttl_s == 30


def test_langchain_components_use_the_same_check(sieve: Sieve) -> None:
    from promptsieve_langchain import compress_messages

    with pytest.raises(ConfigError, match="sieve must be a promptsieve Sieve, not SieveConfig"):
        compress_messages(SieveConfig())
    assert compress_messages(sieve, task="qa").invoke("hello there") == "hello there"


@pytest.mark.parametrize("task", ["   ", "", 123, ["a"]])
def test_langchain_components_refuse_a_bad_task(sieve: Sieve, task: object) -> None:
    """Accepted before: an empty task failed every request inside the sieve (counted as an
    error, never screened); a non-string one raised pydantic's ValidationError."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    from promptsieve_langchain import (
        SieveDocumentCompressor,
        SieveMiddleware,
        compress_messages,
        wrap_chat_model,
    )

    makers = [
        lambda: wrap_chat_model(GenericFakeChatModel(messages=iter(())), sieve, task=task),
        lambda: compress_messages(sieve, task=task),
        lambda: SieveDocumentCompressor(sieve=sieve, task=task),
        lambda: SieveMiddleware(sieve, task=task),  # type: ignore[arg-type]
    ]
    for make in makers:
        with pytest.raises(ConfigError, match="task must be a non-empty string"):
            make()


# -- 2. SieveConfig: where the store may live, and finite budgets -----------------------------


def test_store_path_that_cannot_hold_a_store_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    cases: list[tuple[Any, str]] = [
        (tmp_path, "is a folder"),
        (str(tmp_path), "is a folder"),
        (text, "is not a SQLite database"),
        (blocker / "sub" / "v.sqlite3", "is a file, not a folder"),
        ("", "is empty"),
        ("ftp://host/v.sqlite3", r"URL scheme ftp:// is not supported"),
        ("http://x", r"URL scheme http:// is not supported"),
        ("redis://127.0.0.1:6379/0", r"not a redis:// URL; for Redis pass Sieve\(config, gate="),
        ("REDIS://127.0.0.1:6379/0", r"not a REDIS:// URL"),
    ]
    for path, message in cases:
        with pytest.raises(ConfigError, match=message):
            SieveConfig(store_path=path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "notes.txt"]  # no http:


def test_store_paths_that_may_work_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permissions are not checked up front: a read-only store still serves verdicts (and a
    store that cannot be written fails open per request). ``~`` is the home folder, and a
    one-letter "scheme" is a Windows drive, not a URL."""
    read_only = tmp_path / "ro.sqlite3"
    SQLiteStore(read_only).close()
    read_only.chmod(0o444)
    SieveConfig(store_path=read_only)
    monkeypatch.setenv("HOME", str(tmp_path))
    config = SieveConfig(store_path="~/home.sqlite3", scoring_budget_ms=SLOW_CI)
    with Sieve(config, compressor=WordDropCompressor()) as s:
        gate = s.gate
        assert isinstance(gate, Gate) and gate.store.path == tmp_path / "home.sqlite3"
    monkeypatch.chdir(tmp_path)
    SieveConfig(store_path="C://verdicts.sqlite3")


def test_good_store_paths_are_accepted_and_work(tmp_path: Path) -> None:
    nested = tmp_path / "new" / "deeper" / "verdicts.sqlite3"  # the store makes the folders
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    existing = tmp_path / "existing.sqlite3"
    SQLiteStore(existing).close()
    assert existing.read_bytes()[:16] == b"SQLite format 3\x00"
    for path in (nested, empty, str(existing)):
        config = SieveConfig(store_path=path, scoring_budget_ms=SLOW_CI)
        with Sieve(config, compressor=WordDropCompressor()) as s:
            gate = s.gate  # builds SQLiteStore(config.store_path)
            assert isinstance(gate, Gate) and gate.store.path == Path(path)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            tables = conn.execute("SELECT name FROM sqlite_master").fetchall()
        assert ("verdicts",) in tables


@pytest.mark.parametrize("value", [math.inf, math.nan, 0, -1.0])
def test_scoring_budget_must_be_finite_and_positive(value: float) -> None:
    with pytest.raises(ConfigError, match="scoring_budget_ms must be a finite number > 0"):
        SieveConfig(scoring_budget_ms=value)


def test_waits_must_be_finite() -> None:
    with pytest.raises(ConfigError, match="backpressure_wait_ms must be a finite"):
        SieveConfig(backpressure_wait_ms=math.inf)
    with pytest.raises(ConfigError, match="drain_timeout_s must be a finite"):
        SieveConfig(drain_timeout_s=math.inf)
    assert SieveConfig(scoring_budget_ms=1e9, backpressure_wait_ms=0).scoring_budget_ms == 1e9


def test_waits_longer_than_the_platform_takes_are_refused() -> None:
    """Finite but past threading.TIMEOUT_MAX (about 9.2e9 s): accepted before, then every
    wait raised OverflowError, from the user's call (backpressure) and from close()."""
    over_s = threading.TIMEOUT_MAX * 2
    for field, value in (
        ("backpressure_wait_ms", over_s * 1e3),
        ("drain_timeout_s", over_s),
        ("scoring_budget_ms", over_s * 1e3),
    ):
        with pytest.raises(ConfigError, match=rf"{field} must be .* at most"):
            SieveConfig(**{field: value})
    with pytest.raises(ConfigError, match="judge_timeout_s must be a finite number > 0"):
        ScreenConfig(judge_timeout_s=math.inf)
    for bad in (-1, math.nan, math.inf, "2", over_s):
        with pytest.raises(ConfigError, match=r"RedisStore\(socket_timeout_s=...\) must be"):
            RedisStore("redis://127.0.0.1:1/0", socket_timeout_s=bad)  # type: ignore[arg-type]
    sieve = Sieve(SieveConfig(drain_timeout_s=threading.TIMEOUT_MAX, verify=False, ratio=0.5))
    sieve.close()  # the longest wait the platform takes: close() does not overflow


# -- 3. wrong-typed paths and URLs --------------------------------------------------------------


class _PathLike:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)


def test_messages_about_a_redis_url_never_show_its_password(tmp_path: Path) -> None:
    secret = "hunter2"
    for bad in (f"redis://:{secret}@127.0.0.1:abc/0", f"rediss://user:{secret}@h:x/0"):
        with pytest.raises(ConfigError) as info:
            RedisStore(bad)
        assert secret not in str(info.value) and "***@" in str(info.value)
        with pytest.raises(ConfigError) as info:
            SavingsLedger(bad)
        assert secret not in str(info.value)
    from typer.testing import CliRunner

    from promptsieve.cli import app

    html = str(tmp_path / "r.html")
    for flag in ("--store", "--savings"):
        url = f"Redis://:{secret}@127.0.0.1:1/0"
        res = CliRunner().invoke(app, ["report", flag, url, "--html", html])
        assert res.exit_code == 2 and "Traceback" not in res.output
        assert secret not in res.output and flag in res.output


def test_store_and_ledger_arguments_of_the_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SQLiteStore\(path=...\) must be a SQLite file path"):
        SQLiteStore(5)
    with pytest.raises(ConfigError, match=r"RedisStore\(url=...\) must be a redis://"):
        RedisStore(5)
    with pytest.raises(ConfigError, match=r"SavingsLedger\(path=...\) must be a SQLite file"):
        SavingsLedger(5)
    with pytest.raises(ConfigError, match="URL scheme http:// is not supported"):
        SQLiteStore("http://x")
    with pytest.raises(ConfigError, match=r"use RedisStore\(url\)"):
        SQLiteStore("redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="got a REDIS:// URL"):
        RedisStore("REDIS://127.0.0.1:6379/0")  # redis-py refuses it too
    with pytest.raises(ConfigError, match="got a str without a URL scheme"):
        RedisStore(str(tmp_path / "v.sqlite3"))
    with pytest.raises(ConfigError, match="URL scheme ftp:// is not supported"):
        SavingsLedger("ftp://host/ledger")
    with pytest.raises(ConfigError, match="as redis://"):
        SavingsLedger("REDIS://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="flush_interval_s must be a finite number"):
        SavingsLedger(tmp_path / "l.sqlite3", flush_interval_s=math.nan)
    with pytest.raises(ConfigError, match="bucket_s must be a number >= 1"):
        SavingsLedger(tmp_path / "l.sqlite3", bucket_s="60")
    assert not (tmp_path / "l.sqlite3").exists()
    # any os.PathLike is a path
    store = SQLiteStore(_PathLike(tmp_path / "p.sqlite3"))
    store.close()
    ledger = SavingsLedger(_PathLike(tmp_path / "p.sqlite3"), flush_interval_s=0)
    ledger.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "p.sqlite3")) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"verdicts", "savings"} <= names


# -- 2. promptsieve_litellm.handler_from_env ---------------------------------------------------


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No ``PROMPTSIEVE_*`` variable but a temporary cache; the test's folder as the cwd."""
    for name in list(os.environ):
        if name.startswith("PROMPTSIEVE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PROMPTSIEVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    yield monkeypatch


def _handler() -> Any:
    from promptsieve_litellm import handler_from_env

    return handler_from_env()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PROMPTSIEVE_STORE", "http://x", r"PROMPTSIEVE_STORE must be .* URL scheme http://"),
        ("PROMPTSIEVE_STORE", "REDIS://127.0.0.1:6379/0", "PROMPTSIEVE_STORE: write the URL"),
        ("PROMPTSIEVE_STORE", ".", "PROMPTSIEVE_STORE '.' is a folder"),
        ("PROMPTSIEVE_SAVINGS", "ftp://x", r"PROMPTSIEVE_SAVINGS must be .* ftp://"),
        ("PROMPTSIEVE_SAVINGS_FLUSH_S", "nan", "PROMPTSIEVE_SAVINGS_FLUSH_S must be finite"),
        ("PROMPTSIEVE_SAVINGS_FLUSH_S", "inf", "PROMPTSIEVE_SAVINGS_FLUSH_S must be finite"),
        ("PROMPTSIEVE_SAVINGS_FLUSH_S", "-1", "PROMPTSIEVE_SAVINGS_FLUSH_S must be finite"),
        ("PROMPTSIEVE_GUARD", "maybe", "PROMPTSIEVE_GUARD must be one of 1/0, true/false"),
        ("PROMPTSIEVE_OTEL", "perhaps", "PROMPTSIEVE_OTEL must be one of"),
    ],
)
def test_handler_from_env_refuses_malformed_variables(
    env: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, message: str
) -> None:
    env.setenv("PROMPTSIEVE_STORE", str(tmp_path / "verdicts.sqlite3"))
    env.setenv("PROMPTSIEVE_SAVINGS", str(tmp_path / "savings.sqlite3"))
    env.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        _handler()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no ./http:/x, nothing opened


@pytest.mark.parametrize(
    ("value", "guard"), [("Off", False), ("no", False), ("FALSE", False), ("On", True),
                         ("YES", True), ("1", True), ("", True)],
)  # fmt: skip
def test_handler_from_env_reads_switches(
    env: pytest.MonkeyPatch, tmp_path: Path, value: str, guard: bool
) -> None:
    env.setenv("PROMPTSIEVE_STORE", str(tmp_path / "verdicts.sqlite3"))
    env.setenv("PROMPTSIEVE_GUARD", value)
    env.setenv("PROMPTSIEVE_SAVINGS", str(tmp_path / "savings.sqlite3"))
    env.setenv("PROMPTSIEVE_SAVINGS_FLUSH_S", "0.5")
    handler = _handler()
    try:
        assert handler.sieve.config.guard is guard
        ledger = [o for o in handler.sieve.observers if isinstance(o, SavingsLedger)]
        assert len(ledger) == 1 and ledger[0].flush_interval_s == 0.5
        assert (tmp_path / "verdicts.sqlite3").read_bytes()[:16] == b"SQLite format 3\x00"
        ledger[0].close()
    finally:
        handler.sieve.close()


# -- 4. ScriptedTarget counts chat messages -------------------------------------------------


def test_scripted_target_counts_the_words_of_chat_messages() -> None:
    target = ScriptedTarget("yes")
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "look at this picture"},
                {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}},
                {"type": "text", "text": "and answer"},
            ]},
        ],
    }  # fmt: skip
    with httpx2.Client(transport=target.transport(httpx2)) as http:
        usage = http.post("http://t.test/v1/chat/completions", json=body).json()["usage"]
    assert usage["prompt_tokens"] == 2 + 4 + 2
    assert usage["completion_tokens"] == 1 and usage["total_tokens"] == 9


def test_scripted_target_usage_reaches_sieve_stats() -> None:
    target = ScriptedTarget("Paris")
    long = " ".join(f"word{i}" for i in range(40))
    sieve = Sieve(
        SieveConfig(scoring_budget_ms=SLOW_CI),
        compressor=WordDropCompressor(similarity_value=1.0),  # the guard lets it through
        gate=ScriptedGate(apply(0.5)),
    )
    http = httpx2.Client(transport=target.transport(httpx2))
    client = wrap_openai(OpenAI(base_url="http://t.test/v1", api_key="x", http_client=http), sieve)
    out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": long}])
    sent = target.bodies[0]["messages"][0]["content"]
    assert sieve.stats.compressed == 1 and words(sent) < 40
    assert out.usage is not None and out.usage.prompt_tokens == words(sent)
    assert sieve.stats.usage_reports == 1
    assert sieve.stats.prompt_tokens_reported == words(sent)
    assert sieve.stats.tokens_after == words(sent)
    sieve.close()


def test_a_budget_past_the_largest_is_refused_not_allocated() -> None:
    """GateConfig(budget=10**12) raised MemoryError at construction (10**8 took ~900 MB)."""
    for make in (GateConfig, ScreenConfig):
        with pytest.raises(ConfigError, match="budget must be at most 1,000,000"):
            make(budget=10**12)
    assert GateConfig(budget=1000).budget == 1000


def test_compress_messages_passes_what_is_not_messages_through(sieve: Sieve) -> None:
    """A list of Documents (or bytes, numbers) raised NotImplementedError from LangChain's
    convert_to_messages, outside any fail-open path; such input now goes through as it is."""
    from langchain_core.documents import Document

    from promptsieve_langchain import compress_messages

    step = compress_messages(sieve, task="qa")
    for value in ([Document(page_content="a passage")], [1, 2], [b"bytes"]):
        assert step.invoke(value) is value
    assert sieve.stats.errors == 0
