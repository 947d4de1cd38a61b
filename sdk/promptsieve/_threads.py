"""The sieve's threads: daemon pools, the door in front of the proxy, exit and fork hooks.

Three process-level facts shape this module:

* **Exit.** Comparison threads are daemon threads so that a target call that hangs never
  blocks exit. A daemon thread that is still inside onnxruntime while the interpreter
  finalises aborts the process (``terminate called without an active exception``, exit
  status 134). So every live sieve is closed by an :mod:`atexit` hook: in-flight
  comparisons get a bounded drain, the rest are abandoned (and counted), and the sieve's
  :class:`ComputeDoor` is shut and waited on, so no thread is inside the proxy by the time
  the interpreter tears down. Then :data:`RUNTIME_DOOR` shuts for everyone else. A daemon
  thread of the user's (a ``Compressor`` used from the user's own threads) that reaches the
  proxy after that gets no exception (a traceback on stderr): its call does not return, as
  the interpreter stops daemon threads wherever they are (:data:`EXIT_PARK_S`). The door
  covers every call into an extension that releases the GIL, tokenizers included: a daemon
  thread that takes the GIL back while the interpreter finalises is unwound by
  ``pthread_exit``, and the Rust of ``tokenizers`` and ``tiktoken`` (pyo3's ``catch_unwind``)
  catches that unwind and aborts (``FATAL: exception not rethrown``, exit status 134; seen in
  4 of 65 runs of a script whose own daemon threads compressed, on a loaded machine).
* **Fork.** A forked child inherits the pools' bookkeeping but none of their threads, and
  locks that may have been held mid-fork. :func:`os.register_at_fork` re-creates them in
  the child (``after_in_child``), so the child compresses and screens as the parent did.
  The child never destroys an onnxruntime session it inherited: the session's destructor
  waits on condition variables that the parent's pool threads were waiting on, threads the
  child does not have, so a child ending with a normal interpreter exit (``sys.exit``, as
  gunicorn's workers do) hung for good. :func:`open_session` tracks every session and the
  child pins the inherited ones (one reference more, never released). onnxruntime's own
  exit handlers (C++ static destructors, run by C ``exit()`` after the interpreter has
  finalised) wait on such a condition variable too, so a child that inherited a session ends
  with ``_exit(status)`` once the interpreter is done, as multiprocessing's children do
  (glibc's ``on_exit``, registered in the child so that it runs before them).
* **Daemon pools.** :class:`DaemonPool` is a small pool of daemon threads (the standard
  ``ThreadPoolExecutor`` joins its threads at exit, which a stuck target call would hang).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import ctypes
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from promptsieve._errors import PromptSieveError

__all__ = ["ComputeDoor", "DaemonPool", "SieveClosed", "open_session", "register"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Total seconds the exit hook waits for comparisons of all sieves before abandoning them.
#: (Each sieve's own ``SieveConfig.drain_timeout_s`` caps its share.)
EXIT_DRAIN_S = 10.0
#: Seconds to wait for threads already inside the proxy once the door is shut. A scoring
#: pass is bounded (windows of ≤ 512 tokens), so this is reached only if onnxruntime hangs.
DOOR_WAIT_S = 60.0
#: Once the exit hook has shut :data:`RUNTIME_DOOR`, a daemon thread that promptsieve did not
#: start (the user's, compressing) waits this long at the door instead of raising
#: :class:`SieveClosed`: the interpreter finalises meanwhile and its daemon threads stop
#: where they are, so the user's ``compress`` call ends without a traceback on stderr. Only
#: when exit takes longer (an atexit hook registered before promptsieve was imported that
#: joins such a thread) does the call raise :class:`SieveClosed` after all.
EXIT_PARK_S = 30.0


class SieveClosed(PromptSieveError):
    """The sieve was closed (or the process is exiting): nothing new is started."""


class ComputeDoor:
    """Counts threads inside the compressor (onnxruntime); once shut, none enters.

    ``with door:`` around every call into the proxy. :meth:`shut` makes later entries raise
    :class:`SieveClosed` and waits until the threads inside have left.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self._shut = False

    def __enter__(self) -> None:
        with self._cond:
            if self._shut:
                raise SieveClosed("the sieve is closed")
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._inside -= 1
            if self._inside == 0:
                self._cond.notify_all()

    @property
    def inside(self) -> int:
        with self._cond:
            return self._inside

    def shut(self, timeout: float | None) -> bool:
        """Refuse new entries; wait up to ``timeout`` s for the inside to empty (True if so)."""
        with self._cond:
            self._shut = True
            return self._cond.wait_for(lambda: self._inside == 0, timeout)

    def reset(self) -> None:
        """In a forked child: open, and nobody inside (the parent's threads do not exist)."""
        self._cond = threading.Condition()
        self._inside = 0
        self._shut = False


