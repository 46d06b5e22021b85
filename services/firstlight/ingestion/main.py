"""IngestionService process: ``python -m firstlight.ingestion.main``."""

from __future__ import annotations

import asyncio

from firstlight.blobstore import open_blob_store
from firstlight.config import IngestionSettings
from firstlight.errors import FirstlightError
from firstlight.ingestion import servicer as ingestion_servicer
from firstlight.ingestion.core import Ingestion
from firstlight.ingestion.outbox import OutboxRelay
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.messaging import topics
from firstlight.messaging.bus import BatchConsumer, EventProducer, ParsedRecord, PoisonMessage
from firstlight.runtime.server import ServiceShell, run
from firstlight.v1 import events_pb2


def build(settings: IngestionSettings) -> ServiceShell:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = MetadataStore(make_engine(settings.resolved_database_url()))
    core = Ingestion(store, open_blob_store(settings.resolved_blob_url()), settings)
    topics.ensure_topics(settings.kafka_bootstrap, list(topics.TOPICS))
    producer = EventProducer(settings.kafka_bootstrap, "ingestion")
    relay = OutboxRelay(store, producer)

    def on_submitted(records: list[ParsedRecord[events_pb2.InputSubmitted]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = []
        for record in records:
            try:
                core.submit(record.message)
                outcomes.append(None)
            except FirstlightError as exc:  # invalid submission: dead-letter with the reason
                outcomes.append(PoisonMessage(f"{type(exc).__name__}: {exc}"))
        relay.notify()
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
    )
    servicer = ingestion_servicer.IngestionServicer(core, relay, settings.search_addr, settings.embedding_addr)

    async def on_start() -> None:
        relay.start()
        submissions.start()

    async def on_stop() -> None:
        await asyncio.to_thread(submissions.stop)
        await asyncio.to_thread(relay.stop)
        producer.close()

    return ServiceShell(
        name="ingestion",
        register=lambda server: ingestion_servicer.add_to_server(servicer, server),
        on_start=on_start,
        on_stop=on_stop,
        probes=[lambda: relay.healthy, lambda: submissions.healthy],
    )


def main() -> None:
    run(build, IngestionSettings)


if __name__ == "__main__":
    main()
