"""A process that used the wrapped client exits cleanly (issue #14.1).

The child (``_exit_child.py``) is a user's batch script: 40 ``chat.completions.create``
calls through ``wrap_openai(OpenAI(...))`` for one task while screening is in progress
(shadow comparisons on the real ONNX proxy against a scripted target on 127.0.0.1), then
"done" and return. Before the fix it died with SIGABRT (exit status 134) on every run:
daemon comparison threads were still inside onnxruntime while the interpreter finalised.
Mode "compressor": a script's own daemon threads compressing with a ``Compressor`` when it
returned each printed a ``SieveClosed`` traceback (exit status 0): the exit hook's runtime
door raised in them; now their calls stop quietly, as daemon threads do at exit.
Mode "demos": a DemoCompressor's background attribution thread was left inside onnxruntime
(or the tokenizer) the same way, and aborted 8 of 10 runs before the runtime door and the
exit-time join of background threads (``promptsieve._threads``); requests after the first
also waited on the attribution's lock, and exit on them for the sieve's 60 s door wait.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from promptsieve import _threads, tokens
from promptsieve._threads import SieveClosed

CHILD = Path(__file__).with_name("_exit_child.py")


def _run(mode: str, cache_root: Path, n: int = 40, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHILD), str(n), mode],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PROMPTSIEVE_CACHE_DIR": str(cache_root), **env},
    )


@pytest.mark.parametrize("mode", ["plain", "async", "demos"])
def test_exits_with_status_0_while_screening(mode: str, cache_root: Path, proxy: object) -> None:
    # ``proxy`` exports the ONNX graph once into cache_root/proxy, which the child reuses.
    t0 = time.monotonic()
    proc = _run(mode, cache_root, n=8 if mode == "demos" else 40)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "done" in proc.stdout
    assert "terminate called" not in proc.stderr
    if mode == "demos":  # the attribution thread was still at work when the script returned
        assert "attributing True" in proc.stdout, proc.stdout[-500:]
        requests_s = float(proc.stdout.split("requests_s ")[1].split()[0])
        assert requests_s < 30, proc.stdout  # not blocked on the attribution's lock
        # exit stops the attribution at once, not after the sieve's 60 s door wait
        assert time.monotonic() - t0 < 50 + requests_s, proc.stderr[-2000:]


def test_exit_drain_is_bounded_and_counts_what_it_abandons(cache_root: Path, proxy: object) -> None:
    """A target that answers comparisons only after 60 s: exit comes after the drain."""
    t0 = time.monotonic()
    proc = _run("plain", cache_root, n=12, EXIT_SLOW_TARGET="1", EXIT_DRAIN_S="0.5")
    assert time.monotonic() - t0 < 50  # not the 60 s the target would take
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("closed abandoned="), proc.stdout[-500:]
    assert int(last.split("=")[1]) >= 1


_SLOW_METRIC_CHILD = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[1])
from _sieve_helpers import ScriptedGate, WordDropCompressor, long_text, shadow
from promptsieve import Message, Request, Sieve, SieveConfig, TargetOutput

def metric(original, compressed):  # a user's metric that calls a slow model
    print("metric", flush=True)
    time.sleep(120)
    return True

sieve = Sieve(SieveConfig(guard=False, metric=metric, drain_timeout_s=0.5),
              compressor=WordDropCompressor(), gate=ScriptedGate(shadow(0.5)))
req = Request((Message.text("user", long_text(3)),), "m")

async def main():
    async def send(prompt):
        return TargetOutput("ok")
    async with sieve.call(req, "t", original=req.prompt, rebuild=lambda p: p,
                          send_variant=send) as call:
        call.observe(TargetOutput("ok"))
    await asyncio.sleep(0.5)  # the comparison is in the metric by now
    await sieve.aclose(0.5)

if sys.argv[2] == "async":
    asyncio.run(main())
else:
    with sieve.call(req, "t", original=req.prompt, rebuild=lambda p: p,
                    send_variant=lambda prompt: TargetOutput("ok")) as call:
        call.observe(TargetOutput("ok"))
    time.sleep(0.5)
    sieve.close(0.5)
print("done", flush=True)
"""


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_exit_does_not_wait_for_a_slow_metric(driver: str) -> None:
    """A script whose shadow comparison is inside a slow metric (a judge calling a model)
    when it returns exits at once. Before, ``close`` waited up to 60 s for the metric (it
    ran inside the sieve's proxy door, which only the proxy's cosine metric needs), and the
    async driver ran it on the loop's default executor, which ``asyncio.run`` and the
    interpreter wait for without a bound (120 s here); it now runs on the sieve's daemon
    threads, as the sync driver's comparisons do."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _SLOW_METRIC_CHILD, str(Path(__file__).parent), driver],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.split() == ["metric", "done"], proc.stdout
    assert time.monotonic() - t0 < 30


def test_compressing_daemon_threads_end_quietly_at_exit(cache_root: Path, proxy: object) -> None:
    """A script whose own daemon threads use a Compressor (no sieve) exits without a
    traceback on stderr, and at once: the threads are not waited for."""
    proc = _run("compressor", cache_root, n=2)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "compressing" in proc.stdout and "done" in proc.stdout, proc.stdout[-500:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "SieveClosed" not in proc.stderr, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr


def test_runtime_door_at_exit_parks_only_the_users_daemon_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the exit hook has shut the runtime door, promptsieve's own threads (which handle
    SieveClosed, and which the hook joins) and the main thread get SieveClosed at once; a
    user's daemon thread waits ``EXIT_PARK_S`` first (the interpreter ends it meanwhile)."""
    monkeypatch.setattr(_threads, "EXIT_PARK_S", 1.5)
    door = _threads._RuntimeDoor()  # a fresh one: the process's own stays open
    with door:
        pass
    assert door.shut(1.0)
    took: dict[str, float] = {}

    def enter(name: str) -> None:
        t0 = time.monotonic()
        try:
            with door:
                took[name] = -1.0  # never let in
        except SieveClosed as exc:
            assert "exiting" in str(exc)
            took[name] = time.monotonic() - t0

    users = threading.Thread(target=enter, args=("user",), daemon=True)
    users.start()
    own = _threads.start_background(lambda: enter("background"), "test-door")
    pool = _threads.DaemonPool("test-door-pool", 1).submit(enter, "pool")
    enter("main")
    own.join(5)
    pool.result(5)
    users.join(5)
    assert took["main"] < 0.5 and took["background"] < 0.5 and took["pool"] < 0.5, took
    assert 1.4 < took["user"] < 5, took


