"""InferenceService process: ``python -m firstlight.inference.main``."""

from __future__ import annotations

import asyncio
import logging
import uuid

from firstlight.config import InferenceSettings
from firstlight.hosting.server import ServiceShell, run
from firstlight.inference import servicer as inference_servicer
from firstlight.inference.core import Predictor
from firstlight.inference.events import PredictionEvents
from firstlight.inference.registry import Registry, refusal
from firstlight.messaging import access, signing, topics
from firstlight.messaging.bus import BatchConsumer, EventProducer, ParsedRecord, PoisonMessage, RetryableError
from firstlight.triton.adapter import DomainErrors
from firstlight.triton.client import TritonError, TritonModels, TritonUnavailable
from firstlight.triton.residency import Residency
from firstlight.v1 import events_pb2
from firstlight.video.spool import sweep_spool

log = logging.getLogger(__name__)
__all__ = ["build", "main"]


def build(settings: InferenceSettings) -> ServiceShell:
    repository = settings.model_repository if str(settings.model_repository) not in ("", ".") else None
    triton = TritonModels(settings.triton_url, timeout_s=settings.triton_timeout_s, model_repository=repository, access_token=settings.triton_token)
    # Bounded: the serving version and a few recent ones per app model, a cap across apps.
    residency = Residency(triton.load_versions, triton.unload_model, settings.triton_keep_versions, settings.triton_max_app_models)
    triton.residency = residency
    # Trained embedders are announced on model.version.ready too (and used by heads trained on
    # them): one residency here, so the two never load different version lists for one model.
    triton.embedder_residency = residency
    # The snapshot brings back what a memory broker forgot (see inference.registry).
    registry = Registry(settings.data_dir / "model_registry.json")

    def on_ready(records: list[ParsedRecord[events_pb2.ModelVersionReady]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = []
        for record in records:
            ev = record.message
            why = refusal(ev)
            if why:
                outcomes.append(PoisonMessage(why))
                continue
            signed_ms = signing.signed_at_ms(record.headers)
            if registry.stale(ev, signed_ms):
                # A replayed serving change older than the one applied (e.g. "v2 serves" after a
                # rollback to v1): ignored, and Triton's resident versions are left alone too. Not
                # dead-lettered: every replica replays this topic from its start at every start.
                log.info("ignoring a stale serving change of %s/%s to version %s (replayed record)", ev.app_id, ev.model_id, ev.version)
                outcomes.append(None)
                continue
            try:
                # Loads the new version folder with the kept ones (no restart); the rest unload.
                residency.announce(ev.triton_model, ev.version, ev.serving)
            except TritonUnavailable as exc:
                raise RetryableError(f"Triton unavailable: {exc}") from exc
            except TritonError as exc:
                outcomes.append(PoisonMessage(f"Triton could not load {ev.triton_model}: {exc}"))
                continue
            registry.apply(ev, signed_ms)
            outcomes.append(None)
        return outcomes

    topics.ensure_topics(settings.kafka_bootstrap, access.topics_of("inference"))  # its own: all its principal may see
    # A fresh group per process: every replica replays all versions to rebuild its registry.
    versions = BatchConsumer(
        settings.kafka_bootstrap,
        f"inference-registry-{uuid.uuid4().hex[:8]}",
        topics.MODEL_VERSION_READY,
        events_pb2.ModelVersionReady,
        on_ready,
        max_age_s=0,  # replayed from the start (kept forever): no freshness window, see Registry.apply
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
    )
    producer = EventProducer(settings.kafka_bootstrap, "inference")
    servicer = inference_servicer.InferenceServicer(
        Predictor(DomainErrors(triton), settings, registry, observer=PredictionEvents(producer)), threads=settings.predict_threads
    )
    # Uploads of PredictVideo are spooled under the data dir, not /tmp: a killed process's
    # half-written ones are found and removed at the next start.
    servicer.spool_dir = (settings.data_dir / "video-spool").resolve()
    if servicer.spool_dir.is_dir() and (stale := sweep_spool(servicer.spool_dir)):
        log.info("removed %d video uploads left by a stopped process", stale)

    async def on_start() -> None:
        versions.start()

    async def on_stop() -> None:
        await asyncio.to_thread(versions.stop)
        await asyncio.to_thread(producer.close)
        servicer.close()

    return ServiceShell(
        name="inference",
        register=lambda server: inference_servicer.add_to_server(servicer, server),
        on_start=on_start,
        on_stop=on_stop,
        probes=[triton.is_ready, lambda: versions.healthy],
    )


def main() -> None:
    run(build, InferenceSettings)


if __name__ == "__main__":
    main()
