"""The error tree (#13.6): one root, ConfigError from every public constructor."""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

import pytest

import promptsieve as ps
from promptsieve.fidelity import ScreenConfig


def test_every_exported_exception_is_in_the_tree() -> None:
    errors = [
        getattr(ps, n)
        for n in ps.__all__
        if inspect.isclass(getattr(ps, n, None)) and issubclass(getattr(ps, n), BaseException)
    ]
    assert {e.__name__ for e in errors} == {
        "ConfigError",
        "JudgeError",
        "PromptSieveError",
        "StoreError",
        "TargetError",
        "UnsupportedRequest",
    }
    assert all(issubclass(e, ps.PromptSieveError) for e in errors)
    assert not hasattr(ps, "ScoringError") and not hasattr(ps, "ScoringTimeout")  # never raised


BAD: list[tuple[str, Callable[[], Any]]] = [
    ("SieveConfig ratio", lambda: ps.SieveConfig(ratio=2)),
    ("SieveConfig backpressure", lambda: ps.SieveConfig(backpressure="drop")),  # type: ignore[arg-type]
    ("SieveConfig metric", lambda: ps.SieveConfig(metric="bogus")),
    ("SieveConfig drain", lambda: ps.SieveConfig(drain_timeout_s=-1)),
    ("CompressorConfig ratio", lambda: ps.CompressorConfig(ratio=2)),
    ("SegmentConfig markers", lambda: ps.SegmentConfig(keep_open="")),
    ("SegmentConfig pattern", lambda: ps.SegmentConfig(keep_patterns=("(",))),
    ("SequentialTest tau", lambda: ps.SequentialTest(2.0, 0.05, 10)),
    ("GateConfig tau", lambda: ps.GateConfig(tau=1.5)),
    ("ProxyConfig batch", lambda: ps.ProxyConfig(batch_size=0)),
    ("task name", lambda: ps.task("")),
    ("DemoAttributionConfig method", lambda: ps.DemoAttributionConfig(method="lasso")),  # type: ignore[arg-type]
    ("DemoFormat template", lambda: ps.DemoFormat(demo="Q: {input}\n")),
    ("DemoCompressor validation", lambda: ps.DemoCompressor([ps.Demonstration("a", "b")] * 2, [])),
    # NaN passes a plain ``x <= 0`` check; each of these must still fail at construction
    ("SieveConfig NaN budget", lambda: ps.SieveConfig(scoring_budget_ms=math.nan)),
    ("SieveConfig NaN drain", lambda: ps.SieveConfig(drain_timeout_s=math.nan)),
    ("SieveConfig NaN wait", lambda: ps.SieveConfig(backpressure_wait_ms=math.nan)),
    ("GateConfig NaN ttl", lambda: ps.GateConfig(ttl=math.nan)),
    ("GateConfig fractional budget", lambda: ps.GateConfig(budget=2.5)),
    ("GateConfig guard threshold", lambda: ps.GateConfig(guard_threshold=5)),
    ("ScreenConfig NaN judge timeout", lambda: ScreenConfig(judge_timeout_s=math.nan)),
    ("ScreenConfig metric", lambda: ScreenConfig(metric="bogus")),
    ("ScreenConfig noise kind", lambda: ScreenConfig(noise_kind="bogus")),
    ("ScreenConfig duplicate ratios", lambda: ScreenConfig(ratios=(0.5, 0.5))),
    ("HTTPTarget URL", lambda: ps.fidelity.HTTPTarget("localhost:8080", "m")),
    ("HTTPTarget scheme", lambda: ps.fidelity.HTTPTarget("ftp://127.0.0.1/v1", "m")),
    ("HTTPTarget timeout", lambda: ps.fidelity.HTTPTarget("http://127.0.0.1:9/v1", "m", timeout=0)),
    ("HTTPTarget port", lambda: ps.fidelity.HTTPTarget("http://127.0.0.1:99999/v1", "m")),
    (
        "HTTPTarget infinite timeout",
        lambda: ps.fidelity.HTTPTarget("http://127.0.0.1:9/v1", "m", timeout=math.inf),
    ),
    ("HTTPTarget model", lambda: ps.fidelity.HTTPTarget("http://127.0.0.1:9/v1", None)),  # type: ignore[arg-type]
    (
        "HTTPTarget overrides",
        lambda: ps.fidelity.HTTPTarget("http://127.0.0.1:9/v1", "m", overrides="t=0"),
    ),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("what", "build"), BAD, ids=[b[0] for b in BAD])
