"""Child process for the fork test (run as a script, never imported by pytest).

A pre-fork server's pattern (gunicorn --preload, a forking multiprocessing pool): the sieve
is built and used in the parent (proxy loaded, threads started, comparisons done), then the
process forks. Each forked worker must compress and screen as the parent did: a fixed-ratio
request goes out compressed within the scoring budget (not "timeout"), a shadow comparison
runs, ``flush(5)`` is True and ``flush()`` returns. The first child ends with ``os._exit``
(as multiprocessing's children do), the second with a normal interpreter exit (``sys.exit``,
as gunicorn's workers do), which hung in onnxruntime's destructors before the fix. Prints one
JSON line per process.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _sieve_helpers import WordDropCompressor, long_text
from promptsieve import (
    GateConfig,
    Message,
    Request,
    Sieve,
    SieveConfig,
    TargetOutput,
    task,
)


def _request(i: int) -> Request:
    text = f"Item {i}. " + long_text(6) + "\nQuestion: what does the report cover?"
    return Request((Message.text("user", text),), "gpt-4o-mini")


def _send(prompt: object) -> TargetOutput:
    return TargetOutput("the same answer")


def exercise(fixed: Sieve, screened: Sieve, who: str) -> dict[str, object]:
    t0 = time.perf_counter()
    for i in range(3):  # more than one scoring thread's worth
        plan = fixed.prepare(_request(i))
    compress_ms = (time.perf_counter() - t0) * 1000 / 3
    with task("fork-test"):
        for i in range(3):
            with screened.call(
                _request(i), original=None, rebuild=lambda p: p, send_variant=_send
            ) as call:
                call.observe(TargetOutput("the same answer"))
    flushed = screened.flush(5)
    t1 = time.perf_counter()
    screened.flush()  # never hangs
    return {
        "who": who,
        "reason": plan.reason,
        "compress_ms": round(compress_ms),
        "flush5": flushed,
        "flush_none_s": round(time.perf_counter() - t1, 3),
        "comparisons": screened.stats.comparisons,
        "pid": os.getpid(),
    }


def main() -> None:
    store = Path(tempfile.mkdtemp()) / "verdicts.db"
    budget = float(os.environ.get("FORK_BUDGET_MS", "2000"))
    fixed = Sieve(SieveConfig(verify=False, ratio=0.5, scoring_budget_ms=budget))
    screened = Sieve(
        SieveConfig(
            store_path=str(store), gate=GateConfig(budget=400, seed=0), scoring_budget_ms=budget
        ),
        compressor=fixed.compressor,  # one proxy in memory, as a server would share it
    )
    fixed.warmup()
    print(json.dumps(exercise(fixed, screened, "parent")), flush=True)
    children = []
    for normal_exit in (False, True):
        pid = os.fork()
        if pid == 0:
            try:
                print(json.dumps(exercise(fixed, screened, "child")), flush=True)
                code = 0
            except BaseException as exc:  # report, never fall back into the parent's code
                print(json.dumps({"who": "child", "error": repr(exc)}), flush=True)
                code = 1
            if normal_exit:
                sys.exit(code + 3)  # interpreter exit: atexit hooks, finalisation, C exit()
            os._exit(code)
        children.append(pid)
    print(json.dumps({"who": "parent-after", "child_status": [_wait(p) for p in children]}))


def _wait(pid: int, timeout: float = 60.0) -> int | str:
    """The child's exit code, or "hung" (killed) if it has not ended within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "hung"


def main_without_proxy() -> None:
    """No onnxruntime session in the process (a custom compressor), and a comparison still
    running in the parent when it forks: the child must reset the sieve all the same
    (``flush(5)`` True at once, not a wait on the parent's comparison)."""
    store = Path(tempfile.mkdtemp()) / "verdicts.db"
    sieve = Sieve(
        SieveConfig(store_path=str(store), gate=GateConfig(budget=400, seed=0)),
        compressor=WordDropCompressor(),
    )

    def slow(prompt: object) -> TargetOutput:
        time.sleep(3)
        return TargetOutput("the same answer")

    with (
        task("fork-test"),
        sieve.call(_request(0), original=None, rebuild=lambda p: p, send_variant=slow) as call,
    ):
        call.observe(TargetOutput("the same answer"))
    time.sleep(0.5)  # the comparison is running in the parent's pool
    pid = os.fork()
    if pid == 0:
        t0 = time.perf_counter()
        flushed = sieve.flush(5)
        row = {"who": "child", "flush5": flushed, "flush_s": round(time.perf_counter() - t0, 2)}
        print(json.dumps(row), flush=True)
        sys.exit(0)
    print(json.dumps({"who": "parent-after", "child_status": [_wait(pid)]}), flush=True)


if __name__ == "__main__":
    main_without_proxy() if sys.argv[1:] == ["without-proxy"] else main()
