"""A scripted Anthropic-compatible Messages server on 127.0.0.1 for protocol tests.

It is the OpenAI :class:`~_scripted_server.ScriptedServer` (recording, queued replies, waiting)
speaking the Messages wire format: it answers ``POST /v1/messages`` from a script: queued
replies first, then a responder (by default: a deterministic "model" that
answers ``reply_text`` and reports the prompt's word count as ``usage.input_tokens``, and
that refuses, with HTTP 400 as the Messages API does, a text block or message content that
is empty or only whitespace, except in a final assistant message). A
body with ``"stream": true`` gets the Messages SSE event sequence (``message_start`` …
``message_stop``) carrying the same answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from _scripted_server import Recorded, Reply, ScriptedServer

__all__ = ["AnthropicServer", "Recorded", "Reply", "blank_text", "message", "prompt_words"]


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


def blank_text(body: Any) -> bool:
    """Whether ``body`` has a text block or message content that is empty or whitespace,
    outside a final assistant message: the Messages API answers those with HTTP 400
    ("text content blocks must be non-empty")."""
    messages = body.get("messages") if isinstance(body, dict) else None
    for i, m in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(m, dict) or (m.get("role") == "assistant" and i == len(messages) - 1):
            continue
        c = m.get("content")
        blocks = [{"type": "text", "text": c}] if isinstance(c, str) else c
        for b in blocks if isinstance(blocks, list) else ():
            if isinstance(b, dict) and b.get("type") == "text" and not str(b.get("text")).strip():
                return True
    return False


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


class AnthropicServer(ScriptedServer):
    """``with AnthropicServer() as srv: Anthropic(base_url=srv.url, api_key="x")``.

    A :class:`Reply`'s ``json`` is a Message object (dict, see :func:`message`), streamed as
    SSE events when the request streams; a non-200 status answers an Anthropic error object.
    """

    def __init__(
        self, responder: Callable[[Recorded], Reply] | None = None, reply_text: str = "ok"
    ) -> None:
        self.reply_text = reply_text
        super().__init__(responder or self._default)

    def _default(self, rec: Recorded) -> Reply:
        if blank_text(rec.json):
            return Reply(status=400)
        return Reply(json=message(self.reply_text, input_tokens=prompt_words(rec.json)))

    @property
    def url(self) -> str:
        return super().url.removesuffix("/v1")  # the Anthropic SDK adds /v1 itself

    def _send(self, handler: Any, rec: Recorded, reply: Reply) -> None:
        if reply.status != 200:
            err = {"type": "error", "error": {"type": "api_error", "message": "boom"}}
            status, ctype, data = reply.status, "application/json", json.dumps(err).encode()
        elif (rec.json or {}).get("stream"):
            ctype = "text/event-stream"
            status, data = (
                200,
                b"".join(
                    f"event: {name}\ndata: {json.dumps(event)}\n\n".encode()
                    for name, event in _events(reply.json)
                ),
            )
        else:
            status, ctype, data = 200, "application/json", json.dumps(reply.json).encode()
        handler.send_response(status)
        handler.send_header("content-type", ctype)
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
