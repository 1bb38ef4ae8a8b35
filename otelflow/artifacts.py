"""Prefect's artifacts, local-first: markdown, tables, links, progress bars and images made by runs.

Same API as ``prefect.artifacts`` (Prefect 3.9): ``create_markdown_artifact``, ``create_table_artifact``,
``create_link_artifact``, ``create_progress_artifact`` / ``update_progress_artifact``, ``create_image_artifact``,
their ``a``-prefixed async twins, and :class:`Artifact` (``Artifact.get(key)``, ``Artifact(...).create()``).
As in Prefect, in async code (an async flow or task, or a running event loop outside a run) the sync names
return an awaitable; ``_sync=True`` forces the plain value.

Where an artifact lives (there is no API server):

- the otelflow store (``OTELFLOW_STORE_URL``, default a sqlite file under ``OTELFLOW_HOME``): namespace
  ``artifacts`` maps each artifact id to its JSON record (id, key, type, description, data, metadata_, flow and
  task run ids and names, trace_id/span_id, created, updated). A keyed artifact is also listed under its key:
  namespace ``artifacts:key:<key>`` (every version, in write order) and ``artifacts:latest`` (key -> latest id).
  Another process, on another machine with a shared Redis store, reads it with ``Artifact.get(key)``.
- the trace: an ``artifact`` event on the span of the run that made it, and one INFO run log record, both with
  the artifact's id, key, type and a short description (passwords masked), never its data.

Data is stored as Prefect stores it: markdown and link artifacts as markdown text (type ``markdown``), tables
as JSON text (NaN as null), progress as a float from 0 to 100, images as the URL. One artifact's record (data,
description and the rest) may be at most ``OTELFLOW_INPUT_MAX_BYTES`` bytes of JSON (512 KiB by default, the
limit of flow run input): more raises ``ValueError`` and nothing is stored. Truncating would corrupt a table;
store big data elsewhere and make a link artifact to it.

Example::

    from otelflow import flow, task
    from otelflow.artifacts import Artifact, create_markdown_artifact, create_table_artifact

    @task
    def report(rows: list[dict]) -> None:
        create_table_artifact(rows, key="churn-risk", description="Customers to call today")

    @flow
    def pipeline() -> None:
        report([{"customer": "c-1", "risk": 0.9}])
        create_markdown_artifact("# Done\\n\\nAll good.", key="pipeline-summary")

    pipeline()
    Artifact.get("churn-risk").data   # '[{"customer": "c-1", "risk": 0.9}]'
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import math
import re
import uuid
import warnings
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from otelflow import semconv

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from otelflow.stores import Store

__all__ = [
    "ARTIFACTS_NAMESPACE",
    "LATEST_NAMESPACE",
    "Artifact",
    "ArtifactNotFound",
    "ImageArtifact",
    "LinkArtifact",
    "MarkdownArtifact",
    "ProgressArtifact",
    "TableArtifact",
    "acreate_image_artifact",
    "acreate_link_artifact",
    "acreate_markdown_artifact",
    "acreate_progress_artifact",
    "acreate_table_artifact",
    "aupdate_progress_artifact",
    "create_image_artifact",
    "create_link_artifact",
    "create_markdown_artifact",
    "create_progress_artifact",
    "create_table_artifact",
    "list_artifacts",
    "read_artifact",
    "update_progress_artifact",
    "versions_namespace",
]

#: Store namespace of the artifact records: artifact id -> JSON record.
ARTIFACTS_NAMESPACE: Final = "artifacts"
#: Store namespace of the latest version of each key: key -> artifact id.
LATEST_NAMESPACE: Final = "artifacts:latest"
_VERSIONS_PREFIX: Final = "artifacts:key:"
_KEY_RE: Final = re.compile(r"[a-z0-9-]*")
_KEY_MESSAGE: Final = "Artifact key must only contain lowercase letters, numbers, and dashes."  # Prefect's words
_OUTSIDE_RUN: Final = ("Artifact creation outside of a flow or task run is deprecated and will be removed in a "
                       "later version.")  # Prefect's FutureWarning
_DESCRIPTION_CHARS: Final = 256  # of the description on span events and log records
_STORED: Final = {"stored": True}  # validation context of records read back: their keys are not re-checked


def versions_namespace(key: str) -> str:
    """Store namespace listing every version of a keyed artifact (artifact id -> ``{"created": ...}``), oldest
    first."""
    return _VERSIONS_PREFIX + key


class ArtifactNotFound(LookupError):
    """No artifact with this id in the store (``update_progress_artifact`` of an id that was never created, or
    was created against another store)."""


def _awaitable(sync: bool | None) -> bool:
    """Prefect's dispatch rule: an awaitable in async code (or when ``_sync=False``), else the value."""
    if sync is not None:
        return not sync
    from otelflow.states import _in_async_context

    return _in_async_context()


