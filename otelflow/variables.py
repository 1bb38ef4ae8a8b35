"""Prefect 3's Variables: named, mutable JSON values shared by flows, tasks, processes and machines.

Prefect keeps variables on its API server; otelflow keeps them in its shared store (:mod:`otelflow.stores`,
namespace ``"variables"``): the sqlite file ``$OTELFLOW_HOME/store.sqlite3`` by default (every process on the
machine), or Redis with ``OTELFLOW_STORE_URL=redis://...`` (every machine). The API is Prefect's::

    from otelflow import flow
    from otelflow.variables import Variable

    Variable.set("crew_members", ["Zaphod", "Arthur", "Trillian"])
    Variable.set("answer", 42, tags=["config"], overwrite=True)

    @flow
    def space_mission(mission_name: str) -> None:
        crew = Variable.get("crew_members", default=["Backup1", "Backup2"])

    @flow
    async def async_mission() -> None:
        crew = await Variable.get("crew_members")      # Prefect's sync/async dispatch
        await Variable.aset("last_mission", "Mars", overwrite=True)

Rules (Prefect's): names are at most 255 lowercase letters, digits, dashes and underscores; values are JSON
(str, int, float, bool, None, lists, dicts with string keys) whose compact JSON text is at most 5000 bytes;
setting an existing name needs ``overwrite=True``. Values are never logged nor put into telemetry, and
validation errors do not quote the value.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import math
import re
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Generic, NamedTuple, TypeAlias, overload

from pydantic import AfterValidator as _AfterValidator
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)
from pydantic_core import InitErrorDetails
from typing_extensions import TypeVar

if TYPE_CHECKING:
    from otelflow.stores import Store

__all__ = [
    "MAX_VARIABLE_NAME_LENGTH",
    "MAX_VARIABLE_VALUE_LENGTH",
    "VARIABLES_NAMESPACE",
    "StoredVariable",
    "StrictVariableValue",
    "Variable",
    "VariableValue",
    "check_variable_value",
    "list_variables",
    "read_variable",
    "validate_variable_name",
]

#: Store namespace holding the variables (one key per variable name).
VARIABLES_NAMESPACE = "variables"
#: Longest variable name (Prefect's limit).
MAX_VARIABLE_NAME_LENGTH = 255
#: Largest value: bytes of its compact UTF-8 JSON text (Prefect's limit, ``None`` is never refused).
MAX_VARIABLE_VALUE_LENGTH = 5000

_NAME_RE = re.compile(r"[a-z0-9_-]+")
# orjson's integer range, which Prefect's check uses: larger integers are refused there too.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1

#: What a variable can hold: JSON values.
VariableValue: TypeAlias = str | int | bool | float | dict[str, Any] | list[Any] | None


class _NotJson(ValueError):
    pass


_ALREADY_EXISTS = "already exists. Use `overwrite=True` to update it."  # Prefect's ValueError, ends so


def _where(path: str) -> str:
    return f" at value{path}" if path else ""


def _plain(value: object, path: str = "") -> Any:
    """``value`` as plain JSON types (tuples become lists, str/int/float subclasses their base type), or
    :class:`ValueError` naming the type and place of the first thing JSON cannot hold (never the value)."""
    if value is None or type(value) in (str, bool):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        number = int.__int__(value)
        if not _INT_MIN <= number <= _INT_MAX:
            raise _NotJson(f"Variable value must be serializable to JSON: integer{_where(path)} is outside the "
                           "64-bit range")
        return number
    if isinstance(value, float):
        real = float.__float__(value)
        if not math.isfinite(real):
            raise _NotJson(f"Out of range float values are not JSON compliant{_where(path)} (nan, inf)")
        return real
    if isinstance(value, list | tuple):
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        plain: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotJson(f"Variable value must be serializable to JSON: a dict key{_where(path)} is a "
                               f"{type(key).__name__} (keys must be strings)")
            key = str.__str__(key)
            plain[key] = _plain(item, f"{path}[{key!r}]")
        return plain
    raise _NotJson("Variable value must be serializable to JSON")  # Prefect's words (the value is never shown)


def _json_text(value: object) -> str:
    """Compact JSON text of an already plain value."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_variable_value(value: object) -> object:
    """``value`` as plain JSON types if a variable can hold it, else :class:`ValueError` (Prefect's messages:
    ``Variable value must be serializable to JSON``, ``Variable value must be less than 5000 characters``).

    The size is the byte length of the compact UTF-8 JSON text, as Prefect counts it. Messages never quote the
    value (it may be a secret)."""
    try:
        plain = _plain(value)
        size = len(_json_text(plain).encode("utf-8"))
    except _NotJson:
        raise
    except RecursionError:
        raise ValueError("Variable value must be serializable to JSON: it is nested too deeply "
                         "(or contains itself)") from None
    except UnicodeEncodeError:
        raise ValueError("Variable value must be serializable to JSON: a string holds a lone surrogate "
                         "character") from None
    if plain is not None and size > MAX_VARIABLE_VALUE_LENGTH:
        raise ValueError(f"Variable value must be less than {MAX_VARIABLE_VALUE_LENGTH} characters "
                         f"(its JSON text is {size} bytes)")
    return plain


