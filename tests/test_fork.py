"""A sieve used in a parent process keeps working in forked children (issue #14.2).

With gunicorn ``--preload`` or a forking pool, the sieve is built and used in the parent and
then forked. Before the fix, each child's calls waited the whole scoring budget and sent the
original, shadow comparisons never ran, ``flush(5)`` was False and ``flush()`` hung: the
pools counted threads that do not exist after a fork. ``_fork_child.py`` runs the pattern
with the real proxy and a real SQLite store; this test reads its report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("_fork_child.py")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _run_child(cache: Path, *args: str) -> list[dict[str, object]]:
    """Run ``_fork_child.py`` and return its JSON lines (it must exit with status 0)."""
    proc = subprocess.run(
        [sys.executable, str(CHILD), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PROMPTSIEVE_CACHE_DIR": str(cache)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_forked_workers_compress_and_screen_as_the_parent(cache_root: Path, proxy: object) -> None:
    rows = _run_child(cache_root)
    children = [r for r in rows if r["who"] == "child"]
    assert len(children) == 2, rows
    for row in children:
        assert "error" not in row, row
        assert row["reason"] == "applied", row  # compressed, not "timeout"
        assert row["flush5"] is True and row["flush_none_s"] < 1.0, row
        assert row["comparisons"] >= 6, row  # the parent's 3 (inherited counts) + its own 3
    # The second child ends with sys.exit(3): it hung for good in onnxruntime's destructors
    # (a condition variable the parent's pool threads waited on) before the fix.
    assert rows[-1] == {"who": "parent-after", "child_status": [0, 3]}


def test_forked_child_resets_without_a_proxy_session(tmp_path: Path) -> None:
    """The reset does not depend on onnxruntime: with a custom compressor (no session to
    inherit) and a comparison in flight at fork, the child's flush(5) is True at once."""
    rows = _run_child(tmp_path, "without-proxy")
    child = next(r for r in rows if r["who"] == "child")
    assert child["flush5"] is True and child["flush_s"] < 1.0, child
    assert rows[-1] == {"who": "parent-after", "child_status": [0]}