class Artifact(BaseModel):
    """An artifact: what runs publish for people (Prefect's ``Artifact``), and what ``Artifact.get`` returns.

    Make one yourself and :meth:`create` it (the data is stored JSON-encoded, as Prefect does), or use the
    ``create_*_artifact`` functions. Fields set by the store: ``id``, ``created``, ``updated``, the run ids
    (from the current run unless given), and otelflow's additions ``flow_name``, ``flow_run_name``,
    ``task_run_name``, ``trace_id`` and ``span_id`` (the span of the run that made it).

    Example::

        artifact = Artifact.get("churn-risk")        # the latest version of the key, or None
        if artifact is not None:
            print(artifact.type, artifact.description, artifact.data, artifact.flow_run_id)
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    key: str | None = None
    type: str | None = None
    description: str | None = None
    data: Any = None
    metadata_: dict[str, str] | None = None
    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None
    id: uuid.UUID | None = None
    created: _dt.datetime | None = None
    updated: _dt.datetime | None = None
    # otelflow: where it was made (for `otelflow artifacts ls --flow`, and to find its trace)
    flow_name: str | None = None
    flow_run_name: str | None = None
    task_run_name: str | None = None
    trace_id: str | None = None
    span_id: str | None = None

    _stored_fields: ClassVar[tuple[str, ...]] = (
        "id", "key", "type", "description", "data", "metadata_", "flow_run_id", "task_run_id", "flow_name",
        "flow_run_name", "task_run_name", "trace_id", "span_id", "created", "updated",
    )

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or info.context == _STORED:
            return value
        if not _KEY_RE.fullmatch(value):
            raise ValueError(_KEY_MESSAGE)
        return value or None  # Prefect accepts "": here an empty key is no key

    # --- creating -------------------------------------------------------------------------------------------
    def create(self, client: Any = None, _sync: bool | None = None) -> Artifact | Coroutine[Any, Any, Artifact]:
        """Store the artifact for the current run and return the stored artifact (with its ``id``).

        ``client`` is accepted for Prefect's signature and ignored (there is no API server). Outside a flow or
        task run this works, with Prefect's ``FutureWarning``, and the artifact belongs to no run.
        """
        if _awaitable(_sync):
            return self.acreate(client)
        return _create(self, self._format(), stacklevel=3)

    async def acreate(self, client: Any = None) -> Artifact:
        """:meth:`create`, awaitable (the store is written from a worker thread)."""
        data = self._format()
        return await asyncio.to_thread(_create, self, data, 0)

    def _format(self) -> Any:
        """The data as stored: the JSON text of ``data`` (subclasses store their own shape)."""
        return json.dumps(self.data)

    def format(self, _sync: bool | None = None) -> Any:
        """The data as it is stored (Prefect's ``format``); an awaitable in async code."""
        if _awaitable(_sync):
            return self.aformat()
        return self._format()

    async def aformat(self) -> Any:
        """:meth:`format`, awaitable."""
        return self._format()

    # --- reading --------------------------------------------------------------------------------------------
    @classmethod
    def get(
        cls, key: str | None = None, client: Any = None, _sync: bool | None = None
    ) -> Artifact | Coroutine[Any, Any, Artifact | None] | None:
        """The latest artifact with ``key`` (the most recently created or updated one), or ``None``.

        Without a key: the most recently created or updated artifact of any key. Reads the store, so it finds
        artifacts made by other processes (and, on a shared Redis store, other machines).
        """
        if _awaitable(_sync):
            return cls.aget(key, client)
        return _latest(key)

    @classmethod
    async def aget(cls, key: str | None = None, client: Any = None) -> Artifact | None:
        """:meth:`get`, awaitable."""
        return await asyncio.to_thread(_latest, key)

    @classmethod
    def get_or_create(
        cls, key: str | None = None, description: str | None = None, data: Any = None, client: Any = None,
        _sync: bool | None = None, **kwargs: Any,
    ) -> tuple[Artifact, bool] | Coroutine[Any, Any, tuple[Artifact, bool]]:
        """``(artifact, False)`` for the latest artifact with ``key``, else ``(created, True)``: a new artifact
        made from ``description``, ``data`` and ``kwargs`` (``type``, ``metadata_``...)."""
        if _awaitable(_sync):
            return cls.aget_or_create(key, description, data, client, **kwargs)
        found = _latest(key)
        if found is not None:
            return found, False
        made = cls(key=key, description=description, data=data, **kwargs)
        return _create(made, made._format(), stacklevel=3), True

    @classmethod
    async def aget_or_create(
        cls, key: str | None = None, description: str | None = None, data: Any = None, client: Any = None,
        **kwargs: Any,
    ) -> tuple[Artifact, bool]:
        """:meth:`get_or_create`, awaitable."""
        found = await cls.aget(key)
        if found is not None:
            return found, False
        return await cls(key=key, description=description, data=data, **kwargs).acreate(), True


class LinkArtifact(Artifact):
    """A link, stored as the markdown ``[link_text](link)`` (type ``markdown``, as in Prefect)."""

    link: str
    link_text: str | None = None
    type: str | None = "markdown"

    def _format(self) -> str:
        return f"[{self.link_text or self.link}]({self.link})"


class MarkdownArtifact(Artifact):
    """Markdown text (a report, a summary)."""

    markdown: str
    type: str | None = "markdown"

    def _format(self) -> str:
        return self.markdown


class TableArtifact(Artifact):
    """A table: a list of row dicts, a dict of column lists, or a list of row lists; stored as JSON text, with
    NaN cells as null."""

    table: dict[str, list[Any]] | list[dict[str, Any]] | list[list[Any]]
    type: str | None = "table"

    def _format(self) -> str:
        try:
            return json.dumps(_nan_to_none(self.table))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"A table artifact's cells must be JSON data (str, numbers, bool, None, lists, dicts): "
                            f"{exc}") from None


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class ProgressArtifact(Artifact):
    """Progress in percent, from 0 to 100 (values outside are clamped, with Prefect's warning)."""

    progress: float
    type: str | None = "progress"

    def _format(self) -> float:
        value = self.progress
        if not 0.0 <= value <= 100.0:  # NaN too
            from otelflow.logging import get_logger

            logger = get_logger("artifacts")
            logger.warning(f"ProgressArtifact received an invalid value, Progress: {value}%")
            self.progress = 0.0 if math.isnan(value) else min(max(value, 0.0), 100.0)
            logger.warning(f"Interpreting as {self.progress}% progress")
        return float(self.progress)


