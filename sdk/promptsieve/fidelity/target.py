"""The model under test for offline screening: the Target protocol and an HTTP target."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from promptsieve._errors import ConfigError, TargetError, missing_extra
from promptsieve.fidelity.agree import TargetOutput
from promptsieve.prompt import Message, Prompt

__all__ = ["HTTPTarget", "Target", "prompt_body"]


@runtime_checkable
class Target(Protocol):
    """The model under test: one request body in, its output out (TargetError on failure)."""

    model: str

    def complete(self, body: Mapping[str, Any]) -> TargetOutput: ...


def prompt_body(prompt: Prompt, max_tokens: int) -> dict[str, Any]:
    """An OpenAI request body for a neutral prompt (text parts only), e.g. a judge call."""
    if isinstance(prompt, str):
        return {"prompt": prompt, "max_tokens": max_tokens}
    messages = [{"role": m.role, "content": m.content} for m in prompt if isinstance(m, Message)]
    return {"messages": messages, "max_tokens": max_tokens}


class HTTPTarget:
    """An OpenAI-compatible HTTP endpoint (``/chat/completions`` or ``/completions``).

    ``overrides`` are set on every body (e.g. ``{"temperature": 0}`` so that two calls with
    the same prompt answer the same). The API key defaults to ``$OPENAI_API_KEY``;
    ``timeout`` (seconds) is per call. A base_url that is not an http(s) URL, or a timeout
    that is not a positive number, raises ConfigError; :meth:`complete` raises TargetError
    on any failure.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float | None = 60.0,
        *,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise missing_extra("httpx", "openai") from None
        self._httpx = httpx
        try:
            url = httpx.URL(base_url) if isinstance(base_url, str | httpx.URL) else None
        except httpx.InvalidURL:
            url = None
        bad_port = url is not None and url.port is not None and not 0 < url.port < 65536
        if url is None or url.scheme not in ("http", "https") or not url.host or bad_port:
            raise ConfigError(
                f"HTTPTarget base_url must be an http(s) URL such as "
                f"'http://127.0.0.1:8080/v1', got {base_url!r}"
            )
        if not isinstance(model, str) or not model:
            raise ConfigError(f"HTTPTarget model must be a model name, got {model!r}")
        if overrides is not None and not isinstance(overrides, Mapping):
            raise ConfigError("HTTPTarget overrides must be a mapping such as {'temperature': 0}")
        self.base_url = str(base_url).rstrip("/")
        self.model = model
        self.overrides = dict(overrides or {})
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:  # seconds, None (no limit) or an httpx.Timeout, as httpx takes them
            if isinstance(timeout, bool):
                raise TypeError
            real = isinstance(timeout, numbers.Real)  # numpy scalars too
            limits = httpx.Timeout(float(timeout) if real else timeout)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            limits = None
        if limits is None or any(
            t is not None and not (isinstance(t, int | float) and 0 < t < math.inf)
            for t in (limits.connect, limits.read, limits.write, limits.pool)
        ):
            raise ConfigError(
                f"HTTPTarget timeout must be a positive number of seconds, None or an "
                f"httpx.Timeout, got {timeout!r}"
            )
        self._client = httpx.Client(base_url=self.base_url, timeout=limits, headers=headers)

    def __repr__(self) -> str:
        return f"HTTPTarget({self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HTTPTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def complete(self, body: Mapping[str, Any]) -> TargetOutput:
        chat = "messages" in body
        payload = {**body, **self.overrides, "model": self.model, "stream": False}
        path = "/chat/completions" if chat else "/completions"
        try:
            resp = self._client.post(path, json=payload)
        except self._httpx.TimeoutException as exc:
            raise TargetError(f"target timed out on {path}: {exc}") from exc
        except self._httpx.HTTPError as exc:
            raise TargetError(f"target request to {path} failed: {exc}") from exc
        if resp.status_code >= 400:
            detail = resp.text[:200]
            raise TargetError(f"target answered HTTP {resp.status_code} on {path}: {detail}")
        try:
            data = resp.json()
            choice = data["choices"][0]
            if not chat:
                return TargetOutput(text=str(choice.get("text") or ""))
            message = choice["message"]
            calls = tuple(
                (str(c["function"]["name"]), str(c["function"].get("arguments") or ""))
                for c in (message.get("tool_calls") or [])
            )
            return TargetOutput(text=str(message.get("content") or ""), tool_calls=calls)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise TargetError(f"target sent a malformed response on {path}: {exc!r}") from exc
