"""Latency that ``wrap_openai`` adds per request, and verdict lookup time.

A real ``openai.OpenAI`` client talks to the scripted OpenAI-compatible server on
127.0.0.1 (tests/_scripted_server.py), wrapped and unwrapped, with the same 1k- and
4k-token prompts (pydoc topics text plus a question). Per path the added latency is the
wrapped p50/p95 minus the unwrapped p50/p95:

- bypass: the verdict says "send the original" (conversion, token estimate, gate lookup);
- shadow: screening (as bypass, plus scheduling the background comparison);
- apply: a passed verdict, so the prompt is scored on the proxy, pruned, guarded and sent
  compressed (the path with the 100 ms target at 1k tokens).

Verdict lookups are ``Gate.decide`` on a passed verdict in a SQLite file.

    python benchmarks/wrapper_overhead.py [--n 40] [--scorer head|sentence]

``--scorer head`` (the default scorer) or ``sentence``; the attribution scorer is an offline
tool. The instance guard is on, as by default: it reads the scoring pass's token states, so
it costs no extra encoder pass.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _scripted_server import ScriptedServer  # noqa: E402

MODEL = "gpt-4o-mini"


def _prompt(tokens: int) -> str:
    from pydoc_data.topics import topics

    from promptsieve.tokens import count_tokens

    words: list[str] = []
    for key in sorted(topics):
        words.extend(topics[key].split())
        if len(words) > tokens * 2:
            break
    lo, hi = 1, len(words)
    while lo < hi:  # longest prefix within the token count
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid]), MODEL) <= tokens - 20:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]) + "\n\nQuestion: Which statement does the text describe first?"


def _compressor(scorer: str) -> Any:
    from promptsieve.compressor import Compressor, CompressorConfig

    return Compressor(CompressorConfig(scorer=scorer))  # type: ignore[arg-type]


def _pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _time(fn: Callable[[], object], n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="timed requests per cell")
    ap.add_argument("--scorer", choices=("head", "sentence"), default="head")
    args = ap.parse_args(argv)

    from openai import OpenAI

    from promptsieve.fidelity import Action, Decision, Gate, GateConfig, SQLiteStore, VerdictKey
    from promptsieve.fidelity.store import Verdict, VerdictState
    from promptsieve.sieve import Sieve, SieveConfig
    from promptsieve_openai import wrap_openai

    compressor = _compressor(args.scorer)
    scorer_name = compressor.scorer.name
    _ = compressor.fingerprint  # load the proxy before timing
    tmp = Path(tempfile.mkdtemp(prefix="ps-bench-"))

    class FixedGate:
        def __init__(self, decision: Decision) -> None:
            self.decision = decision

        def decide(self, key: VerdictKey) -> Decision:
            return self.decision

        def record(self, key: VerdictKey, ratio: float, agreed: bool | None) -> None:
            return None

    rows: list[tuple[str, str, float, float, float, float]] = []
    with ScriptedServer() as srv:
        plain = OpenAI(base_url=srv.url, api_key="x", max_retries=0)
        for tokens in (1000, 4000):
            prompt = _prompt(tokens)
            msgs = [{"role": "user", "content": prompt}]

            def call(client: OpenAI, msgs: list[dict[str, str]] = msgs) -> object:
                return client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1)

            base = _time(lambda: call(plain), args.n)
            paths = {
                "bypass": Sieve(
                    SieveConfig(), compressor=compressor, gate=FixedGate(Decision(Action.BYPASS))
                ),
                "shadow": Sieve(
                    SieveConfig(max_pending=10_000),
                    compressor=compressor,
                    gate=FixedGate(Decision(Action.SHADOW, 0.5)),
                ),
                "apply": Sieve(
                    SieveConfig(scoring_budget_ms=60_000),
                    compressor=compressor,
                    gate=FixedGate(Decision(Action.APPLY, 0.5)),
                ),
            }
            for path, sieve in paths.items():
                client = wrap_openai(OpenAI(base_url=srv.url, api_key="x", max_retries=0), sieve)
                if path == "shadow":
                    # time the caller only; let background comparisons drain between calls
                    lat = []
                    for i in range(args.n + 3):
                        t0 = time.perf_counter()
                        call(client)
                        dt = (time.perf_counter() - t0) * 1000
                        sieve.flush(120)
                        if i >= 3:
                            lat.append(dt)
                else:
                    lat = _time(lambda c=client: call(c), args.n)
                snap = sieve.stats.snapshot()
                assert snap["errors"] == 0, snap
                if path == "apply":
                    assert snap["compressed"] + snap["guard_skips"] == snap["requests"], snap
                rows.append(
                    (
                        f"{tokens // 1000}k",
                        path,
                        _pct(lat, 0.5) - _pct(base, 0.5),
                        _pct(lat, 0.95) - _pct(base, 0.95),
                        _pct(base, 0.5),
                        _pct(lat, 0.5),
                    )
                )

    # verdict lookups on a passed verdict in a real SQLite file
    gate = Gate(SQLiteStore(tmp / "verdicts.db"), GateConfig(monitor_rate=0.0))
    key = VerdictKey("bench", MODEL, "fp", "settings")
    now = time.time()
    gate.store.put(
        key,
        Verdict(state=VerdictState.PASSED, ratio=0.5, testing=0.5, created_at=now,
                updated_at=now, expires_at=now + 3600, generation=1),
        expected_version=None,
    )  # fmt: skip
    assert gate.decide(key).action == Action.APPLY
    lookups = _time(lambda: gate.decide(key), 2000, warmup=50)

    print(f"\nwrap_openai overhead (scorer: {scorer_name}; n={args.n} per cell; "
          f"scripted server on 127.0.0.1)\n")  # fmt: skip
    print("| prompt | path | added p50 (ms) | added p95 (ms) | unwrapped p50 | wrapped p50 |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for size, path, d50, d95, b50, w50 in rows:
        print(f"| {size} | {path} | {d50:.1f} | {d95:.1f} | {b50:.1f} | {w50:.1f} |")
    print(
        f"\nverdict lookup (Gate.decide, SQLite, passed verdict): "
        f"p50 {_pct(lookups, 0.5):.3f} ms, p95 {_pct(lookups, 0.95):.3f} ms "
        f"(n={len(lookups)})"
    )
    print(f"mean of the scripted round trip alone: {statistics.mean(base):.1f} ms")


if __name__ == "__main__":
    main()
