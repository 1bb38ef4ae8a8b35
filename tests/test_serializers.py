"""Serializers as Prefect 3.9.1's: the same bytes, the same type names and errors; and a JSON decoder that never
imports a module named by the data it reads.

The expected bytes and messages were produced by a real Prefect 3.9.1 (``prefect.serializers``) on the same
values.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import lzma
import pickle
import sys
import threading
import uuid
import zlib
from pathlib import Path
from typing import Any, ClassVar

import pydantic
import pydantic_core
import pytest
from pydantic import BaseModel, Field

from otelflow.serializers import (
    CompressedJSONSerializer,
    CompressedPickleSerializer,
    CompressedSerializer,
    JSONSerializer,
    PickleSerializer,
    Serializer,
    json_object_decoder,
    json_object_encoder,
    prefect_json_object_decoder,
    prefect_json_object_encoder,
    resolve_serializer,
)


class Color(enum.Enum):
    RED = "r"


@dataclasses.dataclass
class Point:
    x: int
    label: str = "p"


class Order(BaseModel):
    id: uuid.UUID
    placed: datetime.datetime
    tags: set[str] = set()
    total: decimal.Decimal = decimal.Decimal("0")


ORDER = Order(id=uuid.UUID(int=7), placed=datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.UTC), tags={"a"},
              total=decimal.Decimal("9.99"))

ROUND_TRIPS: list[Any] = [
    ORDER,
    datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    datetime.datetime(2024, 1, 2, 3, 4, 5),
    datetime.date(2024, 1, 2),
    datetime.time(1, 2, 3),
    datetime.timedelta(seconds=3),
    uuid.UUID(int=5),
    decimal.Decimal("1.10"),
    {3, 1, 2},
    frozenset({"x"}),
    b"abc",
    Path("/a/b"),
    Color.RED,
    Point(1),
    1 + 2j,
    {"nested": [ORDER, {"when": datetime.date(2020, 2, 29)}], "n": 1.5, "none": None},
]


# --- JSON: Prefect's shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda value: type(value).__name__)
def test_json_round_trips_the_types_prefect_encodes(value: Any) -> None:
    serializer = JSONSerializer()
    loaded = serializer.loads(serializer.dumps(value))
    assert loaded == value and type(loaded) is type(value)


def test_json_writes_prefects_bytes() -> None:
    serializer = JSONSerializer()
    # prefect.serializers.JSONSerializer().dumps(value) in Prefect 3.9.1:
    assert serializer.dumps(uuid.UUID(int=5)) == (
        b'{"__class__": "uuid.UUID", "data": "00000000-0000-0000-0000-000000000005"}')
    assert serializer.dumps(datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)) == (
        b'{"__class__": "datetime.datetime", "data": "2024-01-02T03:04:05Z"}')
    assert serializer.dumps(datetime.timedelta(seconds=3)) == (
        b'{"__class__": "datetime.timedelta", "data": "PT3S"}')
    assert serializer.dumps({3, 1, 2}) == b'{"__class__": "builtins.set", "data": [1, 2, 3]}'
    assert serializer.dumps(b"abc") == b'{"__class__": "builtins.bytes", "data": "abc"}'
    assert serializer.dumps(ValueError("boom")) == b'{"__exc_type__": "builtins.ValueError", "message": "boom"}'
    assert serializer.dumps(Point(1)) == (
        f'{{"__class__": "{__name__}.Point", "data": {{"x": 1, "label": "p"}}}}'.encode())
    assert serializer.dumps((1, 2)) == b"[1, 2]" and serializer.loads(b"[1, 2]") == [1, 2]  # tuples are lists
    assert serializer.dumps(float("nan")) == b"NaN"


def test_json_sorts_set_members() -> None:
    # Prefect writes members in iteration order, which for strings changes with PYTHONHASHSEED (and so did
    # its cache keys); otelflow sorts them, and mixed members by their JSON text.
    assert JSONSerializer().dumps({"c", "a", "b"}) == b'{"__class__": "builtins.set", "data": ["a", "b", "c"]}'
    assert JSONSerializer().dumps({1, "a", None}) == b'{"__class__": "builtins.set", "data": ["a", 1, null]}'


def test_json_rebuilds_exceptions() -> None:
    loaded = JSONSerializer().loads(JSONSerializer().dumps({"error": KeyError("k")}))
    assert isinstance(loaded["error"], KeyError) and loaded["error"].args == ("'k'",)


def test_json_options_are_passed_through() -> None:
    serializer = JSONSerializer(dumps_kwargs={"sort_keys": True, "indent": 1}, loads_kwargs={"parse_float": str})
    assert serializer.dumps({"b": 1, "a": 2}) == b'{\n "a": 2,\n "b": 1\n}'
    assert serializer.loads(b'{"x": 1.5}') == {"x": "1.5"}
    plain = JSONSerializer(object_encoder=None, object_decoder=None)
    with pytest.raises(TypeError, match="not JSON serializable"):
        plain.dumps(uuid.UUID(int=1))
    assert plain.loads(b'{"__class__": "uuid.UUID", "data": "x"}') == {"__class__": "uuid.UUID", "data": "x"}


def test_json_accepts_prefects_encoder_paths_without_importing_prefect() -> None:
    serializer = JSONSerializer(object_encoder="prefect.serializers.prefect_json_object_encoder",
                                object_decoder="prefect.serializers.prefect_json_object_decoder")
    assert serializer.loads(serializer.dumps({1})) == {1}
    assert "prefect" not in sys.modules
    assert prefect_json_object_encoder is json_object_encoder and prefect_json_object_decoder is json_object_decoder


def test_json_open_files_become_a_placeholder(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("secret")
    with path.open() as handle:
        blob = JSONSerializer().dumps({"handle": handle})
        loaded = JSONSerializer().loads(blob)
    assert b"secret" not in blob
    # Prefect fails to load this (pydantic has no schema for a file); otelflow leaves the placeholder.
    assert loaded["handle"]["__class__"] == "_io.TextIOWrapper"
    assert loaded["handle"]["data"].startswith("<Prefect IOStream Placeholder: type=TextIOWrapper, repr=")


# --- JSON: the decoder never imports ---------------------------------------------------------------------------


def test_json_decoder_leaves_classes_of_unimported_modules_as_dicts(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "side_effect_module.py").write_text(
        "import pathlib, dataclasses\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "@dataclasses.dataclass\n"
        "class Thing:\n"
        "    n: int\n"
        "class Boom(Exception):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "side_effect_module", raising=False)
    blob = b'[{"__class__": "side_effect_module.Thing", "data": {"n": 1}}, ' \
           b'{"__exc_type__": "side_effect_module.Boom", "message": "m"}]'

    loaded = JSONSerializer().loads(blob)
    assert loaded == [{"__class__": "side_effect_module.Thing", "data": {"n": 1}},
                      {"__exc_type__": "side_effect_module.Boom", "message": "m"}]
    assert not marker.exists() and "side_effect_module" not in sys.modules

    import side_effect_module  # type: ignore[import-not-found]  # once the program imports it...

    thing, boom = JSONSerializer().loads(blob)  # ...the same data loads as objects
    assert thing == side_effect_module.Thing(1)
    assert isinstance(boom, side_effect_module.Boom) and str(boom) == "m"


def test_json_decoder_rejects_names_that_are_not_exceptions_or_classes() -> None:
    with pytest.raises(ValueError, match=r"^Invalid exception type: 'os.system'$"):
        JSONSerializer().loads(b'{"__exc_type__": "os.system", "message": "echo hi"}')
    for name in ("builtins.eval", "os", "os.not_there"):
        raw = {"__class__": name, "data": "1"}
        assert json_object_decoder(dict(raw)) == raw  # not a class: nothing is called
    assert json_object_decoder({"plain": 1}) == {"plain": 1}


def test_json_decoder_validates_data_into_the_class() -> None:
    with pytest.raises(pydantic.ValidationError):
        JSONSerializer().loads(b'{"__class__": "uuid.UUID", "data": "not-a-uuid"}')


def test_json_decoder_follows_a_class_defined_again() -> None:
    def define() -> type:
        @dataclasses.dataclass
        class Again:
            n: int
        Again.__qualname__ = "Again"
        return Again

    for _ in range(2):
        cls = define()
        sys.modules[__name__].Again = cls  # type: ignore[attr-defined]
        loaded = JSONSerializer().loads(JSONSerializer().dumps(cls(3)))
        assert type(loaded) is cls
    del sys.modules[__name__].Again  # type: ignore[attr-defined]


# --- what cannot be serialized ---------------------------------------------------------------------------------


def test_json_of_an_unknown_type_raises_prefects_error_with_a_hint() -> None:
    with pytest.raises(pydantic_core.PydanticSerializationError) as caught:
        JSONSerializer().dumps({"lock": threading.Lock()})
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == "Unable to serialize unknown type: <class '_thread.lock'>"
    assert any("serializer='pickle'" in note for note in caught.value.__notes__)


def test_pickle_of_a_resource_raises_prefects_error_with_a_hint() -> None:
    with pytest.raises(TypeError) as caught:
        PickleSerializer().dumps(threading.Lock())
    assert str(caught.value) == "cannot pickle '_thread.lock' object"
    assert any("live resources" in note for note in caught.value.__notes__)


# --- pickle and compression ------------------------------------------------------------------------------------


def test_pickle_round_trips_closures_as_base64() -> None:
    offset = 10
    blob = PickleSerializer().dumps(lambda x: x + offset)
    assert PickleSerializer().loads(blob)(1) == 11
    base64.decodebytes(blob)  # base64, as Prefect
    standard = PickleSerializer(picklelib="pickle")
    assert pickle.loads(base64.decodebytes(standard.dumps({"a": ORDER}))) == {"a": ORDER}
    assert PickleSerializer().dumps(1) == b"gAVLAS4=\n"  # Prefect's bytes for cloudpickle of 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PickleSerializer(picklelib="no_such_pickler"),
         "Failed to import requested pickle library: 'no_such_pickler'."),
        (lambda: PickleSerializer(picklelib="zlib"), "Pickle library at 'zlib' does not have a 'dumps' method."),
        (lambda: CompressedSerializer(serializer="json", compressionlib="no_such"),
         "Failed to import requested compression library: 'no_such'."),
        (lambda: CompressedSerializer(serializer="json", compressionlib="json"),
         "Compression library at 'json' does not have a 'compress' method."),
        (lambda: JSONSerializer(dumps_kwargs={"default": str}),
         "`default` cannot be provided. Use `object_encoder` instead."),
        (lambda: JSONSerializer(loads_kwargs={"object_hook": dict}),
         "`object_hook` cannot be provided. Use `object_decoder` instead."),
        (lambda: JSONSerializer(colour="blue"), "Extra inputs are not permitted"),
    ],
)
def test_bad_configuration_is_a_validation_error(make: Any, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message.replace(".", r"\.").replace("(", r"\(")):
        make()


@pytest.mark.parametrize("serializer", [CompressedJSONSerializer(), CompressedPickleSerializer(),
                                        CompressedSerializer(serializer="json", compressionlib="zlib")])
def test_compressed_serializers_round_trip(serializer: CompressedSerializer) -> None:
    value = {"orders": [ORDER] * 50, "ids": {1, 2}}
    blob = serializer.dumps(value)
    assert serializer.loads(blob) == value
    inner = serializer.serializer.dumps(value)
    library = zlib if serializer.compressionlib == "zlib" else lzma
    assert library.decompress(base64.decodebytes(blob)) == inner


def test_compressed_serializer_configuration_is_prefects() -> None:
    assert CompressedJSONSerializer().model_dump() == {
        "type": "compressed/json", "serializer": {"type": "json"}, "compressionlib": "lzma"}
    assert CompressedSerializer(serializer="pickle").serializer == PickleSerializer()
    loaded = CompressedSerializer.model_validate({"type": "compressed", "serializer": {"type": "json"}})
    assert isinstance(loaded.serializer, JSONSerializer)
    with pytest.raises(pydantic.ValidationError, match="serializer\n  Field required"):
        Serializer(type="compressed")


# --- type names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [("pickle", PickleSerializer), ("json", JSONSerializer), ("compressed/pickle", CompressedPickleSerializer),
     ("compressed/json", CompressedJSONSerializer)],
)
def test_type_names_give_their_serializers(name: str, cls: type[Serializer]) -> None:
    assert type(resolve_serializer(name)) is cls and resolve_serializer(name) == cls()
    assert type(Serializer(type=name)) is cls
    assert type(Serializer.model_validate({"type": name})) is cls
    assert cls().type == name


def test_resolve_serializer_passes_instances_through() -> None:
    serializer = JSONSerializer(dumps_kwargs={"indent": 2})
    assert resolve_serializer(serializer) is serializer


def test_resolve_serializer_errors_are_prefects() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        resolve_serializer("yaml")
    assert "No class found for dispatch key 'yaml' in registry for type 'Serializer'." in str(caught.value)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(TypeError) as wrong_type:
        resolve_serializer(1)  # type: ignore[arg-type]
    assert str(wrong_type.value) == (
        "Result serializer must be one of the following types: 'Serializer', 'str'. Got unsupported type 'int'.")


def test_a_subclass_registers_its_type_name() -> None:
    class ReprSerializer(Serializer):
        type: str = Field(default="test-repr", frozen=True)
        calls: ClassVar[int] = 0

        def dumps(self, obj: Any) -> bytes:
            return repr(obj).encode()

        def loads(self, blob: bytes) -> Any:
            return blob.decode()

    assert isinstance(resolve_serializer("test-repr"), ReprSerializer)
    assert resolve_serializer("test-repr").dumps([1]) == b"[1]"


def test_a_type_name_of_another_family_is_refused() -> None:
    # Prefect returns an uninitialised JSONSerializer here.
    with pytest.raises(pydantic.ValidationError, match="'json' is a JSONSerializer, not a PickleSerializer"):
        PickleSerializer(type="json")
    assert type(JSONSerializer(type="json")) is JSONSerializer


def test_the_base_serializer_does_nothing() -> None:
    base = Serializer()
    assert base.type == "__base__"
    with pytest.raises(NotImplementedError):
        base.dumps(1)
    with pytest.raises(NotImplementedError):
        base.loads(b"1")


def test_serializers_copy_and_pickle_as_configuration() -> None:
    serializer = CompressedSerializer(serializer=JSONSerializer(dumps_kwargs={"sort_keys": True}),
                                      compressionlib="zlib")
    assert pickle.loads(pickle.dumps(serializer)) == serializer
    assert serializer.model_copy(deep=True) == serializer
