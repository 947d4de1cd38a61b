"""The command line, run in-process with typer's runner against the real proxy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from promptsieve.cli import app
from promptsieve.proxy import Proxy

PROMPT = (
    "Our refund policy is simple and, frankly, quite generous compared to most shops. "
    "Customers may return any item within 30 days of delivery, provided that it is unused "
    "and in its original packaging. Refunds are issued to the original payment method "
    "within 5 business days. Shipping costs are not refundable unless the item arrived damaged.\n\n"
    "Question: How many days do customers have to return an item?"
)


@pytest.fixture()
def runner(proxy: Proxy, cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    # `proxy` makes sure the export already sits in the session cache the CLI will use.
    monkeypatch.setenv("PROMPTSIEVE_CACHE_DIR", str(cache_root))
    return CliRunner()


def test_compress_json_report(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPT, encoding="utf-8")
    res = runner.invoke(app, ["compress", str(f), "--ratio", "0.5", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["tokens_after"] < report["tokens_before"]
    assert "30 days" in report["text"] or "30" in report["text"]
    assert report["text"].endswith("How many days do customers have to return an item?")
    assert report["provider"] == "CPUExecutionProvider"
    assert report["dropped"]


def test_compress_plain_output(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPT, encoding="utf-8")
    res = runner.invoke(app, ["compress", str(f), "--ratio", "0.7"])
    assert res.exit_code == 0, res.output
    assert "How many days" in res.stdout
    assert len(res.stdout) < len(PROMPT) + 1


def test_non_utf8_file_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    res = runner.invoke(app, ["compress", str(f)])
    assert res.exit_code != 0
    assert "not UTF-8" in res.output


@pytest.mark.parametrize("ratio", ["0", "1.5"])
def test_bad_ratio_is_rejected(runner: CliRunner, tmp_path: Path, ratio: str) -> None:
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPT, encoding="utf-8")
    res = runner.invoke(app, ["compress", str(f), "--ratio", ratio])
    assert res.exit_code != 0
    assert "(0, 1]" in res.output


def test_explain_writes_a_readable_html_heat_map(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPT, encoding="utf-8")
    out = tmp_path / "out.html"
    res = runner.invoke(app, ["explain", str(f), "--html", str(out), "--scorer", "attribution"])
    assert res.exit_code == 0, res.output
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    assert "<span style=" in html and 'title="' in html
    body = html[html.index("<pre>") : html.index("</pre>")]
    assert "Our refund policy is simple" in re.sub(r"<[^>]+>", "", body)


def test_bad_configuration_is_one_line_not_a_traceback(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPT, encoding="utf-8")
    res = runner.invoke(app, ["compress", str(f), "--scorer", "bogus"])
    assert res.exit_code == 2
    assert res.output.startswith("Error: ") and "scorer" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    monkeypatch.setenv("PROMPTSIEVE_PROXY_DIR", str(tmp_path / "nowhere"))
    for cmd in ("compress", "explain"):
        res = runner.invoke(app, [cmd, str(f)])
        assert res.exit_code == 2, (cmd, res.output)
        assert res.output.startswith("Error: ") and "nowhere" in res.output
        assert "Traceback" not in res.output


def test_explain_refuses_an_unwritable_html_path_before_scoring(
    runner: CliRunner, tmp_path: Path
) -> None:
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPT, encoding="utf-8")
    res = runner.invoke(app, ["explain", str(f), "--html", str(tmp_path / "no" / "map.html")])
    _one_line_error(res, "Error: cannot write --html", "is not a folder")
    res = runner.invoke(app, ["explain", str(f), "--html", str(tmp_path)])
    _one_line_error(res, f"Error: cannot write --html {tmp_path}: it is a folder")
    res = runner.invoke(app, ["explain", str(f), "--html", str(tmp_path / ("a" * 300))])
    _one_line_error(res, "Error: cannot write --html", "File name too long")


# -- bad input: one "Error:" line, exit 2, never a traceback -----------------------------------


def _one_line_error(res: Result, *needles: str) -> str:
    """``res`` exited 2 with a message holding ``needles``, and raised nothing else."""
    output = res.output
    assert res.exit_code == 2, output
    assert res.exception is None or isinstance(res.exception, SystemExit), output
    assert "Traceback" not in output
    for needle in needles:
        assert needle in output, (needle, output)
    return output


@pytest.mark.parametrize("question", ["\udcff", "How many \ud800 days?"])
@pytest.mark.parametrize("cmd", ["compress", "explain"])
def test_a_question_that_is_not_unicode_is_bad_input(
    runner: CliRunner, tmp_path: Path, cmd: str, question: str
) -> None:
    """From argv, undecodable bytes arrive as surrogateescape characters (\\udcff)."""
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPT, encoding="utf-8")
    res = runner.invoke(app, [cmd, str(f), "--question", question])
    out = _one_line_error(res, "Error: --question is not valid Unicode")
    assert ("undecodable byte 0xff" in out) if question == "\udcff" else ("lone surrogate" in out)


def test_a_proxy_folder_without_artifacts_is_bad_input(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder exists (construction passes) but holds nothing: the proxy fails to load."""
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPT, encoding="utf-8")
    empty = tmp_path / "empty-proxy"
    empty.mkdir()
    monkeypatch.setenv("PROMPTSIEVE_PROXY_DIR", str(empty))
    for args in (["compress", str(f)], ["compress", str(f), "--json"], ["explain", str(f)]):
        res = runner.invoke(app, args)
        _one_line_error(res, "Error: the prebuilt proxy folder", str(empty))


