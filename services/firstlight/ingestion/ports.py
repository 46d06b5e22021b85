"""What the ingestion core needs from the outside, as typed Protocols, and the plain values it
exchanges with them. No grpc, kafka or generated code here: adapters implement these (the
SQLAlchemy store in ``store.py``, the event encoding in ``events.py``, the peers in ``peers.py``
over ``firstlight.clients``).

The event publisher is the transactional outbox: the core hands its domain events to the store
in the same call that writes the data they describe, and the store commits both together (an
accepted input is always announced, even with the broker down); ``events.py`` encodes them for
the outbox and the relay publishes them. So there is no separate publisher port to call after
the write, which could be lost between the two."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from firstlight.blobstore import BlobStore

Region = tuple[str, float, float, float, float]  # (concept, x0, y0, x1, y1), normalised


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class QualityRange:
    """A listing filter: the stored quality ``metric`` within [min, max] (None = unbounded)."""

    metric: str
    min: float | None = None
    max: float | None = None


@dataclass
class InputRow:
    app_id: str
    id: str
    blob_uri: str
    width: int
    height: int
    format: str
    sha256: str
    split: int
    metadata: dict[str, str]
    created_at: datetime
    label_revision: int
    concepts: list[str] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    #: The Portal's thumbnail in the blob store, cut from ingestion's decode ("" = stored before
    #: thumbnails were: the gateway makes one on demand).
    thumbnail_uri: str = ""
    #: Image-quality metrics (firstlight.media.image_metrics.ImageQuality.to_dict) measured on
    #: ingestion's decode; None for inputs stored before they were.
    quality: dict[str, float] | None = None
    #: The duplicate checks' packed pixel signatures (firstlight.media.pixel_signature.pack) from
    #: the same decode; None for inputs stored before they were.
    pixel_signature: bytes | None = None
    # (concept, labeled_by, labeled_at or None) per concept; filled by get_inputs only.
    label_records: list[tuple[str, str, datetime | None]] = field(default_factory=list)


# -- domain events (encoded by events.py; topics and payloads are its business) ----------------


@dataclass(frozen=True)
class InputIngested:
    """An input stored durably, to be embedded with ``embedding_model`` ("" = the backbone).
    ``idempotency_key`` None: a fresh one (a new logical event)."""

    row: InputRow
    embedding_model: str = ""
    idempotency_key: str | None = None
    #: Where ingestion stored the pixels it decoded from a large JPEG (firstlight.media.preview);
    #: "" = none (small images, re-announcements): the embedding worker decodes the original.
    preview_uri: str = ""


@dataclass(frozen=True)
class EmbeddingModelChanged:
    app_id: str
    embedding_model: str
    previous_embedding_model: str
    input_ids: tuple[str, ...]


@dataclass(frozen=True)
class InputsDeleted:
    app_id: str
    input_ids: tuple[str, ...]
    #: Each deleted input's generation (domain.generations), in the order of input_ids: an index
    #: drops only that incarnation, so a replayed deletion cannot remove a later re-upload.
    generations: tuple[int, ...] = ()


@dataclass(frozen=True)
class AnnotationsChanged:
    """An input's full label state after a change."""

    row: InputRow


Event = InputIngested | EmbeddingModelChanged | InputsDeleted | AnnotationsChanged
#: Builds the events of a write from the rows the store wrote (inside its transaction).
MakeEvents = Callable[[list[InputRow]], list[Event]]
#: One annotation change: (input_id, add, remove, split or 0, add_regions, clear_regions).
Change = tuple[str, list[str], list[str], int, list[Region], bool]


class MetadataStorePort(Protocol):
    """The relational store (``store.MetadataStore``). Every write that takes events commits
    them with the data, in one transaction."""

    def insert_app(self, app_id: str, name: str, description: str) -> dict[str, Any]: ...
    def get_app(self, app_id: str) -> dict[str, Any] | None: ...
    def set_embedding_model(self, app_id: str, model: str, make_events: MakeEvents) -> tuple[bool, int]: ...
    def existing_input_ids(self, app_id: str, ids: Iterable[str]) -> set[str]: ...
    def insert_inputs(self, rows: Sequence[InputRow], events: Sequence[Event]) -> None: ...
    def enqueue(self, events: Sequence[Event]) -> None: ...
    def indexing_backlog(self, app_id: str) -> tuple[int, int]: ...
    def get_inputs(self, app_id: str, ids: list[str]) -> dict[str, InputRow]: ...
    def list_inputs(
        self,
        app_id: str,
        *,
        after_seq: int,
        limit: int,
        concepts_any: Sequence[str],
        split: int,
        labeled: bool | None,
        input_ids: Sequence[str] = (),
        quality_range: QualityRange | None = None,
    ) -> tuple[list[InputRow], int | None, int]: ...
    def quality_values(self, app_id: str, metric: str) -> tuple[list[float], int]: ...
    def delete_inputs(self, app_id: str, ids: list[str], events: Sequence[Event]) -> list[str]: ...
    def apply_annotations(self, app_id: str, changes: Sequence[Change], make_events: MakeEvents, labeled_by: str = "") -> list[InputRow]: ...
    def list_concepts(self, app_id: str) -> list[tuple[str, int]]: ...


#: Where image bytes live: the Protocol of ``firstlight.blobstore`` (local files, S3-like).
BlobStorePort = BlobStore


# -- peers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFilter:
    """Which inputs a search may return (``common.InputFilter`` as the core sees it)."""

    concepts: tuple[str, ...] = ()
    split: int = 0
    labeled: bool | None = None


@dataclass(frozen=True)
class SearchQuery:
    """Exactly one of text, image or input_id."""

    text: str = ""
    image: bytes = b""
    input_id: str = ""


@dataclass(frozen=True)
class Selection:
    """The inputs a BulkAnnotate acts on: listed ids, or the hits of one search."""

    input_ids: tuple[str, ...] = ()
    query: SearchQuery = SearchQuery()
    filter: InputFilter = InputFilter()
    max_results: int = 0  # 0: the default
    min_score: float = 0.0


class SearchPeer(Protocol):
    """The SearchService, for selections given as searches."""

    async def search_page(self, app_id: str, query: SearchQuery, flt: InputFilter, page_size: int, page_token: str) -> tuple[list[tuple[str, float]], str]:
        """One page of (input id, score) hits, best first, and the next page's token ('' at the end)."""
        ...


class EmbeddingPeer(Protocol):
    """The EmbeddingService, asked whether it can embed with a model before an app switches."""

    async def check_model(self, app_id: str, model: str) -> None:
        """Returns if ``model`` (the app's public model id) can embed; NotFound /
        FailedPrecondition / InvalidArgument if not, Unavailable if it cannot tell."""
        ...


class VideoRef(Protocol):
    """A video submitted by reference (``video_pb2.VideoReference`` is one)."""

    @property
    def file(self) -> str: ...
    @property
    def video_id(self) -> str: ...
    @property
    def concepts(self) -> Any: ...  # Sequence[str]
    @property
    def metadata(self) -> Any: ...  # Mapping[str, str]


class Submission(Protocol):
    """An ``inputs.submit`` record as the core reads it (``events_pb2.InputSubmitted`` is one)."""

    @property
    def app_id(self) -> str: ...
    @property
    def header(self) -> Any: ...  # .idempotency_key: str
    @property
    def input(self) -> Any: ...  # .id, .image_bytes, .concepts, .metadata, .split, .regions
