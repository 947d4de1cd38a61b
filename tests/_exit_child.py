"""Child process for the exit tests (run as a script, never imported by pytest).

A user's batch script: a wrapped OpenAI client against a scripted target on 127.0.0.1,
``n`` requests of one task while screening is in progress (shadow comparisons running on
the real ONNX proxy), print "done", return. Exit status 0 is the assertion.

argv: n_requests mode   (mode: "plain" | "with" | "close" | "async" | "demos" | "compressor")

"demos": one request holding ``n`` few-shot demonstrations through a sieve whose
compressor is a DemoCompressor on the real MiniLM head, which attributes them on a
background thread; the script returns while that thread is inside onnxruntime.

"compressor": no sieve, no client: ``n`` daemon threads of the script's own compress with
one ``Compressor`` in a loop, and the script returns while they are at it.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

# Registered before promptsieve is imported, so it runs after promptsieve's exit hook.
_SIEVES: list[Any] = []
atexit.register(
    lambda: [
        print(f"closed abandoned={s.stats.comparisons_abandoned}", flush=True) for s in _SIEVES
    ]
)

from openai import AsyncOpenAI, OpenAI  # noqa: E402

from _scripted_server import Recorded, Reply, ScriptedServer, chat_completion  # noqa: E402
from promptsieve import GateConfig, Sieve, SieveConfig, task  # noqa: E402
from promptsieve_openai import wrap_openai  # noqa: E402

WORDS = (
    "The quarterly report covers revenue growth across all regions and several new product "
    "lines that launched during the period under review by the finance team this year. "
)


def prompt(i: int) -> str:
    return f"Request {i}. " + WORDS * 32 + f"\nQuestion: what does report {i} cover?"


def main() -> None:
    n = int(sys.argv[1])
    mode = sys.argv[2]
    store = Path(tempfile.mkdtemp()) / "verdicts.db"
    cfg = SieveConfig(
        store_path=str(store),
        gate=GateConfig(tau=0.6, budget=400, seed=0),
        max_pending=int(os.environ.get("EXIT_MAX_PENDING", "8")),
        drain_timeout_s=float(os.environ.get("EXIT_DRAIN_S", "5")),
    )
    full = len(prompt(0).split())

    def slow_variants(rec: Recorded) -> Reply:
        """Answers live calls at once; a compressed variant (shorter) only after 60 s."""
        words = sum(len(m["content"].split()) for m in rec.json["messages"])
        return Reply(json=chat_completion("ok"), delay=0.0 if words >= full - 2 else 60.0)

    srv = ScriptedServer(slow_variants if os.environ.get("EXIT_SLOW_TARGET") else None).start()
    if mode == "async":

        async def run() -> None:
            sieve = Sieve(cfg)
            _SIEVES.append(sieve)
            client = wrap_openai(AsyncOpenAI(base_url=srv.url, api_key="x", max_retries=0), sieve)
            with task("exit-test"):
                for i in range(n):
                    msgs: list[Any] = [{"role": "user", "content": prompt(i)}]
                    await client.chat.completions.create(model="gpt-4o-mini", messages=msgs)
            print("stats", sieve.stats.snapshot(), flush=True)

        asyncio.run(run())
        print("done", flush=True)
        return
    if mode == "demos":
        demos_then_return(cfg, srv.url, n)
        return
    if mode == "compressor":
        compressor_threads_then_return(n)
        return
    sieve = Sieve(cfg)
    _SIEVES.append(sieve)
    client = wrap_openai(OpenAI(base_url=srv.url, api_key="x", max_retries=0), sieve)

    def calls() -> None:
        with task("exit-test"):
            for i in range(n):
                msgs: list[Any] = [{"role": "user", "content": prompt(i)}]
                client.chat.completions.create(model="gpt-4o-mini", messages=msgs)

    if mode == "with":
        with sieve:
            calls()
    else:
        calls()
        if mode == "close":
            sieve.close()
    print("stats", sieve.stats.snapshot(), flush=True)
    print("done", flush=True)


def demos_then_return(cfg: SieveConfig, url: str, n: int) -> None:
    import threading

    from promptsieve import DemoCompressor, DemoFormat, Demonstration, ValidationExample
    from promptsieve.demos import HeadDemoScorer

    scoring = threading.Event()

    class EndlessHead(HeadDemoScorer):
        """The real MiniLM head, run over the demonstrations again and again: the
        attribution is inside onnxruntime or the tokenizer whenever the script returns."""

        def scores(self, demos: Any, validation: Any, fmt: Any) -> Any:
            while True:
                super().scores(demos, validation, fmt)
                scoring.set()

    demos = [Demonstration(f"Example {i}. {WORDS}", "yes" if i % 2 else "no") for i in range(n)]
    val = [ValidationExample(f"Is report {i} about revenue?", "yes") for i in range(2)]
    fmt = DemoFormat(header="Answer yes or no.\n\n")
    comp = DemoCompressor(demos, val, fmt=fmt, scorer=EndlessHead())
    sieve = Sieve(cfg, compressor=comp)
    client = wrap_openai(OpenAI(base_url=url, api_key="x", max_retries=0), sieve)
    text = fmt.header + "".join(fmt.render_demo(d) for d in demos) + "Q: Is it?\nA:"
    t0 = time.monotonic()
    with task("exit-demos"):  # requests never wait for the attribution
        for _ in range(5):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
            )
        print(f"requests_s {time.monotonic() - t0:.1f}", flush=True)
    print("attributing", scoring.wait(120) and comp.attribution is None, flush=True)
    print("done", flush=True)


def compressor_threads_then_return(n: int) -> None:
    import threading

    from promptsieve import Compressor

    comp = Compressor()
    text = prompt(0)
    comp.compress(text, ratio=0.5)  # the proxy is loaded before the threads start
    started = threading.Barrier(n + 1)
    calls = [0] * n

    def loop(i: int) -> None:
        started.wait()
        while True:
            comp.compress(text, ratio=0.5)
            calls[i] += 1

    for i in range(n):
        threading.Thread(target=loop, args=(i,), name=f"user-{i}", daemon=True).start()
    started.wait()
    while min(calls) < 2:  # every thread is in its compress loop
        time.sleep(0.05)
    print("compressing", calls, flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
