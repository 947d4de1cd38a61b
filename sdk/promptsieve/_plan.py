"""What the sieve decided for one request: the :class:`Plan`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from promptsieve.fidelity import Decision, VerdictKey
from promptsieve.prompt import Prompt, Request

__all__ = ["Comparison", "Plan", "Reason", "Variant"]

#: The background comparison a plan owes after the live call.
#: "shadow": the original went out; the compressed variant is sent too and compared.
#: "monitor": the compressed prompt went out; the original is sent too and compared.
Comparison = Literal["shadow", "monitor"]

#: Why a request goes out as it does.
Reason = Literal[
    "applied",  # compressed under a passed verdict (or verify=False)
    "bypass",  # the gate said bypass: no verdict, failed, revoked or budget reached
    "shadow",  # original sent; a compressed variant is compared in the background
    "guard",  # the instance guard refused this compression
    "unchanged",  # the compressor found nothing to drop
    "nothing",  # no compressible text in the request
    "warming",  # the proxy was still loading
    "timeout",  # scoring exceeded the budget
    "error",  # an internal fault (or the adapter could not apply the compression)
    "closed",  # the sieve was closed (or the process is exiting)
]


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What ``prepare`` decided for one request, and what the lifecycle still owes it."""

    #: The original request.
    request: Request
    #: What goes to the target (``request`` itself unless compressed).
    sent: Request
    #: The task name the verdict is kept under (None: not resolved, e.g. warming).
    task: str | None = None
    key: VerdictKey | None = None
    decision: Decision | None = None
    reason: Reason
    #: Background comparison due after the live call (None: none).
    comparison: Comparison | None = None
    #: The ratio compressed at (apply) or under test (shadow): share of compressible tokens
    #: kept, in (0, 1].
    ratio: float | None = None
    #: Estimated prompt tokens (target model's tokenizer) of the original / of what was sent.
    tokens_before: int = 0
    tokens_after: int = 0
    #: Proxy cosine in [-1, 1] between original and compressed (when the guard ran).
    similarity: float | None = None
    #: Set when the prompt went out compressed: the compressed prompt (also ``sent.prompt``).
    compressed: Prompt | None = None

    @property
    def is_compressed(self) -> bool:
        return self.compressed is not None and self.sent is not self.request

    @classmethod
    def unchanged(
        cls, request: Request, reason: Reason, *, tokens: int = 0, **fields: object
    ) -> Plan:
        """A plan that sends ``request`` as is (``tokens`` before and after)."""
        return cls(
            request=request,
            sent=request,
            reason=reason,
            tokens_before=tokens,
            tokens_after=tokens,
            **fields,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Variant:
    """One compression attempt: the compressed prompt, or None with the reason it is unusable."""

    prompt: Prompt | None
    reason: Reason
    similarity: float | None = None
