"""The large fuzzing run: tests/test_fuzz.py with thousands of hypothesis examples per test.

    python -m benchmarks.fuzz --examples 2500 --seed 1

runs every test of ``tests/test_fuzz.py`` (the real ONNX proxy; the wrapper test through
``wrap_openai`` against the scripted server gets a quarter of the examples) with
``PROMPTSIEVE_FUZZ_EXAMPLES`` set, random generation from ``--seed``, and writes the counts
hypothesis reports per test, the wall time and the verdict to ``benchmarks/results/fuzz.json``.
CI runs the same tests with 80 examples each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "fuzz.json"
_HEADER = re.compile(r"^tests/test_fuzz\.py::(\w+):\s*$", re.MULTILINE)
_PASSING = re.compile(r"(\d+) passing")
_FAILING = re.compile(r"(?:Failing test case|Falsifying example)")


def _passing(stdout: str) -> dict[str, int]:
    """Passing examples per test (all phases) from ``--hypothesis-show-statistics``."""
    heads = list(_HEADER.finditer(stdout))
    out: dict[str, int] = {}
    for k, m in enumerate(heads):
        end = heads[k + 1].start() if k + 1 < len(heads) else len(stdout)
        out[m.group(1)] = sum(int(n) for n in _PASSING.findall(stdout, m.end(), end))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=2500, help="hypothesis examples per test")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    env = {**os.environ, "PROMPTSIEVE_FUZZ_EXAMPLES": str(args.examples)}
    env["PROMPTSIEVE_FUZZ_RANDOM"] = "1"
    cmd = [
        sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q", "-p", "no:cacheprovider",
        "--hypothesis-show-statistics", f"--hypothesis-seed={args.seed}",
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    counts = _passing(proc.stdout)
    tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    report = {
        "command": f"python -m benchmarks.fuzz --examples {args.examples} --seed {args.seed}",
        "examples_per_test": args.examples,
        "passing_examples": counts,
        "prompts_total": sum(counts.values()),
        "passed": proc.returncode == 0,
        "pytest_summary": tail[0] if tail else "",
        "seconds": round(seconds, 1),
    }
    if proc.returncode != 0:  # the falsifying examples first, then the end of the output
        cases = [m.start() for m in _FAILING.finditer(proc.stdout)]
        report["failing_cases"] = [proc.stdout[c : c + 3000] for c in cases[:5]]
        report["failure"] = proc.stdout[-4000:]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "failure"}, indent=2))
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
