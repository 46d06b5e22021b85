"""The embedding map's /v1 routes and Portal page over a fake curation service: the requests
the gateway builds, the error mapping, and the page's form (escaped) and navigation link."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from gateway_doubles import gateway_settings

from firstlight import errors
from firstlight.gateway.session import COOKIE
from firstlight.v1 import curation_pb2, inference_pb2

HOSTILE = '"><script>alert(1)</script>'


class FakeCuration:
    def __init__(self) -> None:
        self.calls: list = []

    async def start_embedding_map(self, req, key):  # type: ignore[no-untyped-def]
        self.calls.append(req)
        return curation_pb2.EmbeddingMapJob(id="map-1", app_id=req.app_id, method=req.method or "pca", state="running", stage="vectors", progress=0.3)

    async def get_embedding_map_job(self, req, key):  # type: ignore[no-untyped-def]
        self.calls.append(req)
        if req.job_id != "map-1":
            raise errors.NotFound(f"map job {req.job_id!r} does not exist")
        return curation_pb2.EmbeddingMapJob(id="map-1", app_id=req.app_id, state="succeeded", stage="done", progress=1.0, points=2, cached=True)

    async def list_embedding_map_points(self, req, key):  # type: ignore[no-untyped-def]
        self.calls.append(req)
        if req.model_id == "nope":
            raise errors.NotFound("model 'nope' does not exist")
        pts = [curation_pb2.EmbeddingMapPoint(input_id="a", x=0.5, y=-0.5, concepts=["cat"], split=1, predicted_concept="cat", score=0.9)]
        return curation_pb2.ListEmbeddingMapPointsResponse(points=pts, total_size=1, method="pca", map_key="k", predictions_source="stored")


class FakeInference:
    async def list_models(self, req, key):  # type: ignore[no-untyped-def]
        return inference_pb2.ListModelsResponse(models=[inference_pb2.ModelInfo(id="general"), inference_pb2.ModelInfo(id="animals")])


@pytest.fixture
def gw(tmp_path):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from firstlight.gateway.app import create_app

    fake = SimpleNamespace(curation=FakeCuration(), inference=FakeInference())
    app = create_app(gateway_settings(tmp_path), clients=fake)  # type: ignore[arg-type]
    with TestClient(app) as client:
        session = app.state.sessions.new("k", "app1", False)
        yield client, fake, app.state.sessions.encode(session)


def test_map_routes_build_the_requests_and_map_refusals(gw) -> None:  # type: ignore[no-untyped-def]
    client, fake, _ = gw
    h = {"Authorization": "Bearer k"}
    r = client.post("/v1/apps/app1/map", json={"method": "tsne", "force": True}, headers=h)
    assert r.status_code == 202 and r.json()["state"] == "running"
    assert (fake.curation.calls[-1].app_id, fake.curation.calls[-1].method, fake.curation.calls[-1].force) == ("app1", "tsne", True)
    assert client.post("/v1/apps/app1/map", json={"method": "umap"}, headers=h).status_code == 400
    assert client.get("/v1/apps/app1/map/jobs/map-1", headers=h).json()["cached"] is True
    assert client.get("/v1/apps/app1/map/jobs/map-9", headers=h).status_code == 404
    r = client.get("/v1/apps/app1/map/points?page_size=10&model_id=animals&model_version=serving&dataset_id=main", headers=h)
    assert r.status_code == 200 and r.json()["points"][0]["split"] == "SPLIT_TRAIN" and r.json()["predictions_source"] == "stored"
    req = fake.curation.calls[-1]
    assert (req.page_size, req.model_id, req.model_version, req.dataset_id) == (10, "animals", "", "main")
    assert client.get("/v1/apps/app1/map/points?page_size=5001", headers=h).status_code == 400
    assert client.get("/v1/apps/app1/map/points?model_id=nope", headers=h).status_code == 404
    paths = client.get("/v1/openapi.json").json()["paths"]
    for p in ("/v1/apps/{app_id}/map", "/v1/apps/{app_id}/map/jobs/{job_id}", "/v1/apps/{app_id}/map/points"):
        assert p in paths and all(op["tags"] == ["quality"] and op["summary"] for op in paths[p].values())


def test_map_page_form_is_escaped_and_linked_from_the_navigation(gw) -> None:  # type: ignore[no-untyped-def]
    client, fake, cookie = gw
    client.cookies.set(COOKIE, cookie)
    page = client.get("/portal/apps/app1/map", params={"color": "prediction", "model": HOSTILE, "method": "bogus"})
    assert page.status_code == 200 and 'id="nav-map"' in page.text and 'class="on" id="nav-map"' in page.text
    assert HOSTILE not in page.text and "&#34;&gt;&lt;script&gt;" in page.text
    assert 'data-color="prediction"' in page.text and 'data-method="pca"' in page.text  # an unknown method falls back
    assert '<option value="animals">' in page.text and '<option value="general">' not in page.text
    assert 'data-color="concept"' in client.get("/portal/apps/app1/map?color=bogus").text
    assert not fake.curation.calls  # the page's script starts the job, not the page
    assert client.get("/portal/apps/app2/map").status_code == 403  # a session reaches its own app only
