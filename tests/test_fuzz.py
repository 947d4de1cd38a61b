"""Fuzzing the compressor on the real proxy: generated prompts never raise, and every protected
region planted in them comes out byte-identical.

Prompts mix scripts (Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari, Chinese, Japanese,
Thai), emoji with ZWJ and skin tones, flags, RTL/LTR marks, CRLF, tabs, very long tokens, and
planted regions: fenced code holding JSON, nested JSON (strict and with trailing commas),
markdown tables, unfenced Python/SQL/YAML lines, URLs, e-mails, numbers glued to letters of any
script, ids, quotes of every mark, and ``<keep>`` spans.

CI runs ``PROMPTSIEVE_FUZZ_EXAMPLES`` examples per test (default 80); the large run
(``python -m benchmarks.fuzz``) sets it to thousands, see the README.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptsieve import ConfigError
from promptsieve.compressor import Compressor, CompressorConfig
from promptsieve.proxy import Proxy

EXAMPLES = int(os.environ.get("PROMPTSIEVE_FUZZ_EXAMPLES", "80"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("PROMPTSIEVE_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def comp(proxy: Proxy) -> Compressor:
    return Compressor(CompressorConfig(model="gpt-4o"), proxy=proxy)


# ---------------------------------------------------------------------------- prose

WORDS = {
    "latin": "report growth river model answer quick brown value system meeting coffee"
    " naïve café Straße über façade",
    "cyrillic": "отчёт рост река модель ответ быстрый значение система",
    "greek": "αναφορά ανάπτυξη ποτάμι μοντέλο απάντηση",
    "arabic": "تقرير نمو نهر نموذج إجابة سريع",
    "hebrew": "דוח צמיחה נהר מודל תשובה",
    "devanagari": "रिपोर्ट विकास नदी मॉडल उत्तर",
    "zh": "我们的订单系统每天处理大量请求客户服务团队负责回答问题",
    "ja": "会議は東京本社で開催されます参加者は事前に資料を確認してください",
    "th": "ทีมงานของเราจะติดต่อกลับภายในสองวันทำการ",
    "emoji": "👍 🎉 👨‍👩‍👧 👩🏽‍💻 🇫🇷 🏳️‍🌈 ❤️",
}
_word = st.sampled_from(sorted(WORDS)).flatmap(
    lambda script: (
        st.sampled_from(WORDS[script].split())
        if script not in ("zh", "ja", "th")
        else st.integers(0, len(WORDS[script]) - 4).map(
            lambda i, s=script: WORDS[s][i : i + 2 + i % 5]  # type: ignore[misc]
        )
    )
)
_long_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzäöü", min_size=60, max_size=400)
_mark = st.sampled_from(["", "", "", "\u200f", "\u200e", "\u200d", "\u200c"])
_prose = st.lists(
    st.one_of(_word, _word, _word, _long_token).flatmap(
        lambda w: _mark.map(lambda m, w=w: w + m)  # type: ignore[misc]
    ),
    min_size=1,
    max_size=30,
).flatmap(
    lambda ws: st.sampled_from([" ", " ", "  ", "\t", ", "]).map(
        lambda sep, ws=ws: sep.join(ws) + "."  # type: ignore[misc]
    )
)

# ---------------------------------------------------------------------------- regions

_key = st.text(alphabet="abcdefgh_", min_size=1, max_size=8)
_json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.text(alphabet="abc xyz😀中文é\"\\/'", max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_key, inner, max_size=4),
    max_leaves=12,
)
_json = st.tuples(
    st.dictionaries(_key, _json_value, min_size=1, max_size=4),
    st.sampled_from([None, 2]),
    st.booleans(),
).map(
    lambda t: (
        json.dumps(t[0], indent=t[1], ensure_ascii=False).replace("\n}", ",\n}")
        if t[2] and t[1]
        else json.dumps(t[0], indent=t[1], ensure_ascii=False)
    )
)
_code_body = st.sampled_from(
    [
        "def f(x):\n    return {'a': x}",
        "for i in range(3):\n\tprint(i)",
        "const o = {a: 1, b: [2, 3]};",
        "SELECT a, b FROM t WHERE c = 1;",
    ]
)
_fenced = st.tuples(_code_body, _json).map(lambda t: f"```\n{t[0]}\ncfg = {t[1]}\n```")
_table = st.lists(st.tuples(_word, st.integers(0, 9999), _word), min_size=1, max_size=5).map(
    lambda rows: (
        "| name | qty | note |\n| --- | ---: | :-- |\n"
        + "\n".join(f"| {a} | {n} | {b} |" for a, n, b in rows)
    )
)
_unfenced = st.sampled_from(
    [
        "return sum(i.price for i in items if i.active)",
        "result = compute(alpha, beta=2)",
        "SELECT name, price FROM items WHERE active = 1;",
        "server:\n  host: localhost\n  port: 8080",
        "name,qty,city\nBob,42,Paris\nAlice,7,Rome",
        'Traceback (most recent call last):\n  File "a.py", line 3, in <module>\nKeyError: 3',
    ]
)
_url = st.text(alphabet="abcxyz0123/_-", min_size=1, max_size=20).map(
    lambda p: f"https://example.com/{p}?q=1&r=2"
)
_email = st.tuples(_key, _key).map(
    lambda t: f"{t[0].strip('_') or 'a'}.x@{t[1].strip('_') or 'b'}.org"
)
_glued_number = st.tuples(
    st.integers(0, 99999),
    st.sampled_from(["кг", "руб", "km", "天", "個", "%", "日", "ชม", "ms", "€"]),
).map(lambda t: f"{t[0]}{t[1]}")
_ident = st.sampled_from(
    [
        "INV/2024/00042",
        "AB12 CDE",
        "deadbeef-cafe-babe-face-0123456789ab",
        "GB82 WEST 1234 5698 7654 32",
        "data:image/png;base64,iVBORw0KGgo+AAAANSUhEUgAA/AAAB+CAYAAAA=",
        "<|im_start|>",
        "</s>",
        "get_user_name",
        "v2.10.3",
        "2024-03-05T10:30:00Z",
    ]
)
_QUOTES = [('"', '"'), ("“", "”"), ("„", "“"), ("«", "»"), ("「", "」"), ("‘", "’"), ("'", "'")]
_quote = st.tuples(
    st.sampled_from(_QUOTES), st.lists(_word.filter(lambda w: w.isalnum()), min_size=1, max_size=60)
).map(lambda t: t[0][0] + " ".join(t[1]) + t[0][1])
_keep = st.lists(_word, min_size=1, max_size=5).map(lambda ws: "<keep>" + " ".join(ws) + "</keep>")

#: (strategy, is a block that needs lines of its own)
REGIONS: list[tuple[st.SearchStrategy[str], bool]] = [
    (_fenced, True),
    (_json, False),
    (_table, True),
    (_unfenced, True),
    (_url, False),
    (_email, False),
    (_glued_number, False),
    (_ident, False),
    (_quote, False),
    (_keep, False),
]
_region = st.sampled_from(range(len(REGIONS))).flatmap(
    lambda k: REGIONS[k][0].map(lambda r, k=k: (r, REGIONS[k][1]))  # type: ignore[misc]
)
_newline = st.sampled_from(["\n", "\r\n", "\n\n", "\r\n\r\n"])
_space = st.sampled_from([" ", "\t", " \u200f", "\u200e ", "\n", "\r\n"])


@st.composite
def prompts(draw: Callable[[st.SearchStrategy[Any]], Any]) -> tuple[str, list[str]]:
    """A prompt and the regions planted in it, in order (keep-markers stripped)."""
    pieces: list[str] = []
    planted: list[str] = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()):
            pieces.append(draw(_prose) + draw(_space))
        region, block = draw(_region)
        planted.append(region.replace("<keep>", "").replace("</keep>", ""))
        pieces.append(region)
        pieces.append(draw(_newline) if block else draw(_space))
        if block and len(pieces) >= 2:
            pieces.insert(len(pieces) - 2, draw(_newline))
    pieces.append(draw(_prose))
    return "".join(pieces), planted


def _assert_planted(out: str, planted: list[str]) -> None:
    pos = 0
    for region in planted:
        for line in region.splitlines() if "\n" in region else [region]:
            found = out.find(line.strip("\r"), pos)
            assert found >= 0, f"planted region altered or lost: {line!r}\n--- out:\n{out}"
            pos = found + len(line.strip("\r"))


@FUZZ
@given(prompts(), st.sampled_from([0.2, 0.35, 0.5, 0.65, 0.8]))
def test_planted_regions_survive(
    comp: Compressor, prompt: tuple[str, list[str]], ratio: float
) -> None:
    text, planted = prompt
    r = comp.compress(text, ratio=ratio)
    _assert_planted(r.text, planted)
    assert r.tokens_after <= r.tokens_before


@FUZZ
@given(prompts(), st.floats(0.1, 0.9))
def test_target_tokens_never_raises_and_keeps_regions(
    comp: Compressor, prompt: tuple[str, list[str]], share: float
) -> None:
    text, planted = prompt
    target = max(1, int(share * comp.count_tokens(text)))
    r = comp.compress(text, target_tokens=target)
    _assert_planted(r.text, planted)


@FUZZ
@given(st.text(max_size=600), st.sampled_from([0.1, 0.5, 0.9]))
def test_any_text_never_raises_and_is_never_emptied(
    comp: Compressor, text: str, ratio: float
) -> None:
    r = comp.compress(text, ratio=ratio)
    if text.strip():
        assert r.text.strip()
    else:
        assert r.text == text


@FUZZ
@given(st.text(max_size=80), st.sampled_from(["\ud83d", "\udc80", "\udfff"]), st.text(max_size=80))
def test_lone_surrogates_always_raise_config_error(
    comp: Compressor, before: str, surrogate: str, after: str
) -> None:
    with pytest.raises(ConfigError):
        comp.compress(before + surrogate + after, ratio=0.5)


# ---------------------------------------------------------------------------- through the wrapper


@pytest.fixture(scope="module")
def wrapped(comp: Compressor) -> Iterator[tuple[Any, Any, Any]]:
    from openai import OpenAI

    from _scripted_server import ScriptedServer
    from promptsieve.sieve import Sieve, SieveConfig
    from promptsieve_openai import wrap_openai

    sieve = Sieve(
        SieveConfig(verify=False, ratio=0.5, guard=False, scoring_budget_ms=60_000),
        compressor=comp,
    )
    with ScriptedServer() as server:
        client = wrap_openai(OpenAI(base_url=server.url, api_key="x", max_retries=0), sieve)
        yield client, server, sieve
    sieve.close()


@settings(FUZZ, max_examples=max(10, EXAMPLES // 4))
@given(prompts())
def test_wrapped_client_sends_planted_regions_intact(
    wrapped: tuple[Any, Any, Any], prompt: tuple[str, list[str]]
) -> None:
    client, server, sieve = wrapped
    text, planted = prompt
    errors = sieve.stats.errors
    server.clear()
    out = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": text + "\n\nWhat is the total?"},
        ],
    )
    assert out.choices[0].message.content == "ok"
    sent = server.bodies("/chat/completions")[0]["messages"]
    assert sent[0]["content"] == "Answer briefly."
    _assert_planted(sent[1]["content"], planted)
    assert sieve.stats.errors == errors  # valid prompts never take the fail-open path
