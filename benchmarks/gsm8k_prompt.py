"""Write lm-eval's GSM8K 8-shot chain-of-thought prompt, with one new question, to a file.

``python -m benchmarks.gsm8k_prompt benchmarks/results/gsm8k-8shot.txt`` then
``promptsieve compress benchmarks/results/gsm8k-8shot.txt --ratio 0.5`` gives the README's
example. All eight demonstrations are lm-eval's own exemplars, read from the installed package.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .data import load_gsm8k_prompt

QUESTION = (
    "Q: A baker made 48 muffins in the morning and sold 3/4 of them before noon. "
    "How many muffins were left at noon?"
)


def build() -> str:
    p = load_gsm8k_prompt()
    prompt, _ = p.render(range(len(p.exemplars)), 0)
    head = prompt[: len(prompt) - len(p.exemplars[0][0])]  # drop the placeholder question
    return f"{head}{QUESTION}\nA:"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("benchmarks/results/gsm8k-8shot.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build(), encoding="utf-8")
    print(out)


if __name__ == "__main__":
    main()
