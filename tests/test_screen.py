"""Offline screening against a scripted OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from promptsieve import ConfigError, TargetError
from promptsieve.fidelity import (
    HTTPTarget,
    JudgeError,
    Outcome,
    ScreenConfig,
    SQLiteStore,
    TargetOutput,
    VerdictKey,
    VerdictState,
    load_samples,
    screen,
)
from promptsieve.fidelity.stats import CURTAILED

COLORS = ("red", "green", "blue")


def majority_color(text: str) -> str:
    """The scripted 'model': names the colour mentioned most often (ties: none)."""
    counts = Counter(w.strip(".,").lower() for w in text.split())
    ranked = sorted(((counts[c], c) for c in COLORS), reverse=True)
    if ranked[0][0] == 0 or ranked[0][0] == ranked[1][0]:
        return "none"
    return ranked[0][1]


class _Model(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = self.path.endswith("/chat/completions")
        text = (
            "\n".join(str(m.get("content") or "") for m in body["messages"])
            if chat
            else body["prompt"]
        )
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers), body))
            self.server.seen[text] += 1
            attempt = self.server.seen[text]
        if "Same final answer?" in text and chat:  # a judge call: compare the two answers
            a = text.split("Answer A: ")[1].split("\n")[0].strip()
            b = text.split("Answer B: ")[1].split("\n")[0].strip()
            reply = "maybe" if "none" in (a, b) else ("yes" if a == b else "no")
            msg = {"role": "assistant", "content": reply}
            return self._send(200, {"choices": [{"index": 0, "message": msg}]})
        if "DEAD" in text or ("FLAKY" in text and attempt == 1):
            return self._send(500, {"error": {"message": "overloaded"}})
        if "SLOW" in text:
            time.sleep(3.0)  # well past the client timeout of the test that sends it
        if "GARBLED" in text:
            return self._send(200, {"choices": []})
        answer = majority_color(text)
        if "TOOL" in text and chat:
            msg = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "1",
                        "type": "function",
                        "function": {"name": "paint", "arguments": json.dumps({"c": answer})},
                    }
                ],
            }
            return self._send(200, {"choices": [{"index": 0, "message": msg}]})
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": answer}}
        else:
            choice = {"index": 0, "text": " " + answer}
        return self._send(200, {"id": "x", "object": "completion", "choices": [choice]})

    def _send(self, status: int, payload: Any) -> None:
        raw = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except OSError:  # the client gave up (timeout test)
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Model)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.seen: Counter[str] = Counter()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def drop_words(body: dict[str, Any], ratio: float) -> dict[str, Any]:
    """A real (simple) compressor: keeps ~ratio of the words of non-system message text."""

    def squeeze(text: str) -> str:
        words = text.split()
        keep = [w for i, w in enumerate(words) if math.ceil((i + 1) * ratio) > math.ceil(i * ratio)]
        return " ".join(keep)

    new = json.loads(json.dumps(body))
    if "prompt" in new:
        new["prompt"] = squeeze(new["prompt"])
    else:
        for m in new["messages"]:
            if m["role"] != "system" and isinstance(m.get("content"), str):
                m["content"] = squeeze(m["content"])
    return new


def make_samples(n: int, seed: int = 0, chat: bool = True) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    filler = [
        "the",
        "of",
        "a",
        "report",
        "table",
        "river",
        "window",
        "market",
        "number",
        "quiet",
        "yellowish",
        "stone",
    ]
    out = []
    for i in range(n):
        main, other = rng.sample(COLORS, 2)
        words = [main] * 16 + [other] * 2 + [rng.choice(filler) for _ in range(42)]
        rng.shuffle(words)
        text = f"Document {i}: " + " ".join(words) + ". Which colour is mentioned most?"
        if chat:
            out.append(
                {
                    "messages": [
                        {"role": "system", "content": "Answer with one word."},
                        {"role": "user", "content": text},
                    ],
                    "max_tokens": 4,
                }
            )
        else:
            out.append({"prompt": text, "max_tokens": 4})
    return out


def test_ladder_passes_safe_ratios_and_fails_destructive_one(server: _Server) -> None:
    samples = make_samples(40)

    def agreement(ratio: float) -> float:  # check the data are as intended
        text = [
            (s["messages"][1]["content"], drop_words(s, ratio)["messages"][1]["content"])
            for s in samples
        ]
        return sum(majority_color(a) == majority_color(b) for a, b in text) / len(text)

    assert agreement(0.8) == agreement(0.5) == 1.0 and agreement(0.05) < 0.8
    cfg = ScreenConfig(budget=40, ratios=(0.8, 0.5, 0.05))
    with HTTPTarget(url(server), "scripted", api_key="k") as target:
        result = screen("colors", samples, target, cfg, compress=drop_words)
    assert result.verdict is VerdictState.PASSED and result.ratio == 0.5
    r08, r05, r005 = result.ratios
    assert (r08.decision, r08.n, r05.decision, r05.n) == (Outcome.PASS, 30, Outcome.PASS, 30)
    # 0.05 stops at its third disagreement: no pass is left within the 40 samples
    assert r005.decision is Outcome.FAIL and r005.reason == CURTAILED and r005.n < 10
    assert result.lower is not None and result.lower >= 0.9
    # originals are cached: each sample's original was sent exactly once
    sent = [json.dumps(b["messages"]) for _, _, b in server.requests]
    originals = Counter(m for m in sent if m in {json.dumps(x["messages"]) for x in samples})
    assert len(originals) == max(r.n for r in result.ratios)
    assert set(originals.values()) == {1}
    assert result.calls == len(server.requests)


def test_a_target_that_answers_alike_is_warned_about(
    server: _Server,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Agreement passes for free when the target gives one answer to every request: the
    result measures the modal answer share and warns; varied answers give no warning."""
    from promptsieve.fidelity.screen import MODAL_WARN_SHARE

    varied = make_samples(40)
    alike = [
        json.loads(json.dumps(s).replace("green", "red").replace("blue", "red")) for s in varied
    ]
    assert {majority_color(s["messages"][1]["content"]) for s in alike} == {"red"}
    cfg = ScreenConfig(budget=40, ratios=(0.8,))
    with HTTPTarget(url(server), "scripted") as target, caplog.at_level("WARNING"):
        same = screen("alike", alike, target, cfg, compress=drop_words)
        other = screen("varied", varied, target, cfg, compress=drop_words)
    assert same.passed and same.modal_share == 1.0 and same.original_answers == 30
    warning = same.modal_warning()
    assert warning is not None
    assert "one answer (alike under the task's metric) to 30 of 30" in warning
    assert [r.getMessage() for r in caplog.records if "one answer" in r.getMessage()] == [
        f"task 'alike': {warning}"
    ]
    assert other.passed and other.modal_share is not None
    assert other.modal_share < MODAL_WARN_SHARE and other.modal_warning() is None
    # the CLI prints the warning and reports the share in --json
    import importlib

    from promptsieve.cli import app

    cli_mod = importlib.import_module("promptsieve.fidelity._screen_cli")
    monkeypatch.setattr(cli_mod, "_screening_compressor", lambda: (drop_words, "fp"))
    path = tmp_path / "alike.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in alike) + "\n")
    args = ["screen", "--task", "alike", "--samples", str(path), "--base-url", url(server),
            "--model", "scripted", "--ratios", "0.8", "--budget", "40"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and f"warning: {warning}" in res.output, res.output
    assert res.output.count(warning) == 1  # printed once, not also by logging's last resort
    res = CliRunner().invoke(app, [*args, "--json"])
    assert json.loads(res.stdout)["modal_share"] == 1.0, res.output
    assert res.stderr.strip() == f"warning: {warning}"
    labelled = ScreenConfig(mode="labelled", budget=40, ratios=(0.8,))
    gold = [{**s, "gold": "red"} for s in alike]
    with HTTPTarget(url(server), "scripted") as target:
        assert screen("alike", gold, target, labelled, compress=drop_words).modal_share is None


def blank_colours_at_08(body: dict[str, Any], ratio: float) -> dict[str, Any]:
    """A non-monotone compressor: at 0.8 it deletes every colour word (the answer turns to
    'none'), at other ratios it thins words as drop_words does."""
    if ratio != 0.8:
        return drop_words(body, ratio)
    new = json.loads(json.dumps(body))
    for m in new["messages"]:
        if m["role"] != "system":
            m["content"] = " ".join(w for w in m["content"].split() if w not in COLORS)
    return new


def test_bonferroni_ladder_reaches_a_rung_behind_a_failing_one(server: _Server) -> None:
    samples = make_samples(60, seed=3)
    ratios = (0.8, 0.5, 0.05)
    with HTTPTarget(url(server), "scripted") as target:
        fixed = screen("c", samples, target, ScreenConfig(budget=60, ratios=ratios),
                       compress=blank_colours_at_08)  # fmt: skip
        cfg = ScreenConfig(budget=60, ratios=ratios, ladder_test="bonferroni")
        both = screen("c", samples, target, cfg, compress=blank_colours_at_08)
    # fixed sequence: the first rung fails, so 0.5 is never tried
    assert fixed.verdict is VerdictState.FAILED and [r.ratio for r in fixed.ratios] == [0.8]
    # Bonferroni: every rung is tried at delta/3, and the most aggressive pass is applied
    assert both.passed and both.ratio == 0.5 and both.ladder_test == "bonferroni"
    r08, r05, r005 = both.ratios
    assert r08.decision is Outcome.FAIL and r005.decision is Outcome.FAIL
    # at delta = 0.05 it passes after 30 agreements (the test above); at 0.05/3 it needs more
    assert r05.decision is Outcome.PASS and 30 < r05.n <= 60
    assert r05.e_value >= 3 / 0.05 and both.e_value == pytest.approx(r05.e_value / 3)
    assert both.lower == r05.lower
    # when several rungs pass, the smallest ratio (the most aggressive) is applied
    with HTTPTarget(url(server), "scripted") as target:
        cfg = ScreenConfig(budget=60, ratios=(0.5, 0.8), ladder_test="bonferroni")
        two = screen("c2", samples, target, cfg, compress=drop_words)
    assert [r.decision for r in two.ratios] == [Outcome.PASS, Outcome.PASS] and two.ratio == 0.5
    with pytest.raises(ConfigError, match="ladder_test"):
        ScreenConfig(ladder_test="parallel")  # type: ignore[arg-type]


def test_completions_bodies_and_failure_verdict(server: _Server) -> None:
    samples = make_samples(40, seed=1, chat=False)
    with HTTPTarget(url(server), "scripted") as target:
        result = screen("c", samples, target, ScreenConfig(ratios=(0.05,)), compress=drop_words)
    assert result.verdict is VerdictState.FAILED and result.ratio is None
    # 40 samples: the third disagreement leaves no pass among them
    assert result.ratios[0].reason == "cannot pass with the samples left"
    assert result.ratios[0].n < 10
    assert all(
        path.endswith("/completions") and "chat" not in path for path, _, _ in server.requests
    )


def test_errors_and_timeouts_count_as_neither(server: _Server) -> None:
    samples = make_samples(34, seed=2)
    for i, mark in ((1, "FLAKY"), (2, "DEAD"), (3, "SLOW"), (4, "GARBLED")):
        samples[i]["messages"][1]["content"] += f" {mark}"
    cfg = ScreenConfig(budget=34, ratios=(0.8,), retries=1)
    with HTTPTarget(url(server), "scripted", timeout=1.0) as target:
        result = screen("errs", samples, target, cfg, compress=drop_words)
    rung = result.ratios[0]
    assert rung.skipped == 3  # DEAD, SLOW, GARBLED: retried once, then skipped
    assert rung.n == rung.agree == 30  # passes at 30; FLAKY recovered on its retry
    assert rung.decision is Outcome.PASS
    # FLAKY fails once per distinct text (original and compressed), the others twice each
    assert result.errors == 2 + 2 * 3
    assert result.calls == 30 * 2 + result.errors


def test_errors_use_up_the_attempts(server: _Server) -> None:
    samples = make_samples(10, seed=3)
    for s in samples:
        s["messages"][1]["content"] += " DEAD"
    with HTTPTarget(url(server), "scripted") as target:
        cfg = ScreenConfig(budget=10, tau=0.6)  # 7 agreements could pass
        result = screen("dead", samples, target, cfg, compress=drop_words)
    assert result.verdict is VerdictState.FAILED
    # after 4 skipped samples 6 attempts are left, fewer than the 7 agreements that pass
    rung = result.ratios[0]
    assert (rung.n, rung.skipped, rung.reason) == (0, 4, CURTAILED)
    assert result.calls == 8  # one retry each, then skip: never loops


def test_skipped_samples_count_against_the_attempts_left(server: _Server) -> None:
    """40 samples, the first 11 unanswerable: 29 attempts remain, and 30 agreements are the
    least that passes at tau 0.9, so screening stops there instead of spending 58 calls."""
    samples = make_samples(40, seed=3)
    for s in samples[:11]:
        s["messages"][1]["content"] += " DEAD"
    with HTTPTarget(url(server), "scripted") as target:
        result = screen("dead", samples, target, ScreenConfig(budget=40), compress=drop_words)
    rung = result.ratios[0]
    assert result.verdict is VerdictState.FAILED
    assert (rung.n, rung.skipped, rung.reason) == (0, 11, CURTAILED)
    assert result.calls == 22  # the 11 originals, each retried once: nothing more


def test_http_target_protocol(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-env")
    target = HTTPTarget(url(server), "m1", overrides={"temperature": 0})
    chat = {"model": "ignored", "messages": [{"role": "user", "content": "TOOL red"}]}
    out = target.complete(chat)
    assert out.tool_calls == (("paint", '{"c": "red"}'),) and out.text == ""
    path, headers, body = server.requests[-1]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test-env"
    assert body["model"] == "m1" and body["temperature"] == 0 and body["stream"] is False
    assert target.complete({"prompt": "blue blue"}).text == " blue"
    with pytest.raises(TargetError, match="HTTP 500"):
        target.complete({"prompt": "DEAD"})
    with pytest.raises(TargetError, match="malformed"):
        target.complete({"prompt": "GARBLED"})
    target.close()
    with pytest.raises(TargetError):
        HTTPTarget("http://127.0.0.1:9/v1", "m", timeout=0.5).complete({"prompt": "x"})


def test_load_samples_names_the_bad_line(tmp_path: Path) -> None:
    good = json.dumps({"prompt": "hi"})
    cases = {
        "{not json}": "line 2: not valid JSON",
        "[1, 2]": "line 2: expected a JSON object",
        '{"input": "x"}': "line 2: a request body needs 'messages'",
        '{"messages": []}': "line 2: 'messages' must be a non-empty list",
        '{"messages": [{"content": "x"}]}': "line 2: messages[0]",
        '{"prompt": 3}': "line 2: 'prompt' must be a string",
    }
    for bad, msg in cases.items():
        path = tmp_path / "s.jsonl"
        path.write_text(f"{good}\n{bad}\n{good}\n")
        with pytest.raises(ConfigError) as err:
            load_samples(path)
        assert msg.replace("line 2", f"{path}:2") in str(err.value)
    path = tmp_path / "ok.jsonl"
    path.write_text(f"{good}\n\n{good}\n")
    assert len(load_samples(path)) == 2
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="no samples"):
        load_samples(tmp_path / "empty.jsonl")
    with pytest.raises(ConfigError, match="cannot read"):
        load_samples(tmp_path / "missing.jsonl")


def test_screen_result_can_seed_the_gate_store(server: _Server, tmp_path: Path) -> None:
    from promptsieve.fidelity import Action, Gate, GateConfig

    store = SQLiteStore(tmp_path / "v.sqlite3")
    key = VerdictKey("colors", "scripted", "proxy", "settings")
    with HTTPTarget(url(server), "scripted") as target:
        result = screen(
            "colors",
            make_samples(30),
            target,
            ScreenConfig(ratios=(0.5,)),
            compress=drop_words,
            store=store,
            key=key,
        )
    assert result.passed
    d = Gate(store, GateConfig(monitor_rate=0.0)).decide(key)
    assert d.action is Action.APPLY and d.ratio == 0.5


def test_cli_screen(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from promptsieve.cli import app

    cli_mod = importlib.import_module("promptsieve.fidelity._screen_cli")

    samples = tmp_path / "requests.jsonl"
    samples.write_text("\n".join(json.dumps(s) for s in make_samples(35)) + "\n")
    # the CLI screens with the SDK's Compressor; here the wiring is tested with drop_words
    monkeypatch.setattr(cli_mod, "_screening_compressor", lambda: (drop_words, "fp"))
    args = [
        "screen",
        "--task",
        "colors",
        "--samples",
        str(samples),
        "--base-url",
        url(server),
        "--model",
        "scripted",
        "--ratios",
        "0.8,0.05",
        "--budget",
        "35",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "verdict: passed" in res.output and "ratio chosen: 0.8" in res.output
    assert "target calls spent:" in res.output and "lower bound on agreement: 0.9" in res.output
    # Bonferroni tests both rungs at delta/2: a budget of 35 can no longer pass, refused
    res = CliRunner().invoke(app, [*args, "--ladder-test", "bonferroni", "--json"])
    assert res.exit_code == 2 and "budget=35" in res.output and "at least 37" in res.output
    args[-1] = "37"  # and 35 samples are too few for a budget of 37
    res = CliRunner().invoke(app, [*args, "--ladder-test", "bonferroni", "--json"])
    assert res.exit_code == 2 and "35 samples can never pass" in res.output
    res = CliRunner().invoke(app, [*args, "--ladder-test", "parallel"])
    assert res.exit_code == 2 and "--ladder-test must be fixed-sequence or bonferroni" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n{oops\n')
    res = CliRunner().invoke(app, [*args[:3], "--samples", str(bad), *args[5:]])
    assert res.exit_code == 2 and "bad.jsonl:2" in res.output
    # a URL that is not http(s): refused before the proxy loads, naming the option
    monkeypatch.setattr(cli_mod, "_screening_compressor", lambda: pytest.fail("proxy loaded"))
    res = CliRunner().invoke(app, [*args[:5], "--base-url", "localhost:8080/v1", *args[7:]])
    assert res.exit_code == 2 and "--base-url" in res.output, res.output
    # store locations the CLI cannot use: refused before the proxy loads, naming --store
    for spec, needle in (
        ("Redis://127.0.0.1:1/0", "--store: write the URL scheme Redis:// as redis://"),
        ("http://x", "--store must be a SQLite file path"),
        (str(tmp_path), "is a folder"),
        ("", "--store is empty: give a SQLite file path, 'default' or a redis:// URL"),
        ("redis://127.0.0.1:1/0", "verdict store (Redis) get failed"),  # down: no call spent
    ):
        with monkeypatch.context() as m:
            m.chdir(tmp_path)
            calls = len(server.requests)
            res = CliRunner().invoke(app, [*args, "--store", spec])
        assert res.exit_code == 2 and needle in res.output, res.output
        assert len(server.requests) == calls
    assert not (tmp_path / "http:").exists()


def test_cli_screen_store_seeds_a_live_sieve(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_root: Path, proxy: Any
) -> None:
    """`screen --store` writes the verdict where a live Sieve with the same settings looks."""
    import importlib

    from promptsieve.cli import app
    from promptsieve.fidelity import Action, GateConfig
    from promptsieve.sieve import Sieve, SieveConfig

    monkeypatch.setenv("PROMPTSIEVE_CACHE_DIR", str(cache_root))  # the session's proxy export
    from promptsieve.compressor import Compressor

    fingerprint = Compressor().fingerprint  # what the CLI's own compressor reports
    cli_mod = importlib.import_module("promptsieve.fidelity._screen_cli")
    monkeypatch.setattr(cli_mod, "_screening_compressor", lambda: (drop_words, fingerprint))
    samples = tmp_path / "requests.jsonl"
    samples.write_text("\n".join(json.dumps(s) for s in make_samples(35)) + "\n")
    db = tmp_path / "verdicts.sqlite3"
    args = ["screen", "--task", "colors", "--samples", str(samples), "--base-url", url(server),
            "--model", "scripted", "--ratios", "0.8", "--store", str(db)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"verdict saved for task 'colors', model 'scripted' in {db}" in res.output
    sieve = Sieve(SieveConfig(store_path=str(db), gate=GateConfig(ratios=(0.8,), monitor_rate=0)))
    decision = sieve.gate.decide(sieve.verdict_key("colors", "scripted"))
    assert decision.action is Action.APPLY and decision.ratio == 0.8
    other = Sieve(SieveConfig(store_path=str(db), metric="exact", gate=GateConfig(ratios=(0.8,))))
    assert other.gate.decide(other.verdict_key("colors", "scripted")).action is not Action.APPLY
    res = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "x.db"), "--metric", "nope"])
    assert res.exit_code == 2 and not (tmp_path / "x.db").exists()


def test_cli_screen_redis_store_one_connection_closed_at_exit(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`screen --store redis://` probes and saves on one connection (a real redis-server),
    and closes it before returning: a CLI run leaves no client behind."""
    import importlib

    import redis

    from _redis_server import RedisServer, redis_exe
    from promptsieve.cli import app
    from promptsieve.fidelity.store import RedisStore

    srv = RedisServer(redis_exe(), tmp_path, persistent=False)
    srv.start()
    try:
        admin = redis.Redis(host="127.0.0.1", port=srv.port)
        cli_mod = importlib.import_module("promptsieve.fidelity._screen_cli")
        monkeypatch.setattr(cli_mod, "_screening_compressor", lambda: (drop_words, "fp"))
        samples = tmp_path / "requests.jsonl"
        samples.write_text("\n".join(json.dumps(s) for s in make_samples(35)) + "\n")
        before = int(admin.info("stats")["total_connections_received"])
        res = CliRunner().invoke(app, ["screen", "--task", "colors", "--samples", str(samples),
                                       "--base-url", url(server), "--model", "scripted",
                                       "--ratios", "0.8", "--store", srv.url])  # fmt: skip
        assert res.exit_code == 0, res.output
        assert f"verdict saved for task 'colors', model 'scripted' in {srv.url}" in res.output
        stats, clients = admin.info("stats"), admin.info("clients")
        assert int(stats["total_connections_received"]) - before == 1  # the probe's, reused
        assert int(clients["connected_clients"]) == 1  # only this test's admin client is left
        assert len(RedisStore(srv.url).verdicts()) == 1  # the verdict is there
        admin.close()
    finally:
        srv.stop()


# -- labelled mode, judges, noise floor -----------------------------------------------------


def labelled_samples(n: int, seed: int = 5) -> list[dict[str, Any]]:
    out = []
    for s in make_samples(n, seed=seed):
        text = s["messages"][1]["content"]
        out.append({**s, "gold": majority_color(text)})
    return out


def test_labelled_screening_with_gold(server: _Server) -> None:
    samples = labelled_samples(45)
    cfg = ScreenConfig(mode="labelled", rho=0.9, budget=45, ratios=(0.5, 0.05))
    with HTTPTarget(url(server), "scripted") as target:
        result = screen("colors", samples, target, cfg, compress=drop_words)
    r05, r005 = result.ratios
    assert r05.decision is Outcome.PASS and r05.n == 34 and r05.original_correct == 34
    assert r005.decision is Outcome.FAIL and r005.agree < r005.original_correct
    assert result.passed and result.ratio == 0.5 and result.mode == "labelled"
    assert result.e_value is not None and result.e_value >= 20
    # the gold field never reaches the target
    assert all("gold" not in body for _, _, body in server.requests)


def test_labelled_samples_need_gold_and_sane_margins(server: _Server, tmp_path: Path) -> None:
    samples = labelled_samples(3)
    del samples[1]["gold"]
    with (
        HTTPTarget(url(server), "scripted") as target,
        pytest.raises(ConfigError, match="sample 1: no 'gold' field"),
    ):
        screen("c", samples, target, ScreenConfig(mode="labelled"), compress=drop_words)
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(json.dumps(s) for s in samples) + "\n")
    with pytest.raises(ConfigError, match=r"s.jsonl:2: no 'gold' field"):
        load_samples(path, gold_field="gold")
    assert len(load_samples(path)) == 3  # agreement mode does not need it
    with pytest.raises(ConfigError, match=r"epsilon must be in \[0.0, 0.5\]"):
        ScreenConfig(mode="labelled", epsilon=0.9)
    with pytest.raises(ConfigError, match=r"rho must be in \[0.5, 1.0\]"):
        ScreenConfig(mode="labelled", rho=0.1)


def test_a_judge_that_raises_or_hangs_is_not_counted(server: _Server) -> None:
    samples = labelled_samples(40)
    calls: Counter[str] = Counter()

    def judge(sample: Any, out: Any) -> bool:
        doc = sample["messages"][1]["content"].split(":")[0]
        calls[doc] += 1
        if doc == "Document 1":
            raise RuntimeError("judge model down")
        if doc == "Document 2":
            time.sleep(2.0)  # past the timeout
        return bool(out.text.strip() == sample["gold"])

    cfg = ScreenConfig(mode="labelled", rho=0.9, budget=40, ratios=(0.5,), judge_timeout_s=0.5)
    with HTTPTarget(url(server), "scripted") as target:
        result = screen("colors", samples, target, cfg, compress=drop_words, judge=judge)
    rung = result.ratios[0]
    assert rung.skipped == 2 and rung.n == 34 and rung.decision is Outcome.PASS
    assert calls["Document 1"] == 1 and calls["Document 2"] == 1  # no compressed call spent


def test_target_as_judge_metric(server: _Server) -> None:
    from promptsieve.fidelity import TargetJudge, target_judge
    from promptsieve.fidelity.target import prompt_body

    with HTTPTarget(url(server), "scripted") as target:
        judge = target_judge(lambda p: target.complete(prompt_body(p, 3)))
        T = TargetOutput
        assert judge(T("red"), T("The colour is red."))  # settled without a call
        assert judge.calls == 0 and judge.shortcuts == 1
        assert not judge(T("red"), T("blue"))
        assert judge.calls == 1 and judge.prompt_tokens > 0
        with pytest.raises(JudgeError):
            judge(T("none"), T("blue"))  # the judge answers "maybe"
        before = len(server.requests)
        cfg = ScreenConfig(metric="judge", budget=40, ratios=(0.05,))
        result = screen(
            "colors", make_samples(40), target, cfg, compress=drop_words, judge_metric=judge
        )
    assert isinstance(judge, TargetJudge)
    assert result.judge_calls == judge.calls - 2 >= 1  # two judge calls were made above
    assert result.calls == len(server.requests) - before  # judge calls priced in
    assert result.ratios[0].decision is Outcome.FAIL
    # the modal answer share is not measured with a judge: it would cost target calls
    assert result.modal_share is None
    with HTTPTarget(url(server), "scripted") as target:
        judge = target_judge(lambda p: target.complete(prompt_body(p, 3)))
        cfg = ScreenConfig(metric=judge, budget=40, ratios=(0.8,))
        as_metric = screen("colors", make_samples(40), target, cfg, compress=drop_words)
    assert as_metric.passed and as_metric.original_answers >= 30
    assert as_metric.modal_share is None


def test_screen_measures_the_noise_floor(server: _Server, tmp_path: Path) -> None:
    samples = make_samples(35)
    for s in samples:  # passages that the variant may reorder, and prose it may reflow
        s["messages"][1]["content"] = (
            "Document 1: " + s["messages"][1]["content"] + "\n\nDocument 2: grey stone."
        )
    store = SQLiteStore(tmp_path / "v.sqlite3")
    key = VerdictKey("colors", "scripted", "proxy", "settings")
    cfg = ScreenConfig(ratios=(0.8,), budget=35, noise_samples=10)
    with HTTPTarget(url(server), "scripted") as target:
        result = screen("colors", samples, target, cfg, compress=drop_words, store=store, key=key)
    assert result.noise is not None and result.noise.n == 10 and result.noise.agree == 10
    assert not result.noise.tau_above_floor and result.passed
    from promptsieve.fidelity import Gate

    floor = Gate(store).noise_floor(key)
    assert floor is not None and (floor.agree, floor.n) == (10, 10)
    v = store.get(key)
    assert v is not None and v.e_value is not None and v.e_value >= 20


def test_cli_labelled_and_noise(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from promptsieve.cli import app

    cli_mod = importlib.import_module("promptsieve.fidelity._screen_cli")
    monkeypatch.setattr(cli_mod, "_screening_compressor", lambda: (drop_words, "fp"))
    samples = tmp_path / "gold.jsonl"
    samples.write_text("\n".join(json.dumps(s) for s in labelled_samples(40)) + "\n")
    base = ["screen", "--task", "colors", "--base-url", url(server), "--model", "scripted",
            "--ratios", "0.5", "--budget", "40"]  # fmt: skip
    res = CliRunner().invoke(
        app,
        [
            *base,
            "--samples",
            str(samples),
            "--mode",
            "labelled",
            "--rho",
            "0.9",
            "--noise",
            "5",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "accuracy 34/34 compressed vs 34/34 original" in res.output
    assert "acc(compressed) <= 0.9 x acc(original)" in res.output
    assert "noise floor: 5/5" in res.output and "e-value:" in res.output
    res = CliRunner().invoke(
        app, [*base, "--samples", str(samples), "--mode", "labelled", "--epsilon", "0.8"]
    )
    assert res.exit_code == 2 and "epsilon must be in [0.0, 0.5]" in res.output
    nogold = tmp_path / "nogold.jsonl"
    nogold.write_text("\n".join(json.dumps(s) for s in make_samples(3)) + "\n")
    res = CliRunner().invoke(app, [*base, "--samples", str(nogold), "--mode", "labelled"])
    assert res.exit_code == 2 and "nogold.jsonl:1: no 'gold' field" in res.output
    res = CliRunner().invoke(
        app, [*base, "--samples", str(samples), "--mode", "labelled", "--json"]
    )
    report = json.loads(res.output)
    rung = report["ratios"][0]  # every pair right both ways: epsilon 0.05 needs about 70
    assert report["mode"] == "labelled" and rung["original_correct"] == rung["n"] < 40
    assert rung["reason"] == CURTAILED  # the budget is the 40 samples


def test_a_compressor_that_raises_skips_the_sample(server: _Server) -> None:
    def flaky(body: dict[str, Any], ratio: float) -> dict[str, Any]:
        if "Document 2:" in body["messages"][1]["content"]:
            raise ValueError("compressor bug")
        return drop_words(body, ratio)

    with HTTPTarget(url(server), "scripted") as target:
        result = screen("c", make_samples(35), target, ScreenConfig(ratios=(0.8,)), compress=flaky)
    assert result.ratios[0].skipped == 1 and result.ratios[0].n == 30 and result.passed


def test_an_unreachable_target_stores_no_verdict(tmp_path: Path) -> None:
    """Every call refused (a closed port on 127.0.0.1): nothing was measured, so no FAILED
    verdict is stored for live traffic to find."""
    store = SQLiteStore(tmp_path / "v.sqlite3")
    key = VerdictKey("colors", "scripted", "proxy", "settings")
    cfg = ScreenConfig(ratios=(0.5,), budget=5, retries=0, tau=0.5)
    with HTTPTarget("http://127.0.0.1:9/v1", "scripted", timeout=0.5) as target:
        result = screen(
            "colors", make_samples(5), target, cfg, compress=drop_words, store=store, key=key
        )
    assert not result.measured and not result.passed and result.errors == result.calls > 0
    assert store.get(key) is None
