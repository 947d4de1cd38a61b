"""Verdict keys name a callable metric so that two metrics never share a verdict, and one
metric keeps its key across processes."""

from __future__ import annotations

import functools
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
