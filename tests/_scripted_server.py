"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for protocol tests.

It records every request it receives (path, headers, raw body) so tests can assert exactly
what went over the wire, and answers from a script: queued replies first, then a
``responder`` callable (by default a deterministic "model" that answers "ok" and reports
the prompt's word count as ``usage.prompt_tokens``). Replies can be JSON, SSE streams or
error statuses.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "Recorded",
    "Reply",
    "ScriptedServer",
    "chat_chunks",
    "chat_completion",
    "completion",
    "completion_chunks",
    "error",
    "forward_to",
    "prompt_words",
    "response_events",
    "response_object",
]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    sse: Sequence[Any] | None = None  # JSON-able events (or raw str lines); [DONE] appended
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    event_delay: float = 0.0  # seconds between SSE events (a slow stream)


Responder = Callable[[Recorded], Reply]


class ScriptedServer:
    """``with ScriptedServer() as srv: OpenAI(base_url=srv.url, ...)``."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or default_responder
        self._queue: deque[Reply] = deque()
        self._records: list[Recorded] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    # -- scripting and inspection --------------------------------------------------------------
    def push(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one before falling back to the responder."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._records)

    def bodies(self, path_suffix: str = "") -> list[Any]:
        return [r.json for r in self.requests if r.path.endswith(path_suffix)]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Recorded]:
        """Block until at least ``n`` requests arrived (background comparisons are async)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reqs = self.requests
            if len(reqs) >= n:
                return reqs
            time.sleep(0.01)
        raise TimeoutError(f"expected {n} requests, got {len(self.requests)}")

    def _next_reply(self, rec: Recorded) -> Reply:
        with self._lock:
            self._records.append(rec)
            if self._queue:
                return self._queue.popleft()
        return self.responder(rec)

    def _send(self, handler: Any, rec: Recorded, reply: Reply) -> None:
        """Write ``reply`` for ``rec`` through ``handler`` (the OpenAI wire format; a subclass
        speaking another protocol overrides this)."""
        if reply.sse is not None:
            handler._send_sse(reply)
        else:
            handler._send_json(reply)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Recorded(
                    "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                    time.monotonic(),
                )  # fmt: skip
                reply = server._next_reply(rec)
                if reply.delay:
                    time.sleep(reply.delay)
                server._send(self, rec, reply)

            do_GET = do_POST

            def _send_json(self, reply: Reply) -> None:
                payload = json.dumps(reply.json if reply.json is not None else {}).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.send_header("x-request-id", "req_scripted")
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def _send_sse(self, reply: Reply) -> None:
                self.send_response(reply.status)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                for event in reply.sse or ():
                    line = event if isinstance(event, str) else f"data: {json.dumps(event)}"
                    self.wfile.write(f"{line}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(reply.event_delay)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        return Handler


# -- response builders ------------------------------------------------------------------------
def prompt_words(body: Any) -> int:
    """Whitespace words of every text in the request: the scripted model's "prompt tokens"."""
    texts: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, str):
            texts.append(x)
        elif isinstance(x, dict):
            for k, v in x.items():
                skipped = k in ("tools", "response_format")
                if k in ("content", "text", "prompt", "input", "instructions") or (
                    isinstance(v, (dict, list)) and not skipped
                ):
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    if isinstance(body, dict):
        for k in ("messages", "prompt", "input", "instructions"):
            walk(body.get(k))
    return sum(len(t.split()) for t in texts)


def chat_completion(
    content: str | None = "ok",
    *,
    tool_calls: Sequence[tuple[str, str]] = (),
    prompt_tokens: int = 10,
    model: str = "gpt-4o-mini",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(tool_calls)
        ]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 1,
            "total_tokens": prompt_tokens + 1,
        },
    }


