"""Annotations that change how a task treats an argument: ``unmapped``, ``allow_failure``, ``quote``.

Example::

    from otelflow.utilities.annotations import unmapped, allow_failure, quote

    results = process_item.map(items, unmapped(config), unmapped(2))
    handled = handle_result.map(allow_failure(results))
    expression_task(quote(big_nested_structure))  # passed as is, never traversed for futures
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

__all__ = ["BaseAnnotation", "NotSet", "Quote", "allow_failure", "opaque", "quote", "unmapped"]

T = TypeVar("T")


class BaseAnnotation(Generic[T]):
    """Base class of argument annotations: wraps one value; :meth:`unwrap` returns it."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def unwrap(self) -> T:
        """The annotated value."""
        return self.value

    def rewrap(self, value: Any) -> BaseAnnotation[Any]:
        """The same annotation around another value (``.map`` re-applies annotations per element)."""
        return type(self)(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BaseAnnotation) and type(self) is type(other) and self.value == other.value

    def __hash__(self) -> int:
        return hash((type(self), id(self.value)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"


class unmapped(BaseAnnotation[T]):
    """Pass the value to every mapped call of ``task.map(...)`` instead of mapping over it."""

    __slots__ = ()

    def __getitem__(self, _: object) -> T:
        # .map indexes every mapped argument; an unmapped one answers the same value for any index.
        return self.value


class allow_failure(BaseAnnotation[T]):
    """Run the downstream task even if this upstream failed: it receives the upstream's exception."""

    __slots__ = ()


class quote(BaseAnnotation[T]):
    """Pass the value as is: it is not traversed for futures or states (cheap for large structures)."""

    __slots__ = ()

    def unquote(self) -> T:
        """The quoted value."""
        return self.value


class opaque(BaseAnnotation[T]):
    """Resolve the value itself (a future or state becomes its result) but never look inside the result.

    Cheaper than plain passing for big results (nothing is traversed), while ``.submit()`` chaining still works.
    """

    __slots__ = ()


# Backward compatibility alias, as in Prefect.
Quote = quote


class _NotSet:
    """Sentinel telling "not passed" from ``None``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NotSet"


NotSet: Any = _NotSet()
