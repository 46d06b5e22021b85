"""SearchService process: ``python -m firstlight.search.main``."""

from __future__ import annotations

import asyncio
import logging

from firstlight.config import SearchSettings
from firstlight.hosting.server import ServiceShell, run
from firstlight.messaging import access, signing, topics
from firstlight.messaging.bus import BatchConsumer, EventProducer
from firstlight.models.backbone import EMBEDDING_DIM
from firstlight.search import servicer as search_servicer
from firstlight.search.core import Search, Searcher
from firstlight.search.factory import open_vector_store
from firstlight.search.faults import FaultInjectingStore
from firstlight.search.index_builder import IndexBuilder
from firstlight.search.indexer import COLLECTION, Indexer
from firstlight.search.indexing import Index
from firstlight.search.peers import EmbeddingService, IngestionInputs
from firstlight.search.reconcile import Reconciler
from firstlight.v1 import events_pb2

log = logging.getLogger(__name__)


def build(settings: SearchSettings) -> ServiceShell:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_vector_store(settings.resolved_vector_store_url())
    if settings.vector_store_fault_file:
        store = FaultInjectingStore(store, settings.vector_store_fault_file)  # type: ignore[assignment]
    topics.ensure_topics(settings.kafka_bootstrap, access.topics_of("search"))  # its own: all its principal may see
    producer = EventProducer(settings.kafka_bootstrap, "search")
    indexer = Indexer(store, producer)
    # Labels and deletions the broker lost are brought back from ingestion's state (search.reconcile).
    reconciler = Reconciler(indexer.index, lambda: IngestionInputs(settings.ingestion_addr)) if settings.ingestion_addr else None
    if reconciler is not None:
        producer.on_rebuild = reconciler.request
    common = {
        "producer": producer,
        "on_broker_lost": (lambda: reconciler.request("committed offsets went back")) if reconciler is not None else None,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
    }
    consumers = [
        BatchConsumer(
            settings.kafka_bootstrap,
            settings.consumer_group,
            topics.EMBEDDINGS_COMPUTED,
            events_pb2.EmbeddingComputed,
            indexer.on_embeddings,
            max_batch=settings.index_batch_size,
            **common,  # type: ignore[arg-type]
        ),
        BatchConsumer(
            settings.kafka_bootstrap,
            settings.consumer_group + "-labels",
            topics.ANNOTATIONS_CHANGED,
            events_pb2.AnnotationsChanged,
            indexer.on_annotations,
            **common,  # type: ignore[arg-type]
        ),
        BatchConsumer(
            settings.kafka_bootstrap,
            settings.consumer_group + "-deletions",
            topics.INPUTS_DELETED,
            events_pb2.InputsDeleted,
            indexer.on_deleted,
            **common,  # type: ignore[arg-type]
        ),
        BatchConsumer(
            settings.kafka_bootstrap,
            settings.consumer_group + "-embedding-models",
            topics.EMBEDDING_MODEL_CHANGED,
            events_pb2.EmbeddingModelChanged,
            indexer.on_model_changed,
            **common,  # type: ignore[arg-type]
        ),
    ]
    builder = IndexBuilder(
        store,
        COLLECTION,
        min_points=settings.ann_build_min_points,
        growth=settings.ann_build_growth,
        quiet_s=settings.ann_build_quiet_s,
        max_wait_s=settings.ann_build_max_wait_s,
        nice=settings.ann_build_nice,
    )
    embedding = EmbeddingService(settings.embedding_addr)
    servicer = search_servicer.SearchServicer(Search(Searcher(store, EMBEDDING_DIM), embedding), index_current=builder.current)

    pruning: list[asyncio.Task] = []

    async def on_start() -> None:
        for consumer in consumers:
            consumer.start()
        builder.start()
        if reconciler is not None:
            reconciler.start()
        if (window := signing.max_age_from_env()) > 0:  # no window: a marker may be needed forever
            pruning.append(asyncio.create_task(_prune_tombstones(indexer.index, TOMBSTONE_AGE_WINDOWS * window)))

    async def on_stop() -> None:
        for task in pruning:
            task.cancel()
        builder.stop()
        if reconciler is not None:
            await asyncio.to_thread(reconciler.stop)
        for consumer in consumers:
            await asyncio.to_thread(consumer.stop)
        producer.close()
        await embedding.close()
        store.close()

    return ServiceShell(
        name="search",
        register=lambda server: search_servicer.add_to_server(servicer, server),
        on_start=on_start,
        on_stop=on_stop,
        probes=[lambda c=c: c.healthy for c in consumers],
    )


# Deletion markers are pruned two signature windows after the deletion: a record about a deleted
# generation is signed at the latest shortly after the deletion (an embedding racing it), so by
# then every such record is dead-lettered as too old before it reaches the index.
TOMBSTONE_AGE_WINDOWS = 2
TOMBSTONE_PRUNE_EVERY_S = 6 * 3600


async def _prune_tombstones(index: Index, older_than_s: float) -> None:
    while True:
        try:
            pruned = await asyncio.to_thread(index.prune_tombstones, older_than_s)
            if pruned:
                log.info("search: pruned %d deletion markers older than %.0f days", pruned, older_than_s / 86400)
        except Exception:
            log.exception("search: pruning deletion markers failed")
        await asyncio.sleep(TOMBSTONE_PRUNE_EVERY_S)


def main() -> None:
    run(build, SearchSettings)


if __name__ == "__main__":
    main()
