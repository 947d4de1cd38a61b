"""BIG-bench task suites: the real sdist's task files (fetched once into the cache, verified).

The first test run fetches ``bigbench==1.0.0`` (≈ 360 MB) from PyPI into the cache unless
``$PROMPTSIEVE_REGISTRY_DIR`` holds it (scripts/install.sh fetches it too). The index stopped
listing it on 2026-12-05: without it these tests run on the synthetic task files of
``tests/_bigbench_fixture.py`` (the ``bigbench`` fixture), and the tests of facts about the
real data skip.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
from benchmarks.bigbench import (
    _sdist,
    bbh_questions,
    bbh_task_items,
    bbh_tasks,
    demonstrations,
    detokenize,
    multidoc_items,
    multidoc_raw,
    passages,
    train_passages,
    vitaminc_items,
)
from benchmarks.bigbench.multidoc import SPLIT_FILE, build_split, split_path

from promptsieve import ConfigError

pytestmark = pytest.mark.usefixtures("bigbench")  # BIG-bench task files


def test_detokenize_squad_spacing() -> None:
    raw = "the Earth ' s atmosphere ( see Occurrence ) , 1 . 5 million , plane - polarized"
    assert (
        detokenize(raw) == "the Earth's atmosphere (see Occurrence), 1.5 million, plane-polarized"
    )
    assert detokenize('an " arts and sciences focus " .') == 'an "arts and sciences focus".'
    assert detokenize("don ' t , 2 , 000 km") == "don't, 2,000 km"
    plain = "Plain text (already fine), 3.5 km."
    assert detokenize(plain) == plain


def test_split_is_by_article_and_matches_its_file(bigbench: str) -> None:
    committed = json.loads(split_path().read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(build_split()))  # reproducible from the code
    by_split = {s: passages(s) for s in ("train", "dev", "test")}  # type: ignore[arg-type]
    ids = [p.id for ps in by_split.values() for p in ps]
    assert len(ids) == len(set(ids))
    articles = {s: {p.article for p in ps} for s, ps in by_split.items()}
    assert not (articles["train"] & articles["test"]) and not (articles["dev"] & articles["test"])
    assert not (articles["train"] & articles["dev"])
    assert [len(articles[s]) for s in ("train", "dev", "test")] == [21, 5, 9]
    questions = sum(len(p.qas) for ps in by_split.values() for p in ps)
    if bigbench == "sdist":  # the real data, and the committed file
        assert split_path() == SPLIT_FILE
        assert len(ids) == 1204 and questions == 5893  # every answerable disfl_qa question


def test_training_data_never_includes_test_articles() -> None:
    test_ids = {p.id for p in passages("test")}
    train = train_passages("train") + train_passages("dev")
    assert train and not ({p.id for p in train} & test_ids)
    with pytest.raises(ValueError, match="held out"):
        train_passages("test")  # type: ignore[arg-type]
    marked = [q for p in train for q in p.questions if q.answer_sentence is not None]
    assert len(marked) > 0.9 * sum(len(p.questions) for p in train)
    p = next(p for p in train if p.questions and p.questions[0].answer_sentence is not None)
    q = p.questions[0]
    assert q.answer_sentence is not None
    assert q.answer.lower()[:8] in p.sentences[q.answer_sentence].lower()


def test_multidoc_items_are_seeded_sized_and_vary_the_gold_position() -> None:
    raw = multidoc_raw("test", 2000, 30, seed=3)
    assert raw == multidoc_raw("test", 2000, 30, seed=3)
    test_ids = {p.id for p in passages("test")}
    positions = collections.Counter(m.gold_index for m in raw)
    assert len(positions) >= 4
    for m in raw:
        assert set(m.doc_ids) <= test_ids and len(set(m.doc_ids)) == len(m.doc_ids)
        gold_article = {p.id: p.article for p in passages("test")}
        assert sum(gold_article[i] == gold_article[m.doc_ids[m.gold_index]] for i in m.doc_ids) == 1
    from promptsieve.tokens import count_tokens

    sizes = [count_tokens(it.prompt, "gpt-4o") for it in multidoc_items("test", 2000, 10, seed=3)]
    assert all(1700 < s < 3000 for s in sizes), sizes
    item = raw[0].render()
    assert item.kind == "qa" and item.task == "multidoc_2k" and item.docs == raw[0].docs
    assert item.prompt.endswith(item.question) and item.question.endswith("Answer:")


def test_skipped_items_continue_the_same_draw() -> None:
    """``--skip-items 4`` with ``--max-items 10`` runs items 5-10 of the 10-item draw, and only
    the noise-floor calls of the draw's first 5 that it still holds."""
    from benchmarks.suites import PROFILES, limit

    whole = limit(PROFILES["standard"], 10, ["multidoc_1k"]).suites[0]
    rest = limit(PROFILES["standard"], 10, ["multidoc_1k"], skip=4).suites[0]
    assert [i.id for i in rest.items()] == [i.id for i in whole.items()][4:]
    assert (whole.noisy, rest.noisy) == (whole.noise, max(0, whole.noise - 4))
    with pytest.raises(ValueError, match="skip-items"):
        limit(PROFILES["standard"], 10, None, skip=-1)
    with pytest.raises(ValueError, match="leaves no item of multidoc_1k"):
        limit(PROFILES["standard"], 10, ["multidoc_1k"], skip=10)


