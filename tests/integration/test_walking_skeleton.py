"""The path from an uploaded image to a search result, through the real services, broker,
Triton and vector store."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from firstlight import datasets
from firstlight.sdk import Firstlight, UploadItem
from firstlight.v1 import common_pb2, ingestion_pb2, search_pb2

from .helpers import eventually

pytestmark = pytest.mark.integration

APP = "skeleton"
SERVICE_NAMES = {
    "ingestion": "firstlight.v1.IngestionService",
    "embedding": "firstlight.v1.EmbeddingService",
    "search": "firstlight.v1.SearchService",
    "inference": "firstlight.v1.InferenceService",
    "training": "firstlight.v1.TrainingService",
    "curation": "firstlight.v1.CurationService",
}


@pytest.fixture(scope="module")
def uploaded(client: Firstlight) -> dict[str, str]:
    client.create_app(APP, "walking skeleton")
    animals = datasets.animal_mnist(8, seed=1)
    items = [UploadItem(data, [name], id=input_id, split="train") for input_id, name, data in animals]
    items.append(UploadItem(datasets.sample_photo("chelsea"), [], id="chelsea", metadata={"source": "skimage"}))
    report = client.upload(APP, items)
    assert not report.failures
    client.wait_indexed(APP, len(items), timeout=180)
    return {input_id: name for input_id, name, _ in animals}


@pytest.mark.parametrize("name", list(SERVICE_NAMES))
def test_each_service_has_health_and_reflection(stack, name: str) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(stack.addresses[name]) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            request = health_pb2.HealthCheckRequest(service=SERVICE_NAMES[name])
            return health.Check(request, timeout=10).status == health_pb2.HealthCheckResponse.SERVING

        # A service's probes (Triton ready, consumers polling) can read false for a moment on a
        # loaded 2-core machine: the contract is that it reports SERVING, not on the first call.
        eventually(serving, timeout=60, interval=1.0, what=f"{name} health SERVING")
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        [resp] = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
        services = {s.name for s in resp.list_services_response.service}
        assert SERVICE_NAMES[name] in services and "grpc.health.v1.Health" in services


def test_every_upload_is_searchable_with_its_payload(client: Firstlight, uploaded: dict[str, str]) -> None:
    assert client.indexed_count(APP) == len(uploaded) + 1
    some = sorted(uploaded)[:5]
    for input_id in some:
        hits = client.search_by_image(APP, input_id=input_id, top_k=3).hits
        assert hits[0].input_id == input_id and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert list(hits[0].concepts) == [uploaded[input_id]] and hits[0].split == common_pb2.SPLIT_TRAIN


def test_predict_general_model_finds_the_cat(client: Firstlight) -> None:
    [top3] = client.predict([datasets.sample_photo("chelsea")], top_k=3)
    names = [n.lower() for n, _ in top3]
    assert any("cat" in n or "mau" in n for n in names), names
    assert all(0 < s <= 1 for _, s in top3) and [s for _, s in top3] == sorted((s for _, s in top3), reverse=True)


def test_predict_with_a_concept_allow_list(client: Firstlight) -> None:
    [only] = client.predict([datasets.sample_photo("chelsea")], concepts=["tabby cat", "Asian elephant"], top_k=5)
    assert [n for n, _ in only] == ["tabby cat", "Asian elephant"]


def test_search_by_uploaded_image_bytes_returns_that_input_first(client: Firstlight, uploaded: dict[str, str]) -> None:
    hits = client.search_by_image(APP, image=datasets.sample_photo("chelsea"), top_k=5).hits
    assert hits[0].input_id == "chelsea"
    assert hits[0].score > 0.99 > hits[1].score


def test_search_filters_and_pagination(client: Firstlight, uploaded: dict[str, str]) -> None:
    only_cats = client.search_by_image(APP, input_id="chelsea", top_k=20, concepts=["cat"]).hits
    assert only_cats and all(list(h.concepts) == ["cat"] for h in only_cats)
    page1 = client.search.SearchByImage(search_pb2.SearchByImageRequest(app_id=APP, input_id="chelsea", page_size=4))
    page2 = client.search.SearchByImage(search_pb2.SearchByImageRequest(app_id=APP, input_id="chelsea", page_size=4, page_token=page1.next_page_token))
    both = client.search_by_image(APP, input_id="chelsea", top_k=8).hits
    assert [h.input_id for h in page1.hits] + [h.input_id for h in page2.hits] == [h.input_id for h in both]


def test_text_search_reads_the_query_as_concepts(client: Firstlight, uploaded: dict[str, str]) -> None:
    resp = client.search_by_text(APP, "elephant", top_k=10)
    assert any("elephant" in c.name.lower() for c in resp.interpreted_as)
    assert len(resp.hits) == 10
    # Better than chance (1/10 of the animals are elephants; the bound is loose on purpose:
    # the zero-label bridge is measured properly in the acceptance run, not asserted here).
    assert sum("elephant" in h.concepts for h in resp.hits) >= 2


def test_list_inputs_filters_and_concepts(client: Firstlight, uploaded: dict[str, str]) -> None:
    resp = client.ingestion.ListInputs(
        ingestion_pb2.ListInputsRequest(app_id=APP, page_size=100, filter=common_pb2.InputFilter(labeled=common_pb2.LABELED_FILTER_UNLABELED))
    )
    assert [i.id for i in resp.inputs] == ["chelsea"] and resp.inputs[0].metadata["source"] == "skimage"
    concepts = {c.name: c.input_count for c in client.list_concepts(APP)}
    assert concepts == dict.fromkeys(datasets.ANIMAL_CLASSES, 8)


def test_annotations_reach_the_index(client: Firstlight, uploaded: dict[str, str]) -> None:
    client.ingestion.PostAnnotations(
        ingestion_pb2.PostAnnotationsRequest(app_id=APP, annotations=[ingestion_pb2.Annotation(input_id="chelsea", add_concepts=["chelsea-the-cat"])])
    )

    def labeled() -> bool:
        hits = client.search_by_image(APP, input_id="chelsea", top_k=1, concepts=["chelsea-the-cat"]).hits
        return bool(hits) and hits[0].input_id == "chelsea"

    eventually(labeled, timeout=60, what="label change visible in search")


def test_delete_removes_from_search(client: Firstlight, uploaded: dict[str, str]) -> None:
    victim = sorted(uploaded)[-1]
    before = client.indexed_count(APP)
    client.ingestion.DeleteInputs(ingestion_pb2.DeleteInputsRequest(app_id=APP, input_ids=[victim]))
    eventually(lambda: client.indexed_count(APP) == before - 1, timeout=60, what="deleted input gone from index")
    with pytest.raises(Exception, match="NOT_FOUND"):
        client.get_input(APP, victim)
