"""Load and memory through the wrapped ``AsyncOpenAI`` client (issue #14.6).

A real ``openai.AsyncOpenAI`` client talks to the scripted OpenAI-compatible server
(tests/_scripted_server.py), run in its **own process** on 127.0.0.1 so that the server's
threads do not share the client's interpreter. ``--concurrency`` coroutines share the work.

* ``load`` phase: ``--requests`` requests unwrapped (the baseline), then the same requests
  through ``wrap_openai`` with the defaults a user gets: the real ONNX proxy compressor and a
  real SQLite verdict store (screening in shadow, then compressing once a task's verdict
  passes). Reported: failures (any exception reaching the caller), per-request latency
  p50/p99 of both runs and their difference (the *added* latency), the sieve's counters.
* ``memory`` phase: ``--memory-requests`` more requests through a fresh wrapped client
  (distinct prompt texts, several tasks); RSS (``/proc/self/status`` VmRSS) is sampled at the
  start, every ``--memory-every`` requests and at the end.

The load average (``os.getloadavg``) is reported before and after each phase: on a shared
machine the figures move with it.

    python -m benchmarks.load_async [--requests 2000] [--concurrency 64]
        [--memory-requests 10000] [--phases load,memory] [--backpressure wait|skip]
        [--out benchmarks/results/load_async.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gpt-4o-mini"
TASKS = tuple(f"load-task-{i}" for i in range(8))

_SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
from _scripted_server import ScriptedServer
srv = ScriptedServer()
srv._httpd.socket.listen(1024)  # the default backlog (5) refuses bursts of 64 connections
srv.start()
print(srv.url, flush=True)
sys.stdin.read()  # until the parent closes our stdin
srv.stop()
"""


def _words() -> list[str]:
    from pydoc_data.topics import topics

    words: list[str] = []
    for key in sorted(topics):
        words.extend(topics[key].split())
    return words


def _prompt(words: list[str], i: int, n_words: int) -> str:
    start = (i * 37) % max(1, len(words) - n_words)
    body = " ".join(words[start : start + n_words])
    return f"{body}\n\nQuestion ({i}): which statement does the text describe first?"


def _pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))] if s else float("nan")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def _run(
    client: Any,
    prompts: Sequence[str],
    concurrency: int,
    *,
    tasks: bool,
    on_done: Any = None,
) -> tuple[list[float], list[str]]:
    """Send every prompt with ``concurrency`` workers; (latencies in ms, failure types)."""
    from promptsieve import task

    latencies: list[float] = []
    failures: list[str] = []
    nxt = iter(range(len(prompts)))

    async def worker() -> None:
        for i in nxt:
            t0 = time.perf_counter()
            try:
                msgs = [{"role": "user", "content": prompts[i]}]
                if tasks:
                    with task(TASKS[i % len(TASKS)]):
                        out = await client.chat.completions.create(model=MODEL, messages=msgs)
                else:
                    out = await client.chat.completions.create(model=MODEL, messages=msgs)
                if out.choices[0].message.content != "ok":
                    failures.append("wrong answer")
            except Exception as exc:  # a user-visible failure
                failures.append(type(exc).__name__)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            if on_done is not None:
                on_done(len(latencies))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failures


BACKPRESSURE = ["wait"]  # --backpressure


def _sieve(tmp: Path) -> Any:
    from promptsieve import Sieve, SieveConfig

    cfg = SieveConfig(store_path=str(tmp / "verdicts.sqlite3"), backpressure=BACKPRESSURE[0])
    sieve = Sieve(cfg)
    sieve.warmup()  # load the proxy now: the run measures serving, not the first load
    return sieve


def _summary(lat: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_pct(lat, 0.5), 2),
        "p99_ms": round(_pct(lat, 0.99), 2),
        "max_ms": round(max(lat), 2),
    }


