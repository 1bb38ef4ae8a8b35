"""Serializers: objects to bytes and back, configured by a ``type`` name, as Prefect 3's ``prefect.serializers``.

Every serializer is a pydantic model with a ``type`` string, so a stored configuration names the class that
reads the data back (``Serializer(type="json")`` is a :class:`JSONSerializer`)::

    from otelflow.serializers import JSONSerializer, resolve_serializer

    blob = JSONSerializer().dumps({"when": datetime.date(2024, 1, 2), "ids": {3, 1, 2}})
    JSONSerializer().loads(blob)                # {'when': datetime.date(2024, 1, 2), 'ids': {1, 2, 3}}
    resolve_serializer("compressed/pickle")     # CompressedPickleSerializer(...)

The JSON written is Prefect's: values the ``json`` module does not know are written as
``{"__class__": "module.Qualname", "data": ...}`` (exceptions as ``{"__exc_type__": ..., "message": ...}``),
so files and cache keys are compatible both ways. One deliberate difference: reading JSON never imports a
module named in the data (see :func:`json_object_decoder`).
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import sys
import threading
from typing import Any, ClassVar, Self, cast

import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PydanticSchemaGenerationError,
    TypeAdapter,
    ValidationError,
    field_validator,
)

__all__ = [
    "CompressedJSONSerializer",
    "CompressedPickleSerializer",
    "CompressedSerializer",
    "JSONSerializer",
    "PickleSerializer",
    "Serializer",
    "json_object_decoder",
    "json_object_encoder",
    "prefect_json_object_decoder",
    "prefect_json_object_encoder",
    "resolve_serializer",
]


# --- the JSON object encoder / decoder ---------------------------------------------------------------------


def _qualified_name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _importable_class(cls: type) -> type:
    """The class to name in JSON: a parametrized pydantic generic (``Page[int]``) is named by its origin."""
    metadata = getattr(cls, "__pydantic_generic_metadata__", None)
    if metadata and metadata.get("origin") is not None:
        return cast(type, metadata["origin"])
    return cls


def _sorted_members(members: list[Any]) -> list[Any]:
    # Prefect writes a set's members in iteration order, which for strings changes with PYTHONHASHSEED, so
    # the same set hashed to a different cache key in every process. Sorted members make keys stable; a set
    # of small ints (the common case that was stable) comes out in the same order as before.
    try:
        return sorted(members)
    except TypeError:
        return sorted(members, key=lambda member: json.dumps(member, sort_keys=True))


def json_object_encoder(obj: Any) -> Any:
    """``json.dumps``'s ``default``: the JSON shape of a value the ``json`` module does not know (Prefect's).

    Pydantic models by ``model_dump(mode="json")``; datetimes, UUIDs, Decimals, sets, bytes, paths, enums,
    dataclasses and the rest by pydantic's ``to_jsonable_python``, each wrapped as
    ``{"__class__": "module.Qualname", "data": ...}``. Exceptions become
    ``{"__exc_type__": ..., "message": ...}``; open files a placeholder (their content is not read).
    Raises ``PydanticSerializationError`` (a ``ValueError``) for a value it cannot encode.
    """
    if isinstance(obj, BaseException):
        return {"__exc_type__": _qualified_name(type(obj)), "message": str(obj)}
    if isinstance(obj, io.IOBase):
        # Prefect's placeholder text, kept as is: hashed inputs must give Prefect's cache keys.
        return {
            "__class__": _qualified_name(type(obj)),
            "data": (
                f"<Prefect IOStream Placeholder: type={type(obj).__name__}, "
                f"repr={obj!r} (original content not read)>"
            ),
        }
    if isinstance(obj, BaseModel):
        data: Any = obj.model_dump(mode="json")
    else:
        data = pydantic_core.to_jsonable_python(obj)
        if isinstance(obj, set | frozenset) and isinstance(data, list):
            data = _sorted_members(data)
    return {"__class__": _qualified_name(_importable_class(type(obj))), "data": data}


# A TypeAdapter per class name, with the class it was built for: a class defined again (a notebook cell run
# twice) gets a new adapter rather than validating into the old class.
_ADAPTERS: dict[str, tuple[Any, TypeAdapter[Any]]] = {}
_ADAPTERS_LOCK = threading.Lock()


def _imported_object(name: str) -> Any | None:
    """The object a qualified name points to, looked up only in modules already imported; else ``None``."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    module_name, _, attribute = name.rpartition(".")
    module = sys.modules.get(module_name) if module_name else None
    return getattr(module, attribute, None) if module is not None else None