def test_bad_configuration_raises_config_error(what: str, build: Callable[[], Any]) -> None:
    with pytest.raises(ps.ConfigError):
        build()


WRONG_TYPE: list[tuple[str, Callable[[], Any], str]] = [
    ("ratio as text", lambda: ps.SieveConfig(ratio="0.5"), r"SieveConfig\(ratio=\.\.\.\)"),
    ("ratios as a number", lambda: ps.GateConfig(ratios=0.5), r"ratios=.*tuple or list"),
    ("patterns as text", lambda: ps.SegmentConfig(keep_patterns="abc"), "keep_patterns"),
    ("bool as a number", lambda: ScreenConfig(tau=True), "tau"),
    ("budget as text", lambda: ps.GateConfig(budget="10"), "budget"),
    ("Compressor config", lambda: ps.Compressor("x"), r"Compressor\(config=\.\.\.\)"),
    ("Sieve config", lambda: ps.Sieve("x"), r"Sieve\(config=\.\.\.\)"),
    ("Sieve gate", lambda: ps.Sieve(gate="x"), r"Sieve\(gate=\.\.\.\)"),
    ("Sieve compressor", lambda: ps.Sieve(compressor=3), "compressor"),
    ("Gate store", lambda: ps.fidelity.Gate("notastore"), "verdict store"),
    ("Gate config", lambda: ps.fidelity.Gate(None, ps.SieveConfig()), "GateConfig"),
    ("attribution lm", lambda: ps.DemoAttributionConfig(lm={"int8": True}), r"lm=.*LMProxyConfig"),
]


@pytest.mark.parametrize(("what", "build", "match"), WRONG_TYPE, ids=[w[0] for w in WRONG_TYPE])
def test_wrong_types_raise_config_error_naming_the_argument(
    what: str, build: Callable[[], Any], match: str
) -> None:
    with pytest.raises(ps.ConfigError, match=match):
        build()


CONFIGS = sorted(
    name
    for name in ps.__all__
    if name.endswith("Config") and dataclasses.is_dataclass(getattr(ps, name))
)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_field_rejects_a_foreign_object(name: str) -> None:
    """Each exported config checks every typed field at construction (``Any`` excepted)."""
    cls = getattr(ps, name)
    hints = typing.get_type_hints(cls, localns=vars(ps))
    for field in dataclasses.fields(cls):
        if hints[field.name] is Any:
            continue
        with pytest.raises(ps.ConfigError, match=field.name):
            cls(**{field.name: object()})