#: Marks the threads promptsieve starts (:class:`DaemonPool`, :func:`start_background`):
#: they handle :class:`SieveClosed`, and the exit hook waits for them, so they never park.
_OWN = threading.local()


class _RuntimeDoor(ComputeDoor):
    """:class:`ComputeDoor` shut only by the exit hook. Entering it after that raises
    :class:`SieveClosed` ("the process is exiting") in promptsieve's own threads and in
    non-daemon ones (the main thread, in a later atexit hook); a daemon thread of the
    user's waits :data:`EXIT_PARK_S` first, so that the interpreter ends it quietly."""

    def __enter__(self) -> None:
        try:
            super().__enter__()
        except SieveClosed:
            thread = threading.current_thread()
            if thread.daemon and not getattr(_OWN, "owned", False):
                threading.Event().wait(EXIT_PARK_S)  # the interpreter stops the thread here
            raise SieveClosed("the process is exiting") from None

    def native(self) -> AbstractContextManager[None]:
        """The door for a tokenizer call (``tokenizers``, ``tiktoken``: Rust that releases the
        GIL and holds nothing the exit hook closes). A daemon thread goes through the door as
        for onnxruntime; a non-daemon one passes straight, at exit too (the interpreter has
        joined every non-daemon thread but the main one before the exit hooks run, and
        never stops the main thread), so counting tokens in a later atexit hook still works.
        """
        if threading.current_thread().daemon:
            return self
        return contextlib.nullcontext()


#: Every onnxruntime session, run and proxy export in the process passes this door, whoever
#: runs it: a sieve's scoring, and work no sieve owns (a DemoCompressor's attribution thread).
#: The exit hook shuts it after closing the sieves, so no thread is inside onnxruntime (or
#: torch, exporting, or a Rust tokenizer: :meth:`_RuntimeDoor.native`) when the interpreter
#: finalises; a daemon thread caught there aborted the process (exit status 134). Entering
#: it after that raises :class:`SieveClosed`.
RUNTIME_DOOR = _RuntimeDoor()
#: Seconds the exit hook waits, once :data:`RUNTIME_DOOR` is shut, for the threads started by
#: :func:`start_background` to end. Their next proxy call raises, so one working with the
#: proxy ends at once; one waiting on something else (a download) is left behind.
BACKGROUND_JOIN_S = 5.0
_BACKGROUND: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
#: The onnxruntime sessions made in this process (and inherited, in a forked child).
_SESSIONS: weakref.WeakSet[Any] = weakref.WeakSet()


def open_session(make: Callable[[], _T]) -> _T:
    """``make()`` (an ``onnxruntime.InferenceSession``) inside :data:`RUNTIME_DOOR`, tracked
    so that a forked child pins it (see the module's docstring).

    Raises :class:`SieveClosed` once the exit hook has shut the door, and whatever ``make``
    raises."""
    with RUNTIME_DOOR:
        session = make()
    _SESSIONS.add(session)
    return session