def test_tokenizers_pass_the_runtime_door(monkeypatch: pytest.MonkeyPatch, proxy: Any) -> None:
    """The Rust tokenizers (``tokenizers``' batch encoder, tiktoken) release the GIL; a daemon
    thread that takes it back while the interpreter finalises aborts the process (``FATAL:
    exception not rethrown``, 1 run in 3 of the "compressor" exit test in CI). So once the
    exit hook has shut the door, a user's daemon thread waits at it before tokenizing too,
    while the main thread still tokenizes (it is never stopped by finalisation)."""
    from promptsieve import count_tokens
    from promptsieve.proxy import _runtime

    monkeypatch.setattr(_threads, "EXIT_PARK_S", 0.5)
    door = _threads._RuntimeDoor()
    assert door.shut(1.0)
    for module in (_runtime, tokens):
        monkeypatch.setattr(module, "RUNTIME_DOOR", door)
    assert count_tokens("The report covers revenue.", "gpt-4o") == 5
    assert len(proxy.tokenize("The report covers revenue.")[0]) == 5
    with pytest.raises(SieveClosed):  # the main thread's proxy run (onnxruntime) is refused
        proxy.embed(["The report covers revenue."])
    calls = {
        "count_tokens": lambda: count_tokens("The report covers revenue.", "gpt-4o"),
        "embed": lambda: proxy.embed(["The report covers revenue."]),
        "tokenize": lambda: proxy.tokenize("The report covers revenue."),
    }
    seen: dict[str, str] = {}
    entered: list[str] = []  # the Rust tokenizer's methods that were entered

    class Spy:
        def __init__(self, tok: Any) -> None:
            self._tok = tok

        def __getattr__(self, name: str) -> Any:
            entered.append(name)
            return getattr(self._tok, name)

    monkeypatch.setattr(proxy, "_tok", Spy(proxy._tok))

    def call(name: str) -> None:
        try:
            calls[name]()
            seen[name] = "ran"
        except SieveClosed:
            seen[name] = "parked"

    threads = [threading.Thread(target=call, args=(n,), daemon=True) for n in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"count_tokens": "parked", "embed": "parked", "tokenize": "parked"}, seen
    assert entered == [], entered  # parked before the tokenizer, not only before onnxruntime
