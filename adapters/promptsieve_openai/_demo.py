"""The one-command demo: local target → wrapped OpenAI client → screening → savings table.

``promptsieve demo`` runs :func:`main` (the CLI loads it lazily: it needs the ``openai`` and
``local`` extras, which the core does not).

The task is needle-in-a-haystack retrieval over real text that ships with Python (pydoc
topics): a task on which the small local target answers stably, so screening can pass and
the compressed requests can show what they save. Nothing here is faked: every answer comes
from the real Gemma 3 270M server, every verdict from the real gate.
"""

from __future__ import annotations

import random
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from promptsieve import (
    CompressorConfig,
    ConfigError,
    Gate,
    GateConfig,
    Sieve,
    SieveConfig,
    SQLiteStore,
    VerdictState,
)

#: List price used for the money column (USD per million input tokens); an assumption.
PRICE_PER_MTOK = 2.50

_CODEISH = re.compile(r"[{}\[\]=*\"]")
_COLOURS = ("red", "blue", "green", "amber", "violet", "silver", "orange", "teal", "black")


@dataclass(frozen=True)
class DemoConfig:
    requests: int = 60  # live requests at most (screening + compressed)
    after_pass: int = 10  # compressed requests to send once the task has passed
    # Gemma 3 270M changes its answer on a share of pruned haystacks, so the demo asks for
    # agreement > 0.6 (printed); keep the default 0.9 for the model you pay for.
    tau: float = 0.6
    delta: float = 0.05
    ratio: float = 0.7
    paragraphs: int = 4  # haystack paragraphs per prompt
    seed: int = 0


@dataclass
class _Row:
    phase: str
    requests: int = 0
    tokens_sent: int = 0
    tokens_original: int = 0
    correct: int = 0


def _prose_paragraphs() -> list[str]:
    """Prose paragraphs of Python's pydoc topics (code listings and grammar left out)."""
    from pydoc_data.topics import topics

    out = []
    for text in topics.values():
        for para in text.split("\n\n"):
            para = " ".join(para.split())
            if len(para) > 120 and para.endswith(".") and not _CODEISH.search(para):
                out.append(para)
    return out


def make_prompts(config: DemoConfig) -> list[tuple[str, str]]:
    """(prompt, gold answer) pairs: a fact hidden among real documentation, asked back."""
    rng = random.Random(config.seed)
    paras = _prose_paragraphs()
    rng.shuffle(paras)
    k = config.paragraphs
    prompts = []
    for i in range(config.requests):
        hay = paras[i * k : (i + 1) * k]
        colour = _COLOURS[i % len(_COLOURS)]
        code = str(rng.randrange(1000, 9999))
        hay.insert(rng.randrange(1, k), f"The access code for the {colour} door is {code}.")
        doc = "\n\n".join(hay)
        prompts.append(
            (
                "Read the document and answer the question.\n\nDocument:\n"
                f"{doc}\n\nQuestion: What is the access code for the {colour} door?\n"
                "Answer: The code is",
                code,
            )
        )
    return prompts


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> dict[str, object]:
    """Run the whole demo; returns the figures it printed."""
    from openai import OpenAI

    from promptsieve import LocalTarget, task
    from promptsieve_openai import wrap_openai

    gate_cfg = _gate_config(config)  # ConfigError before anything is created
    workdir = Path(tempfile.mkdtemp(prefix="promptsieve-demo-"))
    gate = Gate(SQLiteStore(workdir / "verdicts.sqlite3"), gate_cfg)
    sieve = Sieve(
        SieveConfig(
            gate=gate_cfg,
            metric="numeric",
            # sentence-level pruning: the 270M target stays stable on it (word-level pruning
            # by the head scorer changes too many of its answers to pass screening)
            compressor=CompressorConfig(scorer="sentence"),
            scoring_budget_ms=5000,
        ),
        gate=gate,
    )
    echo("1/5 loading the proxy (exports it to ONNX on first use)...")
    sieve.warmup()
    echo("2/5 starting the local target (Gemma 3 270M on llama.cpp, 127.0.0.1)...")
    with LocalTarget.start() as target:
        client = wrap_openai(
            OpenAI(base_url=target.base_url, api_key="local", max_retries=0), sieve
        )
        key = sieve.verdict_key("needle-demo", target.model)
        rows = {"screening": _Row("screening (original sent)"), "apply": _Row("compressed")}
        echo(
            f"3/5 screening task 'needle-demo' at ratio {config.ratio} (tau={config.tau}, "
            f"delta={config.delta}): live calls send the original, the compressed variant "
            "is compared in the background"
        )
        if config.tau < 0.9:
            echo(
                f"    note: tau={config.tau} is a demo setting for a 270M model; "
                "keep the default 0.9 for the model you pay for"
            )
        t0 = time.perf_counter()
        passed_at: int | None = None
        sent_after = 0
        for i, (prompt, gold) in enumerate(make_prompts(config)):
            before = sieve.stats.snapshot()
            with task("needle-demo"):
                resp = client.completions.create(
                    model=target.model,
                    prompt=prompt,
                    max_tokens=8,
                    temperature=0.0,
                    seed=0,
                    stop=["\n"],
                )
            sieve.flush(timeout=120)
            after = sieve.stats.snapshot()
            applied = after["decisions"]["apply"] > before["decisions"]["apply"]
            row = rows["apply" if applied else "screening"]
            row.requests += 1
            row.tokens_sent += resp.usage.prompt_tokens if resp.usage else 0
            row.tokens_original += _count_on_server(target.base_url, prompt)
            row.correct += gold in resp.choices[0].text
            verdict = gate.verdict(key)
            state = verdict.state if verdict else VerdictState.UNSCREENED
            if applied:
                sent_after += 1
            elif verdict and state is VerdictState.PASSED and passed_at is None:
                passed_at = i + 1
                echo(
                    f"4/5 passed after {i + 1} requests (lower bound {verdict.lower or 0:.3f}); "
                    "sending compressed requests"
                )
            elif verdict and state is VerdictState.FAILED:
                echo(f"4/5 screening FAILED ({verdict.reason}); nothing will be compressed")
                break
            if sent_after >= config.after_pass:
                break
            if i % 5 == 4:
                echo(
                    f"    {i + 1} requests, state={state.value}, "
                    f"comparisons={after['comparisons']}, agreements={after['agreements']}"
                )
        elapsed = time.perf_counter() - t0
    stats = sieve.stats.snapshot()
    echo("5/5 savings\n")
    echo(_table(list(rows.values()), stats, elapsed))
    return {"rows": rows, "stats": stats, "passed_at": passed_at, "elapsed_s": elapsed}


