"""Demonstration selection through the adapters: the LangChain example selector and the
sieve (wrap_openai) with ``DemoCompressor``, against a real HTTP server on 127.0.0.1 and the
real MiniLM proxy as the value function (the LM proxy path is in ``test_lm_proxy.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _demo_helpers import DEMOS, FMT, VAL, CosineScorer
from _scripted_server import ScriptedServer
from promptsieve.demos import DemoAttributionConfig, DemoCompressor, attribute_demos

EXAMPLES = [{"question": d.input, "answer": d.output} for d in DEMOS]


@pytest.fixture
def scorer(proxy: Any) -> CosineScorer:
    return CosineScorer(proxy)


class Broken(CosineScorer):
    def values(self, *a: Any, **k: Any) -> np.ndarray:
        raise RuntimeError("proxy crashed")


def test_example_selector_in_few_shot_templates(scorer: CosineScorer, tmp_path: Path) -> None:
    from langchain_core.prompts import (
        ChatPromptTemplate,
        FewShotChatMessagePromptTemplate,
        FewShotPromptTemplate,
        PromptTemplate,
    )

    from promptsieve_langchain import SieveExampleSelector

    cfg = DemoAttributionConfig(cache_dir=tmp_path)
    attr = attribute_demos(DEMOS, VAL, fmt=FMT, config=cfg, scorer=scorer)
    best = [EXAMPLES[i] for i in attr.keep(3)]
    sel = SieveExampleSelector(EXAMPLES, [(v.input, v.answer) for v in VAL], keep=3, fmt=FMT,
                               config=cfg, scorer=scorer)  # fmt: skip
    tpl = FewShotPromptTemplate(
        example_selector=sel,
        example_prompt=PromptTemplate.from_template("Q: {question}\nA: {answer}"),
        prefix="Answer the question.",
        suffix="Q: {input}\nA:",
        input_variables=["input"],
    )
    text = tpl.format(input="What is the capital of Spain?")
    for e in EXAMPLES:
        assert (f"Q: {e['question']}\nA: {e['answer']}" in text) == (e in best)
    chat = FewShotChatMessagePromptTemplate(
        example_selector=sel,
        example_prompt=ChatPromptTemplate.from_messages(
            [("human", "{question}"), ("ai", "{answer}")]
        ),
        input_variables=["input"],
    )
    msgs = chat.format_messages(input="What is the capital of Spain?")
    assert [m.content for m in msgs] == [x for e in best for x in (e["question"], e["answer"])]
    # clean mode keeps exactly the non-negative ones
    clean = SieveExampleSelector(EXAMPLES, VAL, keep="clean", fmt=FMT, config=cfg, scorer=scorer)
    neg = set(attr.negative())
    assert clean.select_examples({}) == [e for i, e in enumerate(EXAMPLES) if i not in neg]
    # fail open: a crashing proxy keeps every example
    broken = SieveExampleSelector(EXAMPLES, VAL, keep=2, fmt=FMT, scorer=Broken(scorer.proxy),
                                  config=DemoAttributionConfig(cache=False))  # fmt: skip
    assert broken.select_examples({"input": "x"}) == EXAMPLES


def test_example_selector_rejects_bad_configuration(scorer: CosineScorer) -> None:
    from promptsieve import ConfigError
    from promptsieve_langchain import SieveExampleSelector

    with pytest.raises(ConfigError, match="keep"):
        SieveExampleSelector(EXAMPLES, VAL, keep="all", scorer=scorer)
    with pytest.raises(ConfigError, match="lacks"):
        SieveExampleSelector([*EXAMPLES, {"q": "x"}], VAL, scorer=scorer)
    with pytest.raises(ConfigError, match="validation"):
        SieveExampleSelector(EXAMPLES, [], scorer=scorer)


def test_example_selector_reuses_the_demo_compressors_attribution(
    scorer: CosineScorer, tmp_path: Path
) -> None:
    """The selector attributes through a DemoCompressor: the same cache key and values (read
    back, not recomputed), the same rung at the same fraction; adding an example starts a
    new attribution over the larger set."""
    from promptsieve_langchain import SieveExampleSelector

    cfg = DemoAttributionConfig(cache_dir=tmp_path)
    comp = DemoCompressor(DEMOS, VAL, fmt=FMT, config=cfg, scorer=scorer)
    attr = comp.prepare()
    calls = scorer.calls
    sel = SieveExampleSelector(EXAMPLES, VAL, keep=0.5, fmt=FMT, config=cfg, scorer=scorer)
    assert sel.attribution is None
    mine = sel.prepare()
    assert (mine.key, mine.values, mine.cached) == (attr.key, attr.values, True)
    assert scorer.calls == calls
    assert sel.select_examples({}) == [EXAMPLES[i] for i in attr.keep(comp.keep_count(0.5))]
    sel.add_example({"question": "What is 2 + 2?", "answer": "4"})
    assert sel.attribution is None
    assert len(sel.select_examples({})) == 4 and sel.attribution is not None
    assert sel.attribution.n == len(DEMOS) + 1 and scorer.calls > calls


def _client(srv: ScriptedServer) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=srv.url, api_key="test", max_retries=0)


def _sieve(comp: DemoCompressor) -> Any:
    from promptsieve.fidelity import Gate
    from promptsieve.sieve import Sieve, SieveConfig
    from promptsieve.testing import FixedVerdictStore

    return Sieve(SieveConfig(guard=False), compressor=comp,
                 gate=Gate(FixedVerdictStore.passed(0.5)))  # fmt: skip


def _compressor(scorer: CosineScorer, tmp_path: Path) -> tuple[DemoCompressor, list[int]]:
    comp = DemoCompressor(DEMOS, VAL, fmt=FMT, scorer=scorer,
                          config=DemoAttributionConfig(cache_dir=tmp_path))  # fmt: skip
    attr = comp.wait(120)
    assert attr is not None
    kept = attr.keep(comp.keep_count(0.5))
    assert 0 < len(kept) < len(DEMOS)
    return comp, kept


QUESTION = "What is the capital of Spain?"


def test_wrap_openai_applies_the_passed_rung_to_rendered_demos(
    scorer: CosineScorer, tmp_path: Path
) -> None:
    from promptsieve_openai import wrap_openai

    comp, kept = _compressor(scorer, tmp_path)
    messages = [{"role": "user", "content": FMT.render(DEMOS, QUESTION)}]
    sieve = _sieve(comp)
    with ScriptedServer() as srv:
        client = wrap_openai(_client(srv), sieve, task="demo-task")
        out = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert out.choices[0].message.content == "ok"
        sent = srv.bodies("/chat/completions")[0]["messages"]
    assert sent == [{"role": "user", "content": FMT.render([DEMOS[i] for i in kept], QUESTION)}]
    assert sieve.stats.compressed == 1


def _pairs(**extra: Any) -> list[dict[str, Any]]:
    """The demonstrations as chat turns (the OpenAI cookbook's way: a user message, then the
    assistant's answer, optionally named ``example_user`` / ``example_assistant``)."""
    out: list[dict[str, Any]] = []
    for d in DEMOS:
        out += [
            {"role": "user", "content": d.input, **extra.get("user", {})},
            {"role": "assistant", "content": d.output, **extra.get("assistant", {})},
        ]
    return out


@pytest.mark.parametrize("endpoint", ["chat", "responses"])
def test_wrap_openai_drops_demonstration_message_pairs(
    scorer: CosineScorer, tmp_path: Path, endpoint: str
) -> None:
    """Demonstrations given as user/assistant message pairs: the passed rung's least useful
    pairs are left out of what the server receives; the system message, a conversation turn
    that is not a demonstration, a named pair's fields and the final question go out as
    they were."""
    from promptsieve_openai import wrap_openai

    comp, kept = _compressor(scorer, tmp_path)
    pairs = _pairs(user={"name": "example_user"}, assistant={"name": "example_assistant"})
    system = {"role": "system", "content": "Be brief."}
    chat_turn = [  # not a demonstration: never dropped
        {"role": "user", "content": "Hello, can you answer quiz questions?"},
        {"role": "assistant", "content": "Yes, ask away."},
    ]
    final = {"role": "user", "content": [{"type": "text", "text": QUESTION}]}
    if endpoint == "responses":
        final = {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}
    messages = [system, *chat_turn, *pairs, final]
    expect = [system, *chat_turn, *[m for i in kept for m in pairs[2 * i : 2 * i + 2]], final]
    sieve = _sieve(comp)
    with ScriptedServer() as srv:
        client = wrap_openai(_client(srv), sieve, task="demo-task")
        if endpoint == "chat":
            out = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            assert out.choices[0].message.content == "ok"
            sent = srv.bodies("/chat/completions")[0]["messages"]
        else:
            resp = client.responses.create(model="gpt-4o-mini", input=messages)
            assert resp.output_text == "ok"
            sent = srv.bodies("/responses")[0]["input"]
    assert sent == expect
    assert sieve.stats.compressed == 1 and sieve.stats.errors == 0
    assert sieve.stats.tokens_after < sieve.stats.tokens_before


def test_wrap_openai_screens_a_demonstration_rung_with_pairs(
    scorer: CosineScorer, tmp_path: Path
) -> None:
    """While screening, the live request is the original and the shadow comparison sends
    the rung's prompt without the dropped pairs; the agreement is recorded for that rung
    (how a demonstration rung earns its verdict through wrap_openai)."""
    from promptsieve.fidelity import Gate
    from promptsieve.sieve import Sieve, SieveConfig
    from promptsieve.testing import FixedVerdictStore
    from promptsieve_openai import wrap_openai

    comp, kept = _compressor(scorer, tmp_path)
    pairs = _pairs()
    messages = [{"role": "system", "content": "Be brief."}, *pairs,
                {"role": "user", "content": QUESTION}]  # fmt: skip
    store = FixedVerdictStore.screening(0.5)
    sieve = Sieve(SieveConfig(guard=False), compressor=comp, gate=Gate(store))
    with ScriptedServer() as srv:
        client = wrap_openai(_client(srv), sieve, task="demo-task")
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert sieve.flush(30)
        live, shadow = (b["messages"] for b in srv.bodies("/chat/completions"))
    assert live == messages
    assert shadow == [messages[0], *[m for i in kept for m in pairs[2 * i : 2 * i + 2]],
                      messages[-1]]  # fmt: skip
    assert store.recorded == [("demo-task", 0.5, True)]


def test_wrap_openai_keeps_pairs_it_cannot_drop(scorer: CosineScorer, tmp_path: Path) -> None:
    """A demonstration pair whose assistant turn carries a tool call cannot be left out (a
    later message may refer to it): the whole request goes out unchanged (fail open),
    counted as an error."""
    from promptsieve_openai import wrap_openai

    comp, _ = _compressor(scorer, tmp_path)
    call = {"id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": "{}"}}  # fmt: skip
    pairs = _pairs(assistant={"tool_calls": [call]})
    messages = [*pairs, {"role": "user", "content": QUESTION}]
    sieve = _sieve(comp)
    with ScriptedServer() as srv:
        client = wrap_openai(_client(srv), sieve, task="demo-task")
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        sent = srv.bodies("/chat/completions")[0]["messages"]
    assert sent == messages
    assert sieve.stats.compressed == 0 and sieve.stats.errors == 1