def start_background(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a daemon thread for work no sieve owns (a one-off attribution). At interpreter
    exit it is joined after :data:`RUNTIME_DOOR` shuts, so it has left native code (the
    proxy, its tokenizer) before the interpreter finalises."""

    def run() -> None:
        _OWN.owned = True
        target()

    thread = threading.Thread(target=run, name=name, daemon=True)
    with _LIVE_LOCK:
        _BACKGROUND.add(thread)
    thread.start()
    return thread


class DaemonPool:
    """A small pool of daemon threads: a stuck target call never blocks exit."""

    def __init__(self, name: str, workers: int) -> None:
        self._name = name
        self._workers = workers
        self._reset()

    def _reset(self) -> None:
        self._queue: queue.SimpleQueue[tuple[cf.Future[Any], Callable[[], Any]]] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., _T], *args: Any) -> cf.Future[_T]:
        """Queue ``fn(*args)``; its future. Raises ``RuntimeError`` when no thread of the pool
        is alive and none can start (an OS thread limit; interpreter shutdown): the work is
        then cancelled, never run later. A pool with a live thread queues it behind that one.
        """
        fut: cf.Future[_T] = cf.Future()
        self._queue.put((fut, lambda: fn(*args)))
        try:
            self._grow()
        except RuntimeError:
            with self._lock:
                idle = not self._threads
            if idle:
                fut.cancel()  # a thread started later skips it
                raise
        return fut

    def _grow(self) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) < self._workers:
                t = threading.Thread(
                    target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                t.start()  # RuntimeError: no new thread now
                self._threads.append(t)

    def _run(self) -> None:
        _OWN.owned = True
        while True:
            fut, fn = self._queue.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def after_fork(self) -> None:
        """In a forked child: none of the parent's threads exist; start from scratch.

        Work queued in the parent is dropped with the old queue: its futures belong to the
        parent's bookkeeping, which the owner resets too.
        """
        self._reset()


class _Closable(Protocol):
    def _close_at_exit(self, timeout: float) -> None: ...
    def _after_fork(self) -> None: ...


_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def register(obj: _Closable) -> None:
    """Close ``obj`` at interpreter exit and reset it in forked children."""
    with _LIVE_LOCK:
        _LIVE.add(obj)


def _live() -> list[_Closable]:
    with _LIVE_LOCK:
        return list(_LIVE)


def _close_all_at_exit() -> None:
    deadline = time.monotonic() + EXIT_DRAIN_S
    for obj in _live():
        try:
            obj._close_at_exit(max(0.0, deadline - time.monotonic()))
        except Exception:  # never fail the user's exit
            log.debug("promptsieve: closing at exit failed", exc_info=True)
    if not RUNTIME_DOOR.shut(DOOR_WAIT_S):
        log.warning("promptsieve: a proxy run was still going at exit after %.0f s", DOOR_WAIT_S)
    deadline = time.monotonic() + BACKGROUND_JOIN_S
    with _LIVE_LOCK:
        background = list(_BACKGROUND)
    for thread in background:
        if thread.ident is not None:  # started (it joins the set just before)
            thread.join(max(0.0, deadline - time.monotonic()))


def _after_fork_in_child() -> None:
    global _LIVE_LOCK
    _LIVE_LOCK = threading.Lock()  # it may have been held by another thread at fork time
    RUNTIME_DOOR.reset()
    _BACKGROUND.clear()  # the parent's threads do not exist here
    try:
        inherited = list(_SESSIONS)
        for session in inherited:  # never destroyed here: see the module's docstring
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(session))
        if inherited:
            _skip_native_exit_handlers()
    except Exception:  # the reset below must run whatever happens here
        log.debug("promptsieve: pinning inherited sessions failed", exc_info=True)
    for obj in list(_LIVE):
        try:
            obj._after_fork()
        except Exception:
            log.debug("promptsieve: resetting after fork failed", exc_info=True)


def _skip_native_exit_handlers() -> None:
    """Make C ``exit(status)`` call ``_exit(status)`` before the handlers registered so far
    (onnxruntime's static destructors). The interpreter has finalised by then (atexit hooks
    run, Python's streams flushed). ``on_exit`` passes ``(status, arg)``; ``_exit`` reads
    the first and ignores the second (both x86-64 and AArch64 pass them in registers).
    glibc only: elsewhere (musl, macOS) nothing is registered."""
    try:
        libc = ctypes.CDLL(None)
        on_exit, exit_now = libc.on_exit, libc._exit
    except (AttributeError, OSError):
        return
    on_exit.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    if on_exit(ctypes.cast(exit_now, ctypes.c_void_p), None) != 0:
        log.debug("promptsieve: on_exit failed; a forked child may hang at exit")


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