def _adapter(name: str, cls: Any) -> TypeAdapter[Any] | None:
    cached = _ADAPTERS.get(name)
    if cached is not None and cached[0] is cls:
        return cached[1]
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(cls)
    except PydanticSchemaGenerationError:
        return None
    with _ADAPTERS_LOCK:
        _ADAPTERS[name] = (cls, adapter)
    return adapter


def json_object_decoder(result: dict[str, Any]) -> Any:
    """``json.loads``'s ``object_hook``: rebuild what :func:`json_object_encoder` wrote.

    ``{"__class__": ..., "data": ...}`` is validated into the named class; ``{"__exc_type__": ...}`` becomes
    the named exception. Unlike Prefect, which imports whatever module the data names, a class is only
    looked up in modules **already imported**: stored JSON (a cache record, a result file someone else
    wrote) must not be able to make this process import and run a module's top-level code. When the module
    is not imported, or pydantic cannot build the class from data (the placeholder of an open file), the
    dict is returned as it is. Import the module before loading to get the objects back.

    Raises ``ValueError("Invalid exception type: ...")`` (Prefect's) when ``__exc_type__`` names an
    imported object that is not an exception class, and pydantic's ``ValidationError`` when the data does
    not fit the class.
    """
    if "__class__" in result:
        name = result["__class__"]
        cls = _imported_object(name) if isinstance(name, str) else None
        if not isinstance(cls, type):
            return result
        adapter = _adapter(name, cls)
        if adapter is None:
            return result
        return adapter.validate_python(result.get("data"))
    if "__exc_type__" in result:
        name = result["__exc_type__"]
        if not isinstance(name, str):
            raise ValueError(f"Invalid exception type: {name!r}")
        module_name = name.rpartition(".")[0]
        if module_name not in sys.modules:
            return result
        exc_cls = _imported_object(name)
        if not (isinstance(exc_cls, type) and issubclass(exc_cls, BaseException)):
            raise ValueError(f"Invalid exception type: {name!r}")
        return exc_cls(result.get("message"))
    return result


#: Prefect's names for the encoder and decoder.
prefect_json_object_encoder = json_object_encoder
prefect_json_object_decoder = json_object_decoder


# --- resolving configured names ----------------------------------------------------------------------------

_ENCODER_PATH = "otelflow.serializers.json_object_encoder"
_DECODER_PATH = "otelflow.serializers.json_object_decoder"

# Names a configuration may hold that resolve without an import. Prefect's own paths are here too, so a
# serializer configuration written by Prefect reads back without importing (or needing) Prefect.
_KNOWN_NAMES: dict[str, Any] = {
    "json": json,
    _ENCODER_PATH: json_object_encoder,
    _DECODER_PATH: json_object_decoder,
    "otelflow.serializers.prefect_json_object_encoder": json_object_encoder,
    "otelflow.serializers.prefect_json_object_decoder": json_object_decoder,
    "prefect.serializers.prefect_json_object_encoder": json_object_encoder,
    "prefect.serializers.prefect_json_object_decoder": json_object_decoder,
}


def _from_qualified_name(name: str) -> Any:
    """The module or module attribute a configured name (``"cloudpickle"``, ``"lzma"``) points to.

    These names are configuration a programmer chose (which pickle or compression library to use), so,
    as in Prefect, they are imported when needed.
    """
    known = _KNOWN_NAMES.get(name)
    if known is not None:
        return known
    module = sys.modules.get(name)
    if module is not None:
        return module
    try:
        return importlib.import_module(name)
    except ImportError:
        if "." not in name:
            raise
    module_name, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def _check_library(value: str, kind: str, methods: tuple[str, str]) -> str:
    try:
        library = _from_qualified_name(value)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"Failed to import requested {kind} library: {value!r}.") from exc
    for method in methods:
        if not callable(getattr(library, method, None)):
            raise ValueError(f"{kind.capitalize()} library at {value!r} does not have a {method!r} method.")
    return value


# --- serializers -------------------------------------------------------------------------------------------

# type name -> serializer class; filled as subclasses are defined (user subclasses included).
_REGISTRY: dict[str, type[Serializer]] = {}