def test_a_cache_dir_that_is_a_file_is_bad_input(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPT, encoding="utf-8")
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("x")
    for cache in (not_a_dir, not_a_dir / "below"):
        monkeypatch.setenv("PROMPTSIEVE_CACHE_DIR", str(cache))
        for args in (
            ["compress", str(f)],
            ["explain", str(f)],
            ["report", "--html", str(tmp_path / "r.html")],  # the default verdict store
        ):
            res = runner.invoke(app, args)
            _one_line_error(res, "$PROMPTSIEVE_CACHE_DIR", str(cache), "not a folder")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("content", ["", " \n\t\n"])
def test_an_empty_prompt_is_bad_input_for_explain_and_passes_compress(
    runner: CliRunner, tmp_path: Path, content: str
) -> None:
    """Nothing to explain is an error; compressing nothing gives nothing back (exit 0), as
    the library does, so a pipeline that may feed empty input keeps working."""
    f = tmp_path / "empty.txt"
    f.write_text(content, encoding="utf-8")
    res = runner.invoke(app, ["explain", str(f)])
    _one_line_error(res, f"Error: {f} holds no text to explain")
    res = runner.invoke(app, ["explain", "-"], input=content)
    _one_line_error(res, "Error: stdin holds no text to explain")
    for args in (["compress", str(f)], ["compress", "-"]):
        res = runner.invoke(app, args, input=content)
        assert res.exit_code == 0, res.output
        assert res.stdout.strip() == ""


# -- clean: checked before the (slow) attribution starts ---------------------------------------


