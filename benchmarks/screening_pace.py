"""Requests to a screening verdict against target latency, per back-pressure policy (#14.3).

The load of issue #14.3: 120 requests of one task, ~880-token prompts, through
``wrap_openai(OpenAI(...))`` with the real proxy and a real SQLite gate, against a target on
127.0.0.1 that always answers the same (so the task passes by construction). For each target
latency and each ``SieveConfig.backpressure`` policy it reports the request after which the
verdict was "passed", against the sequential test's minimum number of comparisons
(``SequentialTest(tau, delta).evaluate(n, n)`` first passing), the comparisons run and
skipped, and the live calls' added latency (p50/p95 of call time minus the target's delay).

    python -m benchmarks.screening_pace [--requests 120] [--latency-ms 0,50,250]
        [--policies wait,skip] [--out benchmarks/results/screening_pace.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from openai import OpenAI

from promptsieve import (
    Compressor,
    Gate,
    GateConfig,
    SequentialTest,
    Sieve,
    SieveConfig,
    SQLiteStore,
    count_tokens,
    task,
)
from promptsieve_openai import wrap_openai

MODEL = "gpt-4o-mini"
TASK = "pace"


class _Target:
    """An OpenAI-compatible target on 127.0.0.1 answering "same answer" after ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        delay = delay_s

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                time.sleep(delay)
                words = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
                payload = json.dumps({
                    "id": "c", "object": "chat.completion", "created": 0, "model": MODEL,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "same answer"}}],
                    "usage": {"prompt_tokens": words, "completion_tokens": 2,
                              "total_tokens": words + 2},
                }).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _prompts(n: int, tokens: int = 880) -> list[str]:
    from pydoc_data.topics import topics

    text = " ".join(" ".join(v.split()) for _k, v in sorted(topics.items()))
    words = text.split()
    out = []
    for i in range(n):
        start = (i * 997) % (len(words) - 2000)
        chunk = words[start : start + 700]
        while count_tokens(" ".join(chunk), MODEL) > tokens - 20:
            chunk = chunk[:-10]
        while count_tokens(" ".join(chunk), MODEL) < tokens - 30:
            chunk = words[start : start + len(chunk) + 5]
        out.append(" ".join(chunk) + f"\n\nQuestion {i}: what does the passage describe?")
    return out


def n_min(tau: float, delta: float) -> int:
    """The fewest comparisons (all agreeing) after which the sequential test passes."""
    test = SequentialTest(tau, delta, None)
    n = 1
    while test.evaluate(n, n).decision.value != "pass":
        n += 1
    return n


def run_one(
    compressor: Compressor, prompts: list[str], delay_s: float, policy: str
) -> dict[str, Any]:
    target = _Target(delay_s)
    gate_cfg = GateConfig(ratios=(0.5,), seed=0)
    store = SQLiteStore(Path(tempfile.mkdtemp()) / "verdicts.db")
    gate = Gate(store, gate_cfg)
    sieve = Sieve(
        SieveConfig(gate=gate_cfg, backpressure=policy),
        compressor=compressor,
        gate=gate,
    )
    client = wrap_openai(OpenAI(base_url=target.url, api_key="x", max_retries=0), sieve)
    key = sieve.verdict_key(TASK, MODEL)
    passed_at: int | None = None
    added: list[float] = []
    t0 = time.perf_counter()
    with task(TASK):
        for i, prompt in enumerate(prompts, 1):
            t = time.perf_counter()
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prompt}]
            )
            added.append((time.perf_counter() - t - delay_s) * 1000)
            v = gate.verdict(key)
            if passed_at is None and v is not None and v.state.value == "passed":
                passed_at = i
    elapsed = time.perf_counter() - t0
    sieve.flush(60)
    v = gate.verdict(key)
    if passed_at is None and v is not None and v.state.value == "passed":
        passed_at = len(prompts) + 1  # passed only once the queue drained
    s = sieve.stats
    sieve.close()
    target.close()
    q = statistics.quantiles(added, n=20)
    return {
        "latency_ms": round(delay_s * 1000),
        "policy": policy,
        "passed_at_request": passed_at,
        "comparisons": s.comparisons,
        "skipped": s.comparisons_skipped,
        "compressed_live": s.compressed,
        "live_timeouts": s.timeouts,
        "guard_skips": s.guard_skips,
        "added_ms_p50": round(statistics.median(added), 1),
        "added_ms_p95": round(q[18], 1),
        "seconds": round(elapsed, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.screening_pace")
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--latency-ms", default="0,50,250")
    ap.add_argument("--policies", default="wait,skip")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/screening_pace.json"))
    args = ap.parse_args(argv)
    compressor = Compressor()
    _ = compressor.fingerprint
    prompts = _prompts(args.requests)
    tokens = statistics.mean(count_tokens(p, MODEL) for p in prompts)
    minimum = n_min(GateConfig().tau, GateConfig().delta)
    rows = []
    for ms in (float(x) for x in args.latency_ms.split(",")):
        for policy in args.policies.split(","):
            row = run_one(compressor, prompts, ms / 1000.0, policy)
            row["within_2x_min"] = (
                row["passed_at_request"] is not None and row["passed_at_request"] <= 2 * minimum
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "requests": args.requests,
        "prompt_tokens_mean": round(tokens),
        "tau": GateConfig().tau,
        "delta": GateConfig().delta,
        "n_min": minimum,
        "cpu_note": "2 shared CPU cores; compression of one 880-token prompt dominates",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
