"""Every promised protection, on the real proxy (ONNX head scorer), at the ratios users pick.

Each case plants a region of one kind in plain prose (which the scorer is free to thin) and
checks that the region comes out byte-identical, that the prose around it was really pruned
(so a test cannot pass by compressing nothing), and that the kind's structure survives.
"""

from __future__ import annotations

from typing import Any

import pytest

from promptsieve import ConfigError
from promptsieve._regions import icu_words
from promptsieve.compressor import Compressor, CompressorConfig
from promptsieve.prompt import Message
from promptsieve.proxy import Proxy

RATIOS = (0.3, 0.5, 0.8)

PROSE = (
    "Our team reviewed the quarterly figures with the regional managers during the long "
    "meeting on Tuesday afternoon, and several people mentioned that the coffee machine on the "
    "third floor had been broken again for most of the week, which annoyed everyone. "
)
TAIL = "\n\nPlease read the material above carefully before you answer the question."


@pytest.fixture(scope="module")
def comp(proxy: Proxy) -> Compressor:
    return Compressor(CompressorConfig(model="gpt-4o"), proxy=proxy)


def _run(comp: Compressor, region: str, ratio: float) -> str:
    text = PROSE + "\n\n" + region + "\n\n" + PROSE + TAIL
    r = comp.compress(text, ratio=ratio)
    assert r.changed and r.tokens_after < r.tokens_before, "nothing was pruned"
    return r.text


TABLE = (
    "| Region | Q1 revenue | Q2 revenue | Owner |\n"
    "| --- | ---: | :---: | --- |\n"
    "| North | 1,200 | 1,350 | Alice Smith |\n"
    "| South west coast | 980 | 1,010 | Bob |\n"
    "|  |  | pending review |  |"
)
CODE = {
    "python": "def total(items):\n    return sum(i.price for i in items if i.active)",
    "python_line": "return sum(i.price for i in items if i.active)",
    "sql": "SELECT name, price FROM items WHERE active = 1 ORDER BY price DESC;",
    "traceback": (
        "Traceback (most recent call last):\n"
        '  File "app.py", line 12, in <module>\n'
        "    main()\n"
        '  File "app.py", line 8, in main\n'
        '    raise ValueError("bad input")\n'
        "ValueError: bad input"
    ),
    "yaml": "server:\n  host: localhost\n  port: 8080\n  debug: true\nretries: 3",
    "csv": "name,region,revenue,owner\nAlice,North,1200,team a\nBob,South,980,team b",
    "js_object": "const config = {host: 'example', port: 80, retry: true, tags: ['a', 'b']};",
    "json_trailing_commas": '{\n  "name": "widget",\n  "sizes": [1, 2, 3,],\n  "active": true,\n}',
    "shell": "$ pip install promptsieve --upgrade",
}
IDENTIFIERS = [
    "INV/2024/00042",
    "AB12 CDE",
    "SW1A 1AA",
    "deadbeef-cafe-babe-face-0123456789ab",
    "abcdefab-cdef-4abc-8def-abcdefabcdef",
    "GB82 WEST 1234 5698 7654 32",
    "DE89 3704 0044 0532 0130 00",
    "data:image/png;base64,iVBORw0KGgo+AAAANSUhEUgAA/AAAB+CAYAAAA=",
    "<|im_start|>",
    "<|im_end|>",
    "</s>",
    "[INST]",
    "ORD-77-A",
    "order_id",
]
NUMBERS = ["超过7天", "于10時30分", "25кг", "1500руб", "3,5", "٣٤٥", "2024年3月15日", "50%"]
QUOTES = [
    '"' + ("Please keep the apartment tidy, water the plants every other day, " * 4) + 'done."',
    "“Bring the blue folder and the signed contract to the front desk.”",
    "„Bitte bringen Sie den Vertrag morgen früh mit.“",
    "«Apportez le dossier bleu demain matin, s'il vous plaît.»",
    "「明日の会議には青いファイルを持ってきてください。」",
    "‘Leave the keys under the mat when you go out.’",
    "'Do not change the thermostat settings at all.'",
]


@pytest.mark.parametrize("ratio", RATIOS)
def test_table_structure_survives(comp: Compressor, ratio: float) -> None:
    out = _run(comp, TABLE, ratio)
    assert TABLE in out


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("kind", sorted(CODE))
def test_unfenced_code_and_config_survive(comp: Compressor, kind: str, ratio: float) -> None:
    out = _run(comp, CODE[kind], ratio)
    for line in CODE[kind].splitlines():
        assert line.strip() in out, (kind, line)


@pytest.mark.parametrize("ratio", RATIOS)
def test_identifiers_survive(comp: Compressor, ratio: float) -> None:
    region = "Records: " + ", then ".join(IDENTIFIERS) + " are on file."
    out = _run(comp, region, ratio)
    for ident in IDENTIFIERS:
        assert ident in out, ident


@pytest.mark.parametrize("ratio", RATIOS)
def test_numbers_glued_to_any_script_survive(comp: Compressor, ratio: float) -> None:
    region = "订单超过7天不能退款。会议于10時30分に開催されます。重量25кг，价格1500руб。"
    region += " Выручка 3,5 млн. الرقم ٣٤٥ هنا. 2024年3月15日发布, 50% off."
    out = _run(comp, region, ratio)
    for num in NUMBERS:
        assert num in out, num


