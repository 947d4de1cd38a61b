"""Fakes for your own tests, as ``httpx`` ships ``MockTransport``.

* :class:`ScriptedTarget` — an OpenAI-compatible target without a network: plug
  :meth:`ScriptedTarget.transport` into an ``httpx`` client (``OpenAI(http_client=...)``), or
  pass the target itself where promptsieve wants one (``screen(..., target=...)``, a sieve's
  ``send_variant``). It answers from a script and records every request body.
* :class:`FixedVerdictStore` — a verdict store whose every task is already passed (or
  failed, or unscreened), so a test decides what the sieve does without screening first.

::

    import httpx2, openai, promptsieve            # openai>=3 builds on httpx2
    from promptsieve.testing import FixedVerdictStore, ScriptedTarget
    from promptsieve_openai import wrap_openai

    target = ScriptedTarget("Paris")
    sieve = promptsieve.Sieve(gate=promptsieve.Gate(FixedVerdictStore.passed(0.5)))
    http = httpx2.Client(transport=target.transport(httpx2))
    client = wrap_openai(openai.OpenAI(base_url="http://target.test/v1", api_key="x",
                                       http_client=http), sieve)
    client.chat.completions.create(model="m", messages=[...])
    assert target.bodies[0]["messages"]           # what went over the wire (compressed)

Nothing here is used by promptsieve itself.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from promptsieve.fidelity import (
    Counts,
    TargetOutput,
    Verdict,
    VerdictKey,
    VerdictState,
)
from promptsieve.fidelity.store import Pairs, StoredVerdict
from promptsieve.prompt import Prompt, TextPart

__all__ = ["FixedVerdictStore", "ScriptedTarget"]

#: ``answer(body) -> text``: the reply to one request body (an OpenAI-shaped dict).
Answer = Callable[[Mapping[str, Any]], str]


class ScriptedTarget:
    """A target that answers ``answer`` (a fixed text, or ``answer(body) -> text``).

    Records each request body in :attr:`bodies` (thread-safe). Responses are well-formed
    ``chat.completion``, ``text_completion`` and ``response`` objects whose
    ``usage`` counts the prompt's whitespace-separated words as its tokens. A body with
    ``"stream": true`` gets the same reply as server-sent events, as the OpenAI API streams
    it (one delta per whitespace-separated word, then ``data: [DONE]`` for chat and
    completions; ``response.created`` ... ``response.completed`` for responses).
    """

    def __init__(self, answer: str | Answer = "ok", *, model: str = "scripted") -> None:
        self._answer: Answer = (lambda body: answer) if isinstance(answer, str) else answer
        self.model = model
        self._lock = threading.Lock()
        self._bodies: list[dict[str, Any]] = []

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """Every request body received so far, oldest first."""
        with self._lock:
            return list(self._bodies)

    # -- as an HTTP server (httpx transport) ----------------------------------------------
    def transport(self, httpx_module: Any = None) -> Any:
        """An ``httpx`` transport answering ``POST .../chat/completions``, ``.../completions``
        and ``.../responses``, for sync and async clients alike.

        ``httpx_module``: the httpx-compatible package your SDK's client is built on (default
        ``httpx``; openai>=3 builds on ``httpx2``: pass ``httpx2`` and use ``httpx2.Client``).
        """
        mod = httpx if httpx_module is None else httpx_module

        def handle(request: Any) -> Any:
            status, payload = self._handle(request.url.path, request.content)
            if isinstance(payload, bytes):
                headers = {"content-type": "text/event-stream"}
                return mod.Response(status, headers=headers, content=payload)
            return mod.Response(status, json=payload)

        return mod.MockTransport(handle)

    def _handle(self, path: str, content: bytes) -> tuple[int, dict[str, Any] | bytes]:
        """(status, JSON payload), or (200, the server-sent events) for a streamed body."""
        try:
            body = json.loads(content or b"{}")
        except ValueError:
            return 400, {"error": {"message": "body is not JSON"}}
        if not isinstance(body, dict):
            return 400, {"error": {"message": "body is not a JSON object"}}
        path = path.rstrip("/")
        for suffix, build, stream in (
            ("/chat/completions", _chat, _chat_events),
            ("/completions", _completion, _completion_events),
            ("/responses", _response, _response_events),
        ):
            if path.endswith(suffix):
                done = build(self._reply(body), body, self.model)
                if body.get("stream") is True:
                    return 200, _sse(stream(done, body))
                return 200, done
        return 404, {"error": {"message": f"no route {path}"}}

    def _reply(self, body: dict[str, Any]) -> str:
        with self._lock:
            self._bodies.append(body)
        return self._answer(body)

    # -- as promptsieve's targets ---------------------------------------------------------
    def complete(self, body: Mapping[str, Any]) -> TargetOutput:
        """``fidelity.Target``: one request body in, its output out (offline screening)."""
        return TargetOutput(self._reply(dict(body)))

    def send(self, prompt: Prompt) -> TargetOutput:
        """A sieve's ``send_variant``: a neutral prompt in, the scripted output out."""
        return self.complete(_neutral_body(prompt, self.model))

    async def asend(self, prompt: Prompt) -> TargetOutput:
        """:meth:`send` for ``async with sieve.call(...)``."""
        return self.send(prompt)


