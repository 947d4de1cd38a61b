"""``python -m benchmarks.bigbench.fetch``: fetch and verify the ``bigbench==1.0.0`` sdist
into the cache (what the BIG-bench suites and tests otherwise do on first use)."""

from __future__ import annotations

import sys

from promptsieve import ConfigError

from ._sdist import sdist_path


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(
        prog="python -m promptsieve_bench.bigbench.fetch",
        description="Find or fetch the bigbench==1.0.0 sdist into the cache and verify it; "
        "print its path (exit 2 with one line when it cannot be had).",
    ).parse_args(argv)
    try:
        print(sdist_path())
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
