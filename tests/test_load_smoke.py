"""A small load smoke test of the wrapped ``AsyncOpenAI`` client (issue #14.6).

The full run (2,000 requests at concurrency 64, 10,000 for memory, real proxy) is
``python -m benchmarks.load_async``; this is its shape in a few seconds: many concurrent
callers, screening in shadow with back-pressure, against the scripted server on 127.0.0.1.
Zero failures, every original sent, every comparison accounted for, and callers waiting for a
comparison slot hold no executor thread (they used to: with the loop's default executor full
of waiting callers, everything else sent to it, the gate's store reads included, queued).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from openai import AsyncOpenAI

from _scripted_server import Reply, ScriptedServer, chat_completion
from _sieve_helpers import ScriptedGate, WordDropCompressor, long_text, shadow
from promptsieve import Sieve, SieveConfig
from promptsieve_openai import wrap_openai

MODEL = "gpt-4o-mini"
N, CONCURRENCY = 160, 32


def test_async_load_smoke_zero_failures_and_no_executor_starvation() -> None:
    prompts = [f"Request {i}. " + long_text(3) for i in range(N)]
    originals = set(prompts)
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(
        SieveConfig(guard=False, max_pending=4, backpressure="wait", backpressure_wait_ms=3000),
        compressor=WordDropCompressor(),
        gate=gate,
    )
    probes: list[float] = []
    failures: list[BaseException] = []

    with ScriptedServer() as server:
        server._httpd.socket.listen(256)  # a burst of connections, not refused
        # compressed (background) variants are slow: the comparison slots stay taken
        server.responder = lambda rec: Reply(
            json=chat_completion("ok"),
            delay=0.0 if rec.json["messages"][0]["content"] in originals else 0.1,
        )

        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.set_default_executor(ThreadPoolExecutor(2))  # small, as on a 2-core box
            client = wrap_openai(AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0),
                                 sieve)  # fmt: skip
            todo = iter(prompts)
            done = asyncio.Event()

            async def worker() -> None:
                for p in todo:
                    try:
                        out = await client.chat.completions.create(
                            model=MODEL, messages=[{"role": "user", "content": p}]
                        )
                        assert out.choices[0].message.content == "ok"
                    except BaseException as exc:  # a user-visible failure
                        failures.append(exc)

            async def probe() -> None:  # the loop's executor stays available
                await asyncio.sleep(1.0)  # once callers queue for slots (start-up aside)
                while not done.is_set():
                    t0 = time.perf_counter()
                    await loop.run_in_executor(None, lambda: None)
                    probes.append(time.perf_counter() - t0)
                    await asyncio.sleep(0.05)

            prober = asyncio.ensure_future(probe())
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            done.set()
            await prober
            assert await sieve.aflush(30)
            await client.close()

        asyncio.run(main())
        sent = [r.json["messages"][0]["content"] for r in server.requests]
    sieve.close()

    assert failures == []
    assert sorted(c for c in sent if c in originals) == sorted(prompts)  # originals live
    s = sieve.stats.snapshot()
    assert s["requests"] == N and s["decisions"]["shadow"] == N and s["errors"] == 0
    # every shadow decision ends as a comparison or a counted skip; none is lost
    assert s["comparisons"] + s["comparisons_skipped"] + s["comparison_errors"] == N
    assert s["comparisons_abandoned"] == 0
    assert len(sent) == N + s["screening_calls"] and s["screening_calls"] == s["comparisons"]
    assert len(gate.records) == N  # each slot recorded or freed exactly once
    # callers waiting up to 3 s for a slot must not hold the executor's two threads
    assert probes and max(probes) < 1.5, max(probes)