def validate_variable_name(name: str) -> str:
    """``name`` if its characters make a valid variable name, else :class:`ValueError` with Prefect's message.

    Valid: lowercase ASCII letters, digits, dashes and underscores, at least one (Prefect also accepts the empty
    name; otelflow refuses it). The length limit (:data:`MAX_VARIABLE_NAME_LENGTH`) is checked by ``set``."""
    if not name:
        raise ValueError("Variable name must not be empty.")
    if not _NAME_RE.fullmatch(name):
        raise ValueError("Variable name must only contain lowercase letters, numbers, and dashes or underscores.")
    return name


#: A variable value, checked and made plain by :func:`check_variable_value` when a model is validated.
StrictVariableValue = Annotated[
    StrictStr | StrictInt | StrictBool | StrictFloat | dict[str, Any] | list[Any] | None,
    BeforeValidator(check_variable_value),
]

T = TypeVar("T", bound=VariableValue, default=VariableValue)


class _VariableCreate(BaseModel):
    """What ``set`` validates before writing (named like Prefect's ``VariableCreate`` in its errors)."""

    # The value may be a secret: errors name the field and the rule, never the input.
    model_config = ConfigDict(title="VariableCreate", hide_input_in_errors=True, extra="forbid")

    # The length is checked after the characters, as Prefect does (and with its message).
    name: Annotated[str, _AfterValidator(validate_variable_name), Field(max_length=MAX_VARIABLE_NAME_LENGTH)]
    value: StrictVariableValue
    tags: list[str]


class StoredVariable(NamedTuple):
    """One variable as the store keeps it (what ``otelflow variable ls --json`` prints)."""

    id: str
    created: str  # ISO 8601, UTC
    updated: str
    name: str
    value: Any
    tags: list[str]

    def to_json(self) -> dict[str, Any]:
        """Prefect's JSON shape: ``id``, ``created``, ``updated``, ``name``, ``value``, ``tags``."""
        return self._asdict()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat().replace("+00:00", "Z")


def _record(text: str, name: str) -> StoredVariable:
    """A stored record, or :class:`ValueError` when it is not one (anyone with store access can write it)."""
    data = json.loads(text)
    if not isinstance(data, dict) or "value" not in data:
        raise ValueError("not a variable record")
    tags = data.get("tags") or []
    if not isinstance(tags, list):
        raise ValueError("its tags are not a list")
    return StoredVariable(id=str(data.get("id") or ""), created=str(data.get("created") or ""),
                          updated=str(data.get("updated") or ""), name=name, value=data["value"],
                          tags=[str(t) for t in tags])


def _storable(name: object) -> bool:
    """Whether ``name`` is a valid variable name (only those are ever stored)."""
    return isinstance(name, str) and len(name) <= MAX_VARIABLE_NAME_LENGTH and bool(_NAME_RE.fullmatch(name))


def _store(store: str | Store | None = None) -> Store:
    from otelflow.stores import get_store

    return get_store(store)


