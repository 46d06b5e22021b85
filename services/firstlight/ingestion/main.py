"""IngestionService process: ``python -m firstlight.ingestion.main``."""

from __future__ import annotations

import asyncio
import logging

from firstlight.auth import main as auth_main
from firstlight.blobstore import open_blob_store
from firstlight.config import IngestionSettings
from firstlight.errors import FirstlightError, InvalidArgument, Unavailable
from firstlight.hosting.server import ServiceShell, run
from firstlight.ingestion import servicer as ingestion_servicer
from firstlight.ingestion import video
from firstlight.ingestion.core import Ingestion
from firstlight.ingestion.outbox import ConfirmPolicy, OutboxRelay
from firstlight.ingestion.peers import EmbeddingService, SearchService
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.messaging import access, topics
from firstlight.messaging.bus import BatchConsumer, EventProducer, ParsedRecord, PoisonMessage
from firstlight.v1 import events_pb2
from firstlight.video.resumable import ResumableUploads
from firstlight.video.spool import sweep_spool

log = logging.getLogger(__name__)


def build(settings: IngestionSettings) -> ServiceShell:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    store = MetadataStore(engine)
    search, embedding = SearchService(settings.search_addr), EmbeddingService(settings.embedding_addr)
    core = Ingestion(store, open_blob_store(settings.resolved_blob_url()), settings, search=search, embedding=embedding)
    # Auth is hosted here (see auth.main): the key table lives in the same store; this process
    # resolves keys from it directly and serves AuthService so the other services can too.
    auth = auth_main.build(engine, settings, core.get_app)
    gate = auth.gate
    topics.ensure_topics(settings.kafka_bootstrap, access.topics_of("ingestion"))  # its own: all its principal may see
    producer = EventProducer(settings.kafka_bootstrap, "ingestion")
    policy = ConfirmPolicy(deadline_s=settings.index_confirm_deadline_s, max_attempts=settings.index_confirm_attempts)
    relay = OutboxRelay(store, producer, reannounce=core.reannouncements, policy=policy)
    core.on_events = relay.notify  # a write wakes the relay at once
    # A producer replaced after a fatal error means the broker forgot us: it may have lost records.
    producer.on_rebuild = relay.broker_lost

    def on_indexed(records: list[ParsedRecord[events_pb2.InputIndexed]]) -> None:
        relay.confirm([(r.message.app_id, r.message.input_id, r.message.model) for r in records if r.message.app_id])

    drop_dir = settings.video_drop_dir.resolve() if str(settings.video_drop_dir) not in ("", ".") else None

    def on_submitted(records: list[ParsedRecord[events_pb2.InputSubmitted]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = []
        for record in records:
            refusal = gate.refusal(record.headers, record.message.app_id) if gate else None
            if refusal:  # no key, or another app's key: dead-letter, store nothing
                outcomes.append(PoisonMessage(refusal))
                continue
            try:
                if record.message.HasField("video"):  # a video by reference: decoded and sampled here
                    if record.message.input.ByteSize():
                        raise InvalidArgument("a submission carries either an image (input) or a video reference (video), not both")
                    video.submit_video(core, settings, drop_dir, record.message.app_id, record.message.video)
                else:
                    core.submit(record.message)  # an InputSubmitted is a ports.Submission
                outcomes.append(None)
            except Unavailable:
                raise  # a dependency is down: retry the batch, never dead-letter a valid submission
            except FirstlightError as exc:  # invalid submission: dead-letter with the reason
                outcomes.append(PoisonMessage(f"{type(exc).__name__}: {exc}"))
        return outcomes

    submissions = BatchConsumer(
        settings.kafka_bootstrap,
        "ingestion",
        topics.INPUTS_SUBMIT,
        events_pb2.InputSubmitted,
        on_submitted,
        producer=producer,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        on_broker_lost=lambda: relay.broker_lost("committed offsets of inputs.submit went back"),
    )
    # Search's confirmations end the relay's watch over announced inputs (see ingestion.outbox).
    confirmations = BatchConsumer(
        settings.kafka_bootstrap,
        "ingestion-indexed",
        topics.INPUTS_INDEXED,
        events_pb2.InputIndexed,
        on_indexed,
        producer=producer,
        max_batch=256,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        on_broker_lost=lambda: relay.broker_lost("committed offsets of inputs.indexed went back"),
    )
    servicer = ingestion_servicer.IngestionServicer(core, key_name=auth.keys.store.name_of)
    # Resumable video uploads keep their bytes across restarts; old abandoned ones are swept.
    servicer.uploads = ResumableUploads(settings.resolved_video_upload_dir(), settings.max_video_bytes, settings.video_upload_ttl_s)
    removed = servicer.uploads.sweep()
    if removed:
        log.info("removed %d abandoned resumable video uploads", removed)
    # One-shot uploads are spooled beside them; a killed process's half-written ones go now.
    servicer.spool_dir = settings.resolved_video_upload_dir() / "spool"
    if servicer.spool_dir.is_dir() and (stale := sweep_spool(servicer.spool_dir)):
        log.info("removed %d one-shot video uploads left by a stopped process", stale)

    async def on_start() -> None:
        relay.start()
        submissions.start()
        confirmations.start()

    async def on_stop() -> None:
        await asyncio.to_thread(submissions.stop)
        await asyncio.to_thread(confirmations.stop)
        await asyncio.to_thread(relay.stop)
        producer.close()
        await search.close()
        await embedding.close()

    return ServiceShell(
        name="ingestion",
        register=lambda server: [
            *ingestion_servicer.add_to_server(servicer, server),
            *auth.register(server),
        ],
        on_start=on_start,
        on_stop=on_stop,
        probes=[lambda: relay.healthy, lambda: submissions.healthy, lambda: confirmations.healthy],
        authenticator=auth.authenticator,
    )


def main() -> None:
    run(build, IngestionSettings)


if __name__ == "__main__":
    main()