def test_items_extend_the_same_draw_beyond_the_profile() -> None:
    """``--items 130`` on a 100-item suite draws the same first 100 items and 30 more
    (``--skip-items 100`` runs only those), the noise floor stays the profile's; a draw
    larger than the task's data, or both caps at once, is a ValueError, not a traceback."""
    from benchmarks.suites import PROFILES, limit

    base = limit(PROFILES["headline"], None, ["multidoc_1k"]).suites[0]
    more = limit(PROFILES["headline"], None, ["multidoc_1k"], items=130).suites[0]
    tail = limit(PROFILES["headline"], None, ["multidoc_1k"], skip=100, items=130).suites[0]
    first, extended = [i.id for i in base.items()], [i.id for i in more.items()]
    assert len(first) == 100 and len(extended) == 130 and len(set(extended)) == 130
    assert extended[:100] == first
    assert [i.id for i in tail.items()] == extended[100:]
    assert (more.noise, tail.noisy) == (base.noise, 0)
    with pytest.raises(ValueError, match="do not combine"):
        limit(PROFILES["headline"], 10, ["multidoc_1k"], items=10)
    with pytest.raises(ValueError, match="multidoc_1k"):
        limit(PROFILES["headline"], None, ["multidoc_1k"], items=10**6)


def test_bbh_tasks_have_enough_non_exemplar_questions(bigbench: str) -> None:
    # (the synthetic task files hold 72 questions a task, and lm-eval's 3 sports exemplars)
    assert len(bbh_tasks()) >= 13
    for task in bbh_tasks():
        qs = bbh_questions(task)
        assert len(qs) >= 60, task
        shown = {q for q, _ in demonstrations(task)}
        assert not any(f"Q: {q.input}\nA:" in shown for q in qs), task
    if bigbench == "fixture":
        assert len(_sdist.task_examples("sports_understanding")) - 3 == 72
        assert len(bbh_questions("sports_understanding")) == 72


def test_every_profile_suite_names_a_task_that_exists() -> None:
    from benchmarks.suites import PROFILES

    for profile in PROFILES.values():
        for suite in profile.suites:
            if suite.source == "bbh":
                assert suite.task in bbh_tasks(), (profile.name, suite.task)
        names = [s.name for s in profile.suites]
        assert len(names) == len(set(names)), profile.name


def test_bbh_items_share_the_demonstration_prefix() -> None:
    items = bbh_task_items("date_understanding", n=60, seed=1)
    assert len(items) == 60 and len({it.id for it in items}) == 60
    heads = {it.context for it in items}
    assert len(heads) == 1  # identical prefix: the server reuses its KV cache
    (head,) = heads
    assert head.count("\nA: (") == 3  # lm-eval's three exemplars
    assert all(it.gold.startswith("(") for it in items)
    cot = bbh_task_items("navigate", cot=True, n=5)
    assert cot[0].kind == "cot" and "Let's think step by step" in cot[0].context
    assert {it.gold for it in bbh_task_items("navigate", n=80)} == {"yes", "no"}


def test_vitaminc_items() -> None:
    items = vitaminc_items(90, seed=0)
    golds = collections.Counter(it.gold for it in items)
    assert set(golds) <= {"true", "false", "neither"} and len(golds) == 3
    assert all(it.question.endswith("True, False, or Neither?") for it in items)
    assert " ' s " not in items[0].prompt


