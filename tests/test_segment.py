"""Segmentation: units, protected regions, keep-markers, demos, question, odd input."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from _ci import require_module
from promptsieve.segment import Segmentation, SegmentConfig, segment


def _unit_texts(seg: Segmentation, protected: bool | None = None) -> list[str]:
    return [
        seg.text[u.start : u.end]
        for u in seg.units
        if protected is None or u.protected == protected
    ]


def _check_invariants(seg: Segmentation) -> None:
    prev = 0
    for u in seg.units:
        assert prev <= u.start < u.end <= len(seg.text)
        glue = seg.text[prev : u.start]
        # glue is whitespace, punctuation or invisible format characters only
        assert regex.fullmatch(r"[\s\p{P}\p{Cf}\p{Cc}\p{Z}]*", glue), repr(glue)
        prev = u.end
        assert 0 <= u.sentence < len(seg.sentences)
        assert u.demo is None or 0 <= u.demo < len(seg.demos)
    assert regex.fullmatch(r"[\s\p{P}\p{Cf}\p{Cc}\p{Z}]*", seg.text[prev:])
    for start, end in seg.protected:  # units never straddle a protected range
        for u in seg.units:
            inside = start <= u.start and u.end <= end
            outside = u.end <= start or u.start >= end
            assert inside or outside
            if inside:
                assert u.protected


# ---------------------------------------------------------------------------- protected kinds

PROTECTED = [
    ("Read https://example.com/a/b?x=1&y=2 today.", "https://example.com/a/b?x=1&y=2"),
    (
        "Link (see https://en.wikipedia.org/wiki/Foo_(bar)) here",
        "https://en.wikipedia.org/wiki/Foo_(bar)",
    ),
    ("Mail jane.doe+x@mail.example.org now", "jane.doe+x@mail.example.org"),
    ("It costs $1,000.50 in total", "$1,000.50"),
    ("Growth was -3.5% last year", "-3.5%"),
    ("About 12.75 units", "12.75"),
    ("Born 2024-03-05T10:30:00Z here", "2024-03-05T10:30:00Z"),
    ("Due 12/05/2024 please", "12/05/2024"),
    ("Held on 5 March 2024 in Rome", "5 March 2024"),
    ("Held on March 5, 2024 in Rome", "March 5, 2024"),
    ("Meet at 10:30 am sharp", "10:30 am"),
    ("Call get_user_name first", "get_user_name"),
    ("Call getUserName first", "getUserName"),
    ("The PromptSieve class", "PromptSieve"),
    ("Import promptsieve.tokens.count now", "promptsieve.tokens.count"),
    ("Open /usr/local/bin/python3 now", "/usr/local/bin/python3"),
    ("Edit src/promptsieve/segment.py now", "src/promptsieve/segment.py"),
    ("Commit 3f2a9c1d fixed it", "3f2a9c1d"),
    ("Release v1.2.3 is out", "v1.2.3"),
    ('He said "keep this exactly" and left', '"keep this exactly"'),
    ("She said 'fine then' and left", "'fine then'"),
    ("Run `pip install -e .` first", "`pip install -e .`"),
    ('Send {"a": [1, 2, {"b": null}]} back', '{"a": [1, 2, {"b": null}]}'),
    ("Pick [1, 2, 3] now", "[1, 2, 3]"),
    ("Answer (B) is right", "(B)"),
    # numbers glued to letters of any script; CJK numbers with the words around them
    ("Вес 25кг всего", "25кг"),
    ("Цена 1500руб сегодня", "1500руб"),
    ("订单超过7天不能退款", "超过7天"),
    ("会议于10時30分に開催", "于10時30分"),
    ("It is H2O and 3rd place", "H2O"),
    # identifiers with letter-only or symbol-separated parts
    ("Invoice INV/2024/00042 is due", "INV/2024/00042"),
    ("Ticket ORD-77-A is open", "ORD-77-A"),
    ("Postcode AB12 CDE here", "AB12 CDE"),
    ("Postcode SW1A 1AA here", "SW1A 1AA"),
    ("Id abcdefab-cdef-4abc-8def-abcdefabcdef ok", "abcdefab-cdef-4abc-8def-abcdefabcdef"),
    ("Pay to GB82 WEST 1234 5698 7654 32 today", "GB82 WEST 1234 5698 7654 32"),
    ("Logo data:image/png;base64,iVBOR+w0K/Gg== inline", "data:image/png;base64,iVBOR+w0K/Gg=="),
    ("Key sk_live_4eC39HqLyjWDarjtT1zdp7dc here", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("Token aGVsbG8+d29ybGQvMTIzNDU2Nzg5MA== here", "aGVsbG8+d29ybGQvMTIzNDU2Nzg5MA=="),
    ("Start <|im_start|>user now", "<|im_start|>"),
    ("End </s> here and <br/> too", "</s>"),
    ("Wrap [INST] here", "[INST]"),
    # unfenced code and config lines, inline SQL
    (
        "Fix:\nreturn sum(i.price for i in items if i.active)\nok",
        "return sum(i.price for i in items if i.active)",
    ),
    ("Query SELECT a, b FROM t WHERE x = 1; now", "SELECT a, b FROM t WHERE x = 1;"),
    ("Hi\nconst cfg = {host: 'x', port: 80};\nbye", "const cfg = {host: 'x', port: 80};"),
    ("Send {a: 1, 'b': [2, 3]} back", "{a: 1, 'b': [2, 3]}"),
    # quotes: any length, typographic marks
    ('He said "' + "word " * 60 + 'end" ok', '"' + "word " * 60 + 'end"'),
    ("Sagte „Guten Tag“ dann", "„Guten Tag“"),
    ("Il dit « bonjour à tous » puis", "« bonjour à tous »"),
    ("彼は「明日来ます」と言った", "「明日来ます」"),
    ("She wrote ‘see you soon’ then", "‘see you soon’"),
    ("Er schrieb ‚bis bald‘ dann", "‚bis bald‘"),
]


@pytest.mark.parametrize(("text", "region"), PROTECTED)
def test_protected_region_is_one_unit(text: str, region: str) -> None:
    seg = segment(text)
    _check_invariants(seg)
    assert region in _unit_texts(seg, protected=True)


TABLE = "| a | b |\n|---|:-:|\n| 1 | x y |\n|  | z |"
BLOCKS = {
    "table": TABLE,
    "python": "def f(items):\n    total = 0\n    # sum them\n    return total",
    "traceback": (
        'Traceback (most recent call last):\n  File "a.py", line 1, in <module>\nKeyError: 3'
    ),
    "yaml": "server:\n  host: localhost\n  ports:\n    - 80\n    - 443",
    "csv": "name,age,city\nBob,42,Paris\nAlice,37,Rome",
    "tsv": "name\tage\nBob\t42",
    "ini": "[db]\nhost = localhost\nport = 5432",
    "sql": "SELECT name\nFROM users\nWHERE id = 3\nORDER BY name;",
}


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_code_config_and_table_lines_are_protected_whole(kind: str) -> None:
    text = f"Some words before it.\n{BLOCKS[kind]}\nSome words after it."
    seg = segment(text)
    _check_invariants(seg)
    prot = _unit_texts(seg, protected=True)
    for line in BLOCKS[kind].splitlines():
        assert line.strip() in prot, (kind, line)
    assert {"Some", "words", "before"} <= set(_unit_texts(seg, protected=False))


@pytest.mark.parametrize(
    "prose",
    [
        "Thanks.",
        "return the book to the library tomorrow",
        "Note: the meeting moved to the big room.",
        "Q: What is the capital of France?\nA: Paris is the capital.",
        "Question: Who wrote it?\nAnswer: Nobody knows for sure.",
        "The cat (very fat) sat on the mat; the dog did not.",
        "I like apples, pears, and plums, but not grapes.\n"
        "She likes figs, dates, and kiwis, not limes.",
        "Options:\n(A) red\n(B) blue",
        "Let me know if you need anything else.",
        "We met at the cafe. It was nice (really) and warm: about right.",
    ],
)
def test_prose_is_not_taken_for_code(prose: str) -> None:
    seg = segment(prose, SegmentConfig(protect_question=False))
    words = regex.findall(r"\p{L}{4,}+(?!:)", prose)  # "Note:" labels are protected
    plain = set(_unit_texts(seg, protected=False))
    assert sum(w in plain for w in words) >= 0.8 * len(words), _unit_texts(seg, protected=True)


def test_fenced_code_and_multiline_json() -> None:
    code = "```python\ndef f(x):\n    return {'a': x}  # not prose\n```"
    tilde = "~~~\nraw  text\n~~~"
    js = '{\n  "name": "x",\n  "items": [1, 2,],\n}'  # JSON-like, trailing commas
    text = f"Intro words here.\n\n{code}\n\nMore words.\n{tilde}\nThen\n{js}\nend."
    seg = segment(text)
    _check_invariants(seg)
    prot = _unit_texts(seg, protected=True)
    assert code in prot and tilde in prot and js in prot


def test_unclosed_backtick_fence_runs_to_end_and_rst_underline_is_not_a_fence() -> None:
    seg = segment("Title\n~~~~~\n\nSome words here.\n\n```\ncode without end\n")
    assert "```\ncode without end" in _unit_texts(seg, protected=True)
    assert "Some" in _unit_texts(seg, protected=False)


def test_keep_markers_removed_and_pinned() -> None:
    seg = segment("Drop this but <keep>never drop this</keep> ok.")
    assert seg.text == "Drop this but never drop this ok."
    assert "never drop this" in _unit_texts(seg, protected=True)
    assert [seg.text[a:b] for a, b in seg.pinned] == ["never drop this"]
    cfg = SegmentConfig(keep_open="[[", keep_close="]]")
    seg = segment("a [[b c]] d", cfg)
    assert seg.text == "a b c d" and "b c" in _unit_texts(seg, protected=True)


def test_keep_patterns() -> None:
    seg = segment("ticket ABC-1234 was closed", SegmentConfig(keep_patterns=(r"[A-Z]+-\d+",)))
    assert "ABC-1234" in _unit_texts(seg, protected=True)
    with pytest.raises(ValueError, match="invalid keep_pattern"):
        SegmentConfig(keep_patterns=("(",))


def test_words_are_never_split() -> None:
    seg = segment("don't state-of-the-art l'homme naïve e\u0301te\u0301 ZWJ\u200cword")
    words = _unit_texts(seg)
    assert "don't" in words and "state-of-the-art" in words and "naïve" in words
    assert "e\u0301te\u0301" in words and "ZWJ\u200cword" in words


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t ", "\r\n"])
def test_empty_and_whitespace(text: str) -> None:
    seg = segment(text)
    assert seg.text == text and seg.units == () and seg.question is None and seg.demos == ()


def test_odd_unicode() -> None:
    text = (
        "日本語のテキストです。中文没有空格！ 👨‍👩‍👧 family 🇫🇷 ok\r\nمرحبا بالعالم שלום עולם\u200f."
    )
    seg = segment(text)
    _check_invariants(seg)
    words = _unit_texts(seg)
    assert "👨‍👩‍👧" in words and "🇫🇷" in words and "مرحبا" in words and "שלום" in words
    # ICU dictionary words for scripts without spaces: never one character of a word
    assert "日本語" in words and "テキスト" in words and "中文" in words and "没有" in words
    assert "family" in words


def test_crlf_sentences() -> None:
    seg = segment("First line here\r\nSecond line. Third one?\r\n")
    _check_invariants(seg)
    assert [seg.text[a:b] for a, b in seg.sentences] == [
        "First line here",
        "Second line.",
        "Third one?",
    ]
    assert seg.question is not None and seg.text[slice(*seg.question)] == "Third one?"


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_any_text_segments_cleanly(text: str) -> None:
    _check_invariants(segment(text, SegmentConfig(keep_open="", keep_close="")))


def test_long_text_is_linear_and_fast() -> None:
    from pydoc_data.topics import topics

    base = "\n\n".join(topics.values())
    text = (base * (1 + 400_000 // len(base)))[:400_000]
    # CPU seconds of this process, not wall time: a busy CI box must not fail a linearity test
    t0 = time.process_time()
    seg = segment(text[:100_000])
    small = time.process_time() - t0
    t0 = time.process_time()
    seg = segment(text)
    big = time.process_time() - t0
    assert len(seg.units) > 40_000
    assert big < 10.0  # ~0.6 s on one core here; generous for a shared CI box
    assert big < 8 * small + 1.0  # linear, not quadratic


# ---------------------------------------------------------------------------- demos, question


def lm_eval_prompt(task_yaml: str, test: dict[str, str]) -> tuple[str, int]:
    """The few-shot prompt exactly as lm-eval assembles it (description + shots + question)."""
    lm_eval = require_module("lm_eval")
    yaml = require_module("yaml")
    jinja2 = require_module("jinja2")
    path = Path(lm_eval.__file__).parent / "tasks" / task_yaml
    cfg: dict[str, Any] = yaml.safe_load(path.read_text())
    if "include" in cfg:
        base = yaml.safe_load((path.parent / cfg["include"]).read_text())
        cfg = {**base, **cfg}
    env = jinja2.Environment()
    to_text, to_target = env.from_string(cfg["doc_to_text"]), env.from_string(cfg["doc_to_target"])
    target_delim = cfg.get("target_delimiter", " ")
    fewshot_delim = cfg.get("fewshot_delimiter", "\n\n")
    samples = cfg["fewshot_config"]["samples"]
    parts = [cfg.get("description", "")]
    parts += [
        to_text.render(**s) + target_delim + to_target.render(**s) + fewshot_delim for s in samples
    ]
    parts.append(to_text.render(**test))
    return "".join(parts), len(samples)


def test_gsm8k_8shot_demos_and_question() -> None:
    text, n = lm_eval_prompt("gsm8k/gsm8k-cot.yaml", {"question": "Tom has 4 cats. How many legs?"})
    seg = segment(text)
    _check_invariants(seg)
    assert n == 8 and len(seg.demos) == 8
    for start, end in seg.demos:
        block = seg.text[start:end]
        assert block.startswith("Q: ") and "\nA: " in block and block.endswith(".")
    assert seg.question is not None
    assert seg.text[slice(*seg.question)] == "Q: Tom has 4 cats. How many legs?\nA:"
    q0, q1 = seg.question
    assert all(u.protected for u in seg.units if q0 <= u.start < q1)
    in_demo = [u for u in seg.units if u.demo is not None]
    assert {u.demo for u in in_demo} == set(range(8))


@pytest.mark.parametrize(
    "name", ["date_understanding", "logical_deduction_three_objects", "navigate"]
)
def test_bbh_cot_demos_and_question(name: str) -> None:
    text, n = lm_eval_prompt(
        f"bbh/cot_fewshot/{name}.yaml", {"input": "Is it so?\nOptions:\n(A) Yes\n(B) No"}
    )
    seg = segment(text)
    _check_invariants(seg)
    assert len(seg.demos) == n == 3
    assert seg.question is not None
    assert seg.text[slice(*seg.question)].startswith("Q: Is it so?")
    assert seg.text[slice(*seg.question)].endswith("A: Let's think step by step.")
    # the task description before the first demonstration belongs to no demo
    assert seg.units[0].demo is None


def test_other_demo_styles() -> None:
    qa = "Question: 2+2?\nAnswer: 4\n\nQuestion: 3+3?\nAnswer: 6\n\nQuestion: 5+5?\nAnswer:"
    seg = segment(qa)
    assert len(seg.demos) == 2 and seg.text[slice(*seg.question)] == "Question: 5+5?\nAnswer:"  # type: ignore[misc]
    io = "Input: cat\nOutput: animal\n\nInput: rose\nOutput: plant\n\nInput: oak\nOutput:"
    seg = segment(io)
    assert len(seg.demos) == 2 and seg.question is not None
    ex = (
        "Example 1:\nthe movie was great -> positive\n\n"
        "Example 2:\nawful plot -> negative\n\nNow classify: fine film"
    )
    assert len(segment(ex).demos) == 2
    tpl = (
        "Review: loved it\nSentiment: positive\n\n"
        "Review: boring\nSentiment: negative\n\nReview: meh\nSentiment:"
    )
    seg = segment(tpl)
    assert len(seg.demos) == 2 and seg.text[slice(*seg.question)] == "Review: meh\nSentiment:"  # type: ignore[misc]
    seg = segment(tpl, SegmentConfig(detect_demos=False, protect_question=False))
    assert seg.demos == () and seg.question is None


# Final query blocks that revision 1 took for one more demonstration (and could drop whole).
_OPEN_TAILS = [
    # no answer label after answered blocks
    "Q: What is two plus two?\nA: 4\n\nQ: What is three plus three?\nA: 6\n\n"
    "Q: What is five plus five?",
    # the query ends in a question mark
    "Review: great film\nSentiment: positive\n\nReview: awful plot\nSentiment: negative\n\n"
    "Review: I loved the actors\nIs it positive or negative?",
    # the shared answer prompt without its answer (BIG-bench vitaminc's layout)
    "Passage: a b c.\nClaim: x.\nTrue, False, or Neither? True\n\n"
    "Passage: d e f.\nClaim: y.\nTrue, False, or Neither? False\n\n"
    "Passage: g h.\nClaim: z.\nTrue, False, or Neither?",
    # a strict prefix of the demonstrations' labelled lines (the claim follows elsewhere)
    "Passage: a b c.\nClaim: x.\nTrue, False, or Neither? True\n\n"
    "Passage: d e f.\nClaim: y.\nTrue, False, or Neither? False\n\nPassage: g h.\n",
]


@pytest.mark.parametrize("text", _OPEN_TAILS)
def test_final_query_block_is_not_a_demonstration(text: str) -> None:
    seg = segment(text)
    last = text.rstrip().rsplit("\n\n", 1)[1]
    assert len(seg.demos) == 2
    assert all(last not in seg.text[a:b] for a, b in seg.demos)
    assert seg.question is not None and seg.text[slice(*seg.question)] == last


def test_complete_final_demonstration_stays_a_demonstration() -> None:
    io = "Input: a\nOutput: b\n\nInput: c\nOutput: d\n\nInput: e\nOutput: f"
    assert len(segment(io).demos) == 3
    tpl = "Review: good\nSentiment: positive\n\nReview: bad\nSentiment: negative"
    assert len(segment(tpl).demos) == 2


def test_question_sentence_fallback() -> None:
    text = (
        "Some context. More context?\n\n"
        "The report is long. Which year was it founded? Answer briefly."
    )
    seg = segment(text)
    assert seg.question is not None
    # a short tail after the question (an instruction or answer prefix) stays with it
    assert seg.text[slice(*seg.question)] == "Which year was it founded? Answer briefly."
    long_tail = "Context. Which year? " + "Then some more words follow here. " * 3
    seg = segment(long_tail)
    assert seg.question is not None and seg.text[slice(*seg.question)] == "Which year?"
    assert segment("No question here. None at all.").question is None
    assert segment("A question? Yes.\n\nBut not in the last paragraph.").question is None


@pytest.mark.parametrize(
    "text",
    [
        "[" * 20000 + "a," + "]" * 20000,  # JSON decoder recursion
        "{" * 20000 + "a" + "}" * 20000,
        "a-" * 20000,  # dotted-name scan from every "-"
        "1-" * 20000,  # relative-path scan from every "-"
        "« " * 20000,  # unclosed quotes
        "“a " * 20000,
        "".join(" " * i + "if x:\n" for i in range(400)),  # nested code bodies
    ],
    ids=["nested-list", "nested-dict", "dashes", "digit-dashes", "guillemets", "quotes", "indent"],
)
def test_pathological_input_is_linear(text: str) -> None:
    t0 = time.process_time()  # CPU seconds (see test_long_text_is_linear_and_fast)
    _check_invariants(segment(text))
    assert time.process_time() - t0 < 5.0  # each was tens of seconds to minutes (quadratic)


def test_config_blocks_are_not_demonstrations() -> None:
    block = "server:\n  host: localhost\n  port: 8080"
    seg = segment(f"Two configs.\n\n{block}\nend.\n\n{block}\nend.")
    assert seg.demos == ()
