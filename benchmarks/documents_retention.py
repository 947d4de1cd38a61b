"""Answer retention through SieveDocumentCompressor: joint (one request, whole documents
first) vs per document (the adapter before: each Document compressed alone at the ratio).

Target-free, like benchmarks/answer_retention.py: disfl_qa test articles
(``multidoc_raw("test", 1000, n)``), each item's documents as LangChain Documents, the
question as the retriever query; an item is retained when the SQuAD-normalised gold answer
is a substring of the normalised kept documents joined. Also: the gold document returned
(any of it), documents returned, and the achieved token ratio (tiktoken gpt-4o).

Usage (the committed figures)::

    python -m benchmarks.documents_retention --items 100 --ratios 0.5,0.33,0.25 \
        --scorers relevance,sentence,head --out benchmarks/results/documents_retention.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=50)
    ap.add_argument("--ratios", default="0.5,0.25")
    ap.add_argument("--scorers", default="relevance,sentence,head")
    ap.add_argument("--out", default="benchmarks/results/documents_retention.json")
    args = ap.parse_args()

    from langchain_core.documents import Document

    from promptsieve import Sieve, SieveConfig
    from promptsieve.compressor import Compressor, CompressorConfig
    from promptsieve.tokens import count_tokens
    from promptsieve_langchain import SieveDocumentCompressor

    from .bigbench.multidoc import multidoc_raw
    from .stats import mcnemar, squad_normalize, wilson

    def count(t: str) -> int:
        return count_tokens(t, "gpt-4o")

    ratios = [float(r) for r in args.ratios.split(",")]
    scorers = [s for s in args.scorers.split(",") if s]
    items = multidoc_raw("test", 1000, args.items, 0)
    rows: dict[str, list[dict[str, Any]]] = {}
    t0 = time.perf_counter()
    for scorer in scorers:
        comp = Compressor(CompressorConfig(scorer=scorer, model="gpt-4o"))
        comp.compress("Warm-up so that loading is not timed.", ratio=0.5)
        sieve = Sieve(
            SieveConfig(verify=False, ratio=0.5, guard=False, scoring_budget_ms=600_000.0),
            compressor=comp,
        )
        for r in ratios:
            joint = SieveDocumentCompressor(sieve=sieve, verify=False, ratio=r, model="gpt-4o")
            for it in items:
                docs = [Document(d, id=str(i)) for i, d in enumerate(it.docs)]
                before = sum(count(d) for d in it.docs)
                gold = squad_normalize(it.answer)
                t = time.perf_counter()
                out = joint.compress_documents(docs, it.question)
                t_joint = time.perf_counter() - t
                kept = " ".join(d.page_content for d in out)
                t = time.perf_counter()
                single = [comp.compress(d, ratio=r, question=it.question).text for d in it.docs]
                t_single = time.perf_counter() - t
                per_doc = " ".join(single)
                for mode, text, n_docs, gold_kept, secs in (
                    (
                        "joint",
                        kept,
                        len(out),
                        str(it.gold_index) in [d.id for d in out],
                        t_joint,
                    ),
                    ("per_doc", per_doc, len(single), True, t_single),
                ):
                    rows.setdefault(f"{scorer}@{r}:{mode}", []).append(
                        {
                            "retained": bool(gold) and gold in squad_normalize(text),
                            "gold_doc": gold_kept,
                            "docs_in": len(docs),
                            "docs_out": n_docs,
                            "ratio": count(text) / before if before else 1.0,
                            "seconds": secs,
                        }
                    )
            print(f"{scorer}@{r} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary: dict[str, Any] = {}
    for key, rs in rows.items():
        k = sum(x["retained"] for x in rs)
        summary[key] = {
            "n": len(rs),
            "retained": k / len(rs),
            "retained_ci": wilson(k, len(rs)),
            "gold_doc_returned": sum(x["gold_doc"] for x in rs) / len(rs),
            "docs_in": sum(x["docs_in"] for x in rs) / len(rs),
            "docs_out": sum(x["docs_out"] for x in rs) / len(rs),
            "ratio": sum(x["ratio"] for x in rs) / len(rs),
            "seconds": sum(x["seconds"] for x in rs) / len(rs),
        }
    for scorer in scorers:
        for r in ratios:
            a = [x["retained"] for x in rows[f"{scorer}@{r}:joint"]]
            b = [x["retained"] for x in rows[f"{scorer}@{r}:per_doc"]]
            summary[f"{scorer}@{r}:mcnemar_joint_vs_per_doc"] = mcnemar(a, b)
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