def test_damaged_task_file_is_extracted_again(
    bigbench: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if bigbench == "sdist":
        sdist = _sdist.sdist_path()
    else:  # the task folder packed as the sdist lays it out, the pin replaced by its own
        sdist = tmp_path / "packed" / _sdist.SDIST_FILE
        sdist.parent.mkdir()
        with tarfile.open(sdist, "w:gz") as tar:
            tar.add(os.environ[_sdist.DIR_ENV], arcname=_sdist._PREFIX.rstrip("/"))
        monkeypatch.setattr(_sdist, "SDIST_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
        monkeypatch.setattr(_sdist, "SDIST_SIZE", sdist.stat().st_size)
        monkeypatch.delenv(_sdist.DIR_ENV)
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / sdist.name).symlink_to(sdist)
    monkeypatch.setenv("PROMPTSIEVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PROMPTSIEVE_REGISTRY_DIR", str(registry))
    path = _sdist.task_json("snarks")
    good = path.read_bytes()
    path.write_bytes(good[:1000])  # truncated
    assert _sdist.task_json("snarks").read_bytes() == good


def test_missing_or_corrupt_sdist_names_what_to_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTSIEVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PROMPTSIEVE_REGISTRY_DIR", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match=r"bigbench-1\.0\.0\.tar\.gz not found; put it") as err:
        _sdist.sdist_path(download=False)
    said = str(err.value)
    assert f"SHA-256 {_sdist.SDIST_SHA256}" in said  # the whole pin, to check a copy against
    assert f"{tmp_path / 'none'} (missing)" in said  # where it looked
    assert "$PROMPTSIEVE_BIGBENCH_DIR" in said  # the way without the sdist
    bad = tmp_path / "bad"
    bad.mkdir()
    real = _sdist.SDIST_SIZE
    with (bad / _sdist.SDIST_FILE).open("wb") as fh:
        fh.truncate(real)  # right size, wrong bytes
    monkeypatch.setenv("PROMPTSIEVE_REGISTRY_DIR", str(bad))
    with pytest.raises(ConfigError, match="corrupt"):
        _sdist.sdist_path(download=False)
    shutil.rmtree(bad)


def _serve_index(tmp_path: Path, payload: bytes) -> tuple[str, Any]:
    """A PEP 691 index on 127.0.0.1 listing one file named like the sdist (``payload``)."""
    import http.server
    import threading

    root = tmp_path / "index"
    (root / "simple" / "bigbench").mkdir(parents=True)
    (root / "files").mkdir()
    (root / "files" / _sdist.SDIST_FILE).write_bytes(payload)
    page = {"files": [{"filename": _sdist.SDIST_FILE, "url": f"../../files/{_sdist.SDIST_FILE}"}]}
    (root / "simple" / "bigbench" / "index.html").write_text(json.dumps(page))

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/simple", server


def test_fetch_from_the_index_verifies_the_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pip download refuses this sdist from pip 26.3 on; the index's JSON page is read instead
    payload = b"not the sdist" * 100
    url, server = _serve_index(tmp_path, payload)
    try:
        monkeypatch.setenv("PIP_INDEX_URL", url)
        monkeypatch.setenv("PROMPTSIEVE_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("PROMPTSIEVE_REGISTRY_DIR", str(tmp_path / "none"))
        with pytest.raises(ConfigError, match="does not match its pinned SHA-256"):
            _sdist.sdist_path()
        assert not list((tmp_path / "cache").rglob("bigbench-1.0.0.tar.gz*"))  # nothing kept
        monkeypatch.setattr(_sdist, "SDIST_SHA256", hashlib.sha256(payload).hexdigest())
        monkeypatch.setattr(_sdist, "SDIST_SIZE", len(payload))
        got = _sdist.sdist_path()
        assert got.read_bytes() == payload and got.parent == tmp_path / "cache" / "registry" / (
            "bigbench-1.0.0"
        )
    finally:
        server.shutdown()


def test_wrong_answers_locates_each_methods_answer(tmp_path: Path) -> None:
    """``benchmarks.wrong_answers`` rebuilds a run's items and says where a wrong answer came
    from: the gold passage, another passage, or nowhere in the compressed prompt."""
    from benchmarks.wrong_answers import locate, main

    assert locate("Paris", "Docs: paris is big", "Paris is big.", ["Rome."]) == "gold passage"
    assert locate("Rome", "Docs: rome.", "Paris.", ["Rome."]) == "other passage"
    assert locate("Rome", "Docs: paris.", "Paris.", ["Rome."]) == "not in prompt"
    assert locate("the", "Docs: paris.", "Paris.", ["Rome."]) == "empty"  # an article only
    raws = multidoc_raw("test", 1000, 3)
    other = [r.docs[(r.gold_index + 1) % len(r.docs)].split(". ")[0] for r in raws]
    rows = []
    for k, raw in enumerate(raws):
        item = raw.render().id
        common = {"suite": "multidoc_1k", "item": item, "ratio": 0.5}
        rows.append({**common, "method": "truncate", "correct": True, "answer": raw.answer})
        rows.append({**common, "method": "random", "correct": k == 2, "answer": other[k]})
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows, "suites": {}}))
    assert main([str(tmp_path), "--a", "truncate", "--b", "random", "--ratio", "0.5"]) == 0
    out = json.loads((tmp_path / "wrong-truncate-random-0.5.json").read_text())
    assert [r["item"] for r in out["items"]] == [r.render().id for r in raws[:2]]  # split only
    for rec in out["items"]:
        assert rec["right"] == "truncate" and not rec["random"]["correct"]
        # another passage's first sentence: found there, or dropped by the random pruning
        assert rec["random"]["answer found in"] in ("other passage", "not in prompt")
        # the gold answer: in the gold passage exactly when truncation kept it
        gold = rec["truncate"]
        assert (gold["answer found in"] == "gold passage") == gold["gold kept"]
    md = (tmp_path / "wrong-truncate-random-0.5.md").read_text()
    assert "| random | 2 |" in md and "| truncate | 0 | 0 | — |" in md
    assert main([str(tmp_path / "nowhere"), "--a", "x", "--b", "y", "--ratio", "0.5"]) == 2