@pytest.fixture()
def clean_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Demonstrations and validation files; the LM scorer replaced by a ConfigError that
    says the attribution would start here (so a check that came too late shows)."""
    from promptsieve._errors import ConfigError

    def started(*args: object, **kwargs: object) -> None:
        raise ConfigError("attribution would start here")

    monkeypatch.setattr("promptsieve.demos.LMDemoScorer", started)
    demos = tmp_path / "demos.jsonl"
    demos.write_text('{"input": "a?", "output": "b"}\n{"input": "c?", "output": "d"}\n')
    val = tmp_path / "val.jsonl"
    val.write_text('{"input": "q?", "answer": "a"}\n')
    return demos, val


def test_clean_refuses_unwritable_outputs_before_attribution(
    clean_files: tuple[Path, Path], tmp_path: Path
) -> None:
    demos, val = clean_files
    base = ["clean", str(demos), "--validation", str(val)]
    for flag in ("--out", "--html"):
        res = CliRunner().invoke(app, [*base, flag, str(tmp_path / "no" / "x")])
        _one_line_error(res, f"Error: cannot write {flag}", "is not a folder")
        res = CliRunner().invoke(app, [*base, flag, str(tmp_path)])
        _one_line_error(res, f"Error: cannot write {flag} {tmp_path}: it is a folder")
        assert "attribution would start" not in res.output
    # writable paths pass the check: the attribution is reached
    ok = [*base, "--out", str(tmp_path / "kept.jsonl"), "--html", str(tmp_path / "r.html")]
    _one_line_error(CliRunner().invoke(app, ok), "attribution would start here")


@pytest.mark.parametrize("margin", ["nan", "-1", "-inf", "inf"])
def test_clean_margin_must_be_finite_and_not_negative(
    clean_files: tuple[Path, Path], margin: str
) -> None:
    demos, val = clean_files
    res = CliRunner().invoke(app, ["clean", str(demos), "--validation", str(val),
                                   f"--margin={margin}"])  # fmt: skip
    _one_line_error(res, "Error: --margin must be a finite number >= 0")
    assert "attribution would start" not in res.output


def test_clean_names_the_line_of_an_integer_over_the_digit_limit(
    clean_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """json.loads raises a plain ValueError (not JSONDecodeError) past 4300 digits."""
    demos, val = clean_files
    big = tmp_path / "big.jsonl"
    big.write_text('{"input": "a?", "output": "b"}\n{"input": "c?", "output": ' + "7" * 5000 + "}")
    res = CliRunner().invoke(app, ["clean", str(big), "--validation", str(val)])
    _one_line_error(res, f"Error: {big}:2: not a JSON object", "4300 digits")
    res = CliRunner().invoke(app, ["clean", str(demos), "--validation", str(big)])
    _one_line_error(res, f"Error: {big}:2: not a JSON object")


# -- screen ------------------------------------------------------------------------------------

SAMPLE = '{"messages": [{"role": "user", "content": "What colour is the sky?"}]}\n'


def _screen_args(samples: Path, base_url: str) -> list[str]:
    return ["screen", "--task", "t", "--samples", str(samples), "--base-url", base_url,
            "--model", "m", "--tau", "0.5", "--budget", "6", "--ratios", "0.8"]  # fmt: skip


@pytest.mark.parametrize("temperature", ["nan", "inf", "-1"])
def test_screen_temperature_must_be_finite_and_not_negative(
    tmp_path: Path, temperature: str
) -> None:
    samples = tmp_path / "s.jsonl"
    samples.write_text(SAMPLE * 6)
    args = [*_screen_args(samples, "http://127.0.0.1:9/v1"), f"--temperature={temperature}"]
    res = CliRunner().invoke(app, args)
    _one_line_error(res, "Error: --temperature must be a finite number >= 0")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [(".judges:judge", "TypeError"), ("broken_judge:judge", "SyntaxError")],
)
def test_screen_judge_that_cannot_be_imported_is_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, needle: str
) -> None:
    """A relative module name or a judge module with a syntax error printed a traceback."""
    (tmp_path / "broken_judge.py").write_text("def judge(sample, out:\n    return True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    samples = tmp_path / "s.jsonl"
    samples.write_text(SAMPLE * 6)
    args = [*_screen_args(samples, "http://127.0.0.1:9/v1"), "--mode", "labelled", "--judge", spec]
    _one_line_error(CliRunner().invoke(app, args), f"cannot load judge {spec!r}: {needle}")


def test_screen_names_the_line_of_an_integer_over_the_digit_limit(tmp_path: Path) -> None:
    samples = tmp_path / "s.jsonl"
    samples.write_text(SAMPLE + '{"prompt": "x", "n": ' + "9" * 5000 + "}\n")
    res = CliRunner().invoke(app, _screen_args(samples, "http://127.0.0.1:9/v1"))
    _one_line_error(res, f"Error: {samples}:2: not valid JSON", "4300 digits")


def test_screen_says_when_the_target_cannot_be_reached(runner: CliRunner, tmp_path: Path) -> None:
    """Every call refused (nothing listens on port 9): the report names the cause."""
    samples = tmp_path / "s.jsonl"
    samples.write_text(SAMPLE * 6)
    url = "http://127.0.0.1:9/v1"
    for extra in ([], ["--json"]):
        res = runner.invoke(app, [*_screen_args(samples, url), *extra])
        assert res.exit_code == 1, res.output
        assert f"could not connect to {url}: connection refused" in res.output, res.output
        assert "check --base-url" in res.output


def test_screen_gives_no_connect_hint_when_the_server_answers(
    runner: CliRunner, tmp_path: Path
) -> None:
    """HTTP 500 from a live server is a failure, but not a connection problem."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Broken(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(500)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        samples = tmp_path / "s.jsonl"
        samples.write_text(SAMPLE * 6)
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        res = runner.invoke(app, _screen_args(samples, url))
    finally:
        server.shutdown()
        server.server_close()
    assert res.exit_code == 1 and "failed)" in res.output, res.output
    assert "could not connect" not in res.output


