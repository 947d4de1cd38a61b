"""A real redis-server on 127.0.0.1 for the store tests (``apt-get install -y redis-server``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from _ci import require


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_exe() -> str:
    """The redis-server executable; skips (fails under CI) when it is not on PATH."""
    return require(
        shutil.which("redis-server"),
        "redis-server is not on PATH (apt-get install -y redis-server)",
    )


class RedisServer:
    """A redis-server on a free port of 127.0.0.1, restartable on that port.

    ``persistent``: an append-only file in ``workdir`` fsynced on every write (what a restart
    reads back); otherwise nothing is written to disk.
    """

    def __init__(self, exe: str, workdir: Path, *, persistent: bool) -> None:
        self.exe, self.workdir, self.port = exe, workdir, free_port()
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait until it answers PING (the test fails if it does not)."""
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        else:
            args += ["--appendonly", "no", "--save", ""]
        self.proc = proc = subprocess.Popen(
            [self.exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        self.stop()
                        pytest.fail(f"redis-server did not start on port {self.port}")
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
