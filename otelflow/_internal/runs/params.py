"""Binding call arguments to parameters, validating flow parameters, and recording them safely.

Binding happens on every task run, so the common shape (plain positional-or-keyword parameters) takes
a precomputed fast path; anything fancier falls back to ``inspect.Signature.bind``.
"""

from __future__ import annotations

import collections
import inspect
import json
from collections.abc import Callable
from typing import Any, cast

from otelflow import semconv
from otelflow._internal.runs import redact
from otelflow.exceptions import ParameterBindError, ParameterTypeError

__all__ = ["ParameterBinder", "parameter_attributes"]

_PLAIN = inspect.Parameter.POSITIONAL_OR_KEYWORD
_EMPTY = inspect.Parameter.empty


class ParameterBinder:
    """Maps ``(args, kwargs)`` of a call to ``{parameter name: value}`` for one function."""

    __slots__ = (
        "_defaults", "_fast", "_fn", "_names", "_owner", "_validator", "_var_keyword", "attribute_keys", "signature",
    )

    def __init__(self, fn: Callable[..., Any], owner: str) -> None:
        self.signature = inspect.signature(fn)
        self._fn = fn
        self._owner = owner
        params = list(self.signature.parameters.values())
        self._fast = all(p.kind is _PLAIN for p in params)
        self._names = tuple(p.name for p in params)
        self._defaults = {p.name: p.default for p in params if p.default is not _EMPTY}
        self._var_keyword = next((p.name for p in params if p.kind is inspect.Parameter.VAR_KEYWORD), None)
        self._validator: Any = None
        # ``otelflow.parameter.<name>`` for each parameter, made once rather than on every run.
        self.attribute_keys = {name: semconv.PARAMETER_PREFIX + name for name in self._names}

    @property
    def defaults(self) -> dict[str, Any]:
        """Default values by parameter name."""
        return self._defaults

    @property
    def var_keyword(self) -> str | None:
        """Name of the ``**kwargs`` parameter, if the function has one."""
        return self._var_keyword

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, apply_defaults: bool = True) -> dict[str, Any]:
        """Parameters by name (defaults applied unless told not to). Raises :class:`ParameterBindError`."""
        if self._fast and apply_defaults and len(args) <= len(self._names):
            params = dict(zip(self._names, args, strict=False))
            for key, value in kwargs.items():
                if key not in self._defaults and key not in self._names:
                    raise ParameterBindError(f"{self._owner} got an unexpected parameter {key!r}.")
                if key in params:
                    raise ParameterBindError(f"{self._owner} got multiple values for parameter {key!r}.")
                params[key] = value
            if len(params) != len(self._names):
                for name in self._names:
                    if name not in params:
                        if name not in self._defaults:
                            raise ParameterBindError(f"{self._owner} is missing a value for parameter {name!r}.")
                        params[name] = self._defaults[name]
                params = {name: params[name] for name in self._names}
            return params
        try:
            bound = self.signature.bind_partial(*args, **kwargs) if not apply_defaults else (
                self.signature.bind(*args, **kwargs))
        except TypeError as exc:
            raise ParameterBindError(f"{self._owner}: {exc}.") from None
        if apply_defaults:
            bound.apply_defaults()
        return dict(bound.arguments)

    def bound_to(self, first: Any) -> ParameterBinder:
        """A binder whose calls get ``first`` as their first argument: a flow or task read from an instance
        (``self``) or a class (``cls``), as Python binds a method. The bound value is a parameter like any other."""
        binder = object.__new__(_BoundParameterBinder)
        for slot in ParameterBinder.__slots__:
            object.__setattr__(binder, slot, getattr(self, slot))
        binder._first = first
        return binder

    def call_args(self, params: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` to call the function with, from parameters by name."""
        if self._fast:
            return (), params
        bound = inspect.BoundArguments(self.signature, collections.OrderedDict(params))
        return bound.args, bound.kwargs

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate and coerce parameters against the type hints, as Prefect's flows do (pydantic).

        The error message names each invalid parameter and what is wrong with it, never its value (a
        wrong-typed ``password`` must not end up in a span status or a log line).
        """
        if self._validator is None:
            self._validator = _build_validator(self._fn, self.signature)
        if self._validator is False:
            return params
        from pydantic import ValidationError

        try:
            model = self._validator.model_validate(
                {k: v for k, v in params.items() if self.signature.parameters[k].kind not in _VARIADIC}
            )
        except ValidationError as exc:
            problems = "\n - ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_input=False)
            )
            raise ParameterTypeError(f"Flow run received invalid parameters:\n - {problems}") from None
        coerced = dict(params)
        for name in model.model_fields_set:
            coerced[name] = getattr(model, name)
        return coerced


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _build_validator(fn: Callable[..., Any], signature: inspect.Signature) -> Any:
    """A pydantic model of the annotated parameters, or False when there is nothing to validate.

    Annotations are resolved in the function's own module (``typing.get_type_hints``), so string annotations
    (``from __future__ import annotations``) naming the user's own types work.
    """
    import typing

    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        hints = {}
    fields: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if param.kind in _VARIADIC or param.annotation is _EMPTY:
            continue
        annotation = hints.get(name, param.annotation)
        if isinstance(annotation, str):
            continue  # a forward reference that does not resolve: not validated
        default = param.default if param.default is not _EMPTY else ...
        fields[name] = (annotation, default)
    if not fields:
        return False
    from pydantic import ConfigDict, create_model

    try:
        return cast(Any, create_model)(
            "Parameters", __config__=ConfigDict(arbitrary_types_allowed=True), **fields
        )
    except Exception:
        # Hints pydantic cannot build a schema for are not validated.
        return False


REDACTED = redact.REDACTED
_SECRET_TYPES = ("SecretStr", "SecretBytes", "Secret")


def _is_secret_name(name: str, patterns: tuple[str, ...]) -> bool:
    return redact.is_secret_name(name, patterns)


def _value_text(value: Any, max_length: int, patterns: tuple[str, ...] = ()) -> Any:
    if value is None:
        return "None"
    if isinstance(value, bool | int | float):
        return value if not isinstance(value, float) or value == value else repr(value)
    if isinstance(value, str):
        text = redact.redact_text(value[: max_length * 4], patterns)
    else:
        # Walked, not repr()-ed: a dataclass's repr shows its password, a big container was printed whole.
        # Bounded work: containers are truncated, never skipped.
        try:
            data = redact.exportable(value, patterns)
            text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, default=str)
        except Exception:
            text = f"<unrepresentable {type(value).__name__}>"
    if len(text) > max_length:
        text = f"{text[: max_length - 15]}...[truncated]"
    return text


def add_parameter_types(attrs: dict[str, Any], params: dict[str, Any], keys: dict[str, str]) -> None:
    """Add ``otelflow.parameter.<name>`` = the value's type name to ``attrs`` (the default: never the value).

    ``keys`` are the attribute names made once per function (the binder's ``attribute_keys``); a name not in it
    (a ``**kwargs`` entry) gets its key made here.
    """
    for name, value in params.items():
        attrs[keys.get(name) or semconv.PARAMETER_PREFIX + name] = type(value).__name__


def parameter_attributes(
    params: dict[str, Any],
    record_values: bool,
    max_length: int,
    patterns: tuple[str, ...],
    keys: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Span attributes for parameters: ``otelflow.parameter.<name>``.

    By default the value's type name only (never the value). With ``record_values`` the value itself,
    truncated to ``max_length`` characters and redacted (:mod:`otelflow._internal.runs.redact`): a parameter whose
    name matches ``patterns`` or whose value is a pydantic ``SecretStr`` & co. is exported as ``[REDACTED]``;
    inside containers, dataclasses, pydantic models, attrs classes and named tuples, secret-looking keys and fields
    are redacted at any depth, as is the value of a ``(name, value)`` pair with a secret-looking name (header
    lists); in strings, URL/DSN passwords and secret-named ``key=value`` values are masked.
    """
    prefix = semconv.PARAMETER_PREFIX
    attrs: dict[str, Any] = {}
    if not record_values:
        add_parameter_types(attrs, params, keys or {})
        return attrs
    for name, value in params.items():
        if type(value).__name__ in _SECRET_TYPES or _is_secret_name(name, patterns):
            attrs[prefix + name] = REDACTED
        else:
            attrs[prefix + name] = _value_text(value, max_length, patterns)
    return attrs


class _BoundParameterBinder(ParameterBinder):
    """A :class:`ParameterBinder` that passes one value first (see :meth:`ParameterBinder.bound_to`)."""

    __slots__ = ("_first",)
    _first: Any

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, apply_defaults: bool = True) -> dict[str, Any]:
        """Parameters by name, the bound value first."""
        return super().bind((self._first, *args), kwargs, apply_defaults=apply_defaults)
