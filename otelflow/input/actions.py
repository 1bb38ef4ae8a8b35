"""Flow run input records in the shared store: create, read, filter, delete (Prefect's ``input.actions``).

A flow run's inputs live in store namespace ``input:<flow-run-id>``; each is one JSON document
``{"key", "value", "sender", "created"}``. Inputs are untrusted: values must be JSON (never pickled),
at most ``OTELFLOW_INPUT_MAX_BYTES`` long, and keys are write-once, so no sender can replace a value
another sender (or the flow itself) wrote.

Every function here is synchronous; the ``a``-prefixed twins run the same code in a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import re
import uuid
from typing import Any

import pydantic

from otelflow.context import FlowRunContext
from otelflow.stores import Store, get_store

__all__ = [
    "FlowRunInput",
    "FlowRunInputExists",
    "InvalidRunInput",
    "acreate_flow_run_input",
    "adelete_flow_run_input",
    "afilter_flow_run_input",
    "aread_flow_run_input",
    "create_flow_run_input",
    "create_flow_run_input_from_model",
    "delete_flow_run_input",
    "ensure_flow_run_id",
    "filter_flow_run_input",
    "input_namespace",
    "read_flow_run_input",
]

SENDER_PREFIX = "otelflow.flow-run."
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,255}$")
_MAX_SENDER = 256


class FlowRunInputExists(ValueError):
    """An input with this key already exists for the flow run (inputs are write-once)."""


class InvalidRunInput(ValueError):
    """A received input does not validate against the type the flow asked for."""


class FlowRunInput(pydantic.BaseModel):
    """One stored input of a flow run (what ``create_flow_run_input`` returns and ``filter`` lists)."""

    flow_run_id: uuid.UUID
    key: str
    value: Any = None
    sender: str | None = None
    created: _dt.datetime

    @property
    def decoded_value(self) -> Any:
        """The value (Prefect's name: its client stores the JSON text and decodes it here)."""
        return self.value


def input_namespace(flow_run_id: uuid.UUID) -> str:
    """The store namespace holding a flow run's inputs."""
    return f"input:{flow_run_id}"


def ensure_flow_run_id(flow_run_id: uuid.UUID | str | None = None) -> uuid.UUID:
    """``flow_run_id`` as a UUID, or the current flow run's id; a clear error when neither exists."""
    if flow_run_id is not None:
        if isinstance(flow_run_id, uuid.UUID):
            return flow_run_id
        try:
            return uuid.UUID(str(flow_run_id))
        except ValueError:
            raise ValueError(f"{flow_run_id!r} is not a flow run id (a UUID such as "
                             "'6f1c2d3e-...'); copy it from `otelflow runs`.") from None
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("Must either provide a flow run ID or be within a flow run.")
    return context.flow_run.id


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(
            f"Invalid flow run input key {key!r}: use 1-256 characters from letters, digits and ._:@+- "
            "(starting with a letter or digit)."
        )
    return key


def _default_sender(sender: str | None) -> str | None:
    if sender is None:
        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            return f"{SENDER_PREFIX}{context.flow_run.id}"
        return None
    if not isinstance(sender, str) or not sender or len(sender) > _MAX_SENDER:
        raise ValueError(f"sender must be a non-empty string of at most {_MAX_SENDER} characters, got {sender!r}.")
    return sender


def _encode(key: str, value: Any) -> Any:
    """``value`` as JSON-safe data (pydantic models by their JSON dump), or a clear error."""
    import pydantic_core

    try:
        if isinstance(value, pydantic.BaseModel):
            return value.model_dump(mode="json")
        return pydantic_core.to_jsonable_python(value)
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
        raise TypeError(f"Flow run input {key!r} must be JSON data (dict, list, str, numbers, bool, None) or a "
                        f"pydantic model; got {type(value).__name__}: {exc}") from None


def _write(
    flow_run_id: uuid.UUID, key: str, value: Any, sender: str | None, *, overwrite: bool = False,
    store: Store | None = None,
) -> FlowRunInput:
    """Validate, size-check and store one input; write-once unless ``overwrite`` (otelflow's own keys)."""
    from otelflow.settings import get_settings

    _check_key(key)
    record = FlowRunInput(flow_run_id=flow_run_id, key=key, value=_encode(key, value), sender=sender,
                          created=_dt.datetime.now(_dt.UTC))
    text = json.dumps({"key": key, "value": record.value, "sender": sender, "created": record.created.isoformat()},
                      separators=(",", ":"), allow_nan=False)
    limit = get_settings().input_max_bytes
    if len(text.encode()) > limit:
        raise ValueError(f"Flow run input {key!r} is {len(text.encode())} bytes of JSON; the limit is {limit} "
                         "(OTELFLOW_INPUT_MAX_BYTES). Send a reference (a URL or an id) instead of the data.")
    store = store or get_store()
    if not store.put(input_namespace(flow_run_id), key, text, if_absent=not overwrite):
        existing = _load(flow_run_id, store.get(input_namespace(flow_run_id), key))
        by = f" by {existing.sender!r}" if existing is not None and existing.sender else ""
        raise FlowRunInputExists(
            f"Flow run {flow_run_id} already has an input with key {key!r} (sent{by}); inputs are write-once. "
            "Send under a new key (send_input picks a fresh one) or delete this one first."
        )
    return record


def _load(flow_run_id: uuid.UUID, text: str | None) -> FlowRunInput | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
        return FlowRunInput(flow_run_id=flow_run_id, key=data["key"], value=data.get("value"),
                            sender=data.get("sender"), created=data["created"])
    except (ValueError, KeyError, TypeError, pydantic.ValidationError):
        return None  # not an input document: ignore it rather than fail every reader


def create_flow_run_input(
    key: str | uuid.UUID,
    value: Any,
    flow_run_id: uuid.UUID | str | Any | None = None,
    sender: str | None = None,
) -> FlowRunInput:
    """Store ``value`` (JSON data or a pydantic model) under ``key`` for a flow run; return the stored record.

    Prefect's order is ``create_flow_run_input(key, value, flow_run_id=None, sender=None)`` (the flow run
    defaults to the current one); the seed's ``create_flow_run_input(flow_run_id, key, value, sender)``
    works too: a UUID first argument is taken as the flow run id. Raises :class:`FlowRunInputExists`
    when the key exists (inputs are write-once) and ``ValueError`` past the size limit.
    """
    if isinstance(key, uuid.UUID):  # the seed's positional order: (flow_run_id, key, value)
        key, value, flow_run_id = value, flow_run_id, key
    return _write(ensure_flow_run_id(flow_run_id), str(key), value, _default_sender(sender))


def create_flow_run_input_from_model(
    key: str, model_instance: pydantic.BaseModel, flow_run_id: uuid.UUID | str | None = None,
    sender: str | None = None,
) -> FlowRunInput:
    """Store a pydantic model's JSON dump as input ``key`` (sender defaults to the current flow run)."""
    return create_flow_run_input(key, model_instance, flow_run_id=flow_run_id, sender=sender)


def read_flow_run_input(key: str, flow_run_id: uuid.UUID | str | None = None) -> Any:
    """The value of input ``key`` of a flow run (default: the current one), or ``None`` when absent."""
    run_id = ensure_flow_run_id(flow_run_id)
    record = _load(run_id, get_store().get(input_namespace(run_id), key))
    return None if record is None else record.value


def filter_flow_run_input(
    key_prefix: str, limit: int | None = 1, exclude_keys: set[str] | None = None,
    flow_run_id: uuid.UUID | str | None = None,
) -> list[FlowRunInput]:
    """A flow run's inputs whose key starts with ``key_prefix``, oldest first, skipping ``exclude_keys``."""
    run_id = ensure_flow_run_id(flow_run_id)
    exclude = exclude_keys or set()
    found: list[FlowRunInput] = []
    for item in get_store().items(input_namespace(run_id), key_prefix):
        if item.key in exclude:
            continue
        record = _load(run_id, item.value)
        if record is not None:
            found.append(record)
            if limit is not None and len(found) >= limit:
                break
    return found


def delete_flow_run_input(key: str, flow_run_id: uuid.UUID | str | None = None) -> None:
    """Delete input ``key`` of a flow run (default: the current one); nothing happens when it is absent."""
    run_id = ensure_flow_run_id(flow_run_id)
    get_store().delete(input_namespace(run_id), key)


async def acreate_flow_run_input(
    key: str | uuid.UUID, value: Any, flow_run_id: uuid.UUID | str | Any | None = None, sender: str | None = None
) -> FlowRunInput:
    """:func:`create_flow_run_input` in a worker thread."""
    return await asyncio.to_thread(create_flow_run_input, key, value, flow_run_id, sender)


async def aread_flow_run_input(key: str, flow_run_id: uuid.UUID | str | None = None) -> Any:
    """:func:`read_flow_run_input` in a worker thread."""
    return await asyncio.to_thread(read_flow_run_input, key, flow_run_id)


async def afilter_flow_run_input(
    key_prefix: str, limit: int | None = 1, exclude_keys: set[str] | None = None,
    flow_run_id: uuid.UUID | str | None = None,
) -> list[FlowRunInput]:
    """:func:`filter_flow_run_input` in a worker thread."""
    return await asyncio.to_thread(filter_flow_run_input, key_prefix, limit, exclude_keys, flow_run_id)


async def adelete_flow_run_input(key: str, flow_run_id: uuid.UUID | str | None = None) -> None:
    """:func:`delete_flow_run_input` in a worker thread."""
    await asyncio.to_thread(delete_flow_run_input, key, flow_run_id)