def test_eta_counts_every_uncached_call() -> None:
    """The ETA counts the noise-floor calls of cached items (``--skip-items`` past a
    committed run) and the compressed calls of a method added to a cached run: neither is
    estimated at 0 minutes, and a run whose every call is cached is."""
    from benchmarks.baselines import Method, count
    from benchmarks.data import BenchItem
    from benchmarks.suites import Suite, estimate_seconds

    suite = Suite("multidoc", n=3, noise=2, size=1000)
    items = suite.items()
    variants = {suite.variant(it) for it in items[:2]}
    assert len(variants) == 2 and not variants & {it.prompt for it in items}

    class Cache:  # a call cache holding the uncompressed prompts, and `extra`
        chat = False

        def __init__(self, extra: set[str]) -> None:
            self.held = {it.prompt for it in items} | extra

        def is_cached(self, prompt: str, **_: Any) -> bool:
            return prompt in self.held

    class Known(Method):  # a method whose compressions are cached: the context's head
        def peek(self, item: BenchItem, ratio: float) -> str | None:
            return item.context[: int(ratio * len(item.context))] + item.question

    compressed = {item.context[: len(item.context) // 2] + item.question for item in items}
    decode = 20 * suite.max_tokens
    per_item = [count(it.context) + count(it.question) + decode for it in items]
    per_call = [0.5 * count(it.context) + count(it.question) + decode for it in items]

    def eta(methods: list[Method], extra: set[str]) -> float:
        return estimate_seconds([(suite, items)], methods, (0.5,), 1.0, Cache(extra))  # type: ignore[arg-type]

    assert eta([], set()) == sum(per_item[:2])  # the two noise-floor calls, nothing else
    assert eta([], variants) == 0
    # a new method (no cached compression) costs one call per item, whatever the target holds
    assert eta([Method()], variants) == pytest.approx(sum(per_call))
    assert eta([Known()], variants) == pytest.approx(sum(per_call))  # compressed, not called
    assert eta([Known()], variants | compressed) == 0


def test_a_task_folder_needs_every_file_and_its_own_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``$PROMPTSIEVE_BIGBENCH_DIR``: a missing or malformed task file is one ``ConfigError``
    naming it, another folder is read afresh (the cache is keyed by the source), and
    ``--write-split`` refuses to overwrite the committed split with one for other files."""
    from benchmarks.bigbench import multidoc

    a, b = tmp_path / "a", tmp_path / "b"
    for folder, n in ((a, 2), (b, 3)):
        (folder / "snarks").mkdir(parents=True)
        examples = [{"input": f"(a) x{i} (b) y", "target_scores": {"(a)": 1}} for i in range(n)]
        (folder / "snarks" / "task.json").write_text(json.dumps({"examples": examples}))
    monkeypatch.setenv(_sdist.DIR_ENV, str(a))
    with pytest.raises(ConfigError, match=r"has no logical_deduction/three_objects/task\.json"):
        _sdist.task_json("logical_deduction_three_objects")
    assert len(_sdist.task_examples("snarks")) == 2
    assert _sdist.source() == f"unverified folder {a}"
    monkeypatch.setenv(_sdist.DIR_ENV, str(b))
    assert len(_sdist.task_examples("snarks")) == 3
    for bad, says in (("{", "not valid JSON"), ("[1]", "not a BIG-bench task")):
        (b / "snarks" / "task.json").write_text(bad)
        with pytest.raises(ConfigError, match=f"{says}.*fix or replace it"):
            _sdist.task_meta("snarks")
    # the committed split is never overwritten for other task files (a copy stands in for it)
    committed = tmp_path / "committed.json"
    committed.write_bytes(multidoc.SPLIT_FILE.read_bytes())
    monkeypatch.setattr(multidoc, "SPLIT_FILE", committed)
    for env in (None, str(committed)):
        if env:
            monkeypatch.setenv(multidoc.SPLIT_ENV, env)
        else:
            monkeypatch.delenv(multidoc.SPLIT_ENV, raising=False)
        with pytest.raises(SystemExit):
            multidoc.main(["--write-split"])
        assert "$PROMPTSIEVE_BIGBENCH_SPLIT" in capsys.readouterr().err
    assert committed.read_bytes() == (multidoc.SPLIT_FILE.read_bytes())
    # no task files at all: one error line, exit 2
    monkeypatch.setenv(multidoc.SPLIT_ENV, str(tmp_path / "new.json"))
    assert multidoc.main(["--write-split"]) == 2
    assert capsys.readouterr().err.startswith("Error: $PROMPTSIEVE_BIGBENCH_DIR=")
    assert not (tmp_path / "new.json").exists()


def test_a_split_of_other_passages_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The split and the task files must hold the same passages, both ways: a passage the
    split lacks, or a split passage the files lack, stops the run (the draw would change)."""
    from benchmarks.bigbench import multidoc

    good = json.loads(multidoc.split_path().read_text(encoding="utf-8"))
    lacking = {**good, "passages": dict(list(good["passages"].items())[1:])}
    extra = {**good, "passages": {**good["passages"], "0" * 16: "Normans"}}
    for name, split, says in (
        ("lacking", lacking, r"is not in .*lacking\.json:"),
        ("extra", extra, r"of .*extra\.json is not in the task files:"),
    ):
        (tmp_path / f"{name}.json").write_text(json.dumps(split), encoding="utf-8")
        monkeypatch.setenv(multidoc.SPLIT_ENV, str(tmp_path / f"{name}.json"))
        with pytest.raises(ConfigError, match=f"{says} that split belongs to other task files"):
            multidoc.passages("test")
    monkeypatch.undo()
    assert multidoc.passages("test")  # the good split again


def test_the_split_command_checks_the_split_in_use_and_says_write_errors_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.bigbench import multidoc

    assert multidoc.main([]) == 0  # no --write-split: checks the split in use, writes nothing
    assert f"split in use: {multidoc.split_path()} (it lists exactly" in capsys.readouterr().out
    monkeypatch.setenv(multidoc.SPLIT_ENV, str(tmp_path / "nowhere.json"))
    assert multidoc.main([]) == 2  # a split that is not there
    assert capsys.readouterr().err.startswith(f"Error: {tmp_path / 'nowhere.json'} is missing")
    monkeypatch.setenv(multidoc.SPLIT_ENV, str(tmp_path))  # a folder cannot be written
    assert multidoc.main(["--write-split"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"Error: cannot write {tmp_path} (Is a directory)"