@pytest.mark.parametrize("shape", ["text", "pairs"])
def test_wrap_openai_fails_open_when_attribution_fails(scorer: CosineScorer, shape: str) -> None:
    from promptsieve_openai import wrap_openai

    comp = DemoCompressor(DEMOS, VAL, fmt=FMT, scorer=Broken(scorer.proxy),
                          config=DemoAttributionConfig(cache=False))  # fmt: skip
    assert comp.wait(60) is None
    sieve = _sieve(comp)
    if shape == "text":
        messages = [{"role": "user", "content": FMT.render(DEMOS, QUESTION)}]
    else:
        messages = [{"role": "system", "content": "Be brief."}, *_pairs(),
                    {"role": "user", "content": QUESTION}]  # fmt: skip
    with ScriptedServer() as srv:
        client = wrap_openai(_client(srv), sieve, task="demo-task")
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert srv.bodies("/chat/completions")[0]["messages"] == messages
    assert sieve.stats.compressed == 0


def test_converter_leaves_out_only_plain_text_turns() -> None:
    """The rule behind the pairs shape, on the core converter (shared with offline
    screening): whole user/assistant text messages may be left out; a kept message must be
    unchanged; tool calls, non-text parts, rewrites combined with removals and an empty
    prompt raise UnsupportedRequest (the adapter then sends the original)."""
    from dataclasses import replace

    from promptsieve import TextPart, UnsupportedRequest
    from promptsieve.convert import from_openai

    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q1", "name": "example_user"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": [{"type": "text", "text": "q2"}, image]},
        {"role": "assistant", "content": "a2", "tool_calls": [call]},
        {"role": "user", "content": "final"},
    ]
    conv = from_openai("chat", {"model": "m", "messages": messages})
    assert conv is not None
    p = conv.request.prompt
    assert not isinstance(p, str)
    body = conv.rebuild((p[0], p[3], p[4], p[5]))
    assert body["messages"] == [messages[0], *messages[3:]]
    assert body["messages"][1] is messages[3]  # kept messages are the caller's objects
    # equal (not identical) messages are matched too
    equal = tuple(replace(m) for m in (p[0], p[3], p[4], p[5]))
    assert conv.rebuild(equal)["messages"] == [messages[0], *messages[3:]]
    for bad in (
        (p[0], p[1], p[2], p[5]),  # the image turn and the tool-call turn
        (p[1], p[2], p[3], p[4], p[5]),  # the system message
        (p[0], p[3], p[4], p[5].with_parts([TextPart("other")])),  # a removal and a rewrite
        (),
    ):
        with pytest.raises(UnsupportedRequest):
            conv.rebuild(bad)