class ImageArtifact(Artifact):
    """An image, by URL (the store keeps the URL, not the image)."""

    image_url: str
    type: str | None = "image"

    def _format(self) -> str:
        return self.image_url


# --- the run that makes an artifact -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Here:
    """The run (if any) an artifact made now belongs to, and the span that records it."""

    in_run: bool
    flow_run_id: uuid.UUID | None
    task_run_id: uuid.UUID | None
    flow_name: str | None
    flow_run_name: str | None
    task_run_name: str | None
    span: Span
    trace_id: str | None
    span_id: str | None


def _here() -> _Here:
    from opentelemetry import trace

    from otelflow.context import FlowRunContext, TaskRunContext

    flow_ctx = FlowRunContext.get()
    task_ctx = TaskRunContext.get()
    flow_run = flow_ctx.flow_run if flow_ctx is not None else None
    task_run = task_ctx.task_run if task_ctx is not None else None
    if task_run is not None and flow_run is not None and task_run.flow_run_id != flow_run.id:
        task_run = None  # a subflow called inside a task: the task's context is its parent flow run's
    ctx: Any = task_ctx if task_run is not None else flow_ctx
    current = trace.get_current_span()
    run_span = ctx.span if ctx is not None else current
    span = run_span if run_span.is_recording() else current
    span_context = run_span.get_span_context()
    if not span_context.is_valid:
        span_context = current.get_span_context()
    return _Here(
        in_run=flow_run is not None or task_run is not None,
        flow_run_id=flow_run.id if flow_run is not None else (task_run.flow_run_id if task_run else None),
        task_run_id=task_run.id if task_run is not None else None,
        flow_name=flow_run.flow_name if flow_run is not None else ((task_run.flow_name or None) if task_run else None),
        flow_run_name=flow_run.name if flow_run is not None else None,
        task_run_name=task_run.name if task_run is not None else None,
        span=span,
        trace_id=format(span_context.trace_id, "032x") if span_context.is_valid else None,
        span_id=format(span_context.span_id, "016x") if span_context.is_valid else None,
    )


