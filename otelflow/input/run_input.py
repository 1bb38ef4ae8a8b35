"""Typed input for waiting flow runs: ``send_input`` from anywhere, ``receive_input`` inside the flow.

Waiting semantics (pinned down here, used by every entry point):

- ``receive_input(...)`` returns a :class:`GetInputHandler` at once; it never blocks by itself.
- Iterating it (``for x in handler``, ``handler.next()``, ``async for``, ``await handler.anext()``)
  yields the flow run's inputs whose key starts with the key prefix, oldest first, each once. When none
  is there yet, the call blocks until one arrives or ``timeout`` seconds pass (``None``: no limit).
  On timeout: ``next()`` raises ``TimeoutError``; iteration stops (``StopIteration``), or raises
  ``TimeoutError`` with ``raise_timeout_error=True`` (Prefect's rules).
- Reading it like a dict (``handler.get("decision")``, ``handler["decision"]``, ``handler.keys()`` --
  the seed's API) waits, the first time, for the first input the same way, then reads that input's
  fields. On timeout without ``raise_timeout_error``: ``get`` returns its default, ``keys()`` is empty,
  ``[key]`` raises ``KeyError``; with ``raise_timeout_error=True`` the first access raises ``TimeoutError``.
- While it blocks inside the flow run it waits for, the run is Paused: ``flow_run.state`` is ``Paused``
  and the flow span gets a ``Paused`` event, then ``Resumed`` (state ``Running``) when the wait ends. Each
  received input adds a ``run_input.received`` event (key and sender; the value only with
  ``OTELFLOW_RECORD_PARAMETER_VALUES=true``).
- Wake-up: Redis pushes new inputs to the waiter at once; sqlite notices them within 25 ms.
  ``poll_interval`` caps the time between two reads of the store (a safety net, not the latency).
- A value that does not validate against ``input_type`` raises :class:`InvalidRunInput` naming its key
  and sender; it is not dropped silently (the handler moves past it, so a caller may catch and go on).

Example::

    @flow
    def approval_workflow(document_id: str):
        approval_input = receive_input(input_type=dict, timeout=3600, key_prefix="approval")
        if approval_input.get("decision") == "approved":
            ...

    # another process, possibly another machine (same OTELFLOW_STORE_URL):
    await send_input(run_input={"decision": "approved"}, flow_run_id=flow_run_id,
                     sender="manager@company.com", key_prefix="approval")
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import inspect
import json
import uuid
from collections.abc import Generator, Iterable, Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar, cast

import pydantic
from opentelemetry import trace

from otelflow import semconv
from otelflow.context import FlowRunContext
from otelflow.input.actions import (
    SENDER_PREFIX,
    FlowRunInput,
    InvalidRunInput,
    _write,
    create_flow_run_input,
    ensure_flow_run_id,
    filter_flow_run_input,
    input_namespace,
)
from otelflow.stores import get_store, wait_for

__all__ = [
    "AutomaticRunInput",
    "GetInputHandler",
    "Keyset",
    "RunInput",
    "RunInputMetadata",
    "asend_input",
    "keyset_from_base_key",
    "keyset_from_type",
    "receive_input",
    "run_input_subclass_from_type",
    "send_input",
]

T = TypeVar("T")
R = TypeVar("R", bound="RunInput")

_ROLES = ("description", "response", "schema")


class Keyset:
    """A set of input keys. Built by :func:`keyset_from_base_key`, it also names each key's role:
    ``keyset["response"]``, ``keyset["schema"]``, ``keyset["description"]`` (Prefect's keyset dict).

    Example: ``"paused-1-response" in keyset_from_base_key("paused-1")``.
    """

    def __init__(self, keys: Iterable[str] = (), roles: Mapping[str, str] | None = None) -> None:
        self.roles: dict[str, str] = dict(roles or {})
        self.keys: set[str] = set(keys) | set(self.roles.values())

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def __getitem__(self, role: str) -> str:
        try:
            return self.roles[role]
        except KeyError:
            raise KeyError(f"This keyset has no {role!r} key; it has roles {sorted(self.roles)}.") from None

    def __iter__(self) -> Generator[str]:
        yield from sorted(self.keys)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Keyset):
            return self.keys == other.keys and self.roles == other.roles
        if isinstance(other, Mapping):
            return self.roles == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Keyset({sorted(self.keys)!r})"


def keyset_from_base_key(base_key: str) -> Keyset:
    """The keyset ``{base}-description``, ``{base}-response``, ``{base}-schema``."""
    return Keyset(roles={role: f"{base_key}-{role}" for role in _ROLES})


def keyset_from_type(cls: type[Any]) -> Keyset:
    """The keyset named after a type (``keyset_from_base_key(cls.__name__.lower())``)."""
    return keyset_from_base_key(cls.__name__.lower())


class RunInputMetadata(pydantic.BaseModel):
    """Where a received input came from: its key, sender, receiving flow run, and creation time."""

    key: str
    sender: str | None = None
    receiver: uuid.UUID
    created: _dt.datetime | None = None


class BaseRunInput(pydantic.BaseModel):
    """Common base of :class:`RunInput` and :class:`AutomaticRunInput`."""

    model_config: ClassVar[pydantic.ConfigDict] = pydantic.ConfigDict(extra="forbid")

    _description: ClassVar[str | None] = None
    _metadata: RunInputMetadata | None = pydantic.PrivateAttr(default=None)

    @property
    def metadata(self) -> RunInputMetadata:
        """Key, sender, receiver and creation time of this input (set on received inputs)."""
        if self._metadata is None:
            raise AttributeError("This input was not received from a flow run; it has no metadata.")
        return self._metadata

    @classmethod
    def keyset_from_type(cls) -> Keyset:
        """The keyset named after this class."""
        return keyset_from_type(cls)

    @classmethod
    def save(cls, keyset: Keyset, flow_run_id: uuid.UUID | str | None = None) -> None:
        """Store this class's JSON schema (and description) under the keyset's keys, for the sender."""
        run_id = ensure_flow_run_id(flow_run_id)
        sender = f"{SENDER_PREFIX}{run_id}"
        _write(run_id, keyset["schema"], cls.model_json_schema(by_alias=True), sender, overwrite=True)
        if isinstance(cls._description, str):
            _write(run_id, keyset["description"], cls._description, sender, overwrite=True)

    @classmethod
    def load(cls, keyset: Keyset, flow_run_id: uuid.UUID | str | None = None) -> Self:
        """The value stored under ``keyset["response"]``, validated (an empty one: the class's defaults)."""
        run_id = ensure_flow_run_id(flow_run_id)
        records = filter_flow_run_input(keyset["response"], limit=None, flow_run_id=run_id)
        record = next((r for r in records if r.key == keyset["response"]), None)
        if record is None:
            record = FlowRunInput(flow_run_id=run_id, key=keyset["response"], value={},
                                  created=_dt.datetime.now(_dt.UTC))
        return cls.load_from_flow_run_input(record)

    @classmethod
    def load_from_flow_run_input(cls, flow_run_input: FlowRunInput) -> Self:
        """Validate a stored input as this class; :class:`InvalidRunInput` names its key and sender."""
        value = flow_run_input.value
        try:
            instance = cls.model_validate(value if isinstance(value, Mapping) else {"value": value})
        except pydantic.ValidationError as exc:
            raise _invalid(flow_run_input, cls.__name__, exc) from None
        instance._metadata = _metadata(flow_run_input)
        return instance

    @classmethod
    def with_initial_data(cls, description: str | None = None, **kwargs: Any) -> type[Self]:
        """A subclass whose fields default to ``kwargs`` (and with a description for the sender)."""
        fields: dict[str, Any] = {}
        for name, value in kwargs.items():
            field = cls.model_fields.get(name)
            fields[name] = (field.annotation if field else type(value), value)
        model = cast(type[Self], pydantic.create_model(cls.__name__, __base__=cls, **fields))
        if description is not None:
            model._description = description
        return model

    def send_to(self, flow_run_id: uuid.UUID | str, sender: str | None = None, key_prefix: str | None = None
                ) -> _Sent:
        """Send this input to a flow run (see :func:`send_input`)."""
        return send_input(self, flow_run_id, sender=sender, key_prefix=key_prefix)

    def respond(self, run_input: Any, sender: str | None = None, key_prefix: str | None = None) -> _Sent:
        """Send ``run_input`` back to the flow run that sent this input."""
        sender_id = self.metadata.sender or ""
        for prefix in (SENDER_PREFIX, "prefect.flow-run."):
            if sender_id.startswith(prefix):
                return send_input(run_input, sender_id[len(prefix):], sender=sender, key_prefix=key_prefix)
        raise RuntimeError("Cannot respond to an input that was not sent by a flow run.")


class RunInput(BaseRunInput):
    """Base class for typed input: subclass it with fields, receive it with ``receive_input(MyInput)``.

    Example::

        class Approval(RunInput):
            decision: str
            comments: str = ""

        approval = receive_input(Approval, timeout=3600).next()   # an Approval, with .metadata
    """

    @classmethod
    def receive(
        cls,
        timeout: float | None = 3600,
        poll_interval: float = 10,
        raise_timeout_error: bool = False,
        exclude_keys: set[str] | None = None,
        key_prefix: str | None = None,
        flow_run_id: uuid.UUID | str | None = None,
        with_metadata: bool = False,
    ) -> GetInputHandler[Self]:
        """A handler yielding inputs of this type (see :func:`receive_input`)."""
        return GetInputHandler(cls, key_prefix or f"{cls.__name__.lower()}-auto", timeout=timeout,
                               poll_interval=poll_interval, raise_timeout_error=raise_timeout_error,
                               exclude_keys=exclude_keys, flow_run_id=flow_run_id, with_metadata=with_metadata)

    @classmethod
    def subclass_from_base_model_type(cls, model_cls: type[pydantic.BaseModel]) -> type[RunInput]:
        """A :class:`RunInput` subclass with the fields of ``model_cls`` (instances are ``model_cls`` too)."""
        return type(f"{model_cls.__name__}RunInput", (RunInput, model_cls), {})


class AutomaticRunInput(BaseRunInput, Generic[T]):
    """Input of a plain type (``dict``, ``int``, ``list[str]``...): ``.value`` and ``.metadata``."""

    value: Any = None
    _type: ClassVar[Any] = Any
    _adapter: ClassVar[pydantic.TypeAdapter[Any] | None] = None

    @classmethod
    def subclass_from_type(cls, _type: Any) -> type[AutomaticRunInput[Any]]:
        """The subclass validating ``value`` as ``_type``."""
        name = str(getattr(_type, "__name__", getattr(_type, "_name", "")) or "value").lower()
        sub = cast(type[AutomaticRunInput[Any]], type(f"{name}AutomaticRunInput", (AutomaticRunInput,), {}))
        sub._type = _type
        sub._adapter = pydantic.TypeAdapter(_type)
        return sub

    @classmethod
    def save(cls, keyset: Keyset, flow_run_id: uuid.UUID | str | None = None) -> None:
        """Store the JSON schema of the plain type itself (what a resumer sends is the bare value)."""
        run_id = ensure_flow_run_id(flow_run_id)
        adapter = cls._adapter or pydantic.TypeAdapter(cls._type)
        _write(run_id, keyset["schema"], adapter.json_schema(), f"{SENDER_PREFIX}{run_id}", overwrite=True)

    @classmethod
    def load_from_flow_run_input(cls, flow_run_input: FlowRunInput) -> Self:
        adapter = cls._adapter or pydantic.TypeAdapter(cls._type)
        raw = flow_run_input.value
        try:
            value = adapter.validate_python(raw)
        except pydantic.ValidationError as exc:
            # Prefect's UI sends plain-type input wrapped as {"value": ...}; accept that spelling too.
            if isinstance(raw, dict) and set(raw) == {"value"}:
                try:
                    value = adapter.validate_python(raw["value"])
                except pydantic.ValidationError:
                    raise _invalid(flow_run_input, _type_name(cls._type), exc) from None
            else:
                raise _invalid(flow_run_input, _type_name(cls._type), exc) from None
        instance = cls(value=value)
        instance._metadata = _metadata(flow_run_input)
        return instance

    @classmethod
    def type_prefix(cls) -> str:
        """The default key prefix of this type's inputs (``dict-auto``)."""
        return f"{_type_name(cls._type).lower()}-auto"


def _type_name(tp: Any) -> str:
    return str(getattr(tp, "__name__", None) or getattr(tp, "_name", None) or repr(tp))


def _metadata(record: FlowRunInput) -> RunInputMetadata:
    return RunInputMetadata(key=record.key, sender=record.sender, receiver=record.flow_run_id,
                            created=record.created)


def _invalid(record: FlowRunInput, type_name: str, exc: pydantic.ValidationError) -> InvalidRunInput:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(value)'}: {e['msg']}"
                         for e in exc.errors(include_input=False))
    return InvalidRunInput(
        f"Flow run input {record.key!r} from {record.sender or 'an unnamed sender'!r} is not a valid {type_name}: "
        f"{problems}. Ask the sender to send a corrected value (under a new key)."
    )


def run_input_subclass_from_type(_type: Any) -> type[BaseRunInput]:
    """The input class for ``_type``: a RunInput subclass as is, a pydantic model wrapped in one, any other
    type as an :class:`AutomaticRunInput`."""
    if inspect.isclass(_type):
        if issubclass(_type, BaseRunInput):
            return _type
        if issubclass(_type, pydantic.BaseModel):
            return RunInput.subclass_from_base_model_type(_type)
    return AutomaticRunInput.subclass_from_type(_type)


def _default_prefix(input_type: Any) -> str:
    """The key prefix both sides use when none is given: the user's type name (``dict-auto``, ``approval-auto``)."""
    return f"{_type_name(input_type).lower()}-auto"


# --- sending -----------------------------------------------------------------------------------------------


class _Sent:
    """What :func:`send_input` returns: the stored record, awaitable so that ``await send_input(...)`` works."""

    __slots__ = ("record",)

    def __init__(self, record: FlowRunInput) -> None:
        self.record = record

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator: awaiting it completes at once

    def __repr__(self) -> str:
        return f"<sent input {self.record.key!r} to flow run {self.record.flow_run_id}>"


def _send(run_input: Any, flow_run_id: uuid.UUID | str, sender: str | None, key_prefix: str | None
          ) -> FlowRunInput:
    if key_prefix is None:
        key_prefix = (run_input.type_prefix() if isinstance(run_input, AutomaticRunInput)
                      else _default_prefix(type(run_input)))
    value = run_input.model_dump(mode="json") if isinstance(run_input, BaseRunInput) else run_input
    if isinstance(run_input, AutomaticRunInput):
        value = run_input.model_dump(mode="json")["value"]
    return create_flow_run_input(f"{key_prefix}-{uuid.uuid4()}", value, flow_run_id=flow_run_id, sender=sender)


def send_input(
    run_input: Any, flow_run_id: uuid.UUID | str, sender: str | None = None, key_prefix: str | None = None
) -> _Sent:
    """Send ``run_input`` (JSON data, a pydantic model or a :class:`RunInput`) to a flow run.

    The input is stored before this returns, under the key ``{key_prefix}-{uuid4}`` (default prefix: the
    type's name, ``dict-auto``). Both spellings work: ``send_input(...)`` in synchronous code and
    ``await send_input(...)`` in async code (the returned object is awaitable and already done);
    :func:`asend_input` does the store write in a worker thread instead of the event loop.
    ``sender`` defaults to the current flow run (``otelflow.flow-run.<id>``). Raises ``ValueError`` for a
    value over ``OTELFLOW_INPUT_MAX_BYTES`` and ``TypeError`` for a value that is not JSON data.
    """
    return _Sent(_send(run_input, flow_run_id, sender, key_prefix))


async def asend_input(
    run_input: Any, flow_run_id: uuid.UUID | str, sender: str | None = None, key_prefix: str | None = None
) -> FlowRunInput:
    """:func:`send_input` with the store write in a worker thread (for busy event loops)."""
    return await asyncio.to_thread(_send, run_input, flow_run_id, sender, key_prefix)


# --- receiving ---------------------------------------------------------------------------------------------


class _Paused:
    """Marks the current flow run Paused while it waits for its own input (state + span events)."""

    def __init__(self, flow_run_id: uuid.UUID, attributes: dict[str, Any], timeout: float | None,
                 message: str = "Waiting for input") -> None:
        ctx = FlowRunContext.get()
        self._ctx = ctx if ctx is not None and ctx.flow_run is not None and ctx.flow_run.id == flow_run_id else None
        self._attributes: dict[str, Any] = dict(attributes)
        if timeout is not None:
            self._attributes[semconv.PAUSE_TIMEOUT] = float(timeout)
        self._message = message
        self.paused = False

    def pause(self) -> None:
        if self._ctx is None or self.paused or self._ctx.flow_run is None:
            return
        from otelflow.states import Paused

        self.paused = True
        self._ctx.flow_run.state = Paused(message=self._message)
        self._ctx.span.add_event(semconv.EVENT_PAUSED, self._attributes)
        from otelflow.engine import mark_waiting

        mark_waiting(self._ctx.span, "Paused", self._waiting_for(self._ctx.flow_run.id))

    def resume(self) -> None:
        if not self.paused or self._ctx is None or self._ctx.flow_run is None:
            return
        from otelflow.states import Running

        self.paused = False
        self._ctx.flow_run.state = Running()
        self._ctx.span.add_event(semconv.EVENT_RESUMED, self._attributes)
        from otelflow.engine import mark_waiting

        mark_waiting(self._ctx.span, None)

    def _waiting_for(self, flow_run_id: uuid.UUID) -> str:
        """What the run waits for, and the command that ends the wait (shown by ``otelflow runs``/``show``)."""
        prefix = self._attributes.get(semconv.RUN_INPUT_KEY_PREFIX)
        if isinstance(prefix, str):
            return (f"waiting for input with key prefix {prefix!r} "
                    f"(otelflow input send {flow_run_id} --key-prefix {prefix} VALUE)")
        return f"waiting to be resumed (otelflow input resume {flow_run_id})"

    def span(self) -> trace.Span:
        ctx = self._ctx or FlowRunContext.get()
        return ctx.span if ctx is not None else trace.get_current_span()


def _received_event(span: trace.Span, record: FlowRunInput) -> None:
    from otelflow.settings import get_settings

    attributes: dict[str, Any] = {semconv.RUN_INPUT_KEY: record.key}
    if record.sender:
        attributes[semconv.RUN_INPUT_SENDER] = record.sender
    settings = get_settings()
    if settings.record_parameter_values:
        attributes[semconv.RUN_INPUT_VALUE] = _value_text(record.value, settings.redact_patterns,
                                                          settings.parameter_value_max_length)
    span.add_event(semconv.EVENT_INPUT_RECEIVED, attributes)


def _value_text(value: Any, patterns: tuple[str, ...], max_length: int) -> str:
    # The parameters' rules (otelflow._internal.runs.redact): secret-named keys at any depth, header pairs,
    # URL/DSN passwords and key=value secrets in strings.
    from otelflow._internal.runs.redact import exportable

    text = json.dumps(exportable(value, patterns), separators=(",", ":"), default=str)
    return text if len(text) <= max_length else text[: max_length - 3] + "..."


class GetInputHandler(Generic[T]):
    """The flow run's inputs of one type and key prefix: iterate for each input, or read the first like a dict.

    See the module docstring for exactly what blocks and what a timeout does.
    """

    def __init__(
        self,
        run_input_cls: type[Any],
        key_prefix: str,
        timeout: float | None = 3600,
        poll_interval: float = 10,
        raise_timeout_error: bool = False,
        exclude_keys: set[str] | None = None,
        flow_run_id: uuid.UUID | str | None = None,
        with_metadata: bool = False,
    ) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout}.")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}.")
        self.run_input_cls: type[BaseRunInput] = run_input_subclass_from_type(run_input_cls)
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.raise_timeout_error = raise_timeout_error
        self.exclude_keys: set[str] = set(exclude_keys or ())
        self.flow_run_id: uuid.UUID = ensure_flow_run_id(flow_run_id)
        self.with_metadata = with_metadata
        self._first: Any = None
        self._first_done = False

    # --- iteration (Prefect) ------------------------------------------------------------------------
    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        try:
            return self.next()
        except TimeoutError:
            if self.raise_timeout_error:
                raise
            raise StopIteration from None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.anext()
        except TimeoutError:
            if self.raise_timeout_error:
                raise
            raise StopAsyncIteration from None

    def next(self) -> T:
        """The next input (blocking up to ``timeout``); raises ``TimeoutError`` when none came."""
        record = self._wait()
        if record is None:
            raise TimeoutError(f"Timed out waiting for input with key prefix {self.key_prefix!r} "
                               f"for flow run {self.flow_run_id} after {self.timeout}s")
        return self.to_instance(record)

    async def anext(self) -> T:
        """:meth:`next` waiting in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.next)

    def to_instance(self, flow_run_input: FlowRunInput) -> T:
        """Validate a stored input: the typed value, or with metadata the input object (``.value``, ``.metadata``)."""
        instance = self.run_input_cls.load_from_flow_run_input(flow_run_input)
        if isinstance(instance, AutomaticRunInput) and not self.with_metadata:
            return cast(T, instance.value)
        return cast(T, instance)

    def _take(self) -> FlowRunInput | None:
        found = filter_flow_run_input(self.key_prefix, limit=1, exclude_keys=self.exclude_keys,
                                      flow_run_id=self.flow_run_id)
        if not found:
            return None
        self.exclude_keys.add(found[0].key)  # each input once, valid or not
        return found[0]

    def _wait(self) -> FlowRunInput | None:
        """The next stored input, waiting up to ``timeout``; ``None`` on timeout. Pauses the run meanwhile."""
        paused = _Paused(self.flow_run_id, {semconv.RUN_INPUT_KEY_PREFIX: self.key_prefix}, self.timeout)
        try:
            record = wait_for(get_store(), input_namespace(self.flow_run_id), self._take, self.timeout,
                              self.poll_interval, before_wait=paused.pause)
        finally:
            paused.resume()
        if record is not None:
            _received_event(paused.span(), record)
        return record

    # --- the first input, read like a dict (the seed) ------------------------------------------------
    def _first_value(self) -> Any:
        if not self._first_done:
            record = self._wait()
            self._first_done = True
            if record is None:
                if self.raise_timeout_error:
                    raise TimeoutError(f"Timed out waiting for input with key prefix {self.key_prefix!r} "
                                       f"for flow run {self.flow_run_id} after {self.timeout}s")
                return None
            self._first = self.to_instance(record)
        value = self._first
        if isinstance(value, AutomaticRunInput):
            return value.value
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """Field ``key`` of the first input (waiting for it); ``default`` when absent or on timeout."""
        value = self._first_value()
        if isinstance(value, Mapping):
            return value.get(key, default)
        if isinstance(value, pydantic.BaseModel):
            return getattr(value, key, default) if key in type(value).model_fields else default
        return default

    def __getitem__(self, key: str) -> Any:
        value = self._first_value()
        if value is None and self._first is None:
            raise KeyError(f"{key!r}: no input with key prefix {self.key_prefix!r} arrived within {self.timeout}s")
        if isinstance(value, Mapping):
            return value[key]
        if isinstance(value, pydantic.BaseModel) and key in type(value).model_fields:
            return getattr(value, key)
        raise KeyError(key)

    def keys(self) -> set[str]:
        """Field names of the first input (waiting for it); empty on timeout."""
        value = self._first_value()
        if isinstance(value, Mapping):
            return {str(k) for k in value}
        if isinstance(value, pydantic.BaseModel):
            return set(type(value).model_fields)
        return set()


def receive_input(
    input_type: Any,
    timeout: float | None = 3600,
    poll_interval: float = 10,
    raise_timeout_error: bool = False,
    exclude_keys: set[str] | None = None,
    key_prefix: str | None = None,
    flow_run_id: uuid.UUID | str | None = None,
    with_metadata: bool = False,
) -> GetInputHandler[Any]:
    """A :class:`GetInputHandler` for inputs of ``input_type`` (``dict``, any type pydantic validates, a
    pydantic model, or a :class:`RunInput` subclass) sent to a flow run (default: the current one).

    ``key_prefix`` must match the sender's (default: the type's name, ``dict-auto``); ``exclude_keys`` skips
    inputs already handled; ``with_metadata=True`` yields objects with ``.value`` and ``.metadata`` for plain
    types (RunInput/model inputs always carry ``.metadata``). See the module docstring for the waiting rules.
    """
    input_cls = run_input_subclass_from_type(input_type)
    return GetInputHandler(
        input_cls, key_prefix or _default_prefix(input_type), timeout=timeout, poll_interval=poll_interval,
        raise_timeout_error=raise_timeout_error, exclude_keys=exclude_keys, flow_run_id=flow_run_id,
        with_metadata=with_metadata,
    )

