"""InferenceService process: ``python -m firstlight.inference.main``."""

from __future__ import annotations

import asyncio
import uuid

from firstlight.config import InferenceSettings
from firstlight.inference import servicer as inference_servicer
from firstlight.inference.core import Predictor
from firstlight.inference.registry import Registry
from firstlight.messaging import topics
from firstlight.messaging.bus import BatchConsumer, ParsedRecord, PoisonMessage, RetryableError
from firstlight.runtime.server import ServiceShell, run
from firstlight.triton.client import TritonError, TritonModels, TritonUnavailable
from firstlight.v1 import events_pb2


def build(settings: InferenceSettings) -> ServiceShell:
    triton = TritonModels(settings.triton_url, timeout_s=settings.triton_timeout_s)
    registry = Registry()

    def on_ready(records: list[ParsedRecord[events_pb2.ModelVersionReady]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = []
        for record in records:
            ev = record.message
            if not (ev.app_id and ev.model_id and ev.version and ev.triton_model and ev.concepts):
                outcomes.append(PoisonMessage("ModelVersionReady lacks app, model, version, Triton model or concepts"))
                continue
            try:
                triton.load_model(ev.triton_model)  # picks up the new version folder, no restart
            except TritonUnavailable as exc:
                raise RetryableError(f"Triton unavailable: {exc}") from exc
            except TritonError as exc:
                outcomes.append(PoisonMessage(f"Triton could not load {ev.triton_model}: {exc}"))
                continue
            registry.apply(ev)
            outcomes.append(None)
        return outcomes

    topics.ensure_topics(settings.kafka_bootstrap, list(topics.TOPICS))
    # A fresh group per process: every replica replays all versions to rebuild its registry.
    versions = BatchConsumer(
        settings.kafka_bootstrap,
        f"inference-registry-{uuid.uuid4().hex[:8]}",
        topics.MODEL_VERSION_READY,
        events_pb2.ModelVersionReady,
        on_ready,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
    )
    servicer = inference_servicer.InferenceServicer(Predictor(triton, settings, registry))

    async def on_start() -> None:
        versions.start()

    async def on_stop() -> None:
        await asyncio.to_thread(versions.stop)

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