def _neutral_body(prompt: Prompt, model: str) -> dict[str, Any]:
    if isinstance(prompt, str):
        return {"model": model, "prompt": prompt}
    msgs = [
        {"role": m.role, "content": "".join(p.text for p in m.parts if isinstance(p, TextPart))}
        for m in prompt
    ]
    return {"model": model, "messages": msgs}


def _words(body: Mapping[str, Any]) -> int:
    """Whitespace words of the prompt: chat ``messages`` (string contents and the text of
    content parts), a completion's ``prompt``, a response's ``input`` and ``instructions``."""
    texts: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, str):
            texts.append(x)
        elif isinstance(x, Mapping):
            for k in ("messages", "content", "text", "input", "instructions", "prompt"):
                walk(x.get(k))
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(dict(body))
    return sum(len(t.split()) for t in texts)


def _usage(body: Mapping[str, Any], text: str) -> dict[str, int]:
    prompt, completion = _words(body), len(text.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _chat(text: str, body: Mapping[str, Any], model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model", model)),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(body, text),
    }


def _completion(text: str, body: Mapping[str, Any], model: str) -> dict[str, Any]:
    return {
        "id": "cmpl-scripted",
        "object": "text_completion",
        "created": int(time.time()),
        "model": str(body.get("model", model)),
        "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        "usage": _usage(body, text),
    }


def _response(text: str, body: Mapping[str, Any], model: str) -> dict[str, Any]:
    usage = _usage(body, text)
    return {
        "id": "resp-scripted",
        "object": "response",
        "created_at": int(time.time()),
        "model": str(body.get("model", model)),
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "msg-scripted",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _pieces(text: str) -> list[str]:
    """``text`` cut after each run of whitespace, so the pieces join back to it exactly."""
    return re.findall(r"\S*\s*", text)[:-1] or [""]


def _sse(events: list[tuple[str | None, Any]]) -> bytes:
    """Server-sent events: ``event:`` lines where named, ``data:`` as JSON (or as given)."""
    lines = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        payload = data if isinstance(data, str) else json.dumps(data)
        lines.append(f"{head}data: {payload}\n\n")
    return "".join(lines).encode()


def _chat_events(done: dict[str, Any], body: Mapping[str, Any]) -> list[tuple[str | None, Any]]:
    """A ``chat.completion`` as the ``chat.completion.chunk`` stream the API sends."""
    head = {k: done[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    text = done["choices"][0]["message"]["content"]
    chunks: list[dict[str, Any]] = [
        head | {"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in _pieces(text)
    ]
    chunks[0]["choices"][0]["delta"]["role"] = "assistant"  # the first chunk names the role
    chunks.append(head | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    options = body.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage"):
        chunks.append(head | {"choices": [], "usage": done["usage"]})
    return [(None, c) for c in chunks] + [(None, "[DONE]")]


def _completion_events(
    done: dict[str, Any], body: Mapping[str, Any]
) -> list[tuple[str | None, Any]]:
    """A ``text_completion`` as the stream of ``text_completion`` pieces the API sends."""
    head = {k: done[k] for k in ("id", "object", "created", "model")}
    text = done["choices"][0]["text"]
    chunks: list[dict[str, Any]] = [
        head | {"choices": [{"index": 0, "text": p, "finish_reason": None, "logprobs": None}]}
        for p in _pieces(text)
    ]
    chunks[-1]["choices"][0]["finish_reason"] = "stop"
    options = body.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage"):
        chunks.append(head | {"choices": [], "usage": done["usage"]})
    return [(None, c) for c in chunks] + [(None, "[DONE]")]


def _response_events(done: dict[str, Any], body: Mapping[str, Any]) -> list[tuple[str | None, Any]]:
    """A ``response`` as the Responses API's typed event stream: created, in progress, the
    message item and its text part added, one text delta per piece, then each of them done,
    and completed (the order ``client.responses.stream()`` checks)."""
    item = done["output"][0]
    part = item["content"][0]
    text = part["text"]
    started = done | {"status": "in_progress", "output": [], "usage": None}
    at = {"item_id": item["id"], "output_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": item | {"status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            **at,
            "content_index": 0,
            "part": part | {"text": ""},
        },
    ]
    events += [
        {"type": "response.output_text.delta", **at, "content_index": 0, "delta": p, "logprobs": []}
        for p in _pieces(text)
    ]
    events += [
        {
            "type": "response.output_text.done",
            **at,
            "content_index": 0,
            "text": text,
            "logprobs": [],
        },
        {"type": "response.content_part.done", **at, "content_index": 0, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": done},
    ]
    return [(e["type"], e | {"sequence_number": i}) for i, e in enumerate(events)]


class FixedVerdictStore:
    """A :class:`~promptsieve.fidelity.VerdictStore` in memory with one verdict for every key.

    Build it with :meth:`passed`, :meth:`failed` or :meth:`screening`; pass it to
    ``Gate(store)``. The verdict never changes: writes are ignored and recorded comparisons
    are counted in :attr:`recorded` (``(task, ratio, agreed)``) so a test can see them.
    """

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.recorded: list[tuple[str, float, bool]] = []
        self._lock = threading.Lock()

    @classmethod
    def passed(cls, ratio: float) -> FixedVerdictStore:
        """Every task passed at ``ratio`` (share of compressible tokens kept, in (0, 1])."""
        return cls(Verdict(VerdictState.PASSED, ratio=ratio, testing=ratio, generation=1))

    @classmethod
    def failed(cls) -> FixedVerdictStore:
        """Every task failed screening: nothing is compressed."""
        return cls(Verdict(VerdictState.FAILED, generation=1))

    @classmethod
    def screening(cls, ratio: float) -> FixedVerdictStore:
        """Every task under screening at ``ratio``: originals go out, shadows are compared."""
        return cls(Verdict(VerdictState.SCREENING, testing=ratio, generation=1))

    def get(self, key: VerdictKey) -> Verdict | None:
        return self.verdict

    def put(self, key: VerdictKey, verdict: Verdict, *, expected_version: int | None) -> bool:
        return False

    def record(
        self, key: VerdictKey, generation: int, ratio: float, agreed: bool, *, monitor: bool = False
    ) -> Counts:
        with self._lock:
            self.recorded.append((key.task, ratio, agreed))
            n = sum(1 for t, r, _a in self.recorded if t == key.task and r == ratio)
            agree = sum(1 for t, r, a in self.recorded if t == key.task and r == ratio and a)
        return Counts(n, agree)

    def record_pair(
        self,
        key: VerdictKey,
        generation: int,
        ratio: float,
        original_correct: bool,
        compressed_correct: bool,
    ) -> Pairs:
        return Pairs()

    def record_noise(self, key: VerdictKey, generation: int, agreed: bool) -> Counts:
        return Counts()

    def verdicts(self) -> list[StoredVerdict]:
        return []

    def delete(self, key: VerdictKey) -> None:
        return None

    def close(self) -> None:
        return None
