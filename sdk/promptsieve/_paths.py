"""Where promptsieve keeps its caches (proxy exports, verdicts, the local target's model), and
the up-front checks of paths it will write."""

from __future__ import annotations

import os
from pathlib import Path

from promptsieve._errors import ConfigError

CACHE_DIR_ENV = "PROMPTSIEVE_CACHE_DIR"


def cache_dir() -> Path:
    """``$PROMPTSIEVE_CACHE_DIR`` if set, else the platform's user cache directory.

    Raises :class:`ConfigError` when the path (or the nearest part of it that exists) is not
    a folder, e.g. the variable names a regular file: nothing could be cached under it."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        _check_folder(path, f"${CACHE_DIR_ENV}", "point it at a folder or unset it")
        return path
    import platformdirs

    path = Path(platformdirs.user_cache_dir("promptsieve"))
    _check_folder(path, "the user cache directory", f"move it away or set ${CACHE_DIR_ENV}")
    return path


def existing_ancestor(path: Path) -> Path | None:
    """``path`` itself or its nearest ancestor that exists (None: none does). Raises the
    ``OSError`` of a path that cannot be examined (a folder without search permission)."""
    for part in (path, *path.parents):
        if part.exists():
            return part
    return None


def _check_folder(path: Path, origin: str, fix: str) -> None:
    """ConfigError when ``path``, or its nearest existing ancestor, is not a folder."""
    try:
        part = existing_ancestor(path)
        if part is None or part.is_dir():
            return
    except OSError:  # unreadable: let the caller's own I/O report it
        return
    where = "" if part == path else f" ({part} is not a folder)"
    raise ConfigError(f"{origin} is {str(path)!r}, which is not a folder{where}; {fix}")


def unwritable(path: Path, what: str) -> str | None:
    """Why the file ``path`` cannot be written, as a message naming it by ``what`` (e.g. a
    CLI flag); None when it can, as far as can be told without writing. A path the system
    refuses to examine (a name too long, a folder without search permission) is reported
    with the system's reason."""
    try:
        if path.is_dir():
            return f"cannot write {what} {path}: it is a folder"
        parent = path.parent
        if not parent.is_dir():
            return f"cannot write {what} {path}: {parent} is not a folder"
        if path.exists():
            if not os.access(path, os.W_OK):
                return f"cannot write {what} {path}: permission denied"
        elif not os.access(parent, os.W_OK | os.X_OK):
            return f"cannot write {what} {path}: {parent} is not writable"
    except OSError as exc:
        return f"cannot write {what} {path}: {exc.strerror or exc}"
    return None