def _count_on_server(base_url: str, text: str) -> int:
    """Tokens of ``text`` in the target's own tokenizer (llama.cpp's /extras/tokenize/count)."""
    import httpx

    root = base_url.removesuffix("/v1")
    resp = httpx.post(f"{root}/extras/tokenize/count", json={"input": text}, timeout=30)
    resp.raise_for_status()
    return int(resp.json()["count"])


def _table(rows: list[_Row], stats: dict[str, Any], elapsed: float) -> str:
    lines = [
        "| phase | requests | prompt tokens (original) | prompt tokens sent | saved | correct |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        saved = r.tokens_original - r.tokens_sent
        pct = f" ({saved / r.tokens_original:.0%})" if r.tokens_original else ""
        lines.append(
            f"| {r.phase} | {r.requests} | {r.tokens_original} | {r.tokens_sent} | "
            f"{saved}{pct} | {r.correct}/{r.requests} |"
        )
    done = rows[-1]
    per_request = (done.tokens_original - done.tokens_sent) / done.requests if done.requests else 0
    lines += [
        "",
        f"screening: {stats['comparisons']} comparisons (agreed {stats['agreements']}, "
        f"disagreed {stats['disagreements']}), {stats['screening_calls']} target calls",
        f"once passed: {per_request:.0f} prompt tokens saved per request = "
        f"${per_request * PRICE_PER_MTOK:.0f} per million requests at an assumed "
        f"${PRICE_PER_MTOK:.2f} per million input tokens",
        f"wall time: {elapsed:.0f} s",
    ]
    return "\n".join(lines)


def _gate_config(config: DemoConfig) -> GateConfig:
    """The demo's gate: its one ratio, 60 comparisons. Raises ConfigError."""
    return GateConfig(tau=config.tau, delta=config.delta, ratios=(config.ratio,), budget=60)


def main(argv: list[str] | None = None) -> None:
    """``promptsieve demo [OPTIONS]``: parse ``argv`` and run the demo."""

    def demo(
        requests: Annotated[int, typer.Option(help="live requests at most")] = 60,
        after_pass: Annotated[int, typer.Option(help="compressed requests after a pass")] = 10,
        ratio: Annotated[float, typer.Option(help="ratio to screen, in (0, 1]")] = 0.7,
        tau: Annotated[float, typer.Option(help="agreement rate that must be exceeded")] = 0.6,
        delta: Annotated[float, typer.Option(help="allowed false-pass probability")] = 0.05,
    ) -> None:
        """Start the local target, wrap an OpenAI client, screen a task, print the savings."""
        if not 0 < ratio <= 1:
            raise typer.BadParameter(f"ratio must be in (0, 1], got {ratio}")
        cfg = DemoConfig(requests=requests, after_pass=after_pass, ratio=ratio, tau=tau,
                         delta=delta)  # fmt: skip
        try:
            _gate_config(cfg)
        except ConfigError as exc:  # e.g. a tau that 60 comparisons cannot show
            raise typer.BadParameter(str(exc)) from None
        run_demo(cfg, echo=typer.echo)

    from promptsieve._cli_errors import OneLineCommand

    app = typer.Typer(add_completion=False)
    app.command(cls=OneLineCommand)(demo)
    app(args=argv, prog_name="promptsieve demo")
