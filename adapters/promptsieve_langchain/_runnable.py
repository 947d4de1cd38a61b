"""An LCEL step that compresses a prompt on its way to the model.

``prompt | compress_messages(task="qa") | llm``: the step hands on its input unchanged
unless the sieve's gate has a passed verdict for the task (or verification is switched
off), and reports each decision as a custom callback event. It never sees the model's
answer, so on its own it cannot screen; give it ``target=llm`` and it screens through
that model in the background (both variants are sent, since the live answer is out of
its reach), or let a wrapped chat model or ``promptsieve screen`` build the verdict.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseLanguageModel, LanguageModelInput
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from pydantic import ConfigDict, PrivateAttr

from promptsieve import Call, Prompt, Request, Sieve, TargetOutput
from promptsieve_langchain._convert import (
    Converted,
    convert_input,
    model_name,
    target_output,
)
from promptsieve_langchain._sieves import COMPARISON_CONFIG, EVENT, event_data, resolve
from promptsieve_langchain._sieves import check_settings as _check

__all__ = ["CompressMessages", "compress_messages"]

log = logging.getLogger(__name__)

#: Target model name in verdict keys when the step is not told which model follows it.
UNKNOWN_MODEL = "unknown"


class CompressMessages(RunnableSerializable[LanguageModelInput, LanguageModelInput]):
    """Compresses any LanguageModelInput, returning the same kind (see compress_messages)."""

    sieve: Any = None
    task: str | None = None
    verify: bool | None = None
    ratio: float | None = None
    target: Any = None

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _resolve: resolve = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        # Checked before pydantic runs, so that a bad setting raises ConfigError itself.
        _check(data)
        super().__init__(**data)

    def model_post_init(self, context: Any, /) -> None:
        self._resolve = resolve(self.sieve, verify=self.verify, ratio=self.ratio)

    @property
    def target_model(self) -> str:
        """The model name verdicts are keyed by."""
        if isinstance(self.target, str):
            return self.target
        if self.target is None:
            return UNKNOWN_MODEL
        return model_name(self.target)

    @property
    def effective_sieve(self) -> Sieve:
        """The sieve this step runs (its own, or one derived for ``verify``/``ratio``)."""
        return self._resolve()

    # -- sync -----------------------------------------------------------------------------
    # The step never sees the model's answer: leaving the call compares both variants
    # through ``target`` (when it is a model), or frees the shadow slot (when not).
    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> LanguageModelInput:
        return self._call_with_config(self._run, input, config, **kwargs)

    def _run(self, value: LanguageModelInput, run_manager: Any, config: RunnableConfig) -> Any:
        conv = convert_input(value)
        if conv is None:
            return value
        sieve = self._resolve()
        self._resolve.warm()
        with self._call(sieve, conv, self._sender(conv)) as call:
            try:
                child = patch_config(config, callbacks=run_manager.get_child())
                dispatch_custom_event(EVENT, event_data(call.plan, component="runnable"),
                                      config=child)  # fmt: skip
            except Exception as exc:  # reporting must never fail the chain
                log.debug("promptsieve: could not dispatch the event: %s", type(exc).__name__)
        return call.payload

    def _call(self, sieve: Sieve, conv: Converted, send: Any) -> Call[LanguageModelInput]:
        request = Request(conv.prompt, self.target_model, "langchain")
        return sieve.call(
            request, self.task, original=conv.original, rebuild=conv.rebuild, send_variant=send
        )

    def _sender(self, conv: Converted) -> Any:
        target = self.target
        if not isinstance(target, BaseLanguageModel):
            return None

        def send(prompt: Prompt) -> TargetOutput:
            return target_output(target.invoke(conv.rebuild(prompt), COMPARISON_CONFIG))

        return send

    # -- async ----------------------------------------------------------------------------
    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> LanguageModelInput:
        return await self._acall_with_config(self._arun, input, config, **kwargs)

    async def _arun(
        self, value: LanguageModelInput, run_manager: Any, config: RunnableConfig
    ) -> Any:
        conv = convert_input(value)
        if conv is None:
            return value
        sieve = self._resolve()
        await asyncio.to_thread(self._resolve.warm)
        async with self._call(sieve, conv, self._asender(conv)) as call:
            try:
                child = patch_config(config, callbacks=run_manager.get_child())
                await adispatch_custom_event(
                    EVENT, event_data(call.plan, component="runnable"), config=child
                )
            except Exception as exc:
                log.debug("promptsieve: could not dispatch the event: %s", type(exc).__name__)
        return call.payload

    def _asender(self, conv: Converted) -> Any:
        target = self.target
        if not isinstance(target, BaseLanguageModel):
            return None

        async def send(prompt: Prompt) -> TargetOutput:
            result = await target.ainvoke(conv.rebuild(prompt), COMPARISON_CONFIG)
            return target_output(result)

        return send


def compress_messages(
    sieve: Sieve | None = None,
    *,
    task: str | None = None,
    ratio: float | None = None,
    verify: bool | None = None,
    target: BaseLanguageModel[Any] | str | None = None,
) -> CompressMessages:
    """A Runnable that compresses a prompt for the model after it in an LCEL chain.

    Accepts a PromptValue, a string or a list of messages and returns the same kind; only
    human/AI text changes. ``task`` names the verdict (``with promptsieve.task(...)``
    overrides it). ``target`` is the model that follows (its name keys the verdict, and
    when it is a model the step screens through it in the background); a string is just
    the name. ``verify=False`` compresses every prompt at ``ratio`` without a verdict.
    ``sieve`` defaults to :func:`default_sieve`. Each call dispatches the custom event
    ``"promptsieve.compression"`` with token counts and the decision (no prompt text).
    """
    return CompressMessages(sieve=sieve, task=task, ratio=ratio, verify=verify, target=target)
