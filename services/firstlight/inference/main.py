"""InferenceService process: ``python -m firstlight.inference.main``."""

from __future__ import annotations

from firstlight.config import InferenceSettings
from firstlight.inference import servicer as inference_servicer
from firstlight.inference.core import Predictor
from firstlight.runtime.server import ServiceShell, run
from firstlight.triton.client import TritonModels


def build(settings: InferenceSettings) -> ServiceShell:
    triton = TritonModels(settings.triton_url, timeout_s=settings.triton_timeout_s)
    servicer = inference_servicer.InferenceServicer(Predictor(triton, settings))
    return ServiceShell(
        name="inference",
        register=lambda server: inference_servicer.add_to_server(servicer, server),
        probes=[triton.is_ready],
    )


def main() -> None:
    def factory() -> tuple[ServiceShell, InferenceSettings]:
        settings = InferenceSettings()
        return build(settings), settings

    run(factory)


if __name__ == "__main__":
    main()
