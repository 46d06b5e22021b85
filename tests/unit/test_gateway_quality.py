"""The data-quality routes and Portal page over fake services: the requests the gateway builds,
the error mapping, the page's verdict, groups (keep one), slices, and its escaping."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from gateway_doubles import gateway_settings

from firstlight import errors
from firstlight.gateway.quality_views import health_view, histogram_view, slices_view
from firstlight.gateway.session import COOKIE
from firstlight.v1 import common_pb2, curation_pb2, inference_pb2, ingestion_pb2, training_pb2

HOSTILE = "<script>alert(1)</script>"

REPORT = curation_pb2.HealthCheckResponse(
    status="fail",
    examined=42,
    checks=[
        curation_pb2.HealthCheckResult(name="duplicates", status="warn", message="2 duplicate inputs in 1 group", count=2, input_ids=["b", "c"]),
        curation_pb2.HealthCheckResult(name="leaks", status="fail", message="1 input has a copy in another split", count=1, input_ids=["c"]),
        curation_pb2.HealthCheckResult(name="outliers", status="pass", message="none far out", count=0),
    ],
    duplicate_groups=[curation_pb2.DuplicateGroup(input_ids=["b", "a", "c"], keep="a", kind="near", similarity=0.991)],
    outliers=[curation_pb2.OutlierScore(input_id="o1", score=0.42)],
    flagged_images=[curation_pb2.ImageQualityMetrics(input_id="dark1", metrics={"brightness": 0.02, "blur": 3.0}, issues=["dark"])],
    markdown="# report",
)


class FakeCuration:
    def __init__(self) -> None:
        self.calls: list = []
        self.refuse: Exception | None = None

    async def run_health_check(self, req, key):  # type: ignore[no-untyped-def]
        self.calls.append(req)
        return REPORT

    async def keep_one_duplicate(self, req, key):  # type: ignore[no-untyped-def]
        self.calls.append(req)
        if self.refuse:
            raise self.refuse
        return curation_pb2.KeepOneResponse(kept=req.keep, deleted_input_ids=list(req.drop), kind="near", similarity=0.99)

    async def get_worst_slices(self, req, key):  # type: ignore[no-untyped-def]
        self.calls.append(req)
        if req.rank_by not in ("", "brier", "accuracy", "f1"):  # as the service refuses it
            raise errors.InvalidArgument(f"rank_by must be one of brier, accuracy, f1 (got {req.rank_by!r})")
        return curation_pb2.WorstSlicesResponse(
            model_version="3",
            split=req.split,
            count=120,
            accuracy=0.9,
            f1=0.88,
            brier=0.17,
            rank_by=req.rank_by or "brier",
            slices=[
                curation_pb2.Slice(
                    field="concept",
                    value="horse",
                    count=30,
                    accuracy=0.6,
                    accuracy_low=0.42,
                    accuracy_high=0.75,
                    gap=0.3,
                    confident_gap=0.15,
                    f1=0.62,
                    f1_low=0.5,
                    f1_high=0.71,
                    brier=0.52,
                    brier_low=0.41,
                    brier_high=0.63,
                    rank_gap=0.24,
                ),
                curation_pb2.Slice(
                    field="q_blur",
                    value="q1",
                    count=30,
                    accuracy=0.87,
                    accuracy_low=0.7,
                    accuracy_high=0.95,
                    gap=0.03,
                    confident_gap=-0.05,
                    f1=0.85,
                    f1_low=0.7,
                    f1_high=0.93,
                    brier=0.2,
                    brier_low=0.12,
                    brier_high=0.28,
                    rank_gap=-0.05,
                ),
                # a metadata value is user text: escaped, and cut when long
                curation_pb2.Slice(field="metadata.camera", value=HOSTILE + "x" * 60, count=25, accuracy=0.8, accuracy_low=0.6, accuracy_high=0.9),
            ],
            metadata_keys=list(req.metadata_keys) or ["camera"],
        )

    async def score_uniqueness(self, req, key):  # type: ignore[no-untyped-def]
        self.calls.append(req)
        if req.scope not in ("", "app", "concept"):  # as the service refuses it
            raise errors.InvalidArgument(f"scope must be one of app, concept (got {req.scope!r})")
        one = curation_pb2.UniquenessScore
        reps = [curation_pb2.ConceptRepresentatives(concept=HOSTILE, inputs=[one(input_id="r1", score=0.1, concept_score=0.05, concepts=[HOSTILE])])]
        return curation_pb2.ScoreUniquenessResponse(
            inputs=[one(input_id="u1", score=0.61, concept_score=0.7, concepts=["cat"]), one(input_id="u2", score=0.4, concepts=[])],
            next_page_token="tok",
            total_size=2,
            examined=2,
            representatives=reps if req.per_concept else [],
            scope=req.scope or "app",
            order=req.order or "unusual",
        )

    async def explain_prediction(self, req, key):  # type: ignore[no-untyped-def]
        self.calls.append(req)
        if req.input_id == "gone":
            raise errors.NotFound("no input 'gone' in app 'app1'")
        c = curation_pb2.ConceptExplanation(concept="cat", score=0.9, overlay_png=b"\x89PNG-overlay", map_height=1, map_width=1, saliency=[1.0])
        return curation_pb2.ExplainPredictionResponse(model_version="3", concepts=[c], grid_png=b"\x89PNG-grid", input_id=req.input_id)


class FakeIngestion:
    def __init__(self) -> None:
        self.listed: list = []
        self.histograms: list = []

    async def get_quality_histogram(self, req, key):  # type: ignore[no-untyped-def]
        self.histograms.append(req)
        if req.metric not in ("brightness", "blur"):
            raise errors.InvalidArgument(f"unknown quality metric {req.metric!r}")
        edges = [k / req.bins for k in range(req.bins + 1)]
        counts = [[1, 0, 3, 0][k % 4] for k in range(req.bins)]
        return ingestion_pb2.GetQualityHistogramResponse(metric=req.metric, edges=edges, counts=counts, unmeasured=2)

    async def list_inputs(self, req, key):  # type: ignore[no-untyped-def]
        self.listed.append(req)
        return ingestion_pb2.ListInputsResponse(inputs=[common_pb2.Input(id="dark1", quality=common_pb2.ImageQuality(brightness=0.02))], total_size=1)

    async def get_input(self, req, key):  # type: ignore[no-untyped-def]
        if req.input_id == "gone":
            raise errors.NotFound("gone")
        concepts = [HOSTILE] if req.input_id == "b" else ["cat"]
        return common_pb2.Input(id=req.input_id, concepts=concepts, split=3 if req.input_id == "c" else 1)


class FakeTraining:
    async def get_dataset(self, req, key):  # type: ignore[no-untyped-def]
        if req.dataset_id != "main":
            raise errors.NotFound("no such dataset")
        checks = [training_pb2.DatasetCheck(name="leaks", status="fail", message="1 input", count=1)]
        return training_pb2.Dataset(app_id=req.app_id, id="main", version="abcdef0123456789", health=training_pb2.DatasetHealth(status="fail", checks=checks))

    async def create_dataset(self, req, key):  # type: ignore[no-untyped-def]
        self.created = req
        if req.split.group_duplicates and req.dataset_id == "down":  # as training answers when curation is unreachable
            raise errors.Unavailable("group_duplicates needs the curation service to find the duplicate groups, and it is unreachable")
        return training_pb2.Dataset(app_id=req.app_id, id=req.dataset_id, version="0123")


class FakeInference:
    async def list_models(self, req, key):  # type: ignore[no-untyped-def]
        return inference_pb2.ListModelsResponse(models=[inference_pb2.ModelInfo(id="general"), inference_pb2.ModelInfo(id="animals")])


@pytest.fixture
def gw(tmp_path):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from firstlight.gateway.app import create_app

    settings = gateway_settings(tmp_path)
    fake = SimpleNamespace(curation=FakeCuration(), ingestion=FakeIngestion(), inference=FakeInference(), training=FakeTraining())
    app = create_app(settings, clients=fake)  # type: ignore[arg-type]
    with TestClient(app) as client:
        session = app.state.sessions.new("k", "app1", False)
        yield client, fake, session, app.state.sessions.encode(session)


def test_http_routes_build_the_requests_and_map_refusals(gw) -> None:  # type: ignore[no-untyped-def]
    client, fake, _, _ = gw
    h = {"Authorization": "Bearer k"}
    r = client.get("/v1/apps/app1/quality/health?dataset_id=main&images=false&max_examples=5&group_key=video_id", headers=h)
    assert r.status_code == 200 and r.json()["duplicate_groups"][0]["keep"] == "a"
    req = fake.curation.calls[-1]
    assert (req.app_id, req.dataset_id, req.images, req.max_examples, req.group_key) == ("app1", "main", False, 5, "video_id")
    assert client.get("/v1/apps/app1/quality/health?max_examples=0", headers=h).status_code == 400
    r = client.post("/v1/apps/app1/quality/duplicates/keep-one", json={"keep": "a", "drop": ["b", "c"]}, headers=h)
    assert r.status_code == 200 and r.json()["deleted_input_ids"] == ["b", "c"]
    assert client.post("/v1/apps/app1/quality/duplicates/keep-one", json={"keep": "a", "drop": []}, headers=h).status_code == 400
    fake.curation.refuse = errors.FailedPrecondition("not duplicates of 'a'")
    r = client.post("/v1/apps/app1/quality/duplicates/keep-one", json={"keep": "a", "drop": ["z"]}, headers=h)
    assert r.status_code == 409 and "not duplicates" in r.json()["error"]["message"]
    r = client.get("/v1/apps/app1/models/animals/versions/serving/slices?split=test&min_size=10", headers=h)
    assert r.status_code == 200 and r.json()["slices"][0]["value"] == "horse"
    req = fake.curation.calls[-1]
    assert (req.model_id, req.model_version, req.split, req.min_size, req.rank_by) == ("animals", "", "test", 10, "")
    r = client.get("/v1/apps/app1/models/animals/versions/serving/slices?rank_by=f1", headers=h)
    assert r.status_code == 200 and r.json()["rank_by"] == "f1" and fake.curation.calls[-1].rank_by == "f1"
    assert r.json()["slices"][0]["brier_high"] == pytest.approx(0.63)
    r = client.get("/v1/apps/app1/models/animals/versions/serving/slices?rank_by=auc", headers=h)
    assert r.status_code == 400 and "rank_by must be one of" in r.json()["error"]["message"]
    r = client.get("/v1/apps/app1/models/animals/versions/serving/slices?metadata_key=camera&metadata_key=site", headers=h)
    assert r.status_code == 200 and list(fake.curation.calls[-1].metadata_keys) == ["camera", "site"] and r.json()["metadata_keys"] == ["camera", "site"]
    r = client.get("/v1/apps/app1/models/animals/versions/serving/slices", headers=h)
    assert not fake.curation.calls[-1].metadata_keys and r.json()["metadata_keys"] == ["camera"]  # chosen by the service
    paths = client.get("/v1/openapi.json").json()["paths"]
    for p in (
        "/v1/apps/{app_id}/quality/health",
        "/v1/apps/{app_id}/quality/duplicates/keep-one",
        "/v1/apps/{app_id}/models/{model_id}/versions/{version}/slices",
        "/v1/apps/{app_id}/quality/uniqueness",
    ):
        assert p in paths and all(op["tags"] == ["quality"] and op["summary"] for op in paths[p].values())


def test_create_dataset_over_http_passes_group_duplicates(gw) -> None:  # type: ignore[no-untyped-def]
    client, fake, _, _ = gw
    h = {"Authorization": "Bearer k"}
    r = client.post("/v1/apps/app1/datasets", json={"id": "d", "split": {"seed": 3, "group_duplicates": True}}, headers=h)
    assert r.status_code == 201 and fake.training.created.split.group_duplicates and fake.training.created.split.seed == 3
    r = client.post("/v1/apps/app1/datasets", json={"id": "d"}, headers=h)
    assert r.status_code == 201 and not fake.training.created.split.group_duplicates
    r = client.post("/v1/apps/app1/datasets", json={"id": "down", "split": {"group_duplicates": True}}, headers=h)
    assert r.status_code == 503 and "curation service" in r.json()["error"]["message"]


def test_gallery_listing_passes_a_quality_range_through(gw) -> None:  # type: ignore[no-untyped-def]
    client, fake, _, _ = gw
    h = {"Authorization": "Bearer k"}
    r = client.get("/v1/apps/app1/inputs?quality_metric=brightness&quality_max=0.2", headers=h)
    assert r.status_code == 200 and r.json()["inputs"][0]["quality"]["brightness"] == 0.02
    q = fake.ingestion.listed[-1].quality
    assert (q.metric, q.HasField("min"), q.max) == ("brightness", False, 0.2)
    assert client.get("/v1/apps/app1/inputs", headers=h).status_code == 200 and not fake.ingestion.listed[-1].HasField("quality")
    assert client.get("/v1/apps/app1/inputs?quality_min=0.2", headers=h).status_code == 400
    assert client.get("/v1/apps/app1/inputs?quality_metric=blur&quality_min=1&dataset_id=main", headers=h).status_code == 400


def test_portal_page_shows_the_check_and_keeps_one_of_a_group(gw) -> None:  # type: ignore[no-untyped-def]
    client, fake, session, cookie = gw
    client.cookies.set(COOKIE, cookie)
    idle = client.get("/portal/apps/app1/quality")
    assert idle.status_code == 200 and 'id="health-idle"' in idle.text and not fake.curation.calls
    page = client.get("/portal/apps/app1/quality?run=1&model=animals&min_size=10")
    assert page.status_code == 200
    html = page.text
    assert "Fails: leaks across splits; warns: duplicates (42 inputs checked)." in html
    assert html.count('name="members"') == 3 and 'type="radio" name="keep" value="a" checked' in html
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # autoescaped
    assert "/v1/apps/app1/inputs/o1/thumbnail" in html and "dark" in html
    assert "concept horse" in html and "worse by Brier score with 95% confidence" in html and "<option>general</option>" not in html
    assert '0.520 <span class="muted">0.410–0.630</span>' in html and '<option value="brier" selected>' in html  # Brier with its interval
    page = client.get("/portal/apps/app1/quality?model=animals&rank_by=accuracy").text
    assert fake.curation.calls[-1].rank_by == "accuracy" and '<option value="accuracy" selected>' in page and "Ranked by accuracy" in page
    assert "Metadata keys chosen: camera." in page and "camera = &lt;script&gt;alert(1)&lt;/script&gt;" + "x" * 14 + "…</th>" in page
    assert 'title="metadata.camera = &lt;script&gt;alert(1)&lt;/script&gt;' + "x" * 60 + '"' in page  # the whole value on hover
    page = client.get("/portal/apps/app1/quality?model=animals&metadata_keys=camera,+site").text
    assert list(fake.curation.calls[-1].metadata_keys) == ["camera", "site"] and "Metadata keys asked for: camera, site." in page
    assert 'name="metadata_keys" id="slices-metadata-keys" value="camera, site"' in page and HOSTILE not in page
    client.get("/portal/apps/app1/quality?model=animals&rank_by=bogus")  # the page falls back to the default, not a 400
    assert fake.curation.calls[-1].rank_by == "brier"
    # keep one: the ticked member kept, the others dropped; the check runs again
    r = client.post("/portal/apps/app1/quality/keep-one", data={"csrf": session.csrf, "keep": "b", "members": ["a", "b", "c"]}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/portal/apps/app1/quality?run=1&")  # a reload does not post again
    r = client.get(r.headers["location"])
    assert r.status_code == 200 and "Kept b; deleted its 2 duplicates: a, c." in r.text
    assert 'action="/portal/apps/app1/quality"' in r.text and 'action="/portal/apps/app1/quality#slices-card"' in r.text
    req = next(c for c in reversed(fake.curation.calls) if isinstance(c, curation_pb2.KeepOneRequest))
    assert (req.app_id, req.keep, list(req.drop)) == ("app1", "b", ["a", "c"])
    fake.curation.refuse = errors.FailedPrecondition("'b' lacks labels its duplicates carry")
    r = client.post("/portal/apps/app1/quality/keep-one", data={"csrf": session.csrf, "keep": "b", "members": ["a", "b"]})
    assert r.status_code == 409 and "Nothing deleted" in r.text
    r = client.post("/portal/apps/app1/quality/keep-one", data={"csrf": "wrong", "keep": "b", "members": ["a", "b"]})
    assert r.status_code == 403
    assert client.get("/portal/apps/other/quality").status_code == 403  # the session's app only
    # a dataset's page shows the check recorded when its version was frozen
    page = client.get("/portal/apps/app1/quality?dataset=main")
    assert "Version abcdef012345 of main was checked when frozen: fail (leaks fail)." in page.text
    assert 'id="health-recorded"' not in client.get("/portal/apps/app1/quality?dataset=other").text


def test_views_name_checks_and_slices_in_words() -> None:
    from firstlight.gateway.api import to_json

    v = health_view(to_json(REPORT), {"c": (["cat"], 3)})
    assert [c.name for c in v.checks] == ["duplicates", "leaks", "outliers"]
    assert v.groups[0].members[0].input_id == "a" and v.groups[0].members[0].suggested and v.groups[0].drop_count == 2
    assert v.leaks[0].split == "test"
    rows = slices_view(to_json(REPORT) | {"slices": [{"field": "cluster", "value": "c2", "count": 40, "majority_concept": "dog", "majority_share": 0.8}]})
    assert rows[0].name == "embedding cluster c2" and rows[0].note == "mostly dog (80%)" and not rows[0].confident
    rows = slices_view(
        {"rank_by": "brier", "slices": [{"field": "metadata.site", "value": "north", "count": 40}, {"field": "metadata.note", "value": "y" * 41}]}
    )
    assert (rows[0].name, rows[0].note, rows[0].full) == ("site = north", "metadata", "")
    assert rows[1].name == "note = " + "y" * 39 + "…" and rows[1].full == "metadata.note = " + "y" * 41


def test_histogram_route_and_portal_bars(gw) -> None:  # type: ignore[no-untyped-def]
    client, fake, _, cookie = gw
    h = {"Authorization": "Bearer k"}
    r = client.get("/v1/apps/app1/quality/histogram?metric=brightness&bins=4", headers=h)
    assert r.status_code == 200 and r.json()["counts"] == [1, 0, 3, 0] and r.json()["unmeasured"] == 2
    assert (fake.ingestion.histograms[-1].metric, fake.ingestion.histograms[-1].bins) == ("brightness", 4)
    assert client.get("/v1/apps/app1/quality/histogram?metric=blur&bins=0", headers=h).status_code == 400
    assert client.get("/v1/apps/app1/quality/histogram?metric=sharpness", headers=h).status_code == 400
    client.cookies.set(COOKIE, cookie)
    page = client.get("/portal/apps/app1/quality?metric=brightness")
    assert page.status_code == 200
    assert page.text.count('<rect class="bar"') == 20 and "style=" not in page.text.split('id="histogram-card"')[1]
    assert "quality_metric=brightness&amp;quality_min=0.0&amp;quality_max=0.05" in page.text
    assert "2 stored before metrics were measured" in page.text
    other = client.get(f"/portal/apps/app1/quality?metric={HOSTILE}")  # not a metric: no histogram asked for
    assert other.status_code == 200 and 'id="histogram"' not in other.text and HOSTILE not in other.text


def test_histogram_view_scales_bars_to_the_tallest() -> None:
    v = histogram_view({"metric": "blur", "edges": [0.0, 1.0, 2.0], "counts": [2, 4], "unmeasured": 0})
    assert [(b.x, b.height, b.count) for b in v["bars"]] == [(0.0, 80.0, 2), (300.0, 160.0, 4)]
    assert histogram_view({"metric": "blur", "edges": [], "counts": []})["bars"] == []
    assert v["tallest"] == 4 and v["ticks"] == [(0.0, "0", "start"), (300.0, "1", "middle"), (600.0, "2", "end")]


def test_histogram_ticks_label_five_edges_of_twenty_buckets() -> None:
    v = histogram_view({"metric": "brightness", "edges": [k / 50 for k in range(21)], "counts": [1] * 20})
    assert [t[1] for t in v["ticks"]] == ["0", "0.1", "0.2", "0.3", "0.4"] and [t[0] for t in v["ticks"]] == [0.0, 150.0, 300.0, 450.0, 600.0]
    assert histogram_view({"metric": "blur", "edges": [], "counts": []})["ticks"] == []


def test_explain_route(gw) -> None:  # type: ignore[no-untyped-def]
    import base64

    client, fake, _, _ = gw
    h = {"Authorization": "Bearer k"}
    url = "/v1/apps/app1/models/animals/versions/serving/explain"
    r = client.post(url, json={"input_id": "x1", "top_k": 2}, headers=h)
    assert r.status_code == 200 and base64.b64decode(r.json()["concepts"][0]["overlay_png"]) == b"\x89PNG-overlay"
    req = fake.curation.calls[-1]
    assert (req.model_id, req.model_version, req.WhichOneof("query"), req.input_id, req.top_k, req.evidence_count) == ("animals", "", "input_id", "x1", 2, 6)
    r = client.post(url.replace("serving", "2") + "?format=png", json={"base64": base64.b64encode(b"img").decode()}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == b"\x89PNG-grid"
    req = fake.curation.calls[-1]
    assert (req.model_version, req.WhichOneof("query"), req.image_bytes) == ("2", "image_bytes", b"img")
    assert client.post(url, json={"input_id": "gone"}, headers=h).status_code == 404
    for bad in ({"input_id": "x1", "base64": "aW1n"}, {"base64": "not base64!"}, {"input_id": "x1", "top_k": 11}):
        assert client.post(url, json=bad, headers=h).status_code == 400, bad
    assert client.post(url + "?format=gif", json={"input_id": "x1"}, headers=h).status_code == 400


def test_uniqueness_route(gw) -> None:  # type: ignore[no-untyped-def]
    client, fake, _, _ = gw
    h = {"Authorization": "Bearer k"}
    r = client.get("/v1/apps/app1/quality/uniqueness?scope=concept&order=typical&concept=cat&page_size=50&page_token=t&per_concept=3", headers=h)
    assert r.status_code == 200
    req = fake.curation.calls[-1]
    assert (req.app_id, req.scope, req.order, req.concept, req.page_size, req.page_token, req.per_concept) == ("app1", "concept", "typical", "cat", 50, "t", 3)
    body = r.json()
    # an input without a concept score has none in the JSON (not 0, not NaN)
    assert body["inputs"][0]["concept_score"] == pytest.approx(0.7) and "concept_score" not in body["inputs"][1]
    assert body["next_page_token"] == "tok" and body["representatives"][0]["inputs"][0]["input_id"] == "r1"
    assert client.get("/v1/apps/app1/quality/uniqueness", headers=h).json()["scope"] == "app"
    assert client.get("/v1/apps/app1/quality/uniqueness?scope=apps", headers=h).status_code == 400
    for bad in ("page_size=0", "page_size=1001", "per_concept=51"):
        assert client.get(f"/v1/apps/app1/quality/uniqueness?{bad}", headers=h).status_code == 400, bad


def test_portal_uniqueness_card(gw) -> None:  # type: ignore[no-untyped-def]
    client, fake, _, cookie = gw
    client.cookies.set(COOKIE, cookie)
    idle = client.get("/portal/apps/app1/quality").text
    assert 'id="uniqueness-idle"' in idle and not any(isinstance(c, curation_pb2.ScoreUniquenessRequest) for c in fake.curation.calls)
    html = client.get("/portal/apps/app1/quality?uniq=1").text
    req = fake.curation.calls[-1]
    assert (req.scope, req.order, req.concept, req.page_size, req.per_concept) == ("app", "unusual", "", 12, 4)
    assert "/v1/apps/app1/inputs/u1/thumbnail" in html and "0.610 · 0.700" in html  # app-wide · within its concept
    assert "/v1/apps/app1/inputs/u2/thumbnail" in html and "unlabeled" in html
    assert "/v1/apps/app1/inputs/r1/thumbnail" in html and "0.050" in html  # a representative, its distance within the concept
    assert HOSTILE not in html and "&lt;script&gt;" in html  # the concept name autoescaped
    client.get("/portal/apps/app1/quality?uniq=1&uniq_concept=cat&uniq_order=typical")
    req = fake.curation.calls[-1]
    assert (req.scope, req.order, req.concept) == ("concept", "typical", "cat")
    client.get("/portal/apps/app1/quality?uniq=1&uniq_order=bogus")  # falls back to the default, not a 400
    assert fake.curation.calls[-1].order == "unusual"
