"""Relational metadata store (SQLAlchemy Core): SQLite by default, PostgreSQL by URL.

Events go through a transactional outbox: the rows that describe an input and the event that
announces it are committed together, and a relay publishes the outbox to Kafka. So an
accepted input is always announced, even if the broker was down when it was uploaded."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    and_,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from firstlight import db, migrations
from firstlight.errors import AlreadyExists
from firstlight.ingestion import migrations as schema_migrations
from firstlight.ingestion.events import OutboxEvent, announcement_prefix, encode
from firstlight.ingestion.ports import Event, InputRow, MakeEvents, QualityRange, utcnow

metadata = MetaData()

apps = Table(
    "apps",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("description", String(4096), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Triton model (optionally "@version") that embeds this app's images; "" = the base backbone.
    Column("embedding_model", String(256), nullable=False, default="", server_default=""),
)

inputs = Table(
    "inputs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # stable order for pagination
    Column("app_id", String(64), ForeignKey("apps.id"), nullable=False),
    Column("id", String(128), nullable=False),
    Column("blob_uri", String(1024), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("format", String(16), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("split", Integer, nullable=False, default=0),
    Column("metadata", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("label_revision", Integer, nullable=False, default=0),
    # Labeled objects, [[concept, x0, y0, x1, y1], ...] with normalised boxes. A JSON column, not
    # a table: they are only ever read and written with their input (never queried by box), and
    # their concepts are also rows of input_concepts, so concept filters see them. NULL = none.
    Column("regions", JSON, nullable=True),
    # The Portal's thumbnail blob (firstlight.media.thumbnail); NULL for inputs stored before it.
    Column("thumbnail_uri", String(1024), nullable=True),
    # Image-quality metrics from ingestion's decode, {metric: value}; NULL for inputs stored before.
    Column("quality", JSON(none_as_null=True), nullable=True),  # None: SQL NULL, not JSON null
    # The duplicate checks' packed pixel signatures from the same decode; NULL for inputs stored before.
    Column("pixel_signature", LargeBinary, nullable=True),
    UniqueConstraint("app_id", "id", name="uq_inputs_app_id"),
)

input_concepts = Table(
    "input_concepts",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("input_id", String(128), primary_key=True),
    Column("concept", String(256), primary_key=True),
    # Who added the label (an API key's name and id, "admin key", "service") and when; NULL for
    # labels that came with the upload or predate these columns.
    Column("labeled_by", String(320), nullable=True),
    Column("labeled_at", DateTime(timezone=True), nullable=True),
)

outbox = Table(
    "outbox",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(256), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("value", LargeBinary, nullable=False),
)

# Inputs announced on ``inputs.ingested`` whose indexing search has not confirmed yet (on
# ``inputs.indexed``). A row is written when the relay has the broker's ack and deleted on the
# confirmation; one still here at ``due_at`` is announced again (docs/reliability.md, "What a
# broker restart loses"). Rows only live until confirmed, so the table stays small.
index_watch = Table(
    "index_watch",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("input_id", String(128), primary_key=True),
    # The embedding model the announcement asked for ("" = the base backbone).
    Column("model", String(256), nullable=False, default=""),
    Column("relayed_at", DateTime(timezone=True), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    # Re-announcements so far.
    Column("attempts", Integer, nullable=False, default=0),
)


SCHEMA = migrations.Schema("ingestion", schema_migrations.FOLDER, metadata, schema_migrations.legacy_revision)


@dataclass(frozen=True)
class WatchRow:
    app_id: str
    input_id: str
    model: str
    relayed_at: datetime
    due_at: datetime
    attempts: int


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # SQLite drops the zone


def make_engine(url: str) -> Engine:
    engine = db.make_engine(url)
    migrations.upgrade(engine, SCHEMA)
    return engine


def _regions(value: object) -> list[tuple[str, float, float, float, float]]:
    if isinstance(value, str):  # some drivers hand JSON back as text
        value = json.loads(value)
    return [(str(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in value or []]


def _quality(value: object) -> dict[str, float] | None:
    if isinstance(value, str):
        value = json.loads(value)
    return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else None


class MetadataStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- apps -------------------------------------------------------------------------
    def insert_app(self, app_id: str, name: str, description: str) -> dict:
        row = {"id": app_id, "name": name, "description": description, "created_at": utcnow()}
        with self.engine.begin() as conn:
            conn.execute(insert(apps).values(**row))
        return row

    def get_app(self, app_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(apps).where(apps.c.id == app_id)).mappings().first()
        return dict(row) if row else None

    def set_embedding_model(self, app_id: str, model: str, make_events: MakeEvents) -> tuple[bool, int]:
        """Set the app's embedding model and, in the same transaction, enqueue the events
        ``make_events`` builds from every input of the app (oldest first). Returns (changed,
        number of inputs); nothing is enqueued when the model is already the app's."""
        with self.engine.begin() as conn:
            current = conn.execute(select(apps.c.embedding_model).where(apps.c.id == app_id).with_for_update()).scalar_one()
            if current == model:
                return False, 0
            conn.execute(update(apps).where(apps.c.id == app_id).values(embedding_model=model))
            rows = conn.execute(select(inputs).where(inputs.c.app_id == app_id).order_by(inputs.c.seq)).mappings().all()
            concepts = self._concepts_for(conn, app_id, [r["id"] for r in rows])
            all_rows = [self._row(dict(r), concepts[r["id"]]) for r in rows]
            self._enqueue(conn, make_events(all_rows))
        return True, len(all_rows)

    # -- inputs -----------------------------------------------------------------------
    def existing_input_ids(self, app_id: str, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        if not ids:
            return set()
        with self.engine.connect() as conn:
            rows = conn.execute(select(inputs.c.id).where(inputs.c.app_id == app_id, inputs.c.id.in_(ids))).scalars()
            return set(rows)

    def insert_inputs(self, rows: Sequence[InputRow], events: Sequence[Event]) -> None:
        """Insert inputs, their labels and their events in one transaction."""
        try:
            self._insert_inputs(rows, events)
        except IntegrityError:  # a concurrent upload took one of the ids first
            raise AlreadyExists("an input id in this request already exists") from None

    def _insert_inputs(self, rows: Sequence[InputRow], events: Sequence[Event]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(inputs),
                [
                    {
                        "app_id": r.app_id,
                        "id": r.id,
                        "blob_uri": r.blob_uri,
                        "width": r.width,
                        "height": r.height,
                        "format": r.format,
                        "sha256": r.sha256,
                        "split": r.split,
                        "metadata": r.metadata,
                        "created_at": r.created_at,
                        "label_revision": r.label_revision,
                        "regions": [list(g) for g in r.regions] or None,
                        "thumbnail_uri": r.thumbnail_uri or None,
                        "quality": r.quality,
                        "pixel_signature": r.pixel_signature,
                    }
                    for r in rows
                ],
            )
            labels = [{"app_id": r.app_id, "input_id": r.id, "concept": c} for r in rows for c in r.concepts]
            if labels:
                conn.execute(insert(input_concepts), labels)
            self._enqueue(conn, events)

    def enqueue(self, events: Sequence[Event]) -> None:
        """Commit events that describe no new write (re-announcements) to the outbox."""
        with self.engine.begin() as conn:
            self._enqueue(conn, events)

    @staticmethod
    def _enqueue(conn: Connection, events: Sequence[Event]) -> None:
        """Write the domain events, encoded for the wire (``events.encode``), into the outbox."""
        if events:
            rows = [encode(e) for e in events]
            conn.execute(insert(outbox), [{"topic": e.topic, "key": e.key, "value": e.value} for e in rows])

    def _concepts_for(self, conn: Connection, app_id: str, ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {i: [] for i in ids}
        if not ids:
            return out
        rows = conn.execute(
            select(input_concepts.c.input_id, input_concepts.c.concept)
            .where(input_concepts.c.app_id == app_id, input_concepts.c.input_id.in_(ids))
            .order_by(input_concepts.c.concept)
        )
        for input_id, concept in rows:
            out[input_id].append(concept)
        return out

    @staticmethod
    def _row(m: dict, concepts: list[str]) -> InputRow:
        meta = m["metadata"]
        if isinstance(meta, str):
            meta = json.loads(meta)
        created = m["created_at"]
        if created.tzinfo is None:  # SQLite drops the zone
            created = created.replace(tzinfo=UTC)
        return InputRow(
            app_id=m["app_id"],
            id=m["id"],
            blob_uri=m["blob_uri"],
            width=m["width"],
            height=m["height"],
            format=m["format"],
            sha256=m["sha256"],
            split=m["split"],
            metadata=meta,
            created_at=created,
            label_revision=m["label_revision"],
            concepts=concepts,
            regions=_regions(m.get("regions")),
            thumbnail_uri=m.get("thumbnail_uri") or "",
            quality=_quality(m.get("quality")),
            pixel_signature=m.get("pixel_signature"),
        )

    def get_inputs(self, app_id: str, ids: list[str]) -> dict[str, InputRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(inputs).where(inputs.c.app_id == app_id, inputs.c.id.in_(ids))).mappings().all()
            concepts = self._concepts_for(conn, app_id, [r["id"] for r in rows])
            records: dict[str, list[tuple[str, str, datetime | None]]] = {}
            if rows:
                q = (
                    select(input_concepts.c.input_id, input_concepts.c.concept, input_concepts.c.labeled_by, input_concepts.c.labeled_at)
                    .where(input_concepts.c.app_id == app_id, input_concepts.c.input_id.in_([r["id"] for r in rows]))
                    .order_by(input_concepts.c.concept)
                )
                for input_id, concept, by, at in conn.execute(q):
                    records.setdefault(input_id, []).append((concept, by or "", _aware(at) if at else None))
        out = {r["id"]: self._row(dict(r), concepts[r["id"]]) for r in rows}
        for input_id, row in out.items():
            row.label_records = records.get(input_id, [])
        return out

    def list_inputs(
        self,
        app_id: str,
        *,
        after_seq: int,
        limit: int,
        concepts_any: Sequence[str] = (),
        split: int = 0,
        labeled: bool | None = None,
        input_ids: Sequence[str] = (),
        quality_range: QualityRange | None = None,
    ) -> tuple[list[InputRow], int | None, int]:
        """One page after ``after_seq``; returns (rows, last seq if more pages, total).
        ``quality_range``: only inputs whose stored metric lies in it (inputs stored before the
        metrics were have none and never match)."""
        conds = [inputs.c.app_id == app_id]
        if input_ids:
            conds.append(inputs.c.id.in_(list(input_ids)))
        has_label = exists().where(and_(input_concepts.c.app_id == inputs.c.app_id, input_concepts.c.input_id == inputs.c.id))
        if concepts_any:
            conds.append(
                exists().where(
                    and_(
                        input_concepts.c.app_id == inputs.c.app_id,
                        input_concepts.c.input_id == inputs.c.id,
                        input_concepts.c.concept.in_(list(concepts_any)),
                    )
                )
            )
        if split:
            conds.append(inputs.c.split == split)
        if labeled is True:
            conds.append(has_label)
        elif labeled is False:
            conds.append(~has_label)
        if quality_range is not None:
            value = inputs.c.quality[quality_range.metric].as_float()
            conds.append(inputs.c.quality.is_not(None))
            if quality_range.min is not None:
                conds.append(value >= quality_range.min)
            if quality_range.max is not None:
                conds.append(value <= quality_range.max)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(inputs).where(*conds)).scalar_one()
            rows = conn.execute(select(inputs).where(*conds, inputs.c.seq > after_seq).order_by(inputs.c.seq).limit(limit + 1)).mappings().all()
            more = len(rows) > limit
            rows = rows[:limit]
            concepts = self._concepts_for(conn, app_id, [r["id"] for r in rows])
        next_seq = rows[-1]["seq"] if more and rows else None
        return [self._row(dict(r), concepts[r["id"]]) for r in rows], next_seq, total

    def quality_values(self, app_id: str, metric: str) -> tuple[list[float], int]:
        """(the stored ``metric`` of every input of the app that has metrics, how many have none)."""
        value = inputs.c.quality[metric].as_float()
        with self.engine.connect() as conn:
            found = [float(v) for v in conn.execute(select(value).where(inputs.c.app_id == app_id, inputs.c.quality.is_not(None))).scalars() if v is not None]
            none = conn.execute(select(func.count()).select_from(inputs).where(inputs.c.app_id == app_id, inputs.c.quality.is_(None))).scalar_one()
        return found, int(none)

    def delete_inputs(self, app_id: str, ids: list[str], events: Sequence[Event]) -> list[str]:
        """Delete and return the blob URIs to remove (after commit)."""
        with self.engine.begin() as conn:
            uris = list(conn.execute(select(inputs.c.blob_uri).where(inputs.c.app_id == app_id, inputs.c.id.in_(ids))).scalars())
            conn.execute(delete(input_concepts).where(input_concepts.c.app_id == app_id, input_concepts.c.input_id.in_(ids)))
            conn.execute(delete(inputs).where(inputs.c.app_id == app_id, inputs.c.id.in_(ids)))
            self._enqueue(conn, events)
        return uris

    def apply_annotations(
        self,
        app_id: str,
        changes: Sequence[tuple],
        make_events: MakeEvents,
        labeled_by: str = "",
    ) -> list[InputRow]:
        """Apply (input_id, add, remove, split[, add_regions, clear_regions]) changes, bump
        revisions, enqueue events. Removing a concept also removes its regions; the caller has
        put the concepts of ``add_regions`` into ``add``. New labels record ``labeled_by`` and now."""
        now = utcnow()
        ids = [c[0] for c in changes]
        with self.engine.begin() as conn:
            for change in changes:
                input_id, add, remove, split = change[:4]
                add_regions = change[4] if len(change) > 4 else ()
                clear_regions = bool(change[5]) if len(change) > 5 else False
                if remove:
                    conn.execute(
                        delete(input_concepts).where(
                            input_concepts.c.app_id == app_id,
                            input_concepts.c.input_id == input_id,
                            input_concepts.c.concept.in_(list(remove)),
                        )
                    )
                current = set(
                    conn.execute(select(input_concepts.c.concept).where(input_concepts.c.app_id == app_id, input_concepts.c.input_id == input_id)).scalars()
                )
                new = [c for c in dict.fromkeys(add) if c not in current]
                if new:
                    conn.execute(
                        insert(input_concepts),
                        [
                            {"app_id": app_id, "input_id": input_id, "concept": c, "labeled_by": labeled_by or None, "labeled_at": now if labeled_by else None}
                            for c in new
                        ],
                    )
                values: dict = {"label_revision": inputs.c.label_revision + 1}
                if remove or add_regions or clear_regions:
                    old = _regions(conn.execute(select(inputs.c.regions).where(inputs.c.app_id == app_id, inputs.c.id == input_id)).scalar_one_or_none())
                    gone = set(remove)
                    kept = [] if clear_regions else [g for g in old if g[0] not in gone]
                    regions = kept + [tuple(g) for g in add_regions]
                    if regions != old:
                        values["regions"] = [list(g) for g in regions] or None
                if split:
                    values["split"] = split
                conn.execute(update(inputs).where(inputs.c.app_id == app_id, inputs.c.id == input_id).values(**values))
            rows = conn.execute(select(inputs).where(inputs.c.app_id == app_id, inputs.c.id.in_(ids))).mappings().all()
            concepts = self._concepts_for(conn, app_id, ids)
            result = [self._row(dict(r), concepts[r["id"]]) for r in rows]
            self._enqueue(conn, make_events(result))
        order = {i: n for n, i in enumerate(ids)}
        return sorted(result, key=lambda r: order[r.id])

    def list_concepts(self, app_id: str) -> list[tuple[str, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(input_concepts.c.concept, func.count())
                .where(input_concepts.c.app_id == app_id)
                .group_by(input_concepts.c.concept)
                .order_by(func.count().desc(), input_concepts.c.concept)
            ).all()
        return [(c, n) for c, n in rows]

    # -- outbox -----------------------------------------------------------------------
    def outbox_batch(self, limit: int) -> list[tuple[int, OutboxEvent]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(outbox).order_by(outbox.c.seq).limit(limit)).all()
        return [(r.seq, OutboxEvent(r.topic, r.key, r.value)) for r in rows]

    def outbox_ack(
        self,
        seqs: list[int],
        watch: Sequence[tuple[str, str, str]] = (),
        due_at: callable[[int], datetime] | None = None,
    ) -> None:
        """Delete acknowledged outbox rows; in the same transaction, start watching the
        ``watch`` inputs (app, input, model) for their indexing confirmation: ``due_at(attempts)``
        is when one still unconfirmed is announced again (attempts so far are kept)."""
        with self.engine.begin() as conn:
            conn.execute(delete(outbox).where(outbox.c.seq.in_(seqs)))
            if watch:
                self._watch(conn, watch, due_at or (lambda _attempts: utcnow()))

    @staticmethod
    def _watch(conn: Connection, watch: Sequence[tuple[str, str, str]], due_at: callable[[int], datetime]) -> None:
        now = utcnow()
        latest = {(a, i): m for a, i, m in watch}  # the last announcement of an input wins
        attempts: dict[tuple[str, str], int] = {}
        for app_id in {a for a, _ in latest}:
            ids = [i for a, i in latest if a == app_id]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for input_id, n in conn.execute(
                    select(index_watch.c.input_id, index_watch.c.attempts).where(index_watch.c.app_id == app_id, index_watch.c.input_id.in_(chunk))
                ):
                    attempts[(app_id, input_id)] = n
                conn.execute(delete(index_watch).where(index_watch.c.app_id == app_id, index_watch.c.input_id.in_(chunk)))
        conn.execute(
            insert(index_watch),
            [
                {
                    "app_id": a,
                    "input_id": i,
                    "model": m,
                    "relayed_at": now,
                    "due_at": due_at(attempts.get((a, i), 0)),
                    "attempts": attempts.get((a, i), 0),
                }
                for (a, i), m in latest.items()
            ],
        )

    def index_confirmed(self, confirmations: Sequence[tuple[str, str, str]]) -> int:
        """Stop watching inputs search confirmed (app, input, indexed model). An announcement for
        a named embedding model is only confirmed by a vector of that model; one for the base
        backbone ("") by any. Returns how many rows were removed."""
        removed = 0
        with self.engine.begin() as conn:
            for app_id, input_id, model in confirmations:
                removed += (
                    conn.execute(
                        delete(index_watch).where(
                            index_watch.c.app_id == app_id,
                            index_watch.c.input_id == input_id,
                            (index_watch.c.model == "") | (index_watch.c.model == model),
                        )
                    ).rowcount
                    or 0
                )
        return removed

    def indexing_backlog(self, app_id: str) -> tuple[int, int]:
        """(the app's ``inputs.ingested`` announcements still in the outbox, its inputs relayed
        and not yet confirmed indexed): both zero once everything announced is searchable."""
        topic, prefix = announcement_prefix(app_id)
        with self.engine.connect() as conn:
            unrelayed = conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.topic == topic, func.substr(outbox.c.key, 1, len(prefix)) == prefix)
            ).scalar_one()
            awaiting = conn.execute(select(func.count()).select_from(index_watch).where(index_watch.c.app_id == app_id)).scalar_one()
        return int(unrelayed), int(awaiting)

    def index_overdue(self, now: datetime, limit: int = 500) -> list[WatchRow]:
        """Watched inputs past their due time, oldest due first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(index_watch).where(index_watch.c.due_at <= now).order_by(index_watch.c.due_at).limit(limit)).all()
        return [WatchRow(r.app_id, r.input_id, r.model, _aware(r.relayed_at), _aware(r.due_at), r.attempts) for r in rows]

    def index_mark_due(self, relayed_before: datetime, now: datetime) -> int:
        """Make every watched input relayed before ``relayed_before`` due now (the broker lost
        its records then). Returns how many."""
        with self.engine.begin() as conn:
            return conn.execute(update(index_watch).where(index_watch.c.relayed_at < relayed_before).values(due_at=now)).rowcount or 0

    def index_requeue(self, rows: Sequence[WatchRow], events: Sequence[Event], due_at: callable[[int], datetime]) -> None:
        """Enqueue fresh announcements of ``rows`` and count the attempt; each row's next due time
        is pushed to ``due_at(attempts)`` (the relay resets it from its ack)."""
        with self.engine.begin() as conn:
            for r in rows:
                conn.execute(
                    update(index_watch)
                    .where(index_watch.c.app_id == r.app_id, index_watch.c.input_id == r.input_id)
                    .values(attempts=r.attempts + 1, due_at=due_at(r.attempts + 1))
                )
            self._enqueue(conn, events)

    def index_forget(self, rows: Sequence[tuple[str, str]]) -> None:
        """Stop watching (app, input) pairs (the input was deleted, or attempts ran out)."""
        with self.engine.begin() as conn:
            for app_id, input_id in rows:
                conn.execute(delete(index_watch).where(index_watch.c.app_id == app_id, index_watch.c.input_id == input_id))

    def index_watch_size(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(index_watch)).scalar_one()

    def outbox_size(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(outbox)).scalar_one()
