"""The command line, run in-process with typer's runner against the real proxy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
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
    assert res.exit_code == 2
    assert "is not a folder" in " ".join(re.sub("[│╭╮╰╯─]", " ", res.output).split())
