"""TrainingService process: ``python -m firstlight.training.main``."""

from __future__ import annotations

import asyncio

from firstlight.blobstore import open_blob_store
from firstlight.config import TrainingSettings
from firstlight.curation import servicer as curation_servicer
from firstlight.curation.events import StreamHandlers
from firstlight.curation.service import Curation
from firstlight.curation.store import CurationStore
from firstlight.curation.stream import Rounds, StreamCuration, StreamDrift
from firstlight.messaging import topics
from firstlight.messaging.bus import BatchConsumer, EventProducer
from firstlight.models.backbone import configure_torch_threads
from firstlight.runtime.server import ServiceShell, run
from firstlight.training import servicer as training_servicer
from firstlight.training.core import TrainingCore
from firstlight.training.events import BusEvents
from firstlight.training.platform import GrpcPlatform
from firstlight.training.repository import TritonRepository
from firstlight.training.service import runners
from firstlight.training.store import TrainingStore
from firstlight.v1 import events_pb2


class InProcessTrainer:
    """Curation's rounds drive the training core of this process directly: the same methods
    the TrainingService RPCs call (extend a dataset, train with a promotion rule, poll the job),
    without a gRPC hop to ourselves."""

    def __init__(self, service: TrainingCore) -> None:
        self.service = service
        self.extend_dataset = service.extend_dataset
        self.train = service.train
        self.job = service.job
        self.model = service.model
        self.version_row = service.version_row


def drift_reference(store: TrainingStore, platform: GrpcPlatform):  # type: ignore[no-untyped-def]
    """(training-split embeddings, concept index of each) of a model version, for stream drift."""
    import numpy as np

    from firstlight.errors import FailedPrecondition, NotFound

    def reference(app_id: str, model_id: str, version: str):  # type: ignore[no-untyped-def]
        model = store.get_model(app_id, model_id)
        v = store.get_version(app_id, model_id, int(version)) if model and version.isdigit() else None
        if not v:
            raise NotFound(f"model {model_id!r} has no version {version!r}")
        index = {c: i for i, c in enumerate(model["concepts"])}
        rows = [r for r in store.dataset_rows(app_id, v["dataset_id"], v["dataset_version"]) if r.split == 1 and r.concepts and r.concepts[0] in index]
        vectors = platform.vectors(app_id, [r.input_id for r in rows])
        rows = [r for r in rows if r.input_id in vectors]
        if len(rows) < 2:
            raise FailedPrecondition(f"version {version} of {model_id!r} has fewer than 2 embedded training inputs")
        return np.stack([vectors[r.input_id] for r in rows]), np.array([index[r.concepts[0]] for r in rows])

    return reference


def build(settings: TrainingSettings) -> ServiceShell:
    # Import the solver now, not inside the first job: a version's train_seconds should be the fit.
    import sklearn.linear_model  # noqa: F401

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    repository = settings.resolved_model_repository()
    repository.mkdir(parents=True, exist_ok=True)
    store = TrainingStore(settings.resolved_database_url())
    configure_torch_threads(settings.train_threads)  # deep templates train in this process
    topics.ensure_topics(settings.kafka_bootstrap, list(topics.TOPICS))
    producer = EventProducer(settings.kafka_bootstrap, "training")
    blobs = open_blob_store(settings.blob_url) if settings.blob_url else None
    platform = GrpcPlatform(settings.ingestion_addr, settings.search_addr, producer, settings.embedding_addr, blobs)
    service = TrainingCore(
        store, platform, BusEvents(producer), runners(platform, TritonRepository(repository)),
        work_root=settings.data_dir / "jobs", workers=settings.workers,
    )  # fmt: skip
    service.recover_interrupted_jobs()
    servicer = training_servicer.TrainingServicer(service)
    # Curation runs in this process: it needs exactly the clients and repository training has.
    # Stream curation: its tables share the training database.
    cstore = CurationStore(engine=store.engine)
    cstore.fail_running_rounds("the training service restarted during this round")
    stream = StreamCuration(cstore)
    rounds = Rounds(cstore, stream, InProcessTrainer(service))
    stream_drift = StreamDrift(stream, drift_reference(store, platform))
    handlers = StreamHandlers(stream, rounds, stream_drift, producer)
    common = dict(session_timeout_ms=settings.kafka_session_timeout_ms, heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms)
    consumers = [
        BatchConsumer(settings.kafka_bootstrap, "curation-predictions", topics.PREDICTIONS_MADE, events_pb2.PredictionMade,
                      handlers.on_predictions, producer=producer, **common),  # type: ignore[arg-type]
        BatchConsumer(settings.kafka_bootstrap, "curation-labels", topics.ANNOTATIONS_CHANGED, events_pb2.AnnotationsChanged,
                      handlers.on_annotations, producer=producer, **common),  # type: ignore[arg-type]
    ]
    curation = curation_servicer.CurationServicer(Curation(platform, repository, store, cstore), stream, rounds, stream_drift)

    async def on_start() -> None:
        for c in consumers:
            c.start()

    async def on_stop() -> None:
        for c in consumers:
            await asyncio.to_thread(c.stop)
        rounds.shutdown()
        service.shutdown()
        platform.close()
        producer.close()

    return ServiceShell(
        name="training",
        register=lambda server: [
            *training_servicer.add_to_server(servicer, server),
            *curation_servicer.add_to_server(curation, server),
        ],
        on_start=on_start,
        on_stop=on_stop,
        probes=[lambda: all(c.healthy for c in consumers)],
    )


def main() -> None:
    run(build, TrainingSettings)


if __name__ == "__main__":
    main()
