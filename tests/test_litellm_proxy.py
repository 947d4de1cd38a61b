"""The real LiteLLM proxy process on 127.0.0.1 with promptsieve's hook loaded from its config.

The proxy runs from its own environment (``.venv-litellm``, built by ``scripts/install.sh``
with ``litellm[proxy]`` and ``promptsieve[cpu,redis]`` — no torch: the proxy graphs come
from a folder built by ``promptsieve export``). Its upstream is the scripted OpenAI-compatible
server; verdicts live in a real redis-server. Requests go through the proxy with the OpenAI
client: the task is screened in shadow (comparisons go out through the proxy's router), it
passes, and later requests reach the upstream compressed.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _ci import require
from _scripted_server import Reply, ScriptedServer, chat_chunks
from test_store import redis_url  # noqa: F401 - the session's real redis-server fixture

ROOT = Path(__file__).resolve().parents[1]
LITELLM = Path(os.environ.get("PROMPTSIEVE_LITELLM_PROXY", ROOT / ".venv-litellm/bin/litellm"))
LONG = " ".join(f"Sentence {i} of the retrieved passage about the harbour and its cranes."
                for i in range(30))  # fmt: skip
QUESTION = "Where are the cranes?"
SYSTEM = "Be brief."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "glossary",
            "parameters": {"type": "object", "properties": {"w": {"type": "string"}}},
        },
    }
]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prebuilt(proxy_cache_dir: Path) -> Path:
    """The proxy graphs, built once with ``promptsieve export`` (this venv has [export])."""
    from promptsieve.proxy._artifacts import export_all

    export_all(proxy_cache_dir)
    return proxy_cache_dir


@dataclass
class Gateway:
    url: str
    key: str
    upstream: ScriptedServer
    log: Path
    proc: subprocess.Popen[Any]


@pytest.fixture()
def gateway(tmp_path: Path, prebuilt: Path, redis_url: str) -> Iterator[Gateway]:  # noqa: F811
    require(
        LITELLM.is_file(),
        f"no LiteLLM proxy at {LITELLM} (scripts/install.sh builds .venv-litellm)",
    )
    with ScriptedServer() as upstream:
        config = tmp_path / "config.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: gpt-4o-mini\n"
            "    litellm_params:\n"
            "      model: openai/gpt-4o-mini\n"
            f"      api_base: {upstream.url}\n"
            "      api_key: sk-upstream\n"
            "litellm_settings:\n"
            "  callbacks: promptsieve_litellm.proxy_handler\n"
        )
        port, key = _free_port(), "sk-" + secrets.token_hex(24)
        env = {
            **os.environ,
            "LITELLM_MASTER_KEY": key,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PROMPTSIEVE_PROXY_DIR": str(prebuilt),
            "PROMPTSIEVE_CACHE_DIR": str(tmp_path / "cache"),
            "PROMPTSIEVE_STORE": redis_url,
            "PROMPTSIEVE_TASK": f"harbour-{time.monotonic_ns()}",
            "PROMPTSIEVE_TAU": "0.6",
            "PROMPTSIEVE_RATIOS": "0.5",
            "PROMPTSIEVE_GUARD": "0",
            "PROMPTSIEVE_SAVINGS": str(tmp_path / "savings.sqlite3"),
            "PROMPTSIEVE_SAVINGS_FLUSH_S": "0.5",
        }
        env.pop("VIRTUAL_ENV", None)
        log = tmp_path / "proxy.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [
                    str(LITELLM),
                    "--config",
                    str(config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp_path,
            )
        try:
            _wait_up(port, proc, log)
            yield Gateway(f"http://127.0.0.1:{port}/v1", key, upstream, log, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_up(port: int, proc: subprocess.Popen[Any], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("the LiteLLM proxy exited:\n" + log.read_text()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail("the LiteLLM proxy did not come up:\n" + log.read_text()[-3000:])


def _user(body: dict[str, Any]) -> str:
    return str(body["messages"][1]["content"])


def test_gateway_screens_then_compresses(gateway: Gateway) -> None:
    from openai import OpenAI

    url, key, upstream, log = gateway.url, gateway.key, gateway.upstream, gateway.log
    client = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)
    original = f"{LONG}\n\n{QUESTION}"
    full = len(SYSTEM.split()) + len(original.split())  # the upstream counts words as tokens
    sent: list[int] = []
    deadline = time.monotonic() + 120  # the gateway loads its proxy, then screens
    while time.monotonic() < deadline:
        r = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": original}],
            tools=TOOLS,
        )
        assert r.choices[0].message.content == "ok" and r.usage is not None
        sent.append(r.usage.prompt_tokens)  # what the live request carried
        if sent[-1] < full:
            break
        time.sleep(0.5)  # the success callback and its comparison run after the response
    text = log.read_text()
    assert sent[-1] < full, f"no live request was compressed ({sent}):\n" + text[-3000:]
    assert sent[0] == full  # screening first: the original went out
    bodies = [b for b in upstream.bodies() if isinstance(b, dict) and b.get("messages")]
    compressed = [b for b in bodies if _user(b) != original]
    # shadow comparisons (through the proxy's router) before the live compressed request
    assert len(compressed) >= 2, f"{len(bodies)} upstream calls, {len(compressed)} compressed"
    # one compression of one prompt at one ratio: shadow variants and the applied request are
    # the same text (the router's deployment hook does not compress a second time)
    assert len({_user(b) for b in compressed}) == 1
    for b in bodies:
        assert b["messages"][0] == {"role": "system", "content": SYSTEM}
        assert b["tools"] == TOOLS
        assert QUESTION in _user(b)
    assert "Traceback" not in text

    # the gateway's savings ledger (PROMPTSIEVE_SAVINGS), written by its flush thread
    from promptsieve.savings import read_ledger

    ledger = log.parent / "savings.sqlite3"
    deadline = time.monotonic() + 20
    rows = []
    while time.monotonic() < deadline:
        rows = read_ledger(ledger) if ledger.is_file() else []
        if sum(r.requests for r in rows) >= len(sent):
            break
        time.sleep(0.25)
    assert sum(r.requests for r in rows) == len(sent), log.read_text()[-3000:]
    assert sum(r.compressed for r in rows) == 1
    assert sum(r.comparisons for r in rows) >= 1
    assert b"Sentence" not in ledger.read_bytes()  # counts only, no prompt text


def _chat_bodies(upstream: ScriptedServer, *, streamed: bool) -> list[dict[str, Any]]:
    return [b for b in upstream.bodies("/chat/completions")
            if isinstance(b, dict) and bool(b.get("stream")) == streamed]  # fmt: skip


def test_a_stream_the_client_leaves_is_finished_at_once(gateway: Gateway) -> None:
    """A stream the client disconnects from: LiteLLM 1.108 calls the success callback with
    the text served so far, which used to be compared (one variant call) as if it were the
    whole answer; older releases never call it, and the plan held its shadow slot for
    plan_ttl_s. The hook's stream wrapper finishes the call when the proxy closes the stream
    (both variants compared, as for a stream closed early through wrap_openai)."""
    import httpx

    upstream, url = gateway.upstream, f"{gateway.url}/chat/completions"
    headers = {"authorization": f"Bearer {gateway.key}"}
    original = f"{LONG}\n\n{QUESTION}"
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": original}],
    }
    # plain requests until one is compared in shadow (the gateway's proxy warms up first),
    # then until no comparison call is still arriving
    deadline = time.monotonic() + 120
    while all(_user(b) == original for b in _chat_bodies(upstream, streamed=False)):
        assert time.monotonic() < deadline, gateway.log.read_text()[-3000:]
        httpx.post(url, json=body, headers=headers, timeout=60).raise_for_status()
        time.sleep(1.0)
    seen = -1
    while seen != len(upstream.requests):
        seen = len(upstream.requests)
        time.sleep(3.0)
    upstream.clear()

    upstream.push(Reply(sse=chat_chunks(["word "] * 60), event_delay=0.25))  # a 15 s stream
    with httpx.stream("POST", url, json={**body, "stream": True}, headers=headers,
                      timeout=60) as r:  # fmt: skip
        assert r.status_code == 200
        next(r.iter_lines())  # the first event, then the client leaves
    left = time.monotonic()
    while time.monotonic() < left + 12 and len(_chat_bodies(upstream, streamed=False)) < 2:
        time.sleep(0.1)
    compared = _chat_bodies(upstream, streamed=False)
    text = gateway.log.read_text()
    # the original and its compression, both sent whole, before the stream would have ended
    assert len(compared) == 2, f"{len(upstream.bodies())} upstream calls:\n" + text[-3000:]
    assert sorted(_user(b) == original for b in compared) == [False, True]
    assert len(_chat_bodies(upstream, streamed=True)) == 1
    assert "Traceback" not in text