def read_variable(name: str, store: str | Store | None = None) -> StoredVariable | None:
    """The stored variable ``name`` (with its id, times and tags), or ``None``; ``store``: a URL or
    :class:`~otelflow.stores.Store` (default: the configured one). A name that is not valid is never stored:
    ``None`` without asking the store. A damaged record raises :class:`~otelflow.stores.StoreError`."""
    if not _storable(name):
        return None
    target = _store(store)
    text = target.get(VARIABLES_NAMESPACE, name)
    if text is None:
        return None
    try:
        return _record(text, name)
    except ValueError as exc:
        from otelflow.stores import StoreError

        raise StoreError(f"Variable {name!r} in {target.display_url} is damaged ({exc}); set it again with "
                         "overwrite=True or unset it.") from None


def list_variables(store: str | Store | None = None) -> tuple[list[StoredVariable], int]:
    """Every readable variable of the store, by name, and how many stored records could not be read."""
    from otelflow.stores import StoreError

    found: list[StoredVariable] = []
    damaged = 0
    for item in _store(store).items(VARIABLES_NAMESPACE):
        try:
            found.append(_record(item.value, item.key))
        except (ValueError, StoreError):
            damaged += 1
    found.sort(key=lambda v: v.name)
    return found, damaged


def _without_input(exc: ValidationError) -> ValidationError:
    """The same validation error without the input in ``errors()`` (the value may be a secret; the message
    already leaves it out)."""
    details: list[InitErrorDetails] = []
    for error in exc.errors(include_url=False):
        detail: InitErrorDetails = {"type": error["type"], "loc": error["loc"], "input": None}
        if "ctx" in error:
            detail["ctx"] = error["ctx"]
        details.append(detail)
    return ValidationError.from_exception_data(exc.title, details, hide_input=True)


def _write(
    name: str, value: object, tags: list[str] | None, overwrite: bool, store: str | Store | None = None
) -> dict[str, Any]:
    """Validate, then store; the fields of the variable written. One atomic store step when creating."""
    try:
        checked = _VariableCreate.model_validate({"name": name, "value": value, "tags": tags or []})
    except ValidationError as exc:
        raise _without_input(exc) from None
    store = _store(store)
    now = _now()
    record = {"id": str(uuid.uuid4()), "created": now, "updated": now, "name": checked.name,
              "value": checked.value, "tags": checked.tags}
    if not overwrite:
        if not store.put(VARIABLES_NAMESPACE, checked.name, _json_text(record), if_absent=True, notify=False):
            raise ValueError(f"Variable {name!r} {_ALREADY_EXISTS}")
    else:
        text = store.get(VARIABLES_NAMESPACE, checked.name)
        try:
            existing = _record(text, checked.name) if text is not None else None
        except ValueError:  # a damaged record: replaced by a new variable
            existing = None
        if existing is not None:
            record["id"] = existing.id or record["id"]
            record["created"] = existing.created or now
        store.put(VARIABLES_NAMESPACE, checked.name, _json_text(record), notify=False)
    return {"name": checked.name, "value": checked.value, "tags": checked.tags}


def _dispatch_async(sync: bool | None) -> bool:
    """Prefect's rule: ``_sync`` when given; else async inside an async flow/task, or with a running loop."""
    if sync is not None:
        return not sync
    from otelflow.states import _in_async_context

    return _in_async_context()


