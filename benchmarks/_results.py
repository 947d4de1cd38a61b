"""Where a target-free benchmark writes its results: ``<out>.json`` and ``<out>.md``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["write_results"]


def write_results(out: str | Path, data: Mapping[str, Any], markdown: str) -> Path:
    """Write ``data`` as ``<out>.json`` and ``markdown`` as ``<out>.md`` (folders made as
    needed); returns the JSON path. A ``.json`` or ``.md`` ending of ``out`` is dropped
    first; any other dot stays part of the name."""
    path = Path(out)
    if path.suffix in (".json", ".md"):
        path = path.with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    # appended, not with_suffix: "relevance_fidelity_1.5b" keeps its ".5b"
    path.parent.joinpath(path.name + ".md").write_text(markdown, encoding="utf-8")
    js = path.parent / (path.name + ".json")
    js.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return js
