"""How the instance guard's cheap similarity compares with embedding both texts again.

The guard reads its cosine off the scoring pass (``Compression.similarity``: pooled token
states of the whole vs the kept text, no extra encoder pass). This compares it with the full
encoder's cosine between the original and the compressed prompt, over the full profile's
items (every other one) at three ratios, for the head and the sentence scorers.

    python -m benchmarks.guard_similarity
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from .run import PROFILES, load_items

RATIOS = (0.8, 0.55, 0.3)
THRESHOLD = 0.8  # GateConfig.guard_threshold's default


def main() -> None:
    from promptsieve.compressor import Compressor, CompressorConfig
    from promptsieve.prompt import Message, TextPart

    items = load_items(PROFILES["full"])[::2]
    print(f"{len(items)} items × ratios {RATIOS}\n")
    print("| scorer | ratio | pooled median (min) | full encoder median (min) | "
          f"pooled < {THRESHOLD} | full < {THRESHOLD} |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for scorer in ("head", "sentence"):
        comp = Compressor(CompressorConfig(scorer=scorer, model="gpt-4o"))  # type: ignore[arg-type]
        rows: list[tuple[float, float, float]] = []
        for it in items:
            msg = Message("user", (TextPart(it.context), TextPart(it.question, True)))
            for r in RATIOS:
                c = comp.compress([msg], ratio=r, question=it.question.strip())
                if c.similarity is not None:
                    rows.append((r, c.similarity, comp.similarity(it.prompt, c.text)))
        a = np.array(rows)
        for r in RATIOS:
            b = a[a[:, 0] == r]
            print(
                f"| {scorer} | {r} | {np.median(b[:, 1]):.3f} ({b[:, 1].min():.3f}) | "
                f"{np.median(b[:, 2]):.3f} ({b[:, 2].min():.3f}) | "
                f"{(b[:, 1] < THRESHOLD).mean():.0%} | {(b[:, 2] < THRESHOLD).mean():.0%} |"
            )
        rho = spearmanr(a[:, 1], a[:, 2]).statistic
        print(f"| {scorer} | all | Spearman pooled vs full encoder: {rho:.2f} (n={len(a)}) | | | |")


if __name__ == "__main__":
    main()
