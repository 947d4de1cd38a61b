"""Token-importance head: a small torch module folded into the exported ONNX graph.

Export/training only — this module imports torch at import time and must never be imported
on the request path. A trained head is stored as a ``.safetensors`` file whose metadata holds
the architecture, so the request path can fingerprint it by its bytes without torch.

Any ``torch.nn.Module`` with the forward signature
``(token_states (b,s,H), attention_mask (b,s) int64, sentence_embedding (b,H)) -> (b,s)``
can be passed to :func:`promptsieve.proxy._export.export_onnx`; :class:`TokenHead` is the
stock one (Linear or 2-layer MLP over a window of ``context`` neighbouring token states,
optionally concatenated with the pooled embedding of the window).

:class:`QueryHead` is the head of the one-pass *scorer* graph (``_export.export_scorer_onnx``):
it runs on the states of a truncated encoder (its first ``layers`` layers) and is query-aware.
Its forward signature is ``(token_states, attention_mask, token_type_ids) -> (b,s)``; features
per token are ``[h, q, h*q]`` where ``q`` is the mean state of the question segment
(token_type 1), or of the whole window when there is no question (the attribution teacher's
reference is then the text itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

__all__ = [
    "HEAD_FORMAT",
    "QUERY_HEAD_FORMAT",
    "QueryHead",
    "TokenHead",
    "load_head",
    "load_query_head",
    "save_head",
]

HEAD_FORMAT = "promptsieve-head/1"
QUERY_HEAD_FORMAT = "promptsieve-qhead/1"


class TokenHead(nn.Module):
    """Predicts one keep-logit per token from its (and its neighbours') contextual states."""

    def __init__(
        self,
        hidden: int = 384,
        context: int = 1,
        mlp_hidden: int = 0,
        use_pooled: bool = False,
    ) -> None:
        super().__init__()
        if context < 1 or context % 2 == 0:
            raise ValueError("context must be a positive odd number")
        self.hidden = hidden
        self.context = context
        self.mlp_hidden = mlp_hidden
        self.use_pooled = use_pooled
        in_dim = hidden * (context + int(use_pooled))
        self.net: nn.Module
        if mlp_hidden > 0:
            self.net = nn.Sequential(
                nn.Linear(in_dim, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, 1)
            )
        else:
            self.net = nn.Linear(in_dim, 1)

    def forward(
        self,
        token_states: torch.Tensor,
        attention_mask: torch.Tensor,
        sentence_embedding: torch.Tensor,
    ) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
        h = token_states * mask  # padding contributes zeros as neighbours
        feats = []
        if self.context > 1:
            r = self.context // 2
            seq = h.size(1)
            padded = nn.functional.pad(h, (0, 0, r, r))
            feats = [padded[:, k : k + seq] for k in range(self.context)]
        else:
            feats = [h]
        if self.use_pooled:
            feats.append(sentence_embedding.unsqueeze(1).expand_as(h))
        x = torch.cat(feats, dim=-1) if len(feats) > 1 else feats[0]
        return self.net(x).squeeze(-1)

    def arch(self) -> dict[str, str]:
        """Architecture as string metadata (stored in the safetensors header)."""
        return {
            "format": HEAD_FORMAT,
            "hidden": str(self.hidden),
            "context": str(self.context),
            "mlp_hidden": str(self.mlp_hidden),
            "use_pooled": str(int(self.use_pooled)),
        }


class QueryHead(nn.Module):
    """Keep-logit per token from ``[h, q, h*q]`` (see module docstring); ``layers`` is metadata.

    ``layers`` records which encoder depth the head was trained on: the scorer graph is built
    with that many layers, so a head can never be paired with states it was not trained on.
    """

    def __init__(
        self,
        hidden: int = 384,
        mlp_hidden: int = 32,
        layers: int = 2,
        extra: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError("layers must be >= 1")
        self.hidden = hidden
        self.mlp_hidden = mlp_hidden
        self.layers = layers
        self.extra = dict(extra or {})
        self.norm = nn.LayerNorm(3 * hidden)
        self.net: nn.Module
        if mlp_hidden > 0:
            self.net = nn.Sequential(
                nn.Linear(3 * hidden, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, 1)
            )
        else:
            self.net = nn.Linear(3 * hidden, 1)

    def forward(
        self,
        token_states: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        mask = attention_mask.to(token_states.dtype)
        qmask = token_type_ids.to(token_states.dtype) * mask
        has_q = (qmask.sum(1, keepdim=True) > 0).to(token_states.dtype)
        pool = has_q * qmask + (1.0 - has_q) * mask  # no question: the window is the reference
        q = (token_states * pool.unsqueeze(-1)).sum(1) / pool.sum(1, keepdim=True).clamp(min=1.0)
        q = q.unsqueeze(1).expand_as(token_states)
        x = torch.cat([token_states, q, token_states * q], dim=-1)
        return self.net(self.norm(x)).squeeze(-1)

    def arch(self) -> dict[str, str]:
        return {
            **self.extra,
            "format": QUERY_HEAD_FORMAT,
            "hidden": str(self.hidden),
            "mlp_hidden": str(self.mlp_hidden),
            "layers": str(self.layers),
        }


def save_head(head: TokenHead | QueryHead, path: str | Path) -> None:
    """Write ``head`` as a safetensors file (weights + architecture metadata)."""
    write_head(head, head.arch(), path)


def load_head(path: str | Path) -> TokenHead:
    """Rebuild a :class:`TokenHead` saved by :func:`save_head`."""
    meta = read_head_metadata(path, HEAD_FORMAT, "head file")
    head = TokenHead(
        hidden=int(meta["hidden"]),
        context=int(meta["context"]),
        mlp_hidden=int(meta["mlp_hidden"]),
        use_pooled=bool(int(meta["use_pooled"])),
    )
    return load_weights(head, path)


def load_query_head(path: str | Path) -> QueryHead:
    """Rebuild a :class:`QueryHead` saved by :func:`save_head`."""
    meta = read_head_metadata(path, QUERY_HEAD_FORMAT, "query head file")
    known = {"format", "hidden", "mlp_hidden", "layers"}
    head = QueryHead(
        hidden=int(meta["hidden"]),
        mlp_hidden=int(meta["mlp_hidden"]),
        layers=int(meta["layers"]),
        extra={k: v for k, v in meta.items() if k not in known},
    )
    return load_weights(head, path)


# -- the safetensors file of a head (shared with ``_relevance_head``) ------------------------
def write_head(head: nn.Module, metadata: dict[str, str], path: str | Path) -> None:
    """Write ``head``'s weights as safetensors with ``metadata`` in the header."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(path), metadata=metadata)


def read_head_metadata(path: str | Path, fmt: str, what: str) -> dict[str, str]:
    """The header metadata of a head file; ``ValueError`` when its format is not ``fmt``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta: dict[str, str] = f.metadata() or {}
    if meta.get("format") != fmt:
        raise ValueError(f"{path} is not a promptsieve {what} ({fmt})")
    return meta


_M = TypeVar("_M", bound=nn.Module)


def load_weights(head: _M, path: str | Path) -> _M:
    """``head`` with the weights of the safetensors file at ``path``, in eval mode."""
    from safetensors.torch import load_file

    head.load_state_dict(load_file(str(path)))
    head.eval()
    return head
