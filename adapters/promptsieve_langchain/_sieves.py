"""Which sieve a LangChain component uses, and what it reports.

Every component shares one process-wide default sieve unless given one. A component that
needs different settings than its sieve (``verify=False`` at a fixed ratio, or the
retriever query as the compressor's question) gets a *derived* sieve that shares the
base sieve's compressor (one proxy in memory), gate (one verdict store and its in-flight
bookkeeping) and stats (one set of counters).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import threading
from typing import Any

from langchain_core.runnables import RunnableConfig

from promptsieve import Compressor, ConfigError, GateConfig, Plan, Sieve, SieveConfig
from promptsieve._patching import check_sieve, check_task

__all__ = [
    "COMPARISON_CONFIG",
    "EVENT",
    "default_sieve",
    "event_data",
    "keep_scores",
    "resolve",
    "with_question",
]

log = logging.getLogger(__name__)

#: Name of the custom callback event every component dispatches once per request.
EVENT = "promptsieve.compression"
#: Config for background comparisons: they stay out of the caller's traces and callbacks.
COMPARISON_CONFIG: RunnableConfig = {"callbacks": [], "run_name": "promptsieve-comparison"}

_DEFAULT: Sieve | None = None
_DEFAULT_LOCK = threading.Lock()
_QUESTION: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "promptsieve_langchain_question", default=None
)
#: Where a compression started inside ``keep_scores`` leaves each message's best kept score.
_SCORES: contextvars.ContextVar[dict[int, float] | None] = contextvars.ContextVar(
    "promptsieve_langchain_scores", default=None
)


def default_sieve() -> Sieve:
    """The process-wide sieve used when a component is given none (built on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = Sieve()
    return _DEFAULT


class _SharedCompressor:
    """The base sieve's compressor; passes a per-call question from a ContextVar.

    The sieve runs compressions on its own threads under ``contextvars.copy_context()``,
    so a question set around ``prepare`` reaches ``compress`` without a new sieve API.

    ``documents=True`` (the document compressor): a promptsieve :class:`Compressor` is
    used through a twin with the coarse-to-fine budget on and one passage per text part
    (``CompressorConfig(coarse_to_fine=True, part_passages=True)``), sharing its proxy and
    scorer; other compressors are used as they are. The fingerprint (and so the verdict a
    task is looked up under) stays the base compressor's.
    """

    def __init__(self, base: Sieve, *, documents: bool = False) -> None:
        self._base = base
        self._documents = documents
        self._twin: tuple[object, Any] | None = None
        self._lock = threading.Lock()

    @property
    def fingerprint(self) -> str:
        return self._base.compressor.fingerprint

    @property
    def proxy(self) -> Any:
        return getattr(self._base.compressor, "proxy", None)

    def _compressor(self) -> Any:
        base: Any = self._base.compressor
        if not self._documents or not isinstance(base, Compressor):
            return base
        twin = self._twin
        if twin is None or twin[0] is not base:
            with self._lock:
                twin = self._twin
                if twin is None or twin[0] is not base:
                    twin = self._twin = (base, _documents_twin(base))
        return twin[1]

    def compress(self, prompt: Any, *, ratio: float | None = None) -> Any:
        question = _QUESTION.get()
        compressor = self._compressor()
        comp: Any = None
        if question:
            # a CompressorLike without questions raises TypeError: compress without one
            with contextlib.suppress(TypeError):
                comp = compressor.compress(prompt, ratio=ratio, question=question)
        if comp is None:
            comp = compressor.compress(prompt, ratio=ratio)
        holder = _SCORES.get()
        if holder is not None:
            for span in getattr(comp, "kept", ()):
                best = holder.get(span.message)
                if best is None or span.score > best:
                    holder[span.message] = float(span.score)
        return comp

    def similarity(self, a: str, b: str) -> float:
        return self._base.compressor.similarity(a, b)


def _documents_twin(base: Compressor) -> Compressor:
    """``base`` with the coarse-to-fine budget and one passage per part; same proxy/scorer."""
    cfg = dataclasses.replace(base.config, coarse_to_fine=True, part_passages=True)
    scorer = base.scorer
    proxy = getattr(scorer, "proxy", None) or base.proxy
    return Compressor(cfg, proxy=proxy, scorer=scorer)


class _SharedGate:
    """The base sieve's gate, opened on first use inside the derived sieve's request path.

    Building a derived sieve opens nothing: a verdict store that cannot be opened (a
    corrupt file, Redis down) meets the request path's fail-open handling there, as it
    does for the base sieve, instead of failing the user's call while the component
    resolves its sieve.
    """

    def __init__(self, base: Sieve) -> None:
        self._base = base

    @property
    def config(self) -> GateConfig | None:
        """The base gate's settings, without opening its store (the sieve reads ``mode``
        and ``guard_threshold``)."""
        return self._base.gate_config

    def decide(self, key: Any) -> Any:
        return self._base.gate.decide(key)

    def record(self, key: Any, ratio: float, agreed: bool | None) -> None:
        self._base.gate.record(key, ratio, agreed)

    def __getattr__(self, name: str) -> Any:
        """The base gate's optional parts (``verdict``, ``record_pair``, ``record_noise``),
        present exactly when the base gate has them; looked up only after ``decide`` has
        opened the gate."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._base.gate, name)


def _derive(base: Sieve, config: SieveConfig, *, documents: bool = False) -> Sieve:
    gate = _SharedGate(base) if config.verify else None  # a fixed ratio never asks the gate
    derived = Sieve(config, compressor=_SharedCompressor(base, documents=documents), gate=gate)
    derived.stats = base.stats
    return derived


class resolve:  # lowercase: used like a function
    """The sieve a component uses: its own, or one derived from it on first use."""

    def __init__(
        self,
        sieve: Sieve | None,
        *,
        verify: bool | None,
        ratio: float | None,
        query_aware: bool = False,
        documents: bool = False,
    ) -> None:
        base_verify = sieve.config.verify if sieve is not None else True
        self.verify = base_verify if verify is None else verify
        if self.verify and ratio is not None:
            raise ConfigError(
                "ratio applies only with verify=False; when verifying, the gate's verdict "
                "sets the ratio (configure the ladder with SieveConfig(gate=GateConfig(...)))"
            )
        if not self.verify and ratio is None and (sieve is None or sieve.config.ratio is None):
            raise ConfigError("verify=False compresses at a fixed ratio: pass ratio=...")
        if ratio is not None:
            SieveConfig(verify=False, ratio=ratio)  # validates the range now
        self._sieve = sieve
        self._ratio = ratio
        self._query_aware = query_aware or documents
        self._documents = documents
        self._resolved: Sieve | None = None
        self._lock = threading.Lock()

    @property
    def base(self) -> Sieve:
        return self._sieve if self._sieve is not None else default_sieve()

    def warm(self) -> None:
        """Load the base sieve's compressor before a derived sieve (which shares it) runs.

        A derived sieve cannot see whether the shared compressor is still loading, so it
        waits for it here; a failure is left for ``prepare`` to meet (and fail open).
        """
        if self._resolved is None or self._resolved is self.base:  # not derived
            return
        try:
            _ = self.base.compressor
        except Exception as exc:
            log.debug("promptsieve: compressor failed to load: %s", type(exc).__name__)

    def __call__(self) -> Sieve:
        if self._resolved is None:
            with self._lock:
                if self._resolved is None:
                    self._resolved = self._build()
        return self._resolved

    def _build(self) -> Sieve:
        base = self.base
        cfg = base.config
        ratio = self._ratio if self._ratio is not None else cfg.ratio
        same = cfg.verify == self.verify and (self.verify or ratio == cfg.ratio)
        if same and not self._query_aware:
            return base
        # store_path=None: the derived sieve shares the base's gate and never opens a store
        # of its own, so the file is not checked again here (a store gone bad since the base
        # was built fails open per request instead)
        if not self.verify:
            cfg = dataclasses.replace(cfg, verify=False, ratio=ratio, store_path=None)
        elif not cfg.verify:
            cfg = dataclasses.replace(cfg, verify=True, store_path=None)
        return _derive(base, cfg, documents=self._documents)


class with_question:  # lowercase: used like a function
    """Make ``question`` the compressor's question for compressions started inside."""

    def __init__(self, question: str | None) -> None:
        self._question = question
        self._token: contextvars.Token[str | None] | None = None

    def __enter__(self) -> None:
        self._token = _QUESTION.set(self._question)

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _QUESTION.reset(self._token)


class keep_scores:  # lowercase: used like a function
    """Collect, for compressions started inside, each message's best kept unit score
    (``{message index: score}``; relevance to the question, higher = more relevant)."""

    def __init__(self) -> None:
        self.scores: dict[int, float] = {}
        self._token: contextvars.Token[dict[int, float] | None] | None = None

    def __enter__(self) -> dict[int, float]:
        self._token = _SCORES.set(self.scores)
        return self.scores

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _SCORES.reset(self._token)


def event_data(plan: Plan, *, component: str) -> dict[str, Any]:
    """The custom event's payload: counts and decisions, never prompt text."""
    decision = plan.decision
    return {
        "component": component,
        "task": plan.task,
        "action": decision.action.value if decision is not None else None,
        "reason": plan.reason,
        "compressed": plan.is_compressed,
        "ratio": plan.ratio if plan.is_compressed else None,
        "tokens_before": plan.tokens_before,
        "tokens_after": plan.tokens_after,
        "tokens_saved": plan.tokens_before - plan.tokens_after,
    }


def child_callbacks(run_manager: Any, *, is_async: bool = False) -> Any:
    """Callbacks for work nested under a run that is not a parent run (a model run).

    The same as ``ParentRunManager.get_child()``: the model run's inheritable handlers,
    tags and metadata, with the run as parent (for custom events and the wrapped model).
    """
    if run_manager is None:
        return None
    from langchain_core.callbacks import AsyncCallbackManager, CallbackManager

    cls = AsyncCallbackManager if is_async else CallbackManager
    manager = cls(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


def check_settings(data: dict[str, Any]) -> None:
    """Raise ConfigError for a bad sieve/verify/ratio combination (component constructors)."""
    sieve = data.get("sieve")
    check_sieve("promptsieve_langchain", sieve)
    check_task("promptsieve_langchain", data.get("task"))
    resolve(sieve, verify=data.get("verify"), ratio=data.get("ratio"))
