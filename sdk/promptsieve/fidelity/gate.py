"""The screen-and-apply policy: per task, bypass, shadow-test or apply compression.

State machine of one verdict (see :mod:`promptsieve.fidelity.store`)::

    unscreened ─► screening(r1) ─pass─► screening(r2) ─pass─► … ─► passed(r_last)
                       │fail/budget          │fail/budget
                       ▼                     ▼
                    failed              passed(r1)  ──monitoring: agreement ≪ τ──► revoked
    failed / revoked / passed expire after ``ttl`` and re-screen (a new generation).

While screening, live traffic gets the ORIGINAL prompt and a share (``shadow_rate``) of
requests also sends the compressed variant in the background (SHADOW): zero risk to users.
Each ratio of the ladder (conservative → aggressive, fixed order) gets its own sequential
test; no multiplicity correction is needed for a fixed sequence that stops at the first
failure. With ``GateConfig(ladder_test="bonferroni")`` every rung is tested at δ/K instead:
each shadowed request tests one rung (the least-tested of those still open), so a request
costs one compressed call as before, and the most aggressive rung that passes is applied once
no more aggressive rung is open. A neutral conservative rung then no longer blocks rungs that
help (``benchmarks/screening_power.py``; see :class:`~promptsieve.fidelity.ScreenConfig`).

After a pass, a share ``monitor_rate`` of the compressed requests also sends the original,
and a sequential test of H0: agreement ≥ τ revokes the verdict when agreement is
significantly below τ.

Labelled mode (``GateConfig(mode="labelled")``): where the caller can label answers (a gold
answer or a judge), each comparison is a pair (original correct, compressed correct),
reported with :meth:`Gate.record_pair`, and each rung runs the non-inferiority test of
:mod:`promptsieve.fidelity.labelled` instead of the agreement test. Same ladder, budget,
store and verdict-key semantics (the mode and margin are part of the settings key).

Noise floor (``noise_rate`` > 0): that share of SHADOW decisions carries ``noise=True``; the
lifecycle then sends a meaning-preserving variant of the original
(:func:`promptsieve.fidelity.noise.variant`) instead of the compressed prompt and reports
the comparison with :meth:`Gate.record_noise`. It never counts toward the test; the floor
and its interval are read with :meth:`Gate.noise_floor`, and a warning is logged when tau is
above what the floor allows. Tau is never lowered.

Error control across tasks (``fdr_q``): a passed verdict is applied only while its task is
among the e-BH discoveries at level ``fdr_q`` over the e-values of every verdict in the store
(:mod:`promptsieve.fidelity.ebh`), which bounds the expected share of wrongly passed tasks. So
that e-BH has evidence to work with, a rung that passes alone keeps screening until its e-value
reaches K/q (K: verdicts in the store; such a task is discovered whatever the others do) or
its budget is spent, and the verdict records the e-value it stopped at.

The gate fails open: a store outage or any internal error means BYPASS (send the original).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from promptsieve._config_types import check_field_types, check_instance, check_members
from promptsieve._errors import ConfigError, StoreError
from promptsieve.fidelity.ebh import ebh_discoveries
from promptsieve.fidelity.labelled import NonInferiorityTest, Pairs, check_mode
from promptsieve.fidelity.ladder import LadderTest, check_budget, check_ladder
from promptsieve.fidelity.noise import NoiseFloor, noise_floor
from promptsieve.fidelity.stats import Outcome, SequentialTest, TestState
from promptsieve.fidelity.store import (
    Counts,
    SQLiteStore,
    Verdict,
    VerdictKey,
    VerdictState,
    VerdictStore,
)

__all__ = ["Action", "Decision", "Gate", "GateConfig", "guard_ok"]

log = logging.getLogger(__name__)

_STORE_LIKE = "a verdict store (SQLiteStore, RedisStore or a VerdictStore implementation)"


class Action(str, Enum):
    BYPASS = "bypass"  # send the original, compare nothing
    SHADOW = "shadow"  # send the original; compare with the compressed variant in the background
    APPLY = "apply"  # send the compressed prompt


@dataclass(frozen=True)
class Decision:
    action: Action
    ratio: float | None = None  # APPLY: ratio to compress at; SHADOW: ratio under test
    monitor: bool = False  # APPLY only: also send the original in the background and compare
    #: SHADOW only: send a meaning-preserving variant of the original instead of the
    #: compressed prompt, compare it with the original, report with Gate.record_noise.
    noise: bool = False


BYPASS = Decision(Action.BYPASS)
_IN_FLIGHT_S = 600.0  # a shadow comparison not reported back by then is presumed lost
_EBH_REFRESH_S = 30.0  # how long a gate trusts its last e-BH computation over the store


@dataclass(frozen=True)
class GateConfig:
    """Screen-and-apply settings.

    ``budget``: paired comparisons per ladder ratio before giving up on it. ``ratios``:
    shares of compressible tokens kept, conservative → aggressive. ``guard_threshold``: the
    instance guard's minimum proxy similarity between original and compressed prompt (on the
    coarse-to-fine path over the kept passages, ``Compression.passage_similarity``).
    ``seed``: seed the sampling RNG (reproducible tests). ``ttl``: seconds a verdict lives.

    ``mode``: ``"agreement"`` (label-free, the default) or ``"labelled"`` (non-inferiority
    of accuracy; ``epsilon`` in [0, 0.5] or ``rho`` in [0.5, 1], see
    :mod:`promptsieve.fidelity.labelled`). ``noise_rate``: share of shadow decisions that
    measure the noise floor instead (0 = never). ``fdr_q``: apply passed verdicts only as
    e-BH discoveries at this level across the store (None = off). ``ladder_test``:
    ``"fixed_sequence"`` or ``"bonferroni"`` (see the module docstring; Bonferroni does not
    combine with ``fdr_q``). Raises ConfigError.
    """

    tau: float = 0.9
    delta: float = 0.05
    budget: int = 100
    ratios: tuple[float, ...] = (0.8, 0.65, 0.5, 0.35)
    shadow_rate: float = 1.0
    monitor_rate: float = 0.02
    ttl: float = 7 * 24 * 3600.0
    guard_threshold: float = 0.8
    seed: int | None = None
    mode: Literal["agreement", "labelled"] = "agreement"
    epsilon: float | None = None
    rho: float | None = None
    noise_rate: float = 0.0
    fdr_q: float | None = None
    ladder_test: LadderTest = "fixed_sequence"

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.ladder_test == "bonferroni" and self.fdr_q is not None:
            raise ConfigError(
                "fdr_q (e-BH across tasks) works with ladder_test='fixed_sequence' only"
            )
        check_mode(self.mode, self.epsilon, self.rho)
        if not 0 <= self.noise_rate < 1:
            raise ConfigError(f"noise_rate must be in [0, 1), got {self.noise_rate}")
        if self.fdr_q is not None and not 0 < self.fdr_q < 1:
            raise ConfigError(f"fdr_q must be in (0, 1), got {self.fdr_q}")
        if not 0 < self.tau < 1:
            raise ConfigError(f"tau must be in (0, 1), got {self.tau}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        if self.budget < 1:  # its type (a whole number) is checked above
            raise ConfigError(f"budget must be a whole number >= 1 per ratio, got {self.budget!r}")
        check_ladder(self.ratios)
        check_budget(self)
        for name in ("shadow_rate", "monitor_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.ttl > 0:  # NaN fails too
            raise ConfigError(f"ttl must be positive seconds, got {self.ttl}")
        check_guard_threshold(self.guard_threshold)


def check_guard_threshold(value: float) -> None:
    """Raise ConfigError unless ``value`` (a cosine) is in [-1, 1]; NaN fails too."""
    if not -1.0 <= value <= 1.0:
        raise ConfigError(f"guard_threshold must be in [-1, 1], got {value!r}")


def guard_ok(similarity: float, threshold: float) -> bool:
    """Instance guard: compress this request only if the proxy still sees the same prompt."""
    return similarity >= threshold


class Gate:
    """Decides per request whether to bypass, shadow-test or apply compression for a task."""

    def __init__(
        self,
        store: VerdictStore | None = None,
        config: GateConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_members("Gate", "store", store, ("get", "put", "record", "delete"), _STORE_LIKE)
        check_instance("Gate", "config", config, GateConfig)
        self.config = config or GateConfig()
        self.store: VerdictStore = store if store is not None else SQLiteStore()
        self._clock = clock
        self._rng = random.Random(self.config.seed)
        self._lock = threading.Lock()
        # shadow comparisons dispatched by this process and not yet recorded (slot -> times)
        self._in_flight: dict[tuple[str, int, float], list[float]] = {}
        _GATES.add(self)  # re-created in a forked child (_gates_after_fork)
        self._warned = False
        #: Store operations that failed (StoreError) and were absorbed: each counted once.
        self.store_errors = 0
        self._floor_warned: set[str] = set()
        self._bonferroni = self.config.ladder_test == "bonferroni"
        #: each rung's level: δ, or δ/K under Bonferroni
        rung_delta = self.config.delta / (len(self.config.ratios) if self._bonferroni else 1)
        self._screen_test = SequentialTest(self.config.tau, rung_delta, self.config.budget)
        self._monitor_test = SequentialTest(self.config.tau, self.config.delta, None)
        self._labelled_test: NonInferiorityTest | None = None
        if self.config.mode == "labelled":
            self._labelled_test = NonInferiorityTest(
                rung_delta,
                self.config.budget,
                epsilon=self.config.epsilon,
                rho=self.config.rho,
            )
        self._ebh_cache: tuple[float, frozenset[str]] | None = None
        self._tasks_cache: tuple[float, int] | None = None

    # -- public ---------------------------------------------------------------------------

    def decide(self, key: VerdictKey) -> Decision:
        """BYPASS, SHADOW(ratio) or APPLY(ratio, monitor). Never raises (fails open)."""
        try:
            return self._decide(key)
        except StoreError as exc:
            self._warn_once("verdict store unavailable, bypassing compression: %s", exc)
        except Exception:
            log.exception("gate failed; bypassing compression")
        return BYPASS

    def record(self, key: VerdictKey, ratio: float, agreed: bool | None) -> None:
        """One paired comparison from a SHADOW or monitored APPLY; None = target error.

        Results for a ratio that is no longer under test (the verdict moved on meanwhile)
        are dropped. Never raises.
        """
        try:
            self._record(key, ratio, agreed)
        except StoreError as exc:
            self._warn_once("verdict store unavailable, comparison dropped: %s", exc)
        except Exception:
            log.exception("gate failed to record a comparison")

    def record_pair(
        self,
        key: VerdictKey,
        ratio: float,
        original_correct: bool | None,
        compressed_correct: bool | None,
    ) -> None:
        """Labelled mode: one SHADOW comparison's labels; None on either side = not counted.

        A judge that raised or timed out must be reported as None, never as a label.
        Ignored outside labelled mode. Never raises.
        """
        try:
            self._record_pair(key, ratio, original_correct, compressed_correct)
        except StoreError as exc:
            self._warn_once("verdict store unavailable, comparison dropped: %s", exc)
        except Exception:
            log.exception("gate failed to record a labelled comparison")

    def record_noise(self, key: VerdictKey, agreed: bool | None) -> None:
        """One noise-floor comparison (original vs. a meaning-preserving variant of itself).

        Reports a ``Decision(noise=True)`` and frees its shadow slot (as :meth:`record`
        with None does when the comparison is abandoned). None = target error, not counted.
        Logs a warning (once per task) when the floor's upper bound falls below tau. Never
        raises.
        """
        try:
            v = self.store.get(key)
            if v is None:
                return
            if v.state is VerdictState.SCREENING and v.testing is not None:
                self._settle(key, v.generation, v.testing)
            if agreed is None:
                return
            counts = self.store.record_noise(key, v.generation, agreed)
            self._check_floor(key, counts)
        except StoreError as exc:
            self._warn_once("verdict store unavailable, comparison dropped: %s", exc)
        except Exception:
            log.exception("gate failed to record a noise-floor comparison")

    def noise_floor(self, key: VerdictKey) -> NoiseFloor | None:
        """The task's measured noise floor (None before any noise comparison).

        Raises StoreError when the store is down.
        """
        v = self.store.get(key)
        if v is None or v.noise.n == 0:
            return None
        return noise_floor(v.noise.agree, v.noise.n, tau=self.config.tau)

    def verdict(self, key: VerdictKey) -> Verdict | None:
        """The stored verdict (raises StoreError when the store is down)."""
        return self.store.get(key)

    def reset(self, key: VerdictKey) -> None:
        """Forget a verdict: the next request re-screens."""
        self.store.delete(key)

    def evaluate(self, counts: Counts | Pairs, *, monitor: bool = False) -> TestState:
        """The sequential test's state for screening (or monitoring) counts: one rung's,
        at δ (δ/K under Bonferroni; monitoring always at δ).

        ``Pairs`` (labelled mode) go to the non-inferiority test; raises ConfigError when
        the gate is not in labelled mode.
        """
        if isinstance(counts, Pairs):
            if self._labelled_test is None:
                raise ConfigError("labelled pairs need GateConfig(mode='labelled')")
            return self._labelled_test.evaluate(counts)
        test = self._monitor_test if monitor else self._screen_test
        return test.evaluate(counts.n, counts.agree)

    # -- internals ------------------------------------------------------------------------

    def _warn_once(self, msg: str, exc: BaseException) -> None:
        with self._lock:
            self.store_errors += 1
        if not self._warned:
            self._warned = True
            log.warning(msg, exc)
        else:
            log.debug(msg, exc)

    def _sample(self, rate: float) -> bool:
        if rate >= 1.0:
            return True
        with self._lock:
            return self._rng.random() < rate

    def _decide(self, key: VerdictKey) -> Decision:
        now = self._clock()
        v = self.store.get(key)
        if v is None or v.state is VerdictState.UNSCREENED or v.expired(now):
            v = self._start_screening(key, v, now)
            if v is None:
                return BYPASS
        if v.state is VerdictState.PASSED and v.ratio is not None:
            if self.config.fdr_q is not None and not self._discovered(key, now):
                return BYPASS  # passed alone, but not an e-BH discovery across the store
            monitor = self.config.mode == "agreement" and self._sample(self.config.monitor_rate)
            return Decision(Action.APPLY, v.ratio, monitor=monitor)
        if v.state is VerdictState.SCREENING and v.testing is not None:
            return self._shadow(key, v)
        return BYPASS  # failed or revoked until it expires

    def _start_screening(self, key: VerdictKey, old: Verdict | None, now: float) -> Verdict | None:
        first = self.config.ratios[0]
        fresh = Verdict(
            state=VerdictState.SCREENING,
            testing=first,
            created_at=now,
            updated_at=now,
            expires_at=now + self.config.ttl,
            generation=(old.generation + 1) if old is not None else 1,
        )
        if self.store.put(key, fresh, expected_version=None if old is None else old.version):
            log.info("task %r: screening starts at ratio %s", key.task, first)
        return self.store.get(key)  # ours, or whatever a concurrent writer put

    def _load(self, key: VerdictKey, v: Verdict, ratio: float, now: float) -> int:
        """Comparisons counted and in flight at ``ratio`` (stale in-flight ones dropped)."""
        slot = (key.digest, v.generation, ratio)
        with self._lock:
            live = [t for t in self._in_flight.get(slot, []) if now - t < _IN_FLIGHT_S]
            self._in_flight[slot] = live
        done = v.pairs_at(ratio).n if self._labelled_test else v.counts_at(ratio).n
        return done + len(live)

    def _rung_state(self, v: Verdict, ratio: float) -> TestState:
        if self._labelled_test is not None:
            return self._labelled_test.evaluate(v.pairs_at(ratio))
        return self.evaluate(v.counts_at(ratio))

    def _undecided(self, v: Verdict, ratio: float) -> bool:
        """The rung's test would CONTINUE (as :meth:`evaluate` decides it, without the
        bounds, which cost milliseconds on the request path)."""
        if self._labelled_test is not None:
            p = v.pairs_at(ratio)
            cells = p.cells
            t = self._labelled_test
            n = p.n
            decided = bool(t.passes(cells)) or bool(t.fails(cells)) or not t.can_pass(cells)
        else:
            c = v.counts_at(ratio)
            s, f = c.agree, c.n - c.agree
            n = c.n
            st = self._screen_test
            decided = bool(st.passes(s, f)) or bool(st.fails(s, f)) or not st.can_pass(s, f)
        return not decided and n < self.config.budget

    def _open_rungs(self, v: Verdict) -> list[float]:
        """Bonferroni: the undecided rungs more aggressive than the best pass so far."""
        return [
            r
            for r in self.config.ratios
            if (v.ratio is None or r < v.ratio) and self._undecided(v, r)
        ]

    def _shadow(self, key: VerdictKey, v: Verdict) -> Decision:
        now = self._clock()
        if self._bonferroni:  # the least-loaded open rung with room left
            loads = [(self._load(key, v, r, now), r) for r in self._open_rungs(v)]
            loads = [(n, r) for n, r in loads if n < self.config.budget]
            if not loads:
                return BYPASS
            ratio = min(loads)[1]
        else:
            assert v.testing is not None
            ratio = v.testing
            if self._load(key, v, ratio, now) >= self.config.budget:
                return BYPASS  # enough comparisons on the way; wait for their results
        if not self._sample(self.config.shadow_rate):
            return BYPASS
        noise = self.config.noise_rate > 0 and self._sample(self.config.noise_rate)
        if noise and v.testing is not None:  # record_noise frees the slot of v.testing
            ratio = v.testing
        with self._lock:  # a noise comparison holds a slot too (record_noise or record frees it)
            self._in_flight.setdefault((key.digest, v.generation, ratio), []).append(now)
        return Decision(Action.SHADOW, ratio, noise=noise)

    def _screening_at(self, v: Verdict, ratio: float) -> bool:
        """Is a comparison at ``ratio`` one the screening of ``v`` counts?"""
        if v.state is not VerdictState.SCREENING:
            return False
        if self._bonferroni:  # a rung decided meanwhile takes no more comparisons
            return any(_same(r, ratio) for r in self._open_rungs(v))
        return _same(v.testing, ratio)

    def _settle(self, key: VerdictKey, generation: int, ratio: float) -> None:
        slot = (key.digest, generation, ratio)
        with self._lock:
            times = self._in_flight.get(slot)
            if times:
                times.pop(0)
            if not times:
                self._in_flight.pop(slot, None)

    def _record(self, key: VerdictKey, ratio: float, agreed: bool | None) -> None:
        v = self.store.get(key)
        if v is None:
            return
        screening = self._screening_at(v, ratio)
        monitoring = v.state is VerdictState.PASSED and _same(v.ratio, ratio)
        if screening:
            self._settle(key, v.generation, ratio)
        if agreed is None or not (screening or monitoring) or v.expired(self._clock()):
            return
        if self._labelled_test is not None and screening:
            log.debug("labelled mode: agreement comparisons are not counted; use record_pair")
            return
        counts = self.store.record(key, v.generation, ratio, agreed, monitor=monitoring)
        if screening:
            self._after_screening(key, v, ratio, self.evaluate(counts))
        else:
            self._after_monitoring(key, v, counts)

    def _record_pair(
        self, key: VerdictKey, ratio: float, original: bool | None, compressed: bool | None
    ) -> None:
        if self._labelled_test is None:
            log.debug("record_pair outside labelled mode: ignored")
            return
        v = self.store.get(key)
        if v is None:
            return
        screening = self._screening_at(v, ratio)
        if screening:
            self._settle(key, v.generation, ratio)
        if original is None or compressed is None or not screening or v.expired(self._clock()):
            return
        pairs = self.store.record_pair(key, v.generation, ratio, original, compressed)
        self._after_screening(key, v, ratio, self._labelled_test.evaluate(pairs))

    def _after_screening(self, key: VerdictKey, v: Verdict, ratio: float, state: TestState) -> None:
        if self._bonferroni:
            self._after_bonferroni(key, v, ratio, state)
            return
        now = self._clock()
        bounds = {"lower": state.lower, "upper": state.upper, "updated_at": now}
        if state.decision is Outcome.CONTINUE:
            return
        if state.decision is Outcome.PASS and self._screens_on(state, now):
            return  # fdr mode: more evidence first (e >= K/q, or the budget)
        ladder = self.config.ratios
        # the verdict's e-value: the smallest over the rungs that passed (see fidelity.ebh)
        passed_e = state.e_value if v.e_value is None else min(v.e_value, state.e_value)
        if state.decision is Outcome.PASS:
            nxt = _next_ratio(ladder, ratio)
            if nxt is not None:
                new = v.replace(ratio=ratio, testing=nxt, reason="", e_value=passed_e, **bounds)
                what = f"ratio {ratio} passed, screening {nxt}"
            else:
                new = v.replace(
                    state=VerdictState.PASSED,
                    ratio=ratio,
                    testing=ratio,
                    expires_at=now + self.config.ttl,
                    reason=state.reason,
                    e_value=passed_e,
                    **bounds,
                )
                what = f"passed at ratio {ratio}"
        elif v.ratio is not None:  # a more conservative ratio passed before
            new = v.replace(
                state=VerdictState.PASSED,
                testing=v.ratio,
                expires_at=now + self.config.ttl,
                reason=f"ratio {ratio} failed ({state.reason})",
                **bounds,
            )
            what = f"ratio {ratio} failed ({state.reason}); passed at ratio {v.ratio}"
        else:
            new = v.replace(
                state=VerdictState.FAILED,
                testing=None,
                expires_at=now + self.config.ttl,
                reason=state.reason,
                e_value=state.e_value,
                **bounds,
            )
            what = f"failed at ratio {ratio} ({state.reason})"
        if self.store.put(key, new, expected_version=v.version):
            log.info(
                "task %r: %s after %d comparisons (%d agreed or compressed-correct)",
                key.task,
                what,
                state.n,
                state.successes,
            )

    def _after_bonferroni(
        self, key: VerdictKey, v: Verdict, ratio: float, state: TestState
    ) -> None:
        """Bonferroni: the rung at ``ratio`` decided. A pass more aggressive than the best so
        far is recorded (its e-value over K is the verdict's e-value); when no more
        aggressive rung is open, the verdict is final."""
        if state.decision is Outcome.CONTINUE:
            return
        k = len(self.config.ratios)
        now = self._clock()
        improved = state.decision is Outcome.PASS and (v.ratio is None or ratio < v.ratio)
        best = ratio if improved else v.ratio
        changes: dict[str, Any] = {"updated_at": now}
        if improved:
            changes |= {"ratio": ratio, "lower": state.lower, "upper": state.upper}
            changes["e_value"] = state.e_value / k
        open_rungs = self._open_rungs(v)
        ahead = [r for r in open_rungs if not _same(r, ratio) and (best is None or r < best)]
        if ahead:
            if not improved:
                return
            new = v.replace(**changes)
            what = f"ratio {ratio} passed at delta/{k}; still screening {ahead}"
        elif best is not None:
            new = v.replace(
                state=VerdictState.PASSED,
                testing=best,
                expires_at=now + self.config.ttl,
                reason=f"passed at delta/{k}",
                **changes,
            )
            what = f"passed at ratio {best} (every rung at delta/{k})"
        else:
            others = [self._rung_state(v, r).e_value for r in self.config.ratios if r != ratio]
            new = v.replace(
                state=VerdictState.FAILED,
                testing=None,
                expires_at=now + self.config.ttl,
                reason=f"no rung passed at delta/{k}",
                e_value=max([state.e_value, *others]) / k,
                lower=state.lower,
                upper=state.upper,
                updated_at=now,
            )
            what = f"failed: no rung passed at delta/{k}"
        if self.store.put(key, new, expected_version=v.version):
            log.info("task %r: %s", key.task, what)

    def _check_floor(self, key: VerdictKey, counts: Counts) -> None:
        floor = noise_floor(counts.agree, counts.n, tau=self.config.tau)
        if floor.tau_above_floor and key.digest not in self._floor_warned:
            self._floor_warned.add(key.digest)
            log.warning("task %r: %s", key.task, floor.warning())

    def _screens_on(self, state: TestState, now: float) -> bool:
        """fdr mode: keep screening a rung that passed alone until its e-value reaches K/q
        (then e-BH discovers it whatever the other tasks do) or its budget is spent."""
        q = self.config.fdr_q
        if q is None or state.n >= self.config.budget:
            return False
        cached = self._tasks_cache
        if cached is None or now - cached[0] > _EBH_REFRESH_S:
            cached = (now, max(1, len(self.store.verdicts())))
            self._tasks_cache = cached
        return state.e_value < cached[1] / q

    def _discovered(self, key: VerdictKey, now: float) -> bool:
        """Is ``key`` among the store's e-BH discoveries? (recomputed at most every 30 s)"""
        cached = self._ebh_cache
        if cached is None or now - cached[0] > _EBH_REFRESH_S:
            assert self.config.fdr_q is not None
            found = ebh_discoveries(self.store, self.config.fdr_q, now=now)
            cached = (now, frozenset(found))
            self._ebh_cache = cached
        return key.digest in cached[1]

    def _after_monitoring(self, key: VerdictKey, v: Verdict, counts: Counts) -> None:
        state = self.evaluate(counts, monitor=True)
        if state.upper >= self.config.tau:
            return
        now = self._clock()
        new = v.replace(
            state=VerdictState.REVOKED,
            lower=state.lower,
            upper=state.upper,
            updated_at=now,
            expires_at=now + self.config.ttl,
            reason="monitoring: agreement below tau",
        )
        if self.store.put(key, new, expected_version=v.version):
            log.warning(
                "task %r: verdict revoked, monitoring saw %d/%d agreements (upper bound %.3f)",
                key.task,
                counts.agree,
                counts.n,
                state.upper,
            )


def _same(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) < 1e-9


def _next_ratio(ladder: tuple[float, ...], ratio: float) -> float | None:
    for i, r in enumerate(ladder):
        if _same(r, ratio):
            return ladder[i + 1] if i + 1 < len(ladder) else None
    return None


# -- fork safety ----------------------------------------------------------------------------
# A fork while another thread holds a gate's lock would deadlock the child's first decide();
# the parent's in-flight shadow slots are the parent's to record, not the child's.
_GATES: weakref.WeakSet[Gate] = weakref.WeakSet()


def _gates_after_fork() -> None:
    for gate in list(_GATES):
        gate._lock = threading.Lock()
        gate._in_flight = {}


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_gates_after_fork)
