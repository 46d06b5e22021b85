"""EmbeddingService process: ``python -m firstlight.embedding.main``."""

from __future__ import annotations

import asyncio
import logging

from firstlight.blobstore import open_blob_store
from firstlight.config import EmbeddingSettings
from firstlight.embedding import servicer as embedding_servicer
from firstlight.embedding.core import Embedder
from firstlight.embedding.worker import EmbeddingWorker
from firstlight.hosting.server import ServiceShell, run
from firstlight.messaging import access, topics
from firstlight.messaging.bus import BatchConsumer, EventProducer
from firstlight.triton.adapter import DomainErrors
from firstlight.triton.client import TritonModels
from firstlight.v1 import events_pb2

log = logging.getLogger(__name__)


def build(settings: EmbeddingSettings) -> ServiceShell:
    repository = settings.model_repository if str(settings.model_repository) not in ("", ".") else None
    triton = TritonModels(settings.triton_url, timeout_s=settings.triton_timeout_s, model_repository=repository, access_token=settings.triton_token)
    embedder = Embedder(DomainErrors(triton), settings, cache_dir=settings.data_dir / "cache")
    topics.ensure_topics(settings.kafka_bootstrap, access.topics_of("embedding"))  # its own: all its principal may see
    producer = EventProducer(settings.kafka_bootstrap, "embedding")
    worker = EmbeddingWorker(embedder, open_blob_store(settings.resolved_blob_url()), producer)
    consumer = BatchConsumer(
        settings.kafka_bootstrap,
        settings.consumer_group,
        topics.INPUTS_INGESTED,
        events_pb2.InputIngested,
        worker.handle,
        max_batch=settings.embed_batch_size,
        producer=producer,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
    )
    servicer = embedding_servicer.EmbeddingServicer(embedder)

    async def on_start() -> None:
        consumer.start()
        # MiniLM + concept names load in the background: the first text query need not wait.
        asyncio.get_running_loop().run_in_executor(None, embedder.warm_up_text)

    async def on_stop() -> None:
        await asyncio.to_thread(consumer.stop)
        worker.close()
        producer.close()

    return ServiceShell(
        name="embedding",
        register=lambda server: embedding_servicer.add_to_server(servicer, server),
        on_start=on_start,
        on_stop=on_stop,
        probes=[lambda: consumer.healthy],
    )


def main() -> None:
    run(build, EmbeddingSettings)


if __name__ == "__main__":
    main()
