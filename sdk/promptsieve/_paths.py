"""Where promptsieve keeps its caches (proxy exports, verdicts, the local target's model)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$PROMPTSIEVE_CACHE_DIR`` if set, else the platform's user cache directory."""
    env = os.environ.get("PROMPTSIEVE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("promptsieve"))
