"""Run ``llama_cpp.server`` for :class:`promptsieve.local.LocalTarget`, bound to its parent.

``python .../promptsieve/_server_launcher.py PARENT_PID ARGS...`` (run by path, so that the
server process does not import promptsieve and its dependencies) runs the server with
``ARGS`` and exits as soon as the process ``PARENT_PID`` is gone: a parent killed by a signal that
runs no clean-up (SIGKILL, or SIGTERM's default action) would otherwise leave a model server
holding its cores and memory. A parent's death re-parents the server, which a watcher
thread sees in ``os.getppid()`` within a second (POSIX); where the platform does not
re-parent, :meth:`LocalTarget.stop` and its finaliser remain the way the server ends. A
parent that forks and exits hands the server to no one: it ends too.
"""

from __future__ import annotations

import os
import sys

# run by path, this file's folder heads sys.path: its modules must not shadow the server's
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import runpy
import threading
import time

POLL_S = 0.5


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(0)  # nothing to flush: the server keeps no state


def main(argv: list[str]) -> None:
    parent = int(argv[0])
    threading.Thread(target=_watch, args=(parent,), name="parent-watch", daemon=True).start()
    sys.argv = ["llama_cpp.server", *argv[1:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