def chat_chunks(
    pieces: Sequence[str], model: str = "gpt-4o-mini", *, usage: int | None = None
) -> list[dict[str, Any]]:
    """Chat chunks; ``usage``: a last chunk with no choices and that many prompt tokens
    (what ``stream_options={"include_usage": True}`` makes a server send)."""
    out = []
    for i, p in enumerate(pieces):
        delta = {"role": "assistant", "content": p} if i == 0 else {"content": p}
        out.append(
            {
                "id": "chatcmpl-s",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
        )
    out.append(
        {
            "id": "chatcmpl-s",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    if usage is not None:
        out.append(
            {
                "id": "chatcmpl-s",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [],
                "usage": _usage(usage),
            }
        )
    return out


def response_events(text: str = "ok", *, input_tokens: int = 10) -> list[dict[str, Any]]:
    """A Responses API event stream: created, one text delta per character, completed."""
    final = response_object(text, input_tokens=input_tokens)
    item = {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant",
            "content": []}  # fmt: skip
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**final, "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0,
         "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}},
    ]  # fmt: skip
    for ch in text:
        events.append(
            {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
             "content_index": 0, "delta": ch, "logprobs": []}
        )  # fmt: skip
    events.append({"type": "response.completed", "response": final})
    return [{**e, "sequence_number": i} for i, e in enumerate(events)]


def completion(text: str = " ok", *, prompt_tokens: int = 10, model: str = "m") -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 1,
            "total_tokens": prompt_tokens + 1,
        },
    }


def completion_chunks(pieces: Sequence[str], model: str = "m") -> list[dict[str, Any]]:
    return [
        {
            "id": "cmpl-s",
            "object": "text_completion",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "text": p, "finish_reason": None, "logprobs": None}],
        }
        for p in pieces
    ]


def response_object(
    text: str = "ok",
    *,
    function_calls: Sequence[tuple[str, str]] = (),
    input_tokens: int = 10,
    model: str = "gpt-4o-mini",
) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if text:
        output.append(
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    for i, (n, a) in enumerate(function_calls):
        output.append(
            {"type": "function_call", "id": f"fc_{i}", "call_id": f"call_{i}", "name": n,
             "arguments": a, "status": "completed"}
        )  # fmt: skip
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": model,
        "status": "completed",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 1,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + 1,
        },
    }


def _usage(prompt_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 1,
        "total_tokens": prompt_tokens + 1,
    }


def error(status: int, message: str = "scripted error") -> Reply:
    return Reply(
        status=status,
        json={"error": {"message": message, "type": "invalid_request_error", "code": None}},
    )


def forward_to(base_url: str, timeout: float = 120.0) -> Responder:
    """A responder that passes each request on to a real server at ``base_url`` (``.../v1``)
    and returns its answer: a recording pass-through in front of it."""

    def forward(rec: Recorded) -> Reply:
        req = urllib.request.Request(
            base_url + rec.path.split("/v1", 1)[1],
            data=rec.body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Reply(status=resp.status, json=json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            return Reply(status=exc.code, json=json.loads(exc.read() or b"{}"))

    return forward


def default_responder(rec: Recorded) -> Reply:
    """Answer "ok" to everything; usage = the prompt's word count; streams when asked."""
    body = rec.json or {}
    words = prompt_words(body)
    path = rec.path.split("?", 1)[0]  # beta resources add ?beta=true
    if path.endswith("/chat/completions"):
        if body.get("stream"):
            with_usage = (body.get("stream_options") or {}).get("include_usage")
            return Reply(sse=chat_chunks(["o", "k"], usage=words if with_usage else None))
        return Reply(json=chat_completion("ok", prompt_tokens=words))
    if path.endswith("/completions"):
        if body.get("stream"):
            return Reply(sse=completion_chunks([" o", "k"]))
        return Reply(json=completion(" ok", prompt_tokens=words))
    if path.endswith("/responses"):
        if body.get("stream"):
            return Reply(sse=response_events("ok", input_tokens=words))
        return Reply(json=response_object("ok", input_tokens=words))
    return error(404, f"no such path {rec.path}")


def iter_texts(records: Sequence[Recorded]) -> Iterator[str]:  # pragma: no cover - helper
    for r in records:
        yield r.body.decode()
