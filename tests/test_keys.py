"""Verdict keys name a callable metric so that two metrics never share a verdict, and one
metric keeps its key across processes."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from promptsieve.fidelity import settings_key
from promptsieve.fidelity.keys import metric_name


def exact(a: object, b: object) -> bool:
    return a == b


def _threshold(t: float):  # type: ignore[no-untyped-def]
    return lambda a, b: abs(len(str(a)) - len(str(b))) <= t


class _Model:
    def similar(self, a: object, b: object) -> bool:
        return a == b


def _closing_over(model: _Model):  # type: ignore[no-untyped-def]
    def metric(a: object, b: object) -> bool:
        return model.similar(a, b)

    return metric


def test_module_level_functions_keep_their_plain_name() -> None:
    assert metric_name(exact) == f"{__name__}.exact"
    assert metric_name(functools.partial(exact)) == f"{__name__}.exact(*(), **{{}})"


def test_two_lambdas_of_one_module_are_two_metrics() -> None:
    loose = lambda a, b: str(a).lower() == str(b).lower()  # noqa: E731
    strict = lambda a, b: a == b  # noqa: E731
    assert metric_name(loose) != metric_name(strict)
    assert metric_name(loose).startswith(f"{__name__}.test_two_lambdas_of_one_module_are_two")
    assert settings_key(metric=loose) != settings_key(metric=strict)
    # closures of one factory: told apart by what they close over, equal when that is equal
    assert metric_name(_threshold(3)) != metric_name(_threshold(5))
    assert metric_name(_threshold(3)) == metric_name(_threshold(3))


def test_a_closure_over_an_object_keeps_its_key_across_processes() -> None:
    """A nested metric closing over a model object is named by the object's type, not its
    address, so another process (another worker, a restart) finds the same verdict."""
    here = metric_name(_closing_over(_Model()))
    assert here == metric_name(_closing_over(_Model()))
    code = textwrap.dedent(
        """
        import importlib, sys
        sys.path.insert(0, sys.argv[1])
        mod = importlib.import_module(sys.argv[2])
        from promptsieve.fidelity.keys import metric_name
        print(metric_name(mod._closing_over(mod._Model())))
        """
    )
    root = Path(__file__).parents[__name__.count(".")]  # where this module imports from
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), __name__],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == here


def test_defaults_nested_closures_and_stable_reprs_tell_metrics_apart() -> None:
    """What a metric computes with is in its key: default arguments, what a closed-over
    function closes over, objects with a stable repr (a regex, a builtin)."""
    import re

    def within(t: int):  # type: ignore[no-untyped-def]
        ok = lambda d: d <= t  # noqa: E731
        return lambda a, b: ok(abs(len(str(a)) - len(str(b))))

    def matching(pattern: re.Pattern[str]):  # type: ignore[no-untyped-def]
        return lambda a, b: bool(pattern.search(str(a))) == bool(pattern.search(str(b)))

    def normalised(fn):  # type: ignore[no-untyped-def]
        return lambda a, b: fn(str(a)) == fn(str(b))

    pairs = [
        (lambda a, b, t=1: a == b, lambda a, b, t=50: a == b),
        (lambda a, b, *, t=1: a == b, lambda a, b, *, t=50: a == b),
        (within(1), within(50)),
        (matching(re.compile(r"\d")), matching(re.compile("yes|no"))),
        (normalised(str.lower), normalised(str.strip)),
    ]
    for one, other in pairs:
        assert metric_name(one) != metric_name(other)
    assert metric_name(within(1)) == metric_name(within(1))


def test_a_metric_key_is_computed_once_and_is_the_same_under_any_hash_seed() -> None:
    """A set literal's order varies with PYTHONHASHSEED, and a closed-over cache fills up as
    the metric runs: neither may change the key."""
    memo: dict[str, bool] = {}

    def cached(a: object, b: object) -> bool:
        return memo.setdefault(f"{a}|{b}", str(a) == str(b))

    first = metric_name(cached)
    cached("x", "y")
    assert metric_name(cached) == first
    code = (
        "from promptsieve.fidelity.keys import metric_name\n"
        "print(metric_name(lambda a, b: str(a).strip() in {'yes', 'no', 'maybe', 'later'}))\n"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout.split("#")[1]
        for seed in (0, 1, 2, 3)
    }
    assert len(seen) == 1
