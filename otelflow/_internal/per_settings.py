"""Values derived from the process settings, kept until the settings are replaced (``reset_settings``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from otelflow.settings import Settings

__all__ = ["PerSettings"]

T = TypeVar("T")


class PerSettings(Generic[T]):
    """``build(settings)``, made once per settings object: calling it costs one identity check on a hot path.

    ``otelflow.settings`` imports pydantic: it is bound on the first call, not when the owning module is imported.
    """

    __slots__ = ("_build", "_cache", "_get_settings")

    def __init__(self, build: Callable[[Settings], T]) -> None:
        self._build = build
        self._cache: tuple[Settings, T] | None = None
        self._get_settings: Callable[[], Settings] | None = None

    def __call__(self) -> T:
        """The value for the current settings."""
        get = self._get_settings
        if get is None:
            from otelflow.settings import get_settings

            get = self._get_settings = get_settings
        settings = get()
        cached = self._cache
        if cached is not None and cached[0] is settings:
            return cached[1]
        value = self._build(settings)
        self._cache = (settings, value)
        return value