# --- the store ----------------------------------------------------------------------------------------------


def _to_json(artifact: Artifact) -> str:
    record: dict[str, Any] = {}
    for name in Artifact._stored_fields:
        value = getattr(artifact, name)
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, _dt.datetime):
            value = value.isoformat()
        record[name] = value
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


def _from_json(text: str | None) -> Artifact | None:
    """A stored record as an :class:`Artifact`; ``None`` for anything that is not one (the store is shared:
    a damaged or foreign value must not break every reader)."""
    if text is None:
        return None
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            return None
        fields = {k: v for k, v in raw.items() if k in Artifact._stored_fields}
        return Artifact.model_validate(fields, context=_STORED)
    except (ValueError, TypeError, RecursionError):  # pydantic's ValidationError is a ValueError
        return None


def _check_size(artifact: Artifact, text: str) -> None:
    """Refuse a record over ``OTELFLOW_INPUT_MAX_BYTES`` (data, description and the rest, as stored)."""
    from otelflow.settings import get_settings

    size = len(text.encode())
    limit = get_settings().input_max_bytes
    if size > limit:
        what = f"Artifact {artifact.key!r}" if artifact.key else f"A {artifact.type or 'custom'} artifact"
        raise ValueError(
            f"{what} is {size} bytes of JSON with its data and description; the limit is {limit} "
            "(OTELFLOW_INPUT_MAX_BYTES). Nothing was stored. Keep big data elsewhere and make a link artifact to "
            "it, or store a summary."
        )


def _put_versions(store: Store, artifact: Artifact) -> None:
    """List the artifact under its key (or move it to the front: an update makes it the latest)."""
    if artifact.key:
        created = artifact.created.isoformat() if artifact.created else None
        store.put(versions_namespace(artifact.key), str(artifact.id), json.dumps({"created": created}))
        store.put(LATEST_NAMESPACE, artifact.key, str(artifact.id), notify=False)


