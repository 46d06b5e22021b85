"""CurationService process: ``python -m firstlight.curation.main``.

Its own port, health and store; the training, ingestion and search services through their gRPC
APIs (``curation.peers`` over ``firstlight.clients``); ``predictions.made`` and
``annotations.changed`` in, ``labeling.queue`` and ``drift.alert`` out (``curation.events``)."""

from __future__ import annotations

import asyncio

from firstlight.blobstore import open_blob_store
from firstlight.config import CurationSettings, ImageLimits
from firstlight.curation import servicer as curation_servicer
from firstlight.curation.core import Curation
from firstlight.curation.embedding_map import EmbeddingMaps
from firstlight.curation.events import StreamHandlers
from firstlight.curation.explanations import Explanations
from firstlight.curation.peers import Bridge, GrpcPlatform, GrpcTraining
from firstlight.curation.store import CurationStore, adopt_from_training_db
from firstlight.curation.stream import Rounds, StreamCuration, StreamDrift, drift_reference
from firstlight.hosting.server import ServiceShell, run
from firstlight.messaging import access, topics
from firstlight.messaging.bus import BatchConsumer, EventProducer
from firstlight.v1 import events_pb2


def build(settings: CurationSettings) -> ServiceShell:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = CurationStore(settings.resolved_database_url())
    # An existing stack's first start as a separate service: its rows move out of the training DB.
    adopt_from_training_db(store, settings.adopt_from_database_url)
    store.fail_running_rounds("the curation service restarted during this round")
    topics.ensure_topics(settings.kafka_bootstrap, access.topics_of("curation"))  # its own: all its principal may see
    producer = EventProducer(settings.kafka_bootstrap, "curation")
    bridge = Bridge(settings.ingestion_addr, settings.search_addr, settings.training_addr)
    platform = GrpcPlatform(bridge, open_blob_store(settings.blob_url) if settings.blob_url else None)
    training = GrpcTraining(bridge)
    stream = StreamCuration(store)
    rounds = Rounds(store, stream, training)
    stream_drift = StreamDrift(stream, drift_reference(training, platform))
    handlers = StreamHandlers(stream, rounds, stream_drift, producer)
    common = {"session_timeout_ms": settings.kafka_session_timeout_ms, "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms}
    # The consumer group names are the ones curation used inside the training process, so an
    # upgraded stack resumes from the committed offsets instead of re-reading or skipping.
    consumers = [
        BatchConsumer(
            settings.kafka_bootstrap,
            "curation-predictions",
            topics.PREDICTIONS_MADE,
            events_pb2.PredictionMade,
            handlers.on_predictions,
            producer=producer,
            **common,
        ),  # type: ignore[arg-type]
        BatchConsumer(
            settings.kafka_bootstrap,
            "curation-labels",
            topics.ANNOTATIONS_CHANGED,
            events_pb2.AnnotationsChanged,
            handlers.on_annotations,
            producer=producer,
            **common,
        ),  # type: ignore[arg-type]
    ]
    maps = EmbeddingMaps(platform, training, store, settings.data_dir / "maps")
    explanations = Explanations(platform, training, ImageLimits())  # the torch backbone loads on the first explanation
    servicer = curation_servicer.CurationServicer(Curation(platform, training, store), stream, rounds, stream_drift, maps, explanations)

    async def on_start() -> None:
        bridge.bind(asyncio.get_running_loop())
        for c in consumers:
            c.start()
        if servicer.scoring is not None:  # pool-scoring jobs a restart cut short go on (they call peers: after bind)
            servicer.scoring.resume_interrupted()

    async def on_stop() -> None:
        for c in consumers:
            await asyncio.to_thread(c.stop)
        rounds.shutdown()
        await bridge.close()
        producer.close()

    return ServiceShell(
        name="curation",
        register=lambda server: curation_servicer.add_to_server(servicer, server),
        on_start=on_start,
        on_stop=on_stop,
        probes=[lambda: all(c.healthy for c in consumers)],
    )


def main() -> None:
    run(build, CurationSettings)


if __name__ == "__main__":
    main()
