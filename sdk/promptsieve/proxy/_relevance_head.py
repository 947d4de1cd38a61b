"""The relevance head: question-aware per-token relevance, folded into the exported graph.

Export/training only — imports torch at import time; never imported on the request path.

Input layout (the cross-encoder order of BERT sentence pairs): ``[CLS] question [SEP]
window [SEP]``, ``token_type_ids`` 0 over ``[CLS] question [SEP]`` and 1 over the window and
its ``[SEP]``. Without a question the window is ``[CLS] [SEP] window [SEP]``.

Per context token, from the states ``h`` of the first ``layers`` encoder layers:

* ``q`` — the mean state of the question segment; without a question, of the window itself
  (query-free importance: how central a token is to its window);
* ``maxsim`` — ColBERT-style late interaction (Khattab & Zaharia, SIGIR 2020): the largest
  cosine between the token's learned projection and any question token's (0 without a
  question);
* features ``LayerNorm([h, q, h·q]) ‖ maxsim ‖ has_question`` → a 2-layer MLP → a logit.

A sentence's relevance is pooled from its tokens' logits outside the graph,
``pool_mean · mean + pool_max · max`` (weights learned with the head, stored in its
metadata), see :class:`promptsieve.proxy.relevance.RelevanceScorer`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from promptsieve.proxy._head import load_weights, read_head_metadata, write_head

__all__ = ["RELEVANCE_FORMAT", "RelevanceHead", "load_relevance_head", "save_relevance_head"]

RELEVANCE_FORMAT = "promptsieve-relevance/1"


class RelevanceHead(nn.Module):
    """Token relevance logits ``(b, s)`` from ``(token_states, attention_mask, token_type_ids)``."""

    def __init__(
        self,
        hidden: int = 384,
        proj: int = 64,
        mlp_hidden: int = 64,
        layers: int = 2,
        extra: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError("layers must be >= 1")
        self.hidden, self.proj_dim, self.mlp_hidden, self.layers = hidden, proj, mlp_hidden, layers
        self.extra = dict(extra or {})
        self.proj = nn.Linear(hidden, proj)
        self.norm = nn.LayerNorm(3 * hidden)
        self.net = nn.Sequential(
            nn.Linear(3 * hidden + 2, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, 1)
        )
        # sentence pooling weights (trained with the head; exported as metadata)
        self.pool = nn.Parameter(torch.tensor([0.5, 0.5]))

    def forward(
        self,
        token_states: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        h = token_states
        mask = attention_mask.to(h.dtype)
        ctx = token_type_ids.to(h.dtype) * mask
        qmask = (1.0 - token_type_ids.to(h.dtype)) * mask  # [CLS] question [SEP]
        has_q = (qmask.sum(1, keepdim=True) > 2.5).to(h.dtype)  # more than [CLS] [SEP]
        ref = has_q * qmask + (1.0 - has_q) * ctx
        q = (h * ref.unsqueeze(-1)).sum(1) / ref.sum(1, keepdim=True).clamp(min=1.0)
        q = q.unsqueeze(1).expand_as(h)
        p = nn.functional.normalize(self.proj(h), dim=-1)
        sims = p @ p.transpose(1, 2)  # (b, s, s)
        sims = sims - 1e4 * (1.0 - qmask).unsqueeze(1)  # only question tokens count
        maxsim = sims.max(dim=-1).values * has_q  # (b, s)
        x = torch.cat(
            [
                self.norm(torch.cat([h, q, h * q], dim=-1)),
                maxsim.unsqueeze(-1),
                has_q.expand_as(maxsim).unsqueeze(-1),
            ],
            dim=-1,
        )
        return self.net(x).squeeze(-1)

    def arch(self) -> dict[str, str]:
        return {
            **self.extra,
            "format": RELEVANCE_FORMAT,
            "hidden": str(self.hidden),
            "proj": str(self.proj_dim),
            "mlp_hidden": str(self.mlp_hidden),
            "layers": str(self.layers),
            "pool_mean": repr(float(self.pool[0].detach())),
            "pool_max": repr(float(self.pool[1].detach())),
        }


def save_relevance_head(head: RelevanceHead, path: str | Path) -> None:
    """Write ``head`` as safetensors (weights + architecture and pooling as metadata)."""
    write_head(head, head.arch(), path)


def load_relevance_head(path: str | Path) -> RelevanceHead:
    """Rebuild a :class:`RelevanceHead` saved by :func:`save_relevance_head`."""
    meta = read_head_metadata(path, RELEVANCE_FORMAT, "relevance head")
    known = {"format", "hidden", "proj", "mlp_hidden", "layers", "pool_mean", "pool_max"}
    head = RelevanceHead(
        hidden=int(meta["hidden"]),
        proj=int(meta["proj"]),
        mlp_hidden=int(meta["mlp_hidden"]),
        layers=int(meta["layers"]),
        extra={k: v for k, v in meta.items() if k not in known},
    )
    return load_weights(head, path)