CJK = (
    "会議は東京本社で開催されます。参加者は事前に資料を確認してください。"
    "我们的订单系统每天处理大量请求，客户服务团队负责回答问题。"
    "ทีมงานของเราจะติดต่อกลับภายในสองวันทำการ"
)


WORDS = ["会議", "開催", "資料", "订单", "系统", "客户", "团队", "ภายใน", "สอง"]


@pytest.mark.parametrize("ratio", RATIOS)
def test_cjk_and_thai_words_are_never_cut(comp: Compressor, ratio: float) -> None:
    question = "参加者は何を確認しますか？"
    r = comp.compress((CJK + "\n\n") * 3 + question, ratio=ratio)
    assert r.changed
    icu = {CJK[a:b] for a, b in icu_words(CJK)}
    assert set(WORDS) <= icu
    body = r.text[: r.text.rindex(question)]
    for w in WORDS:  # a word's first character never stays without the rest of the word
        assert CJK.count(w[0]) == CJK.count(w)
        assert body.count(w[0]) == body.count(w), (w, body)
    for s in r.dropped:
        assert s.text in icu, s.text


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("quote", QUOTES, ids=lambda q: q[0] + str(len(q)))
def test_quotes_of_any_length_and_mark_survive(comp: Compressor, quote: str, ratio: float) -> None:
    out = _run(comp, "The note said " + quote + " and nothing else.", ratio)
    assert quote in out


@pytest.mark.parametrize("text", ["hello", "ok", "Continue", "Thanks!", "继续", "Да"])
@pytest.mark.parametrize("ratio", [0.8, 0.5, 0.1])
def test_one_word_prompts_come_back_unchanged(comp: Compressor, text: str, ratio: float) -> None:
    r = comp.compress(text, ratio=ratio)
    assert r.text == text and not r.changed
    assert comp.compress(text, target_tokens=1).text == text


def test_short_prose_is_never_emptied(comp: Compressor) -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi"
    for budget in ({"ratio": 0.01}, {"target_tokens": 1}):
        out = comp.compress(text, **budget).text
        assert out.strip() and out in text


def _long_texts() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    en = topics["assert"] + "\n\n" + topics["while"] + "\n\n" + topics["with"]
    zh = "".join(
        f"第{i}条：我们的订单系统每天处理大量请求，客户服务团队负责回答各种问题，"
        "并且需要在三个工作日内给出答复。如果超过期限，系统会自动提醒负责人。\n"
        for i in range(1, 25)
    )
    ja = "".join(
        f"{i}番目の報告：会議は東京本社で開催され、参加者は事前に資料を確認する必要があります。"
        "質問がある場合は担当者に連絡してください。\n"
        for i in range(1, 25)
    )
    mixed = PROSE * 6 + "\n\n" + TABLE + "\n\n" + CODE["python"] + "\n\n" + PROSE * 4 + TAIL
    return [("en", en), ("zh", zh), ("ja", ja), ("mixed", mixed)]


@pytest.mark.parametrize("share", [0.35, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("name", ["en", "zh", "ja", "mixed"])
def test_target_tokens_within_5_percent(comp: Compressor, name: str, share: float) -> None:
    text = dict(_long_texts())[name]
    before = comp.count_tokens(text)
    target = int(share * before)
    floor = comp.compress(text, target_tokens=1).tokens_after  # everything droppable gone
    r = comp.compress(text, target_tokens=target)
    assert r.tokens_after == comp.count_tokens(r.text)
    if floor <= 0.95 * target:  # reachable
        assert abs(r.tokens_after - target) <= 0.05 * target, (name, r.tokens_after, target)
    else:
        assert r.tokens_after <= max(floor, target) * 1.05


def test_target_tokens_on_messages(comp: Compressor) -> None:
    en = dict(_long_texts())["en"]
    msgs = [
        Message.text("system", "You answer questions about Python semantics. " * 5),
        Message.text("user", en[: len(en) // 2]),
        Message.text("assistant", "Noted."),
        Message.text("user", en[len(en) // 2 :] + "\n\nWhat does assert do?"),
    ]
    before = sum(comp.count_tokens(m.content) for m in msgs)
    for share in (0.5, 0.75):
        target = int(share * before)
        r = comp.compress(msgs, target_tokens=target)
        assert abs(r.tokens_after - target) <= 0.05 * target, (share, r.tokens_after, target)


@pytest.mark.parametrize(
    "prompt",
    [
        "a\ud83d b",
        "lone low \udc80 surrogate from surrogateescape",
        [Message.text("system", "sys \ud800"), Message.text("user", "fine text here")],
    ],
    ids=["high", "low", "system-message"],
)
def test_lone_surrogates_raise_config_error(comp: Compressor, prompt: Any) -> None:
    with pytest.raises(ConfigError, match="not valid Unicode") as info:
        comp.compress(prompt, ratio=0.5)
    msg = str(info.value)  # a surrogateescape character is named as the byte it stands for
    assert ("undecodable byte 0x80" if "\udc80" in str(prompt) else "lone surrogate") in msg
    assert "fine text" not in msg


@pytest.mark.parametrize("data", [b"ab\xffcd", b"caf\xc3", b"\xed\xa0\xbd surrogate bytes"])
def test_cli_compress_stdin_with_invalid_bytes_gets_a_clean_message(data: bytes) -> None:
    from typer.testing import CliRunner

    from promptsieve.cli import app

    result = CliRunner().invoke(app, ["compress", "-"], input=data)
    assert result.exit_code == 2
    assert "stdin is not UTF-8 text" in result.output and "iconv" in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, UnicodeError)
