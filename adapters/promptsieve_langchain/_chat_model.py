"""A chat model that runs screen-and-apply around another chat model.

Each call is prepared by the sieve (compressed only where a verdict passed), sent to the
wrapped model, and observed: shadow and monitor comparisons go to the wrapped model in
the background, so the wrapper screens a task on live traffic by itself. Tool binding is
delegated, so the wrapped model formats the tools and the wrapper still compresses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, BaseMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableConfig,
    RunnableParallel,
    RunnableSequence,
)
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, PrivateAttr

from promptsieve import Call, Plan, Prompt, Request, Sieve, TargetOutput
from promptsieve_langchain._convert import (
    model_name,
    prompt_tokens,
    rebuild_messages,
    target_output,
    to_neutral,
)
from promptsieve_langchain._sieves import (
    COMPARISON_CONFIG,
    EVENT,
    child_callbacks,
    event_data,
    resolve,
)
from promptsieve_langchain._sieves import check_settings as _check

__all__ = ["SieveChatModel", "wrap_chat_model"]

log = logging.getLogger(__name__)

_ENDPOINT = "chat"


class SieveChatModel(BaseChatModel):
    """Screen-and-apply around ``llm``; build it with :func:`wrap_chat_model`."""

    llm: BaseChatModel
    sieve: Any = None
    task: str | None = None
    verify: bool | None = None
    ratio: float | None = None

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _resolve: resolve = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        # Checked before pydantic runs, so that a bad setting raises ConfigError itself.
        _check(data)
        super().__init__(**data)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._resolve = resolve(self.sieve, verify=self.verify, ratio=self.ratio)

    @property
    def _llm_type(self) -> str:
        return f"promptsieve-{self.llm._llm_type}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"llm": self.llm._identifying_params, "task": self.task}

    @property
    def model_name(self) -> str:
        """The wrapped model's name (it keys the verdicts)."""
        return model_name(self.llm)

    @property
    def effective_sieve(self) -> Sieve:
        return self._resolve()

    # -- helpers --------------------------------------------------------------------------
    def _sieve(self) -> Sieve:
        sieve = self._resolve()
        self._resolve.warm()
        return sieve

    async def _asieve(self) -> Sieve:
        sieve = self._resolve()
        await asyncio.to_thread(self._resolve.warm)
        return sieve

    def _call(
        self, sieve: Sieve, messages: list[BaseMessage], send: Any
    ) -> Call[list[BaseMessage]]:
        neutral = to_neutral(messages)
        return sieve.call(
            Request(neutral, self.model_name, _ENDPOINT),
            self.task,
            original=messages,
            rebuild=lambda prompt: rebuild_messages(messages, neutral, prompt),
            send_variant=send,
        )

    def _sender(self, messages: list[BaseMessage], stop: Any, kwargs: Any) -> Any:
        kw = {k: v for k, v in kwargs.items() if k != "stream"}
        neutral = to_neutral(messages)

        def send(prompt: Prompt) -> TargetOutput:
            msgs = rebuild_messages(messages, neutral, prompt)
            return target_output(self.llm.invoke(msgs, COMPARISON_CONFIG, stop=stop, **kw))

        return send

    def _asender(self, messages: list[BaseMessage], stop: Any, kwargs: Any) -> Any:
        kw = {k: v for k, v in kwargs.items() if k != "stream"}
        neutral = to_neutral(messages)

        async def send(prompt: Prompt) -> TargetOutput:
            msgs = rebuild_messages(messages, neutral, prompt)
            result = await self.llm.ainvoke(msgs, COMPARISON_CONFIG, stop=stop, **kw)
            return target_output(result)

        return send

    def _event(self, plan: Plan, callbacks: Any) -> None:
        try:
            config: RunnableConfig | None = None if callbacks is None else {"callbacks": callbacks}
            dispatch_custom_event(EVENT, event_data(plan, component="chat_model"), config=config)
        except Exception as exc:
            log.debug("promptsieve: could not dispatch the event: %s", type(exc).__name__)

    async def _aevent(self, plan: Plan, callbacks: Any) -> None:
        try:
            config: RunnableConfig | None = None if callbacks is None else {"callbacks": callbacks}
            await adispatch_custom_event(
                EVENT, event_data(plan, component="chat_model"), config=config
            )
        except Exception as exc:
            log.debug("promptsieve: could not dispatch the event: %s", type(exc).__name__)

    # -- generate -------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        child = child_callbacks(run_manager)
        send = self._sender(messages, stop, kwargs)
        with self._call(self._sieve(), messages, send) as call:
            self._event(call.plan, child)
            result = self.llm.generate([call.payload], stop=stop, callbacks=child, **kwargs)
            generations = cast(list[ChatGeneration], result.generations[0])
            call.read(_read_message, generations)
        return ChatResult(generations=generations, llm_output=result.llm_output)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        child = child_callbacks(run_manager, is_async=True)
        send = self._asender(messages, stop, kwargs)
        async with self._call(await self._asieve(), messages, send) as call:
            await self._aevent(call.plan, child)
            result = await self.llm.agenerate([call.payload], stop=stop, callbacks=child, **kwargs)
            generations = cast(list[ChatGeneration], result.generations[0])
            call.read(_read_message, generations)
        return ChatResult(generations=generations, llm_output=result.llm_output)

    # -- stream ---------------------------------------------------------------------------
    # A model that does not stream natively (no _stream, or disable_streaming) answers
    # BaseChatModel.stream with its whole message, not a chunk: _as_chunk converts it.
    # BaseChatModel reports each chunk to the callbacks itself; the wrapped model's own
    # stream runs without them so that every token is reported once. A caller that stops
    # reading (GeneratorExit) leaves the call normally: both variants are compared.
    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        send = self._sender(messages, stop, kwargs)
        with self._call(self._sieve(), messages, send) as call:
            self._event(call.plan, child_callbacks(run_manager))
            final: BaseMessageChunk | None = None
            for chunk in self.llm.stream(call.payload, {"callbacks": []}, stop=stop, **kwargs):
                piece = _as_chunk(chunk)
                final = piece if final is None else final + piece
                yield ChatGenerationChunk(message=piece)
            call.read(_read_final, final)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        send = self._asender(messages, stop, kwargs)
        async with self._call(await self._asieve(), messages, send) as call:
            await self._aevent(call.plan, child_callbacks(run_manager, is_async=True))
            final: BaseMessageChunk | None = None
            async for chunk in self.llm.astream(
                call.payload, {"callbacks": []}, stop=stop, **kwargs
            ):
                piece = _as_chunk(chunk)
                final = piece if final is None else final + piece
                yield ChatGenerationChunk(message=piece)
            call.read(_read_final, final)

    # -- tools ----------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Let the wrapped model format the tools; bind the result to the wrapper."""
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        inner = self.llm.bind_tools(tools, **kwargs)
        if isinstance(inner, RunnableBinding) and inner.bound is self.llm:
            return cast(Runnable[LanguageModelInput, AIMessage], self.bind(**inner.kwargs))
        log.warning(
            "promptsieve: %s.bind_tools returned a %s; tool calls bypass compression",
            type(self.llm).__name__,
            type(inner).__name__,
        )
        return inner

    def with_structured_output(
        self, schema: dict[str, Any] | type, **kwargs: Any
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """The wrapped model's own structured output (its ``method``: JSON schema, JSON
        mode or tool calling, ``strict``, ``include_raw``), with the model calls made
        through this wrapper. BaseChatModel's default would always use tool calling and
        drop ``method`` and ``strict``, so the request would differ from the bare model's.
        """
        inner = self.llm.with_structured_output(schema, **kwargs)
        rebound = self._rebound(inner)
        if rebound is None:
            log.warning(
                "promptsieve: %s.with_structured_output returned no binding of the model; "
                "structured calls bypass compression",
                type(self.llm).__name__,
            )
            return inner
        return cast(Runnable[LanguageModelInput, dict[str, Any] | BaseModel], rebound)

    def _rebound(self, runnable: Runnable[Any, Any]) -> Runnable[Any, Any] | None:
        """``runnable`` (a chain LangChain built around ``self.llm``) with each binding of
        ``self.llm`` replaced by the same binding of this wrapper; None when none is found.
        Walks sequences and parallel maps (``include_raw=True``)."""
        if isinstance(runnable, RunnableBinding) and runnable.bound is self.llm:
            return self.bind(**runnable.kwargs).with_config(runnable.config)
        if isinstance(runnable, RunnableSequence):
            steps = [self._rebound(step) for step in runnable.steps]
            if all(step is None for step in steps):
                return None
            new = [n if n is not None else o for n, o in zip(steps, runnable.steps, strict=True)]
            return RunnableSequence(*new, name=runnable.name)
        if isinstance(runnable, RunnableParallel):
            branches = {k: self._rebound(v) for k, v in runnable.steps__.items()}
            if all(b is None for b in branches.values()):
                return None
            return RunnableParallel(
                {k: b if b is not None else runnable.steps__[k] for k, b in branches.items()}
            )
        return None


def wrap_chat_model(
    llm: BaseChatModel,
    sieve: Sieve | None = None,
    *,
    task: str | None = None,
    verify: bool | None = None,
    ratio: float | None = None,
) -> SieveChatModel:
    """A chat model that compresses ``llm``'s prompts where a verdict passed, and screens.

    While a task is unscreened the original goes out and the compressed variant is sent to
    ``llm`` in the background (shadow); once the gate passes a ratio, prompts go out
    compressed, with a small share monitored. ``verify=False`` with ``ratio`` compresses
    every call without screening. ``sieve`` defaults to :func:`default_sieve`.
    """
    return SieveChatModel(llm=llm, sieve=sieve, task=task, verify=verify, ratio=ratio)


def _read_message(generations: list[ChatGeneration]) -> tuple[TargetOutput | None, int | None]:
    msg = generations[0].message if generations else None
    return _read_final(msg)


def _read_final(msg: BaseMessage | None) -> tuple[TargetOutput | None, int | None]:
    if msg is None:
        return None, None
    return target_output(msg), prompt_tokens(msg)


def _as_chunk(message: BaseMessage) -> BaseMessageChunk:
    """``message`` as a chunk: itself when it is one, else an ``AIMessageChunk`` with the
    same fields (content, tool calls, usage, id), as LangChain's own merge expects."""
    if isinstance(message, BaseMessageChunk):
        return message
    return AIMessageChunk(**message.model_dump(exclude={"type"}))