# -- report: prices ----------------------------------------------------------------------------


@pytest.mark.parametrize("price", ["-2.5", "NaN", "Infinity"])
def test_report_refuses_a_negative_or_nan_price_in_the_table(tmp_path: Path, price: str) -> None:
    from promptsieve.fidelity import SQLiteStore

    store = tmp_path / "v.sqlite3"
    SQLiteStore(store).close()
    prices = tmp_path / "prices.json"
    prices.write_text('{"usd_per_million_input_tokens": {"gpt-4o": ' + price + "}}")
    out = tmp_path / "r.html"
    res = CliRunner().invoke(
        app, ["report", "--html", str(out), "--store", str(store), "--prices", str(prices)]
    )
    _one_line_error(res, f"Error: bad price table {prices}", "'gpt-4o'", "finite number >= 0")
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["compress", "{tmp}/missing.txt"], "cannot read {tmp}/missing.txt: No such file"),
        (["compress", "{tmp}"], "Is a directory"),
        (["compress", "{tmp}/nul.bin"], "is binary or UTF-16, not UTF-8 text (NUL at character 3)"),
        (["compress", "{tmp}/utf16.txt"], "iconv -f UTF-16 -t UTF-8"),
        (["compress", "{tmp}/latin1.txt"], "is not UTF-8 text"),
        (["compress", "{tmp}/p.txt", "--ratio", "abc"], "Invalid value for '--ratio'"),
        (["compress", "{tmp}/p.txt", "--ratio", "0"], "ratio must be in (0, 1]"),
        (["compress", "{tmp}/p.txt", "--no-such-flag"], "No such option: --no-such-flag"),
        (["explain", "{tmp}/p.txt", "--scorer", "bogus"], "scorer must be 'head'"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["clean", "{tmp}/p.txt", "--no-such-flag"], "No such option: --no-such-flag"),
        (["clean"], "Missing argument"),
        (["demo", "--ratio", "abc"], "Invalid value for '--ratio'"),
    ],
)
def test_usage_errors_are_one_error_line(
    runner: CliRunner, tmp_path: Path, args: list[str], says: str
) -> None:
    """Errors click finds (missing file, bad value, unknown option or command) read like every
    other bad input: one ``Error:`` line naming the subcommand's --help, exit status 2."""
    (tmp_path / "nul.bin").write_bytes(b"abc\0def plain words after the NUL")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9".encode("latin-1"))
    (tmp_path / "utf16.txt").write_bytes("plain words".encode("utf-16-le"))  # no BOM
    (tmp_path / "p.txt").write_text(PROMPT, encoding="utf-8")
    tmp = str(tmp_path)
    res = runner.invoke(app, [a.replace("{tmp}", tmp) for a in args])
    output = _one_line_error(res, "Error: ", says.replace("{tmp}", tmp), "--help')")
    assert output.count("\n") == 1 and output.startswith("Error: "), output


