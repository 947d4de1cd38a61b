"""Screen-and-apply: compare target outputs, test agreement sequentially, cache verdicts.

``agree`` compares outputs, ``stats`` runs anytime-valid sequential tests, ``store`` keeps
verdicts (SQLite or Redis), ``gate`` decides bypass / shadow / apply per request, and
``screen`` runs the same ladder offline on a file of requests.
"""

from __future__ import annotations

from promptsieve.fidelity.agree import (
    Embed,
    Metric,
    TargetOutput,
    auto_metric,
    extract_answer,
    extract_choice,
    extract_number,
    get_metric,
    normalize,
    token_f1,
)
from promptsieve.fidelity.gate import Action, Decision, Gate, GateConfig, guard_ok
from promptsieve.fidelity.screen import (
    CompressFn,
    HTTPTarget,
    RatioResult,
    ScreenConfig,
    ScreenResult,
    Target,
    body_compressor,
    load_samples,
    screen,
)
from promptsieve.fidelity.stats import Outcome, SequentialTest, TestState
from promptsieve.fidelity.store import (
    Counts,
    RedisStore,
    SQLiteStore,
    Verdict,
    VerdictKey,
    VerdictState,
    VerdictStore,
    default_store_path,
)

__all__ = [
    "Action",
    "CompressFn",
    "Counts",
    "Decision",
    "Embed",
    "Gate",
    "GateConfig",
    "HTTPTarget",
    "Metric",
    "Outcome",
    "RatioResult",
    "RedisStore",
    "SQLiteStore",
    "ScreenConfig",
    "ScreenResult",
    "SequentialTest",
    "Target",
    "TargetOutput",
    "TestState",
    "Verdict",
    "VerdictKey",
    "VerdictState",
    "VerdictStore",
    "auto_metric",
    "body_compressor",
    "default_store_path",
    "extract_answer",
    "extract_choice",
    "extract_number",
    "get_metric",
    "guard_ok",
    "load_samples",
    "normalize",
    "screen",
    "token_f1",
]