def _create(template: Artifact, data: Any, stacklevel: int) -> Artifact:
    """Store a new artifact with ``data`` (already formatted) for the current run; record it in telemetry.

    ``stacklevel``: of the outside-a-run warning, counted from here (the user's frame).
    """
    from otelflow.stores import get_store

    here = _here()
    if not here.in_run:
        warnings.warn(_OUTSIDE_RUN, FutureWarning, stacklevel=max(stacklevel, 1))
    now = _dt.datetime.now(_dt.UTC)
    artifact = Artifact.model_construct(
        id=uuid.uuid4(), created=now, updated=now, key=template.key, type=template.type,
        description=template.description, data=data, metadata_=template.metadata_,
        flow_run_id=template.flow_run_id or here.flow_run_id, task_run_id=template.task_run_id or here.task_run_id,
        flow_name=here.flow_name, flow_run_name=here.flow_run_name, task_run_name=here.task_run_name,
        trace_id=here.trace_id, span_id=here.span_id,
    )
    try:
        text = _to_json(artifact)
    except ValueError as exc:  # NaN or infinity in data handed over raw (a custom Artifact subclass)
        raise ValueError(f"Artifact data must be JSON data without NaN or infinity: {exc}") from None
    _check_size(artifact, text)
    store = get_store()
    store.put(ARTIFACTS_NAMESPACE, str(artifact.id), text)
    _put_versions(store, artifact)
    _announce(semconv.EVENT_ARTIFACT, artifact, here)
    return artifact


def _update_progress(artifact_id: uuid.UUID | str, data: float, description: str | None) -> None:
    from otelflow.stores import get_store

    store = get_store()
    ident = str(artifact_id)
    artifact = _from_json(store.get(ARTIFACTS_NAMESPACE, ident))
    if artifact is None:
        raise ArtifactNotFound(
            f"Artifact {ident} not found in the store {store.display_url}: update_progress_artifact takes the id "
            "create_progress_artifact returned, in a process using the same store (OTELFLOW_STORE_URL)."
        )
    artifact.data = data
    if description:  # Prefect's rule: an empty description keeps the stored one
        artifact.description = description
    artifact.updated = _dt.datetime.now(_dt.UTC)
    text = _to_json(artifact)
    _check_size(artifact, text)
    store.put(ARTIFACTS_NAMESPACE, ident, text)
    _put_versions(store, artifact)
    _announce(semconv.EVENT_ARTIFACT_UPDATED, artifact, _here())


def _announce(event: str, artifact: Artifact, here: _Here) -> None:
    """The span event and the run log record of an artifact: id, key, type, a short description; no data."""
    from otelflow._internal.export.limits import truncate_text
    from otelflow._internal.runs.redact import redact_text

    attributes: dict[str, str | float] = {semconv.ARTIFACT_ID: str(artifact.id)}
    if artifact.key:
        attributes[semconv.ARTIFACT_KEY] = artifact.key
    if artifact.type:
        attributes[semconv.ARTIFACT_TYPE] = artifact.type
    if artifact.description:
        attributes[semconv.ARTIFACT_DESCRIPTION] = truncate_text(redact_text(artifact.description),
                                                                 _DESCRIPTION_CHARS)
    if artifact.type == "progress" and isinstance(artifact.data, int | float):
        attributes[semconv.ARTIFACT_PROGRESS] = float(artifact.data)
    if here.span.is_recording():
        here.span.add_event(event, attributes)
    if not here.in_run:
        return
    import logging

    from otelflow.exceptions import MissingContextError
    from otelflow.logging import get_run_logger

    try:
        logger = get_run_logger()
    except MissingContextError:
        return
    name = artifact.key or str(artifact.id)
    if event == semconv.EVENT_ARTIFACT:
        logger.log(logging.INFO, "Created %s artifact %s", artifact.type or "custom", name, extra=attributes)
    else:  # progress updates can come by the hundred: visible at DEBUG, and in the store
        logger.log(logging.DEBUG, "Updated %s artifact %s: %s%%", artifact.type or "custom", name,
                   attributes.get(semconv.ARTIFACT_PROGRESS, "?"), extra=attributes)


def _latest(key: str | None) -> Artifact | None:
    from otelflow.stores import get_store

    store = get_store()
    if key is None:
        for item in reversed(store.items(ARTIFACTS_NAMESPACE)):
            found = _from_json(item.value)
            if found is not None:
                return found
        return None
    if not key:
        return None
    latest = store.get(LATEST_NAMESPACE, key)
    if latest is not None:
        found = _from_json(store.get(ARTIFACTS_NAMESPACE, latest))
        if found is not None and found.key == key:
            return found
    versions = list_artifacts(key, store=store)  # the pointer is gone or stale: the newest listed version
    return versions[0] if versions else None