def test_compress_prints_the_text_ending_as_it_came(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "short.txt"
    f.write_text("line one here\n", encoding="utf-8")
    res = runner.invoke(app, ["compress", str(f)])
    assert res.exit_code == 0 and res.stdout == "line one here\n", repr(res.stdout)


REORDER_DOCS = [
    "Bananas grow in tropical regions. They are yellow when ripe. Farmers harvest them green.",
    "Coffee beans are roasted seeds. Roasting changes their taste. Espresso is strong coffee.",
    "The Eiffel Tower is in Paris. It is 330 metres tall. It opened to visitors in 1889.",
]


def test_compress_reorder_puts_the_relevant_passage_first(
    runner: CliRunner, tmp_path: Path
) -> None:
    f = tmp_path / "docs.txt"
    f.write_text("\n\n".join([*REORDER_DOCS, "Question: How tall is the Eiffel Tower?"]))
    args = ["compress", str(f), "--ratio", "0.8", "--question", "How tall is the Eiffel Tower?"]
    plain, moved = runner.invoke(app, args), runner.invoke(app, [*args, "--reorder"])
    assert plain.exit_code == 0 and moved.exit_code == 0, plain.output + moved.output
    # without --reorder the kept passages keep their order; with it the answer's comes first
    assert plain.stdout.index("Eiffel") > plain.stdout.find("Roasting")
    assert moved.stdout.startswith("The Eiffel Tower")
    assert moved.stdout.rstrip().endswith("Question: How tall is the Eiffel Tower?")
    assert sorted(plain.stdout.split()) == sorted(moved.stdout.split())  # same text kept


def test_compress_reorder_with_an_explicit_word_scorer_is_one_error_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    f = tmp_path / "p.txt"
    f.write_text(PROMPT)
    res = runner.invoke(app, ["compress", str(f), "--scorer", "head", "--reorder"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        "Error: Invalid value: --reorder works with the default scorer or --scorer relevance, "
        "not head (see 'promptsieve compress --help')"
    ]


def test_compress_reorder_keeps_the_question_and_what_follows_in_place(
    runner: CliRunner, tmp_path: Path
) -> None:
    # an instruction after the question: the segmenter finds no question, so the block
    # holding --question's text stays, with everything after it; no question: no reordering
    question = "How tall is the Eiffel Tower?"
    f = tmp_path / "docs.txt"
    blocks = [*REORDER_DOCS, f"Question: {question}", "Answer in one short sentence."]
    f.write_text("\n\n".join(blocks))
    args = ["compress", str(f), "--ratio", "0.8", "--reorder"]
    asked = runner.invoke(app, [*args, "--question", question])
    assert asked.exit_code == 0, asked.output
    assert asked.stdout.startswith("The Eiffel Tower")
    tail = asked.stdout[asked.stdout.index("Question:") :]
    assert "Bananas" not in tail and "Coffee" not in tail and "Eiffel Tower is" not in tail
    unasked = runner.invoke(app, args)
    plain = runner.invoke(app, ["compress", str(f), "--ratio", "0.8"])
    assert unasked.exit_code == 0 and unasked.stdout == plain.stdout


def test_explain_lists_whole_words_not_subword_pieces(runner: CliRunner, tmp_path: Path) -> None:
    """Without --html, explain prints the 20 most important words as the compressor scores a
    unit (the mean of its proxy tokens): "refund", never the pieces "ref" / "und"."""
    text = "Unbelievably, the refund for the tinned goods arrived late.\n\nRefunds take ten days."
    f = tmp_path / "p.txt"
    f.write_text(text)
    res = runner.invoke(app, ["explain", str(f)])
    assert res.exit_code == 0, res.output
    shown = [re.fullmatch(r"[+-]\d+\.\d{4}  '(.*)'", line) for line in res.output.splitlines()]
    words = [m.group(1) for m in shown if m]
    assert all(shown) and len(words) == min(20, len(re.findall(r"\w+", text)))
    assert set(words) == set(re.findall(r"\w+", text))  # whole words, not pieces
    scores = [float(line.split()[0]) for line in res.output.splitlines()]
    assert scores == sorted(scores, reverse=True)
    f.write_text("退款需要十天。商店说退款很慢。")  # no spaces: the segmenter's CJK words
    res = runner.invoke(app, ["explain", str(f)])
    assert res.exit_code == 0, res.output
    assert {line.split("  ", 1)[1] for line in res.output.splitlines()} == {
        repr(w) for w in ("退款", "需要", "十天", "商店", "说", "很慢")
    }
