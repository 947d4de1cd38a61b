"""The core's import graph, read with ``ast`` from the source (nothing is imported).

* The core (``sdk/promptsieve``) imports no adapter, no vendor SDK and no benchmark, not
  even lazily inside a function: optional CLI subcommands are named as strings
  ("module:function") and imported by the CLI's loader.
* Module-level imports between core modules form no circle (imports under
  ``TYPE_CHECKING`` and inside functions do not run at import time and are left out).
* Adapters import only the public ``promptsieve`` API and the modules it documents, never an
  underscore-private core module other than ``promptsieve._errors``' helpers and
  ``promptsieve._patching`` (the client method patching the SDK-client adapters share).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "sdk" / "promptsieve"
ADAPTERS = ROOT / "adapters"

#: Top-level packages the core must never import.
FORBIDDEN = {
    "openai",
    "anthropic",
    "langchain",
    "langchain_core",
    "litellm",
    "benchmarks",
    "promptsieve_bench",
}


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


Found = tuple[str, int]


def _imports(tree: ast.AST, module: str, *, top_level_only: bool) -> Iterator[Found]:
    """(imported module, line) for every import; with ``top_level_only``, only those that
    run when the module is imported (not in functions, not under TYPE_CHECKING)."""

    def visit(node: ast.AST, in_function: bool, in_type_checking: bool) -> Iterator[Found]:
        for child in ast.iter_child_nodes(node):
            fn = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            tc = in_type_checking or (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            )
            skip = top_level_only and (fn or tc)
            if isinstance(child, ast.Import) and not skip:
                for alias in child.names:
                    yield alias.name, child.lineno
            elif isinstance(child, ast.ImportFrom) and not skip:
                if child.level:  # relative: resolve against the package
                    pkg = module.split(".")
                    base = ".".join(pkg[: len(pkg) - child.level + 1])
                    name = f"{base}.{child.module}" if child.module else base
                else:
                    name = child.module or ""
                yield name, child.lineno
                for alias in child.names:  # ``from promptsieve import fidelity``
                    yield f"{name}.{alias.name}", child.lineno
            yield from visit(child, fn, tc)

    yield from visit(tree, False, False)


def _core_modules() -> dict[str, ast.AST]:
    return {
        _module_name(p, CORE.parent): ast.parse(p.read_text(encoding="utf-8"))
        for p in sorted(CORE.rglob("*.py"))
    }


def test_core_imports_no_adapter_vendor_sdk_or_benchmark() -> None:
    bad: list[str] = []
    for module, tree in _core_modules().items():
        for name, line in _imports(tree, module, top_level_only=False):
            top = name.split(".")[0]
            if top in FORBIDDEN or (top.startswith("promptsieve_") and top != "promptsieve"):
                bad.append(f"{module}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_no_import_circles_in_the_core() -> None:
    modules = _core_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, tree in modules.items():
        for name, _line in _imports(tree, module, top_level_only=True):
            # "a.b.c" may name a module or a name in module "a.b": take the longest module
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                graph[module].add(name)
        # importing a submodule runs its package's __init__ first
        parent = module.rpartition(".")[0]
        if parent in modules and parent != module:
            graph[module].add(parent)

    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                # a package importing its own submodules is how packages work
                if not all(c.startswith(cycle[0] + ".") or c == cycle[0] for c in cycle):
                    cycles.append(cycle)
            elif state.get(nxt) is None:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_adapters_use_the_public_api() -> None:
    """Adapters import ``promptsieve`` names, not the sieve's private modules."""
    private_ok = {
        "promptsieve._errors",  # missing_extra, for the import-time message
        "promptsieve._patching",  # the client method patching the SDK-client adapters share
        "promptsieve._cli_errors",  # `promptsieve demo` prints usage errors as the CLI does
    }
    bad: list[str] = []
    for path in sorted(ADAPTERS.rglob("*.py")):
        module = _module_name(path, ADAPTERS)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name, line in _imports(tree, module, top_level_only=False):
            parts = name.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_")]
            if parts[0] != "promptsieve" or not private:
                continue
            # the first private part at any depth (``promptsieve.proxy._x`` too)
            if ".".join(parts[: private[0] + 1]) not in private_ok:
                bad.append(f"{module}:{line} imports {name}")
    assert not bad, "\n".join(bad)
