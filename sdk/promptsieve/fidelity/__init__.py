"""Screen-and-apply: compare target outputs, test sequentially, cache verdicts.

``agree`` compares outputs (``judge``: the target as judge), ``stats`` runs the agreement
test and ``labelled`` the non-inferiority test, both anytime-valid with e-values; ``ladder``
says how a ratio ladder's rungs share δ; ``noise`` measures the noise floor; ``store`` keeps
verdicts (SQLite or Redis) and ``ebh`` controls the share of wrongly passed tasks across a
store; ``keys`` computes verdict keys; ``gate`` decides bypass / shadow / apply per request;
``samples``, ``target`` and ``screen`` run the same ladder offline on a file of requests.
"""

from __future__ import annotations

from promptsieve.fidelity.agree import (
    Embed,
    Metric,
    TargetOutput,
    answer_match,
    auto_metric,
    extract_answer,
    extract_choice,
    extract_number,
    get_metric,
    normalize,
    token_f1,
)
from promptsieve.fidelity.ebh import e_bh, ebh_discoveries
from promptsieve.fidelity.gate import Action, Decision, Gate, GateConfig, guard_ok
from promptsieve.fidelity.judge import JudgeError, TargetJudge, target_judge
from promptsieve.fidelity.keys import metric_name, settings_key, verdict_key
from promptsieve.fidelity.labelled import NonInferiorityTest, Pairs, check_margin
from promptsieve.fidelity.ladder import LadderTest
from promptsieve.fidelity.noise import (
    NoiseFloor,
    VariantKind,
    measure_noise_floor,
    noise_floor,
    reflow,
    reorder_passages,
    variant,
)
from promptsieve.fidelity.samples import load_samples
from promptsieve.fidelity.screen import (
    CompressFn,
    Judge,
    RatioResult,
    ScreenConfig,
    ScreenResult,
    body_compressor,
    gold_judge,
    screen,
)
from promptsieve.fidelity.stats import Outcome, SequentialTest, TestState
from promptsieve.fidelity.store import (
    Counts,
    RedisStore,
    SQLiteStore,
    StoredVerdict,
    Verdict,
    VerdictKey,
    VerdictState,
    VerdictStore,
    default_store_path,
)
from promptsieve.fidelity.target import HTTPTarget, Target

__all__ = [
    "Action",
    "CompressFn",
    "Counts",
    "Decision",
    "Embed",
    "Gate",
    "GateConfig",
    "HTTPTarget",
    "Judge",
    "JudgeError",
    "LadderTest",
    "Metric",
    "NoiseFloor",
    "NonInferiorityTest",
    "Outcome",
    "Pairs",
    "RatioResult",
    "RedisStore",
    "SQLiteStore",
    "ScreenConfig",
    "ScreenResult",
    "SequentialTest",
    "StoredVerdict",
    "Target",
    "TargetJudge",
    "TargetOutput",
    "TestState",
    "VariantKind",
    "Verdict",
    "VerdictKey",
    "VerdictState",
    "VerdictStore",
    "answer_match",
    "auto_metric",
    "body_compressor",
    "check_margin",
    "default_store_path",
    "e_bh",
    "ebh_discoveries",
    "extract_answer",
    "extract_choice",
    "extract_number",
    "get_metric",
    "gold_judge",
    "guard_ok",
    "load_samples",
    "measure_noise_floor",
    "metric_name",
    "noise_floor",
    "normalize",
    "reflow",
    "reorder_passages",
    "screen",
    "settings_key",
    "target_judge",
    "token_f1",
    "variant",
    "verdict_key",
]
