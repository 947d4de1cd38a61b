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


def _client(srv: ScriptedServer) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=srv.url, api_key="test", max_retries=0)


@pytest.mark.parametrize("shape", ["text", "pairs"])
def test_wrap_openai_applies_the_passed_rung(
    scorer: CosineScorer, tmp_path: Path, shape: str
) -> None:
    from promptsieve.fidelity import Gate
    from promptsieve.sieve import Sieve, SieveConfig
    from promptsieve.testing import FixedVerdictStore
    from promptsieve_openai import wrap_openai

    comp = DemoCompressor(DEMOS, VAL, fmt=FMT, scorer=scorer,
                          config=DemoAttributionConfig(cache_dir=tmp_path))  # fmt: skip
    attr = comp.wait(120)
    assert attr is not None
    kept = attr.keep(comp.keep_count(0.5))
    question = "What is the capital of Spain?"
    if shape == "text":
        messages = [{"role": "user", "content": FMT.render(DEMOS, question)}]
        expect = [{"role": "user", "content": FMT.render([DEMOS[i] for i in kept], question)}]
    else:
        pairs = []
        for d in DEMOS:
            pairs += [
                {"role": "user", "content": d.input},
                {"role": "assistant", "content": d.output},
            ]
        messages = [{"role": "system", "content": "Be brief."}, *pairs,
                    {"role": "user", "content": question}]  # fmt: skip
        # the OpenAI adapter rebuilds a request message for message: a prompt whose messages
        # would go away is sent unchanged (fail open), counted as an error
        kept_pairs = [m for i in kept for m in pairs[2 * i : 2 * i + 2]]
        direct = comp.compress(_neutral(messages), ratio=0.5)
        assert [m.content for m in direct.prompt] == [
            m["content"] for m in [messages[0], *kept_pairs, messages[-1]]
        ]
        expect = messages
    sieve = Sieve(SieveConfig(guard=False), compressor=comp,
                  gate=Gate(FixedVerdictStore.passed(0.5)))  # fmt: skip
    with ScriptedServer() as srv:
        client = wrap_openai(_client(srv), sieve, task="demo-task")
        out = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert out.choices[0].message.content == "ok"
        sent = srv.bodies("/chat/completions")[0]["messages"]
    assert sent == expect
    assert sieve.stats.compressed == (1 if shape == "text" else 0)


def _neutral(messages: list[dict[str, str]]) -> tuple[Any, ...]:
    from promptsieve.prompt import Message

    return tuple(Message.text(m["role"], m["content"]) for m in messages)


def test_wrap_openai_fails_open_when_attribution_fails(scorer: CosineScorer) -> None:
    from promptsieve.fidelity import Gate
    from promptsieve.sieve import Sieve, SieveConfig
    from promptsieve.testing import FixedVerdictStore
    from promptsieve_openai import wrap_openai

    comp = DemoCompressor(DEMOS, VAL, fmt=FMT, scorer=Broken(scorer.proxy),
                          config=DemoAttributionConfig(cache=False))  # fmt: skip
    assert comp.wait(60) is None
    sieve = Sieve(SieveConfig(guard=False), compressor=comp,
                  gate=Gate(FixedVerdictStore.passed(0.5)))  # fmt: skip
    messages = [{"role": "user", "content": FMT.render(DEMOS, "What is 2+2?")}]
    with ScriptedServer() as srv:
        client = wrap_openai(_client(srv), sieve, task="demo-task")
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert srv.bodies("/chat/completions")[0]["messages"] == messages
