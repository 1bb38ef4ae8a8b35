"""Protecting runs from the application's span and log processors: one that raises is caught, counted, reported.

An application processor that raises in ``on_start``/``on_end``/``on_emit`` would otherwise propagate into
``span.end()`` or ``logger.emit()`` inside a run, and stop the SDK's loop over the processors that follow it.
:func:`protect` gives a provider's multi-processor a subclass that catches each processor's exception, reports
the first of each processor and method on stderr, and counts the rest (``otelflow.telemetry.processor_errors()``).

This is the one place otelflow reaches into the SDK's internals (a provider's multi-processor attribute): the
SDK offers no public hook for it. Only the SDK's own multi-processor classes are swapped (the subclasses add
behaviour, no state), in place so that tracers already made keep it; anything else is left alone.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["processor_errors", "protect"]

_processor_errors: dict[tuple[str, str], dict[str, Any]] = {}
_processor_errors_lock = threading.Lock()


def _processor_failed(processor: Any, method: str, exc: BaseException) -> None:
    """Count a processor's exception; the first one of each processor/method is reported on stderr."""
    name = f"{type(processor).__module__}.{type(processor).__qualname__}"
    with _processor_errors_lock:
        entry = _processor_errors.get((name, method))
        first = entry is None
        if entry is None:
            entry = _processor_errors[(name, method)] = {"processor": name, "method": method, "errors": 0,
                                                          "first_error": f"{type(exc).__name__}: {exc}"}
        entry["errors"] += 1
    if first:
        with contextlib.suppress(Exception):
            print(
                f"otelflow: telemetry processor {name} raised in {method} ({type(exc).__name__}: {exc}); "
                "ignored, the run is unaffected (further errors are counted in otelflow.telemetry.stats()).",
                file=sys.stderr,
            )


def processor_errors() -> list[dict[str, Any]]:
    """Exceptions raised by span/log processors and swallowed to protect runs: one entry per processor/method."""
    with _processor_errors_lock:
        return [dict(entry) for entry in _processor_errors.values()]


def _safe_call(processor: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return getattr(processor, method)(*args, **kwargs)
    except Exception as exc:
        _processor_failed(processor, method, exc)
        return None


def _shutdown_each(processors: Sequence[Any]) -> None:
    """Shut every processor down; one raising is reported and the others still shut down."""
    for processor in processors:
        _safe_call(processor, "shutdown")


def _safe_flush(multi: Any, flush: Callable[[int], Any], timeout_millis: int) -> bool:
    """A safe multi-processor's ``force_flush``: the SDK's own, with a processor's exception reported, not raised."""
    try:
        return bool(flush(timeout_millis))
    except Exception as exc:
        _processor_failed(multi, "force_flush", exc)
        return False


@functools.cache  # one class each: protect swaps the SDK's instances to it
def _safe_span_multi() -> type:
    from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor

    class SafeMultiSpanProcessor(SynchronousMultiSpanProcessor):
        """The SDK's sequential multi-processor, but one processor raising never reaches the run."""

        # on_start/on_end run for every span: the loop is inlined rather than calling _safe_call.
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            for sp in self._span_processors:
                try:
                    sp.on_start(span, parent_context=parent_context)
                except Exception as exc:
                    _processor_failed(sp, "on_start", exc)

        def _on_ending(self, span: Any) -> None:
            for sp in self._span_processors:
                try:
                    sp._on_ending(span)
                except Exception as exc:
                    _processor_failed(sp, "_on_ending", exc)

        def on_end(self, span: Any) -> None:
            for sp in self._span_processors:
                try:
                    sp.on_end(span)
                except Exception as exc:
                    _processor_failed(sp, "on_end", exc)

        def shutdown(self) -> None:
            _shutdown_each(self._span_processors)

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return _safe_flush(self, super().force_flush, timeout_millis)

    return SafeMultiSpanProcessor


@functools.cache  # one class each: protect swaps the SDK's instances to it
def _safe_concurrent_span_multi() -> type:
    from opentelemetry.sdk.trace import ConcurrentMultiSpanProcessor

    class SafeConcurrentMultiSpanProcessor(ConcurrentMultiSpanProcessor):
        """The SDK's thread-pool multi-processor, but one processor raising never reaches the run."""

        def _submit_and_await(self, func: Any, *args: Any, **kwargs: Any) -> None:
            futures = [(sp, self._executor.submit(func(sp), *args, **kwargs)) for sp in self._span_processors]
            for sp, future in futures:
                try:
                    future.result()
                except Exception as exc:
                    _processor_failed(sp, getattr(func(sp), "__name__", "call"), exc)

    return SafeConcurrentMultiSpanProcessor


@functools.cache  # one class each: protect swaps the SDK's instances to it
def _safe_log_multi() -> type:
    from opentelemetry.sdk._logs._internal import SynchronousMultiLogRecordProcessor

    class SafeMultiLogRecordProcessor(SynchronousMultiLogRecordProcessor):
        """The SDK's sequential multi log processor, but one processor raising never reaches the caller."""

        def on_emit(self, log_record: Any) -> None:
            for lp in self._log_record_processors:
                try:
                    lp.on_emit(log_record)
                except Exception as exc:
                    _processor_failed(lp, "on_emit", exc)

        def shutdown(self) -> None:
            _shutdown_each(self._log_record_processors)

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return _safe_flush(self, super().force_flush, timeout_millis)

    return SafeMultiLogRecordProcessor


def protect(provider: Any) -> None:
    """Make a provider's multi-processor catch per-processor exceptions (in place: tracers already made keep it).

    Only the SDK's own multi-processors are swapped (their subclasses add behaviour, no state); a custom one is
    left alone.
    """
    with contextlib.suppress(Exception):
        from opentelemetry.sdk._logs._internal import SynchronousMultiLogRecordProcessor
        from opentelemetry.sdk.trace import ConcurrentMultiSpanProcessor, SynchronousMultiSpanProcessor

        span_multi = getattr(provider, "_active_span_processor", None)
        if type(span_multi) is SynchronousMultiSpanProcessor:
            span_multi.__class__ = _safe_span_multi()
        elif type(span_multi) is ConcurrentMultiSpanProcessor:
            span_multi.__class__ = _safe_concurrent_span_multi()
        log_multi = getattr(provider, "_multi_log_record_processor", None)
        if type(log_multi) is SynchronousMultiLogRecordProcessor:
            log_multi.__class__ = _safe_log_multi()