class Serializer(BaseModel):
    """Base of serializers: ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``, named by ``type``.

    Constructing the base class with a ``type`` gives the registered subclass::

        Serializer(type="json")  # JSONSerializer(type='json', jsonlib='json', ...)

    A subclass registers itself under the default of its ``type`` field::

        class YAMLSerializer(Serializer):
            type: str = Field(default="yaml", frozen=True)
            def dumps(self, obj): ...
            def loads(self, blob): ...
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    type: str

    def __new__(cls, **kwargs: Any) -> Self:
        """The subclass registered for ``type``, when one is given."""
        type_name = kwargs.get("type")
        if not type_name:
            return super().__new__(cls)
        subclass = _REGISTRY.get(type_name)
        if subclass is None:
            error: Exception = KeyError(
                f"No class found for dispatch key {type_name!r} in registry for type {cls.__name__!r}."
            )
        elif not issubclass(subclass, cls):
            # Prefect returns an uninitialised instance here; a clear error is more useful.
            error = KeyError(f"Serializer type {type_name!r} is a {subclass.__name__}, not a {cls.__name__}.")
        else:
            return super().__new__(subclass)
        raise ValidationError.from_exception_data(
            title=cls.__name__,
            line_errors=[{"type": "value_error", "loc": ("type",), "input": type_name, "ctx": {"error": error}}],
            input_type="python",
        ) from error

    def __init__(self, **data: Any) -> None:
        data.setdefault("type", _dispatch_key(type(self)) if type(self) is not Serializer else "__base__")
        super().__init__(**data)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Register the subclass under its ``type`` default."""
        super().__pydantic_init_subclass__(**kwargs)
        key = _dispatch_key(cls)
        if key is not None:
            _REGISTRY[key] = cls

    def dumps(self, obj: Any) -> bytes:
        """Encode an object into bytes."""
        raise NotImplementedError

    def loads(self, blob: bytes) -> Any:
        """Decode bytes made by :meth:`dumps` back into an object."""
        raise NotImplementedError


def _dispatch_key(cls: type[Serializer]) -> str | None:
    field = cls.model_fields.get("type")
    default = field.default if field is not None else None
    return default if isinstance(default, str) else None


class PickleSerializer(Serializer):
    """Pickles objects (``cloudpickle`` by default), wrapped in base64.

    ``picklelib`` names another module with ``dumps``/``loads`` (``"pickle"``, ``"dill"``);
    ``picklelib_version`` is stored for reference, as in Prefect. Loading a pickle runs code chosen by
    whoever wrote it: load only blobs this deployment wrote.
    """

    type: str = Field(default="pickle", frozen=True)

    picklelib: str = "cloudpickle"
    picklelib_version: str | None = None

    @field_validator("picklelib")
    @classmethod
    def _check_picklelib(cls, value: str) -> str:
        return _check_library(value, "pickle", ("dumps", "loads"))

    def dumps(self, obj: Any) -> bytes:
        """The base64 of the pickled object."""
        try:
            blob: bytes = _from_qualified_name(self.picklelib).dumps(obj)
        except Exception as exc:
            exc.add_note(
                f"PickleSerializer ({self.picklelib}) cannot store live resources such as locks, open files, "
                "sockets or connections: return plain data instead, or leave this value out of what is stored."
            )
            raise
        return base64.encodebytes(blob)

    def loads(self, blob: bytes) -> Any:
        """The object pickled in a blob made by :meth:`dumps`."""
        return _from_qualified_name(self.picklelib).loads(base64.decodebytes(blob))


