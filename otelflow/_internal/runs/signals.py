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

A signal arriving while no run is open is handed straight to the previous handler.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from otelflow.exceptions import TerminationSignal

__all__ = ["install", "terminating"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)
_previous: dict[int, Any] = {}
_installed = False
_lock = threading.Lock()
_has_open_runs: Callable[[], bool] = lambda: False  # noqa: E731 - replaced by install()
_terminating: int | None = None


def install(has_open_runs: Callable[[], bool]) -> None:
    """Install the handlers once, from the main thread (a no-op elsewhere or when disabled by settings)."""
    global _installed, _has_open_runs
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    from otelflow.settings import get_settings

    if not get_settings().handle_signals:
        return
    with _lock:
        if _installed:
            return
        _installed = True
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
    global _terminating
    if _has_open_runs():
        # Remembered: in an async program the exception leaves the event loop, and the runs learn of it only as a
        # cancellation of their task.
        _terminating = signum
        raise TerminationSignal(signum)
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # no run to end: the application's handler, as if otelflow were not there
        return
    _kill(signum)


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