def test_a_subclass_with_an_unresolvable_annotation_is_still_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user's config subclass may annotate a field with a name only type checkers import;
    that field goes unchecked, and every inherited field is still checked."""
    ns: dict[str, Any] = {}
    exec(  # a class whose annotation names nothing importable
        "from __future__ import annotations\n"
        "import dataclasses, promptsieve as ps\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class Mine(ps.GateConfig):\n"
        "    extra: NotImportedAnywhere | None = None\n",
        ns,
    )
    mine = ns["Mine"]
    assert mine(extra="anything").extra == "anything"
    with pytest.raises(ps.ConfigError, match=r"Mine\(tau=\.\.\.\)"):
        mine(tau="0.9")
    # annotations that fail otherwise than by a missing name; a user's own class named like
    # one of promptsieve's; an inherited field re-annotated with a name that resolves nowhere
    module = types.ModuleType("user_configs")  # a user's module, as an import makes it
    monkeypatch.setitem(sys.modules, module.__name__, module)
    ns = vars(module)
    exec(
        "from __future__ import annotations\n"
        "import dataclasses, promptsieve as ps\n"
        "X = 3\n"
        "class Message:\n"
        "    pass\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class Odd(ps.GateConfig):\n"
        "    a: X | None = None\n"
        "    b: ps.NotThere | None = None\n"
        "    c: 'not python(' = None\n"
        "    note: Message | None = None\n"
        "    tau: Nope = 0.9\n",
        ns,
    )
    odd = ns["Odd"]
    assert odd(note=ns["Message"]()).tau == 0.9
    with pytest.raises(ps.ConfigError, match=r"Odd\(tau=\.\.\.\)"):
        odd(tau="x")
    with pytest.raises(ps.ConfigError, match=r"Odd\(note=\.\.\.\)"):
        odd(note=3)


def test_lenient_types_still_fit_and_are_stored_plain(tmp_path: Any) -> None:
    """Values a user would write fit, and are stored as plain Python values, so that a
    config stays hashable and its verdict key does not depend on the spelling."""
    import enum
    import re
    from fractions import Fraction

    import numpy as np

    class Mode(str, enum.Enum):
        SKIP = "skip"

    assert ps.SieveConfig(verify=np.False_, ratio=1).verify is False
    gate = ps.GateConfig(ratios=[np.float32(0.5), Fraction(1, 4)], budget=np.int64(40))
    assert gate.ratios == (0.5, 0.25) and type(gate.budget) is int and hash(gate)

    def key(g: ps.GateConfig) -> str:
        return ps.SieveConfig(gate=g).settings_key()

    assert key(gate) == key(ps.GateConfig(ratios=(0.5, 0.25), budget=40))
    assert key(ps.GateConfig(tau=np.float64(0.9))) == key(ps.GateConfig())
    spelt = ps.GateConfig(ratios=(1, 0.5))  # an int among floats is stored as a float
    assert [type(r) for r in spelt.ratios] == [float, float]
    assert (
        key(spelt) == key(ps.GateConfig(ratios=[1.0, 0.5])) == key(ps.GateConfig(ratios=[1, 0.5]))
    )
    assert hash(ps.CompressorConfig(roles=["user"]))
    assert ps.SieveConfig(backpressure=Mode.SKIP).backpressure == "skip"  # type: ignore[arg-type]
    ps.SieveConfig(store_path=tmp_path / "v.sqlite3")
    ps.ProxyConfig(cache_dir=str(tmp_path))
    ps.SegmentConfig(keep_patterns=(re.compile(r"ID-\d+"), r"\d{4}"))
    with pytest.raises(ps.ConfigError, match=r"an item Decimal"):
        from decimal import Decimal

        ps.GateConfig(ratios=(Decimal("0.5"),))


def test_parts_are_checked_without_loading_anything(tmp_path: Any) -> None:
    """Sieve(compressor=...) must not load the proxy (a property would), and only what is
    always used is required: a compressor without ``similarity`` runs with the guard off,
    a verdict store with get/put/record/delete works outside labelled mode."""
    from promptsieve.fidelity import Gate, SQLiteStore

    # an empty prebuilt folder: loading the proxy from it would raise
    comp = ps.Compressor(ps.CompressorConfig(proxy=ps.ProxyConfig(proxy_dir=tmp_path)))
    ps.Sieve(compressor=comp).close()
    assert comp._proxy is None  # not loaded

    class Minimal:
        fingerprint = "minimal"

        def compress(self, prompt: Any, *, ratio: float | None = None) -> Any:
            return prompt

    ps.Sieve(ps.SieveConfig(verify=False, ratio=0.5, guard=False), compressor=Minimal()).close()  # type: ignore[arg-type]
    inner = SQLiteStore(tmp_path / "v.sqlite3")

    class OldStore:
        get, put, record, delete = inner.get, inner.put, inner.record, inner.delete

    Gate(OldStore())  # type: ignore[arg-type]
    with pytest.raises(ps.ConfigError, match="has no record"):
        Gate(type("NoRecord", (), {"get": 1, "put": 1, "delete": 1})())  # type: ignore[arg-type]
    with pytest.raises(ps.ConfigError, match=r"SieveConfig\(gate=\.\.\.\)"):
        ps.Sieve(gate=ps.GateConfig())  # type: ignore[arg-type]
    with pytest.raises(ps.ConfigError, match=r"takes a Compressor; .*SieveConfig\(compressor="):
        ps.Sieve(compressor=ps.CompressorConfig())  # type: ignore[arg-type]
    with pytest.raises(ps.ConfigError, match=r"CompressorConfig\(proxy=\.\.\.\)"):
        ps.Compressor(proxy=ps.ProxyConfig())  # type: ignore[arg-type]


def test_adapters_raise_config_error_for_bad_arguments() -> None:
    from promptsieve_openai import wrap_openai

    with pytest.raises(ps.ConfigError, match=r"openai\.OpenAI"):
        wrap_openai(object())  # type: ignore[type-var]
    from promptsieve_langchain import compress_messages

    with pytest.raises(ps.ConfigError):
        compress_messages(ratio=0.5)  # a ratio needs verify=False