async def _load_phase(url: str, n: int, concurrency: int, tmp: Path) -> dict[str, Any]:
    from openai import AsyncOpenAI

    from promptsieve_openai import wrap_openai

    words = _words()
    prompts = [_prompt(words, i, 220) for i in range(n)]
    out: dict[str, Any] = {"requests": n, "concurrency": concurrency, "load_before": _load()}
    plain = AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    t0 = time.perf_counter()
    base, base_fail = await _run(plain, prompts, concurrency, tasks=False)
    out["unwrapped"] = {**_summary(base), "failures": len(base_fail),
                        "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    await plain.close()
    out["load_mid"] = _load()
    sieve = _sieve(tmp)
    client = wrap_openai(AsyncOpenAI(base_url=url, api_key="x", max_retries=0), sieve)
    t0 = time.perf_counter()
    lat, fail = await _run(client, prompts, concurrency, tasks=True)
    wall = time.perf_counter() - t0
    drained = await sieve.aflush(120)
    out["wrapped"] = {**_summary(lat), "failures": len(fail), "failure_types": sorted(set(fail)),
                      "wall_s": round(wall, 1)}  # fmt: skip
    out["added_p50_ms"] = round(out["wrapped"]["p50_ms"] - out["unwrapped"]["p50_ms"], 2)
    out["added_p99_ms"] = round(out["wrapped"]["p99_ms"] - out["unwrapped"]["p99_ms"], 2)
    out["drained"] = drained
    out["stats"] = sieve.stats.snapshot()
    await client.close()
    await sieve.aclose()
    out["load_after"] = _load()
    return out


async def _memory_phase(
    url: str, n: int, concurrency: int, every: int, tmp: Path
) -> dict[str, Any]:
    import gc

    from openai import AsyncOpenAI

    from promptsieve_openai import wrap_openai

    words = _words()
    out: dict[str, Any] = {"requests": n, "concurrency": concurrency, "load_before": _load()}
    sieve = _sieve(tmp)
    client = wrap_openai(AsyncOpenAI(base_url=url, api_key="x", max_retries=0), sieve)
    # a short warm-up so the first sample is after the one-off allocations (pools, sessions)
    await _run(client, [_prompt(words, -i - 1, 120) for i in range(concurrency)], concurrency,
               tasks=True)  # fmt: skip
    await sieve.aflush(60)
    gc.collect()
    samples: list[tuple[int, float]] = [(0, round(_rss_mb(), 1))]

    def on_done(k: int) -> None:
        if k % every == 0:
            samples.append((k, round(_rss_mb(), 1)))
            print(f"memory: {k} requests, RSS {samples[-1][1]} MB, load {_load()}", flush=True)

    prompts = [_prompt(words, i, 120) for i in range(n)]
    t0 = time.perf_counter()
    lat, fail = await _run(client, prompts, concurrency, tasks=True, on_done=on_done)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    out["drained"] = await sieve.aflush(120)
    gc.collect()
    samples.append((n, round(_rss_mb(), 1)))
    out["failures"] = len(fail)
    out["latency"] = _summary(lat)
    out["rss_mb"] = samples
    out["rss_start_mb"], out["rss_end_mb"] = samples[0][1], samples[-1][1]
    half = [mb for k, mb in samples if k >= n // 2]
    out["rss_growth_second_half_mb"] = round(max(half) - min(half), 1) if half else None
    out["stats"] = sieve.stats.snapshot()
    await client.close()
    await sieve.aclose()
    out["load_after"] = _load()
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--memory-requests", type=int, default=10_000)
    ap.add_argument("--memory-every", type=int, default=1000)
    ap.add_argument("--phases", default="load,memory")
    ap.add_argument("--backpressure", choices=("wait", "skip"), default="wait")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load_async.json"))
    args = ap.parse_args(argv)
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    BACKPRESSURE[0] = args.backpressure

    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER.format(tests=str(ROOT / "tests"))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None and server.stdin is not None
    url = server.stdout.readline().strip()
    result: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                              "backpressure": args.backpressure}  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="ps-load-") as d:
            tmp = Path(d)
            if "load" in phases:
                (tmp / "load").mkdir()
                result["load"] = asyncio.run(
                    _load_phase(url, args.requests, args.concurrency, tmp / "load")
                )
                print(json.dumps(result["load"], indent=1), flush=True)
            if "memory" in phases:
                (tmp / "memory").mkdir()
                result["memory"] = asyncio.run(
                    _memory_phase(url, args.memory_requests, args.concurrency,
                                  args.memory_every, tmp / "memory")
                )  # fmt: skip
                print(json.dumps(result["memory"], indent=1), flush=True)
    finally:
        server.stdin.close()
        server.wait(10)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
