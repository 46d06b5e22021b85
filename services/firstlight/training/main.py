"""TrainingService process: ``python -m firstlight.training.main``."""

from __future__ import annotations

from firstlight.blobstore import open_blob_store
from firstlight.config import TrainingSettings
from firstlight.hosting.server import ServiceShell, run
from firstlight.messaging import access, topics
from firstlight.messaging.bus import EventProducer
from firstlight.models.backbone import configure_torch_threads
from firstlight.training import servicer as training_servicer
from firstlight.training.core import TrainingCore
from firstlight.training.events import BusEvents
from firstlight.training.platform import GrpcHealthChecks, GrpcPlatform
from firstlight.training.repository import TritonRepository
from firstlight.training.runners import runners
from firstlight.training.store import TrainingStore


def build(settings: TrainingSettings) -> ServiceShell:
    # Import the solver now, not inside the first job: a version's train_seconds should be the fit.
    import sklearn.linear_model  # noqa: F401

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    repository = settings.resolved_model_repository()
    repository.mkdir(parents=True, exist_ok=True)
    store = TrainingStore(settings.resolved_database_url())
    configure_torch_threads(settings.train_threads)  # deep templates train in this process
    topics.ensure_topics(settings.kafka_bootstrap, access.topics_of("training"))  # its own: all its principal may see
    producer = EventProducer(settings.kafka_bootstrap, "training")
    blobs = open_blob_store(settings.blob_url) if settings.blob_url else None
    platform = GrpcPlatform(settings.ingestion_addr, settings.search_addr, settings.embedding_addr, blobs)
    health = GrpcHealthChecks(settings.curation_addr) if settings.curation_addr else None
    service = TrainingCore(
        store, platform, BusEvents(producer), runners(platform, TritonRepository(repository)),
        work_root=settings.data_dir / "jobs", workers=settings.workers, health=health,
    )  # fmt: skip
    service.recover_interrupted_jobs()
    servicer = training_servicer.TrainingServicer(service)

    async def on_stop() -> None:
        service.shutdown()
        platform.close()
        if health is not None:
            health.close()
        producer.close()

    return ServiceShell(
        name="training",
        register=lambda server: training_servicer.add_to_server(servicer, server),
        on_stop=on_stop,
    )


def main() -> None:
    run(build, TrainingSettings)


if __name__ == "__main__":
    main()