def read_artifact(artifact_id: uuid.UUID | str, *, store: Store | str | None = None) -> Artifact | None:
    """The artifact with this id (any version of any key), or ``None``. otelflow's addition.

    ``store``: a :class:`~otelflow.stores.Store` or URL (default: the configured store).
    """
    from otelflow.stores import get_store

    return _from_json(get_store(store).get(ARTIFACTS_NAMESPACE, str(artifact_id)))


def list_artifacts(key: str | None = None, *, store: Store | str | None = None) -> list[Artifact]:
    """Every artifact, or every version of ``key``: the most recently created or updated first. otelflow's
    addition (Prefect's ``prefect artifact ls`` reads its server).

    ``store``: a :class:`~otelflow.stores.Store` or URL (default: the configured store).
    """
    from otelflow.stores import get_store

    chosen = get_store(store)
    found: list[Artifact] = []
    if key is None:
        for item in reversed(chosen.items(ARTIFACTS_NAMESPACE)):
            artifact = _from_json(item.value)
            if artifact is not None:
                found.append(artifact)
        return found
    if not key:
        return found
    for item in reversed(chosen.items(versions_namespace(key))):
        artifact = _from_json(chosen.get(ARTIFACTS_NAMESPACE, item.key))
        if artifact is not None and artifact.key == key:
            found.append(artifact)
    return found


# --- Prefect's functions ----------------------------------------------------------------------------------------


def _make(cls: type[Artifact], sync: bool | None, **fields: Any) -> uuid.UUID | Coroutine[Any, Any, uuid.UUID]:
    """Validate (Prefect's messages), then create now, or return the awaitable of the async twin."""
    artifact = cls(**fields)
    if _awaitable(sync):
        return _acreate_id(artifact)
    return cast(uuid.UUID, _create(artifact, artifact._format(), stacklevel=4).id)


async def _acreate_id(artifact: Artifact) -> uuid.UUID:
    return cast(uuid.UUID, (await artifact.acreate()).id)


def create_markdown_artifact(
    markdown: str, key: str | None = None, description: str | None = None, _sync: bool | None = None
) -> uuid.UUID | Coroutine[Any, Any, uuid.UUID]:
    """Create a markdown artifact for the current run; return its id.

    ``key``: lowercase letters, numbers and dashes; artifacts with the same key are versions of one artifact
    (``Artifact.get(key)`` returns the latest). ``description``: shown with it (markdown).

    Example::

        create_markdown_artifact("## Sales\\n\\n| Region | Revenue |\\n|---|---|\\n| EU | 1.2M |",
                                 key="sales-report", description="Quarterly sales")
    """
    return _make(MarkdownArtifact, _sync, markdown=markdown, key=key, description=description)


async def acreate_markdown_artifact(
    markdown: str, key: str | None = None, description: str | None = None
) -> uuid.UUID:
    """:func:`create_markdown_artifact`, awaitable."""
    return await _acreate_id(MarkdownArtifact(markdown=markdown, key=key, description=description))


def create_table_artifact(
    table: dict[str, list[Any]] | list[dict[str, Any]] | list[list[Any]],
    key: str | None = None,
    description: str | None = None,
    _sync: bool | None = None,
) -> uuid.UUID | Coroutine[Any, Any, uuid.UUID]:
    """Create a table artifact for the current run; return its id.

    ``table``: a list of row dicts, a dict of column lists, or a list of row lists (JSON cells; NaN is stored as
    null).

    Example::

        create_table_artifact([{"customer": "c-1", "churn": 0.85}, {"customer": "c-2", "churn": 0.72}],
                              key="churn-risk", description="Call these customers today")
    """
    return _make(TableArtifact, _sync, table=table, key=key, description=description)