class Variable(BaseModel, Generic[T]):
    """A named, mutable JSON value shared by flows and tasks in every process that uses the same store.

    Arguments:
        name: the variable's name (lowercase letters, digits, dashes and underscores; at most 255).
        value: its value: JSON (str, int, float, bool, None, list, dict), at most 5000 bytes as JSON text.
        tags: an optional list of strings associated with it.

    ``get``, ``set`` and ``unset`` work as Prefect's: synchronous in synchronous code, awaitable in an async
    flow, task or event loop (``await Variable.get("x")``); ``aget``, ``aset`` and ``aunset`` are always async.
    ``Variable[str].get("x")`` types the value for a type checker (the value is not converted).
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    name: str = Field(default=..., description="The name of the variable", examples=["my_variable"],
                      max_length=MAX_VARIABLE_NAME_LENGTH)
    value: StrictVariableValue = Field(default=..., description="The value of the variable", examples=["my-value"])
    tags: list[str] | None = Field(default=None)

    # --- set --------------------------------------------------------------------------------------------------
    @classmethod
    async def aset(
        cls, name: str, value: VariableValue, tags: list[str] | None = None, overwrite: bool = False
    ) -> Variable[Any]:
        """Set variable ``name`` to ``value`` (async); an existing one is replaced only with ``overwrite=True``.

        Returns the variable written (``tags`` is ``[]`` when none were given). Raises
        :class:`pydantic.ValidationError` for a bad name, a non-JSON value or one over 5000 bytes, and
        :class:`ValueError` ``Variable 'x' already exists. Use `overwrite=True` to update it.``

        Example::

            @flow
            async def my_flow():
                await Variable.aset(name="my_var", value="test_value", tags=["hi", "there"], overwrite=True)
        """
        fields = await asyncio.to_thread(_write, name, value, tags, overwrite)
        return cls.model_validate(fields)

    @classmethod
    def set(
        cls,
        name: str,
        value: VariableValue,
        tags: list[str] | None = None,
        overwrite: bool = False,
        *,
        _sync: bool | None = None,
    ) -> Variable[Any]:
        """Set variable ``name`` to ``value``; an existing one is replaced only with ``overwrite=True``.

        Returns the variable written. In an async flow, task or event loop this returns an awaitable (Prefect's
        dispatch): ``await Variable.set(...)``. Errors as :meth:`aset`.

        Example::

            @flow
            def my_flow():
                Variable.set(name="my_var", value="test_value", tags=["hi", "there"], overwrite=True)
        """
        if _dispatch_async(_sync):
            return cls.aset(name, value, tags, overwrite)  # type: ignore[return-value]
        return cls.model_validate(_write(name, value, tags, overwrite))

    # --- get --------------------------------------------------------------------------------------------------
    @overload
    @classmethod
    async def aget(cls, name: str) -> T | None: ...

    @overload
    @classmethod
    async def aget(cls, name: str, default: T) -> T: ...

    @classmethod
    async def aget(cls, name: str, default: VariableValue = None) -> Any:
        """The value of variable ``name`` (async), or ``default`` when there is none.

        Example::

            @flow
            async def my_flow():
                var = await Variable.aget("my_var")
        """
        return await _aget(name, default)

    @overload
    @classmethod
    def get(cls, name: str, *, _sync: bool | None = None) -> T | None: ...

    @overload
    @classmethod
    def get(cls, name: str, default: T, *, _sync: bool | None = None) -> T: ...

    @classmethod
    def get(cls, name: str, default: VariableValue = None, *, _sync: bool | None = None) -> Any:
        """The value of variable ``name``, or ``default`` when there is none (a stored ``None`` is returned as
        ``None``). In an async flow, task or event loop this returns an awaitable: ``await Variable.get(...)``.

        Example::

            @flow
            def my_flow():
                var = Variable.get("my_var", default="fallback")
        """
        if _dispatch_async(_sync):
            return _aget(name, default)
        found = read_variable(name)
        return found.value if found is not None else default

    # --- unset ------------------------------------------------------------------------------------------------
    @classmethod
    async def aunset(cls, name: str) -> bool:
        """Delete variable ``name`` (async): ``True`` if it existed, ``False`` if not.

        Example::

            @flow
            async def my_flow():
                await Variable.aunset("my_var")
        """
        return await asyncio.to_thread(_delete, name)

    @classmethod
    def unset(cls, name: str, *, _sync: bool | None = None) -> bool:
        """Delete variable ``name``: ``True`` if it existed, ``False`` if not. In an async flow, task or event
        loop this returns an awaitable: ``await Variable.unset(...)``.

        Example::

            @flow
            def my_flow():
                Variable.unset("my_var")
        """
        if _dispatch_async(_sync):
            return cls.aunset(name)  # type: ignore[return-value]
        return _delete(name)


async def _aget(name: str, default: VariableValue) -> Any:
    found = await asyncio.to_thread(read_variable, name)
    return found.value if found is not None else default


def _delete(name: str, store: str | Store | None = None) -> bool:
    if not _storable(name):
        return False
    return bool(_store(store).delete(VARIABLES_NAMESPACE, name))
