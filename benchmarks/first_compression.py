"""Time to first compression in a fresh process (the README's torch-free install figure).

Run it in a venv with ``promptsieve[cpu]`` only, against a folder built by
``promptsieve export --out DIR``::

    PROMPTSIEVE_PROXY_DIR=DIR PROMPTSIEVE_CACHE_DIR=$(mktemp -d) \\
        /usr/bin/time -f "wall %e s" python benchmarks/first_compression.py

Prints the import time, the first compression (graphs loaded on the way), a second one, the
token counts and whether torch got imported (it must not).
"""

from __future__ import annotations

import sys
import time

t0 = time.perf_counter()
from promptsieve import Compressor  # noqa: E402 - the import is what is timed

t1 = time.perf_counter()
TEXT = " ".join(
    f"Paragraph {i}: The committee met on Tuesday to discuss item {i} of the agenda, "
    "and the vote was postponed."
    for i in range(40)
)
c = Compressor()
r = c.compress(TEXT, ratio=0.5, question="What happened to the vote on item 7?")
t2 = time.perf_counter()
c.compress(TEXT, ratio=0.5, question="What happened to the vote on item 9?")
t3 = time.perf_counter()
print(
    f"import {t1 - t0:.2f}s first-compression(incl. load) {t2 - t1:.2f}s second {t3 - t2:.3f}s "
    f"tokens {r.tokens_before}->{r.tokens_after} torch_loaded={'torch' in sys.modules}"
)