async def acreate_table_artifact(
    table: dict[str, list[Any]] | list[dict[str, Any]] | list[list[Any]],
    key: str | None = None,
    description: str | None = None,
) -> uuid.UUID:
    """:func:`create_table_artifact`, awaitable."""
    return await _acreate_id(TableArtifact(table=table, key=key, description=description))


def create_link_artifact(
    link: str,
    link_text: str | None = None,
    key: str | None = None,
    description: str | None = None,
    client: Any = None,
    _sync: bool | None = None,
) -> uuid.UUID | Coroutine[Any, Any, uuid.UUID]:
    """Create a link artifact for the current run (stored as markdown ``[link_text](link)``); return its id.

    Example::

        create_link_artifact("https://s3.example.com/bucket/report.csv", link_text="the report",
                             key="daily-report")
    """
    return _make(LinkArtifact, _sync, link=link, link_text=link_text, key=key, description=description)


async def acreate_link_artifact(
    link: str,
    link_text: str | None = None,
    key: str | None = None,
    description: str | None = None,
    client: Any = None,
) -> uuid.UUID:
    """:func:`create_link_artifact`, awaitable."""
    return await _acreate_id(LinkArtifact(link=link, link_text=link_text, key=key, description=description))


def create_progress_artifact(
    progress: float, key: str | None = None, description: str | None = None, _sync: bool | None = None
) -> uuid.UUID | Coroutine[Any, Any, uuid.UUID]:
    """Create a progress artifact (percent, 0 to 100) for the current run; return its id for
    :func:`update_progress_artifact`.

    Example::

        artifact_id = create_progress_artifact(0.0, description="Batches fetched")
        for i in range(1, 11):
            fetch_batch(i)
            update_progress_artifact(artifact_id, i * 10)
    """
    return _make(ProgressArtifact, _sync, progress=progress, key=key, description=description)


async def acreate_progress_artifact(
    progress: float, key: str | None = None, description: str | None = None
) -> uuid.UUID:
    """:func:`create_progress_artifact`, awaitable."""
    return await _acreate_id(ProgressArtifact(progress=progress, key=key, description=description))


def update_progress_artifact(
    artifact_id: uuid.UUID,
    progress: float,
    description: str | None = None,
    client: Any = None,
    _sync: bool | None = None,
) -> uuid.UUID | Coroutine[Any, Any, uuid.UUID]:
    """Set the progress (and, when given, the description) of a progress artifact; return its id.

    The artifact becomes the latest of its key. Raises :class:`ArtifactNotFound` for an id the store does not
    hold. Two processes updating one artifact at once: the last write wins.
    """
    update = ProgressArtifact(progress=progress, description=description)
    if _awaitable(_sync):
        return aupdate_progress_artifact(artifact_id, progress, description, client)
    _update_progress(artifact_id, update._format(), description)
    return artifact_id


async def aupdate_progress_artifact(
    artifact_id: uuid.UUID,
    progress: float,
    description: str | None = None,
    client: Any = None,
) -> uuid.UUID:
    """:func:`update_progress_artifact`, awaitable."""
    update = ProgressArtifact(progress=progress, description=description)
    await asyncio.to_thread(_update_progress, artifact_id, update._format(), description)
    return artifact_id


def create_image_artifact(
    image_url: str, key: str | None = None, description: str | None = None, _sync: bool | None = None
) -> uuid.UUID | Coroutine[Any, Any, uuid.UUID]:
    """Create an image artifact (the image's URL) for the current run; return its id.

    Example::

        create_image_artifact("https://example.com/plots/loss.png", key="training-loss")
    """
    return _make(ImageArtifact, _sync, image_url=image_url, key=key, description=description)


async def acreate_image_artifact(
    image_url: str, key: str | None = None, description: str | None = None
) -> uuid.UUID:
    """:func:`create_image_artifact`, awaitable."""
    return await _acreate_id(ImageArtifact(image_url=image_url, key=key, description=description))
