"""SIGTERM / SIGHUP: end every open run Crashed, flush telemetry, then let the signal do what it would have.

Kubernetes, systemd and Docker stop a job with SIGTERM. Python's default is to die at once: open spans never
end and queued telemetry is lost. With otelflow's handler (installed from the main thread when the first flow
run starts, unless ``OTELFLOW_HANDLE_SIGNALS=false``, and only over the default or a Python handler, never
over ``SIG_IGN``):

1. the signal raises :class:`~otelflow.exceptions.TerminationSignal` in the main thread (a ``BaseException``,
   so ``except Exception`` cannot swallow it), where the flow run is;
2. the engine ends that run and every other open run Crashed with Prefect's message ("Execution was aborted by
   a termination signal.") and does not wait for task runs still in flight;
3. when the exception leaves the program, telemetry is flushed (bounded by
   ``OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS``), the previous handler is restored and the signal re-delivered: the
   process exits with the usual status (143 for SIGTERM), or the application's own handler runs.

A signal arriving while no run is open is handed to the previous handler; when that is the default action (death),
telemetry is flushed first, as in step 3, so the runs that ended just before are not lost with the process.

Where the exception lands matters. A Python signal handler runs between two bytecodes of whatever the main thread
is doing, and an exception raised there leaves that code half done. In the user's code that is what an interrupt
means; in a few places it breaks what must still work while the process stops, and loses the run's record:

- an import: the import lock stays held, and the export thread, whose next import waits on it, never writes the
  spool again (the flow's span and last log lines were lost this way);
- the telemetry and logging pipelines (a log record half emitted, a queue's lock or counters half updated);
- a lock half taken or half given back (``Condition.__enter__`` returns with the lock held and no ``with`` to
  release it; ``Condition.wait`` between releasing its lock and its ``try``);
- the engine's own bookkeeping of a run (a span claimed but not yet ended).

There the exception is deferred: the signal is delivered to the main thread again every couple of milliseconds until
it lands somewhere else (:func:`safe_to_interrupt`), which is at most a few bytecodes or one import later. After
``DEFER_LIMIT_S`` it is raised wherever it lands, so a process stuck in such a place still stops.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType, TracebackType
from typing import Any

from otelflow.exceptions import TerminationSignal

__all__ = ["install", "interruptible", "put_off", "safe_to_interrupt", "terminating"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)
_previous: dict[int, Any] = {}
_installed = False
_lock = threading.Lock()
_has_open_runs: Callable[[], bool] = lambda: False  # noqa: E731 - replaced by install()
_terminating: int | None = None
_installed_pid = 0
_handling = False  # True while _handle runs (in the main thread)
_deferred_since: float | None = None  # when a signal that must raise was first put off (None: none is)

# Modules where an exception raised at an arbitrary bytecode breaks what the stopping process still needs (see the
# module's docstring). ``otelflow.engine`` is one, except for the functions it marks with :func:`interruptible`.
_UNSAFE_MODULES = (
    "importlib._bootstrap", "importlib._bootstrap_external", "logging", "opentelemetry", "structlog",
    "otelflow.engine", "otelflow.telemetry", "otelflow.logging", "otelflow._internal.export",
    "otelflow._internal.spool", "otelflow._internal.runs.redact",
)
_interruptible: set[CodeType] = set()
_unsafe_by_module: dict[str, bool] = {}
DEFER_LIMIT_S = 3.0
REDELIVER_EVERY_S = 0.002


def interruptible(*functions: Callable[..., Any]) -> None:
    """Mark functions of an unsafe module as places where a termination may land: they call the user's code
    (a run's body, its hooks) or wait (a retry's delay, task runs in flight), and end the run on any exception."""
    _interruptible.update(f.__code__ for f in functions)


def safe_to_interrupt(frame: FrameType | None) -> bool:
    """Whether raising :class:`TerminationSignal` in ``frame`` (where a signal handler found the main thread)
    leaves nothing the stopping process needs half done.

    Walks from the interrupted frame outwards: an :func:`interruptible` function of the engine ends the walk (safe);
    a frame of an unsafe module ends it (unsafe); the innermost frame, in ``threading``, is safe only blocked in a
    lock's ``acquire`` (a wait, which its ``try``/``finally`` undoes); any other frame is looked through.
    """
    innermost = True
    while frame is not None:
        code = frame.f_code
        if code in _interruptible:
            return True
        module = frame.f_globals.get("__name__", "")
        if not isinstance(module, str):
            module = ""
        if module == "threading":
            if innermost and ".acquire(" not in linecache.getline(code.co_filename, frame.f_lineno):
                return False
        elif _is_unsafe_module(module):
            return False
        innermost = False
        frame = frame.f_back
    return True


def put_off(frame: FrameType | None, since: float | None) -> float | None:
    """For an exception about to be raised in ``frame`` by a signal handler (a termination, a run's timeout): None
    when it may land here (:func:`safe_to_interrupt`, or it has been put off for ``DEFER_LIMIT_S`` already); else
    the time it was first put off (``since``, or now), to be passed back on the next try."""
    if safe_to_interrupt(frame):
        return None
    now = time.monotonic()
    if since is None:
        return now
    return since if now - since < DEFER_LIMIT_S else None


def _is_unsafe_module(module: str) -> bool:
    unsafe = _unsafe_by_module.get(module)
    if unsafe is None:
        unsafe = _unsafe_by_module[module] = any(
            module == name or module.startswith(name + ".") for name in _UNSAFE_MODULES)
    return unsafe


def install(has_open_runs: Callable[[], bool]) -> None:
    """Install the handlers once, from the main thread (a no-op elsewhere or when disabled by settings)."""
    global _installed, _has_open_runs, _installed_pid
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    from otelflow.settings import get_settings

    if not get_settings().handle_signals:
        return
    with _lock:
        if _installed:
            return
        _installed = True
        _installed_pid = os.getpid()
        _has_open_runs = has_open_runs
        for signum in _SIGNALS:
            current = signal.getsignal(signum)
            if current is signal.SIG_IGN or current is None:
                continue  # the application chose to ignore it (or it was set outside Python): leave it
            _previous[signum] = current
            signal.signal(signum, _handle)
        if _previous:
            previous_hook = sys.excepthook

            def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
                if isinstance(exc, TerminationSignal):
                    _finish(exc.signal)
                previous_hook(exc_type, exc, tb)

            sys.excepthook = excepthook


def terminating() -> int | None:
    """The signal that is stopping the process (raised as :class:`TerminationSignal`), or None."""
    return _terminating


def _handle(signum: int, frame: FrameType | None) -> None:
    global _handling
    if _handling:
        # A redelivery arriving while this handler runs (starting the redelivery thread waits for it): the call
        # below it decides. Let through, it would see this handler's frames, not where the main thread really is.
        return
    _handling = True
    try:
        _decide(signum, frame)
    finally:
        _handling = False


def _decide(signum: int, frame: FrameType | None) -> None:
    global _terminating, _deferred_since
    if _terminating is not None:
        return  # already on its way out (a re-delivery that crossed the exception, or the same signal again)
    since = put_off(frame, _deferred_since)
    if since is not None:
        if _deferred_since is None:
            _deferred_since = since
            threading.Thread(target=_redeliver, args=(signum,), name="otelflow-signal", daemon=True).start()
        return
    _deferred_since = None
    if _has_open_runs():
        # Remembered: in an async program the exception leaves the event loop, and the runs learn of it only as a
        # cancellation of their task.
        _terminating = signum
        raise TerminationSignal(signum)
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # no run to end: the application's handler, as if otelflow were not there
        return
    if os.getpid() != _installed_pid:
        _kill(signum)  # a forked child (a Pool worker being terminated) wrote its telemetry through as it went
        return
    # No run to end, and the signal's default action kills: what the ended runs left in the queues goes out first.
    _terminating = signum
    _finish(signum)


def _redeliver(signum: int) -> None:
    """Deliver a put-off signal to the main thread again, until it has landed (past the limit, the handler raises
    it wherever it lands; the bound only matters if the main thread is gone)."""
    main = threading.main_thread().ident
    stop_at = time.monotonic() + DEFER_LIMIT_S + 1.0
    while _deferred_since is not None and _terminating is None and main is not None and time.monotonic() < stop_at:
        time.sleep(REDELIVER_EVERY_S)
        if _deferred_since is None or _terminating is not None:
            return
        with contextlib.suppress(OSError, ValueError):
            signal.pthread_kill(main, signum)


def _finish(signum: int) -> None:
    """The TerminationSignal left the program: flush, then let the signal take its usual effect."""
    from otelflow import telemetry

    with contextlib.suppress(Exception):
        telemetry.shutdown()
    previous = _previous.get(signum, signal.SIG_DFL)
    if not callable(previous):
        _kill(signum)
        return
    signal.signal(signum, previous)
    try:
        previous(signum, None)
    except SystemExit as exc:  # the application's handler asked to exit: do so, with its status
        code = exc.code
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _kill(signum: int) -> None:
    """Die of ``signum`` with its default action (exit status 128 + signum, as without otelflow)."""
    signal.signal(signum, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signum)
