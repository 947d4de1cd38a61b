"""A scripted Anthropic-compatible Messages server on 127.0.0.1 for protocol tests.

It records every request (path, headers, raw body) and answers ``POST /v1/messages`` from a
script: queued replies first, then a responder (by default: a deterministic "model" that
answers ``reply_text`` and reports the prompt's word count as ``usage.input_tokens``). A
body with ``"stream": true`` gets the Messages SSE event sequence (``message_start`` …
``message_stop``) carrying the same answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["AnthropicServer", "Recorded", "Reply", "message", "prompt_words"]


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    json: Any = None  # a Message object (dict); streamed as SSE when the request streams


def prompt_words(body: Any) -> int:
    """Words of every text in ``system`` and ``messages`` (the server's "token" count)."""
    texts: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, str):
            texts.append(x)
        elif isinstance(x, dict):
            if x.get("type") == "text" and isinstance(x.get("text"), str):
                texts.append(x["text"])
            elif isinstance(x.get("content"), (str, list)):
                walk(x["content"])
        elif isinstance(x, list):
            for v in x:
                walk(v)

    if isinstance(body, dict):
        walk(body.get("system"))
        walk(body.get("messages"))
    return sum(len(t.split()) for t in texts)


def message(
    text: str = "ok",
    *,
    tool_use: tuple[str, dict[str, Any]] | None = None,
    input_tokens: int = 10,
    cache_read: int = 0,
    model: str = "claude-test",
) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    if tool_use is not None:
        content.append({"type": "tool_use", "id": "toolu_1", "name": tool_use[0],
                        "input": tool_use[1]})  # fmt: skip
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool_use else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": 2,
            "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": 0,
        },
    }


def _events(msg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    start = {**msg, "content": [], "stop_reason": None,
             "usage": {**msg["usage"], "output_tokens": 0}}  # fmt: skip
    out: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start",
                                                                "message": start})]  # fmt: skip
    for i, block in enumerate(msg["content"]):
        if block["type"] != "text":
            continue
        out.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        for word in block["text"].split(" "):
            out.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                        "delta": {"type": "text_delta", "text": word + " "}}))  # fmt: skip
        out.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(("message_delta", {"type": "message_delta",
                "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": msg["usage"]["output_tokens"]}}))  # fmt: skip
    out.append(("message_stop", {"type": "message_stop"}))
    return out


class AnthropicServer:
    """``with AnthropicServer() as srv: Anthropic(base_url=srv.url, api_key="x")``."""

    def __init__(
        self, responder: Callable[[Recorded], Reply] | None = None, reply_text: str = "ok"
    ) -> None:
        self.reply_text = reply_text
        self.responder = responder or self._default
        self._queue: deque[Reply] = deque()
        self._records: list[Recorded] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _default(self, rec: Recorded) -> Reply:
        return Reply(json=message(self.reply_text, input_tokens=prompt_words(rec.json)))

    def __enter__(self) -> AnthropicServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._records)

    def bodies(self) -> list[Any]:
        return [r.json for r in self.requests]

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= n:
                return self.requests
            time.sleep(0.01)
        raise AssertionError(f"expected {n} requests, got {len(self.requests)}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                rec = Recorded(self.path, dict(self.headers), self.rfile.read(n))
                with server._lock:
                    server._records.append(rec)
                    reply = server._queue.popleft() if server._queue else None
                reply = reply or server.responder(rec)
                body = rec.json or {}
                if reply.status != 200:
                    err = {"type": "error", "error": {"type": "api_error", "message": "boom"}}
                    self._send(reply.status, "application/json", json.dumps(err).encode())
                elif body.get("stream"):
                    chunks = b"".join(
                        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                        for name, data in _events(reply.json)
                    )
                    self._send(200, "text/event-stream", chunks)
                else:
                    self._send(200, "application/json", json.dumps(reply.json).encode())

            def _send(self, status: int, ctype: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
