"""TrainingService process: ``python -m firstlight.training.main``."""

from __future__ import annotations

from firstlight.blobstore import open_blob_store
from firstlight.config import TrainingSettings
from firstlight.curation import servicer as curation_servicer
from firstlight.curation.service import Curation
from firstlight.messaging import topics
from firstlight.messaging.bus import EventProducer
from firstlight.runtime.server import ServiceShell, run
from firstlight.training import servicer as training_servicer
from firstlight.models.backbone import configure_torch_threads
from firstlight.training.deep.jobs import DEEP_TEMPLATES
from firstlight.training.platform import GrpcPlatform
from firstlight.training.service import FAILED, QUEUED, RUNNING, TrainingService
from firstlight.training.store import TrainingStore


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
    service = TrainingService(store, platform, repository, workers=settings.workers, work_root=settings.data_dir / "jobs")
    # Jobs that were queued or running when the process died: deep jobs resume from their last
    # checkpoint (epochs are expensive); head jobs train in seconds, so they are marked failed
    # with the reason rather than silently re-run.
    for job in store.jobs_in_states([QUEUED, RUNNING]):
        model = store.get_model(job["app_id"], job["model_id"])
        if model and model["template"] in DEEP_TEMPLATES:
            service.resume(job["id"])
        else:
            store.update_job(job["id"], state=FAILED, error="the training service restarted during this job; train again")
    servicer = training_servicer.TrainingServicer(service)
    # Curation runs in this process: it needs exactly the clients and repository training has.
    curation = curation_servicer.CurationServicer(Curation(platform, repository, store))

    async def on_stop() -> None:
        service.shutdown()
        platform.close()
        producer.close()

    return ServiceShell(
        name="training",
        register=lambda server: [
            *training_servicer.add_to_server(servicer, server),
            *curation_servicer.add_to_server(curation, server),
        ],
        on_stop=on_stop,
    )


def main() -> None:
    run(build, TrainingSettings)


if __name__ == "__main__":
    main()