class JSONSerializer(Serializer):
    """Writes JSON as UTF-8 bytes, with :func:`json_object_encoder` for values ``json`` does not know.

    ``jsonlib`` names another module with ``dumps``/``loads``; ``object_encoder``/``object_decoder`` name
    the ``default`` and ``object_hook`` functions (``None`` turns them off); ``dumps_kwargs``/``loads_kwargs``
    are passed through (``default`` and ``object_hook`` are set by the encoder/decoder fields instead)::

        JSONSerializer(dumps_kwargs={"sort_keys": True}).dumps({"b": 1, "a": {2, 1}})
        # b'{"a": {"__class__": "builtins.set", "data": [1, 2]}, "b": 1}'
    """

    type: str = Field(default="json", frozen=True)

    jsonlib: str = "json"
    object_encoder: str | None = Field(
        default=_ENCODER_PATH,
        description="The import path of the `default` function for values the JSON library does not know.",
    )
    object_decoder: str | None = Field(
        default=_DECODER_PATH,
        description="The import path of the `object_hook` function, called with every decoded JSON object.",
    )
    dumps_kwargs: dict[str, Any] = Field(default_factory=dict)
    loads_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("dumps_kwargs")
    @classmethod
    def _no_default(cls, value: dict[str, Any]) -> dict[str, Any]:
        # A callable here would make the serializer's configuration impossible to store.
        if "default" in value:
            raise ValueError("`default` cannot be provided. Use `object_encoder` instead.")
        return value

    @field_validator("loads_kwargs")
    @classmethod
    def _no_object_hook(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "object_hook" in value:
            raise ValueError("`object_hook` cannot be provided. Use `object_decoder` instead.")
        return value

    def dumps(self, obj: Any) -> bytes:
        """The object as JSON bytes.

        Raises ``PydanticSerializationError`` (a ``ValueError``, Prefect's error and message) for a value
        the encoder does not know.
        """
        kwargs = dict(self.dumps_kwargs)
        if self.object_encoder:
            kwargs["default"] = _from_qualified_name(self.object_encoder)
        try:
            result: str | bytes = _from_qualified_name(self.jsonlib).dumps(obj, **kwargs)
        except (TypeError, ValueError) as exc:
            exc.add_note(
                "JSONSerializer stores JSON values, pydantic models, dataclasses, datetimes, UUIDs, Decimals, "
                "sets, bytes, paths and enums: convert the value first, or use serializer='pickle'."
            )
            raise
        # The standard library returns str; faster JSON libraries return bytes.
        return result.encode() if isinstance(result, str) else result

    def loads(self, blob: bytes) -> Any:
        """The object in JSON bytes made by :meth:`dumps`."""
        kwargs = dict(self.loads_kwargs)
        if self.object_decoder:
            kwargs["object_hook"] = _from_qualified_name(self.object_decoder)
        return _from_qualified_name(self.jsonlib).loads(blob.decode(), **kwargs)


class CompressedSerializer(Serializer):
    """Compresses another serializer's bytes (``lzma`` by default), wrapped in base64.

    ``serializer`` is a serializer or its type name; ``compressionlib`` names a module with
    ``compress``/``decompress`` (``"lzma"``, ``"zlib"``, ``"bz2"``)::

        CompressedSerializer(serializer="json", compressionlib="zlib")
    """

    type: str = Field(default="compressed", frozen=True)

    serializer: Serializer
    compressionlib: str = "lzma"

    @field_validator("serializer", mode="before")
    @classmethod
    def _serializer_from_name(cls, value: Any) -> Any:
        return Serializer(type=value) if isinstance(value, str) else value

    @field_validator("compressionlib")
    @classmethod
    def _check_compressionlib(cls, value: str) -> str:
        return _check_library(value, "compression", ("compress", "decompress"))

    def dumps(self, obj: Any) -> bytes:
        """The base64 of the compressed bytes of the inner serializer."""
        blob = self.serializer.dumps(obj)
        return base64.encodebytes(_from_qualified_name(self.compressionlib).compress(blob))

    def loads(self, blob: bytes) -> Any:
        """The object in a blob made by :meth:`dumps`."""
        uncompressed = _from_qualified_name(self.compressionlib).decompress(base64.decodebytes(blob))
        return self.serializer.loads(uncompressed)


class CompressedPickleSerializer(CompressedSerializer):
    """A :class:`CompressedSerializer` around a :class:`PickleSerializer` (type ``"compressed/pickle"``)."""

    type: str = Field(default="compressed/pickle", frozen=True)

    serializer: Serializer = Field(default_factory=PickleSerializer)


class CompressedJSONSerializer(CompressedSerializer):
    """A :class:`CompressedSerializer` around a :class:`JSONSerializer` (type ``"compressed/json"``)."""

    type: str = Field(default="compressed/json", frozen=True)

    serializer: Serializer = Field(default_factory=JSONSerializer)


def resolve_serializer(serializer: Serializer | str) -> Serializer:
    """A serializer from a serializer or a type name (``"pickle"``, ``"json"``, ``"compressed/pickle"``,
    ``"compressed/json"``, or a registered subclass's type), as Prefect's ``resolve_serializer``.

    An unknown name raises pydantic's ``ValidationError`` (a ``ValueError``) naming it; another type
    raises ``TypeError``.
    """
    if isinstance(serializer, Serializer):
        return serializer
    if isinstance(serializer, str):
        return Serializer(type=serializer)
    raise TypeError(
        "Result serializer must be one of the following types: 'Serializer', "
        f"'str'. Got unsupported type {type(serializer).__name__!r}."
    )