def test_wrap_anthropic_drops_demonstration_message_pairs(
    scorer: CosineScorer, tmp_path: Path
) -> None:
    """The same through ``wrap_anthropic``: the Messages body goes out without the least
    useful pairs; ``system`` (the parameter, with its cache_control), a chat turn that is not
    a demonstration and the final question go out as they were."""
    pytest.importorskip("anthropic", reason="the anthropic extra is not installed")
    import anthropic

    from _anthropic_server import AnthropicServer
    from promptsieve_anthropic import wrap_anthropic

    comp, kept = _compressor(scorer, tmp_path)
    pairs = _pairs()
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    chat_turn = [  # not a demonstration: never dropped
        {"role": "user", "content": "Hello, can you answer quiz questions?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Yes, ask away."}]},
    ]
    final = {"role": "user", "content": [{"type": "text", "text": QUESTION}]}
    messages = [*chat_turn, *pairs, final]
    expect = [*chat_turn, *[m for i in kept for m in pairs[2 * i : 2 * i + 2]], final]
    sieve = _sieve(comp)
    with AnthropicServer() as srv:
        client = wrap_anthropic(
            anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=0),
            sieve,
            task="demo-task",
        )
        out = client.messages.create(
            model="claude-test", max_tokens=16, system=system, messages=messages
        )
        assert out.content[0].text == "ok"
        (sent,) = srv.bodies()
    assert sent["messages"] == expect and sent["system"] == system
    assert sieve.stats.compressed == 1
    sieve.close()
