"""The HTTP API (firstlight.gateway) against the real stack: every /v1 route, auth with the same
keys and app scoping as gRPC, cross-app denial, the status mapping, limits, the session cookie
and CSRF, and the OpenAPI document and docs page served with no external asset."""

from __future__ import annotations

import io
import json
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from firstlight import datasets
from firstlight.gateway.session import COOKIE

from .helpers import b64, eventually, predict_stored, wait_queued

pytestmark = pytest.mark.integration

A, B = "gw-a", "gw-b"
CLASSES = ["cat", "dog", "horse"]
HOSTILE = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'
#: Right-to-left override: refused in concept names (a control character), kept in metadata.
HOSTILE_FILE = HOSTILE + "\u202egnp.exe"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def err(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "status", "message"}, body
    assert body["error"]["status"] == resp.status_code
    return body["error"]


@pytest.fixture(scope="module")
def gw(stack) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=stack.gateway_url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def keys(stack, gw: httpx.Client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Apps A (30 labeled animals + 6 unlabeled + one hostile-named) and B (one photo), created
    through the HTTP API with the admin key, and an app key for each: {app: key, "admin": key}."""
    admin = bearer(stack.admin_key)
    out = {"admin": stack.admin_key}
    for app in (A, B):
        r = gw.post("/v1/apps", json={"id": app, "name": f"app {app}"}, headers=admin)
        assert r.status_code == 201, r.text
        r = gw.post(f"/v1/apps/{app}/keys", json={"name": "tests"}, headers=admin)
        assert r.status_code == 201, r.text
        out[app] = r.json()["secret"]
    items = datasets.animal_mnist(12, seed=5, classes=CLASSES)
    labeled = [{"id": i, "base64": b64(d), "concepts": [c]} for n, (i, c, d) in enumerate(items) if n % 12 < 10]
    unlabeled = [{"id": i, "base64": b64(d)} for n, (i, c, d) in enumerate(items) if n % 12 >= 10]
    r = gw.post(f"/v1/apps/{A}/inputs", json={"inputs": labeled + unlabeled}, headers=bearer(out[A]))
    assert r.status_code == 201, r.text
    r = gw.post(
        f"/v1/apps/{A}/inputs",
        json={"inputs": [{"id": "hostile", "base64": b64(items[0][2]), "concepts": [HOSTILE], "metadata": {"filename": HOSTILE_FILE}}]},
        headers=bearer(out[A]),
    )
    assert r.status_code == 201, r.text
    r = gw.post(f"/v1/apps/{B}/inputs", files={"file": ("coffee.jpg", datasets.sample_photo("coffee"), "image/jpeg")}, headers=bearer(out[B]))
    assert r.status_code == 201 and len(r.json()["input_ids"]) == 1 and not r.json()["failures"], r.text
    total = len(labeled) + len(unlabeled) + 1
    eventually(lambda: gw.get(f"/v1/apps/{A}/index", headers=bearer(out[A])).json()["indexed_count"] >= total, 180, what="app A indexed")
    eventually(lambda: gw.get(f"/v1/apps/{B}/index", headers=bearer(out[B])).json()["indexed_count"] >= 1, 180, what="app B indexed")
    return out


def test_health_openapi_and_docs_are_served_from_the_package(gw: httpx.Client) -> None:
    assert gw.get("/healthz").json() == {"status": "ok"}
    spec = gw.get("/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.") and len(spec["paths"]) >= 35
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    docs = gw.get("/v1/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert "default-src 'self'" in docs.headers["content-security-policy"]
    for asset in re.findall(r'(?:src|href)="([^"]+)"', docs.text):
        assert asset.startswith("/"), asset  # nothing from another origin
        if asset.startswith("/static/"):
            assert gw.get(asset).status_code == 200, asset
    for name in ("portal.js", "portal.css", "docs.js"):
        # The SVG namespace is a name, not an address: nothing is fetched from it.
        text = gw.get(f"/static/{name}").text.replace('"http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text, name
    assert gw.get("/docs").status_code == 404  # FastAPI's CDN-backed Swagger UI is off


def test_no_key_bad_key_and_admin_only(gw: httpx.Client, keys: dict[str, str]) -> None:
    r = gw.get(f"/v1/apps/{A}")
    assert r.status_code == 401 and err(r)["code"] == "UNAUTHENTICATED" and r.headers["www-authenticate"].startswith("Bearer")
    for bad in ("flk_0123456789ab_" + "x" * 43, "nonsense"):
        r = gw.get(f"/v1/apps/{A}/inputs", headers=bearer(bad))
        assert r.status_code == 401 and err(r)["code"] == "UNAUTHENTICATED"
    r = gw.post("/v1/apps", json={"id": "nope"}, headers=bearer(keys[A]))
    assert r.status_code == 403 and "admin" in err(r)["message"]
    r = gw.post(f"/v1/apps/{A}/keys", json={}, headers=bearer(keys[A]))
    assert r.status_code == 403
    assert gw.get(f"/v1/apps/{A}", headers={"X-Api-Key": keys[A]}).json()["id"] == A
    r = gw.post("/v1/apps", json={"id": A}, headers=bearer(keys["admin"]))
    assert r.status_code == 409 and err(r)["code"] == "ALREADY_EXISTS"


def test_cross_app_denial_on_every_kind_of_route(gw: httpx.Client, keys: dict[str, str]) -> None:
    h = bearer(keys[A])
    photo = b64(datasets.sample_photo("coffee"))
    calls = [
        ("GET", f"/v1/apps/{B}", None),
        ("GET", f"/v1/apps/{B}/inputs", None),
        ("GET", f"/v1/apps/{B}/concepts", None),
        ("POST", f"/v1/apps/{B}/inputs", {"inputs": [{"base64": photo}]}),
        ("POST", f"/v1/apps/{B}/annotations", {"annotations": [{"input_id": "x", "add_concepts": ["y"]}]}),
        ("POST", f"/v1/apps/{B}/annotations/bulk", {"input_ids": ["x"], "add_concepts": ["y"]}),
        ("POST", f"/v1/apps/{B}/reembed", {"all_inputs": True}),
        ("GET", f"/v1/apps/{B}/indexing-backlog", None),
        ("POST", f"/v1/apps/{B}/search/text", {"text": "cup"}),
        ("POST", f"/v1/apps/{B}/search/image", {"base64": photo}),
        ("GET", f"/v1/apps/{B}/index", None),
        ("POST", f"/v1/apps/{B}/models/general/predict", {"images": [photo]}),
        ("GET", f"/v1/apps/{B}/models", None),
        ("POST", f"/v1/apps/{B}/datasets", {"id": "d"}),
        ("POST", f"/v1/apps/{B}/models", {"id": "m", "concepts": ["a", "b"]}),
        ("GET", f"/v1/apps/{B}/models/m", None),
        ("POST", f"/v1/apps/{B}/models/m/train", {"dataset_id": "d"}),
        ("GET", f"/v1/apps/{B}/jobs/j", None),
        ("GET", f"/v1/apps/{B}/curation/queue", None),
        ("GET", f"/v1/apps/{B}/curation/rounds", None),
        ("GET", f"/v1/apps/{B}/curation/policy", None),
        ("POST", f"/v1/apps/{B}/curation/suggestions", {"model_id": "m"}),
        ("GET", f"/v1/apps/{B}/quality/health", None),
        ("POST", f"/v1/apps/{B}/quality/duplicates/keep-one", {"keep": "x", "drop": ["y"]}),
        ("GET", f"/v1/apps/{B}/models/m/versions/serving/slices", None),
    ]
    for method, path, body in calls:
        r = gw.request(method, path, json=body, headers=h)
        assert r.status_code == 403 and err(r)["code"] == "PERMISSION_DENIED", (method, path, r.text)
    b_input = gw.get(f"/v1/apps/{B}/inputs", headers=bearer(keys[B])).json()["inputs"][0]["id"]
    for suffix in ("", "/image", "/thumbnail"):
        assert gw.get(f"/v1/apps/{B}/inputs/{b_input}{suffix}", headers=h).status_code == 403
    # The same input id asked for under the caller's own app is simply not there.
    assert gw.get(f"/v1/apps/{A}/inputs/{b_input}/image", headers=h).status_code == 404


def test_inputs_listing_filters_images_and_thumbnails(stack, gw: httpx.Client, keys: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    h = bearer(keys[A])
    first = gw.get(f"/v1/apps/{A}/inputs", params={"page_size": 10}, headers=h).json()
    assert len(first["inputs"]) == 10 and first["next_page_token"] and int(first["total_size"]) == 37
    second = gw.get(f"/v1/apps/{A}/inputs", params={"page_size": 10, "page_token": first["next_page_token"]}, headers=h).json()
    assert not {i["id"] for i in first["inputs"]} & {i["id"] for i in second["inputs"]}
    cats = gw.get(f"/v1/apps/{A}/inputs", params={"concept": "cat", "page_size": 100}, headers=h).json()
    assert int(cats["total_size"]) == 10 and all(i["concepts"] == ["cat"] for i in cats["inputs"])
    unlabeled = gw.get(f"/v1/apps/{A}/inputs", params={"labeled": "unlabeled"}, headers=h).json()
    assert int(unlabeled["total_size"]) == 6
    assert gw.get(f"/v1/apps/{A}/inputs", params={"split": "nonsense"}, headers=h).status_code == 400
    one = cats["inputs"][0]
    assert gw.get(f"/v1/apps/{A}/inputs/{one['id']}", headers=h).json()["sha256"] == one["sha256"]
    img = gw.get(f"/v1/apps/{A}/inputs/{one['id']}/image", headers=h)
    assert img.status_code == 200 and img.headers["content-type"] == "image/png" and img.content.startswith(b"\x89PNG")
    th = gw.get(f"/v1/apps/{A}/inputs/{one['id']}/thumbnail", headers=h)
    assert th.status_code == 200 and th.headers["content-type"] == "image/jpeg" and th.content.startswith(b"\xff\xd8")
    again = gw.get(f"/v1/apps/{A}/inputs/{one['id']}/thumbnail", headers={**h, "If-None-Match": th.headers["etag"]})
    assert again.status_code == 304
    # The thumbnail is the one ingestion stored from its decode (never the original's bytes to a
    # grid): the same bytes as the blob, served with the original moved away.
    folder = stack.data_dir / "blobs" / A
    assert one["thumbnail_uri"] == f"blob:{A}/.thumb-{one['id']}"
    assert th.content == (folder / f".thumb-{one['id']}").read_bytes()
    original = folder / one["id"]
    original.rename(folder / "moved-away")
    try:
        assert gw.get(f"/v1/apps/{A}/inputs/{one['id']}/thumbnail", headers=h).content == th.content
    finally:
        (folder / "moved-away").rename(original)
    concepts = {c["name"]: int(c["input_count"]) for c in gw.get(f"/v1/apps/{A}/concepts", headers=h).json()["concepts"]}
    assert concepts["cat"] == 10 and concepts[HOSTILE] == 1
    assert gw.get(f"/v1/apps/{A}/inputs/hostile", headers=h).json()["metadata"]["filename"] == HOSTILE_FILE


def test_upload_errors_map_to_http(stack, gw: httpx.Client, keys: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    h = bearer(keys[A])
    r = gw.post(f"/v1/apps/{A}/inputs", json={"inputs": [{"base64": b64(datasets.sample_photo("coffee")), "concepts": ["a\u202eb"]}]}, headers=h)
    assert r.status_code == 400 and "control" in err(r)["message"]
    r = gw.post(f"/v1/apps/{A}/inputs", json={"inputs": [{"base64": "!!not base64!!"}]}, headers=h)
    assert r.status_code == 400 and "base64" in err(r)["message"]
    r = gw.post(f"/v1/apps/{A}/inputs", json={"inputs": [{"base64": b64(b"not an image at all")}]}, headers=h)
    assert r.status_code == 400 and err(r)["code"] == "INVALID_ARGUMENT" and "not a recognised image" in err(r)["message"]
    r = gw.post(f"/v1/apps/{A}/inputs", json={"inputs": [{"base64": b64(b"\xff\xd8" + b"\0" * (2 * 1024 * 1024 + 10))}]}, headers=h)
    assert r.status_code == 413 and err(r)["code"] == "RESOURCE_EXHAUSTED"
    existing = gw.get(f"/v1/apps/{A}/inputs", params={"page_size": 1}, headers=h).json()["inputs"][0]["id"]
    r = gw.post(f"/v1/apps/{A}/inputs", json={"inputs": [{"id": existing, "base64": b64(datasets.sample_photo("coffee"))}]}, headers=h)
    assert r.status_code == 409 and err(r)["code"] == "ALREADY_EXISTS"
    r = gw.post(f"/v1/apps/{A}/inputs", json={"wrong": 1}, headers=h)
    assert r.status_code == 400 and err(r)["code"] == "INVALID_ARGUMENT"
    # A body over FIRSTLIGHT_MAX_REQUEST_BYTES (64 MiB) is refused from its Content-Length, unread.
    host, port = stack.gateway.address.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST /v1/apps/{A}/inputs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {keys[A]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {65 * 1024 * 1024}\r\n\r\n".encode()
        )
        status_line = sock.recv(4096).split(b"\r\n")[0]
    assert b" 413 " in status_line, status_line
    # Multipart: each file on its own; a bad one is reported, the good one stored, then deleted.
    r = gw.post(
        f"/v1/apps/{A}/inputs",
        files=[("file", ("ok.jpg", datasets.sample_photo("chelsea"), "image/jpeg")), ("file", ("bad.jpg", b"garbage", "image/jpeg"))],
        data={"concepts": "tmp"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert len(body["input_ids"]) == 1 and body["failures"][0]["filename"] == "bad.jpg" and body["failures"][0]["code"] == "INVALID_ARGUMENT"
    assert gw.get(f"/v1/apps/{A}/inputs/{body['input_ids'][0]}", headers=h).json()["metadata"]["filename"] == "ok.jpg"
    assert gw.delete(f"/v1/apps/{A}/inputs/{body['input_ids'][0]}", headers=h).json()["deleted_count"] == 1
    r = gw.get(f"/v1/apps/{A}/inputs/{body['input_ids'][0]}", headers=h)
    assert r.status_code == 404 and err(r)["code"] == "NOT_FOUND"


def test_search_annotate_and_bulk_label(gw: httpx.Client, keys: dict[str, str]) -> None:
    h = bearer(keys[A])
    text = gw.post(f"/v1/apps/{A}/search/text", json={"text": "horse", "page_size": 5}, headers=h).json()
    assert len(text["hits"]) == 5 and text["interpreted_as"] and text["hits"][0]["score"] >= text["hits"][-1]["score"]
    unlabeled = [i["id"] for i in gw.get(f"/v1/apps/{A}/inputs", params={"labeled": "unlabeled"}, headers=h).json()["inputs"]]
    by_id = gw.post(f"/v1/apps/{A}/search/image", json={"input_id": unlabeled[0], "page_size": 3}, headers=h).json()
    assert by_id["hits"][0]["input_id"] == unlabeled[0]
    by_bytes = gw.post(f"/v1/apps/{A}/search/image", json={"base64": b64(datasets.sample_photo("chelsea")), "page_size": 3}, headers=h).json()
    assert len(by_bytes["hits"]) == 3
    assert gw.post(f"/v1/apps/{A}/search/image", json={"input_id": "missing"}, headers=h).status_code == 404
    dry = gw.post(f"/v1/apps/{A}/annotations/bulk", json={"search_text": "horse", "max_results": 4, "add_concepts": ["x"], "dry_run": True}, headers=h).json()
    assert len(dry["input_ids"]) == 4 and len(dry["scores"]) == 4
    r = gw.post(f"/v1/apps/{A}/annotations/bulk", json={"input_ids": unlabeled[:2], "add_concepts": ["reviewed"]}, headers=h).json()
    assert r["input_ids"] == unlabeled[:2]
    r = gw.post(
        f"/v1/apps/{A}/annotations",
        json={"annotations": [{"input_id": unlabeled[0], "remove_concepts": ["reviewed"], "add_regions": [{"concept": "spot", "box": [0.1, 0.1, 0.5, 0.6]}]}]},
        headers=h,
    )
    assert r.status_code == 200, r.text
    inp = r.json()["inputs"][0]
    assert inp["concepts"] == ["spot"] and inp["regions"][0]["box"]["x1"] == pytest.approx(0.5)
    r = gw.post(
        f"/v1/apps/{A}/annotations",
        json={
            "annotations": [
                {"input_id": unlabeled[0], "clear_regions": True, "remove_concepts": ["spot"], "add_regions": [{"concept": "bad", "box": [0.5, 0.1, 0.2, 0.6]}]}
            ]
        },
        headers=h,
    )
    assert r.status_code == 400 and err(r)["code"] == "INVALID_ARGUMENT"
    gw.post(f"/v1/apps/{A}/annotations/bulk", json={"input_ids": unlabeled[:2], "remove_concepts": ["reviewed", "spot"]}, headers=h)


def test_predict_general_json_and_multipart(gw: httpx.Client, keys: dict[str, str]) -> None:
    h = bearer(keys[A])
    photo = datasets.sample_photo("chelsea")
    js = gw.post("/v1/models/general/predict", json={"images": [b64(photo)], "top_k": 3}, headers=h).json()
    assert js["model_id"] == "general" and len(js["predictions"][0]["concepts"]) == 3
    mp = gw.post("/v1/models/general/predict", files={"file": ("chelsea.jpg", photo, "image/jpeg")}, data={"top_k": "3"}, headers=h).json()
    assert [c["name"] for c in mp["predictions"][0]["concepts"]] == [c["name"] for c in js["predictions"][0]["concepts"]]
    assert "cat" in js["predictions"][0]["concepts"][0]["name"]
    r = gw.post("/v1/models/general/predict", json={"images": [b64(b"nope")]}, headers=h)
    assert r.status_code == 400
    r = gw.post(f"/v1/apps/{A}/models/no-such-model/predict", json={"images": [b64(photo)]}, headers=h)
    assert r.status_code == 404 and err(r)["code"] == "NOT_FOUND"
    models = gw.get(f"/v1/apps/{A}/models", headers=h).json()["models"]
    assert "general" in [m["id"] for m in models]


def test_heic_and_avif_uploads_are_shown_searchable_and_predicted_upright(gw: httpx.Client, keys: dict[str, str]) -> None:
    """A phone-like HEIC (stored sideways: irot box and EXIF tag 6) and an AVIF through the stack:
    stored with their size, served with their type, thumbnailed upright, embedded from ingestion's
    preview and predicted; a truncated HEIC is refused by name."""
    from PIL import Image

    from firstlight.media.formats import heif_available

    heif_available()  # pillow-heif's encoder, to make the file
    cat = Image.open(io.BytesIO(datasets.sample_photo("chelsea"))).convert("RGB").resize((1024, 681))
    exif = Image.Exif()
    exif[0x0112] = 6
    heic, avif = io.BytesIO(), io.BytesIO()
    cat.transpose(Image.Transpose.ROTATE_90).save(heic, "HEIF", quality=80, exif=exif.tobytes(), enc_params={"preset": "ultrafast"})
    cat.save(avif, "AVIF", quality=80, speed=10)
    h = bearer(keys[A])
    files = [("phone.HEIC", heic.getvalue(), "image/heic"), ("web.avif", avif.getvalue(), "image/avif"), ("cut.heic", heic.getvalue()[:3000], "image/heic")]
    r = gw.post(f"/v1/apps/{A}/inputs", files=[("file", f) for f in files], headers=h)
    assert r.status_code == 201, r.text
    body = r.json()
    assert [(f["filename"], f["code"]) for f in body["failures"]] == [("cut.heic", "INVALID_ARGUMENT")]
    assert "corrupt or truncated" in body["failures"][0]["message"]
    ids = body["input_ids"]
    try:
        for input_id, fmt in zip(ids, ("HEIF", "AVIF"), strict=True):
            inp = gw.get(f"/v1/apps/{A}/inputs/{input_id}", headers=h).json()
            assert (inp["width"], inp["height"], inp["format"]) == (1024, 681, fmt)  # HEIF: libheif applied irot
            assert gw.get(f"/v1/apps/{A}/inputs/{input_id}/image", headers=h).headers["content-type"] == f"image/{fmt.lower()}"
            shown = gw.get(f"/v1/apps/{A}/inputs/{input_id}/image", params={"view": "browser"}, headers=h)  # the Portal's stage
            assert shown.headers["content-type"] == ("image/jpeg" if fmt == "HEIF" else "image/avif")
            assert Image.open(io.BytesIO(shown.content)).size == (1024, 681)
            assert Image.open(io.BytesIO(gw.get(f"/v1/apps/{A}/inputs/{input_id}/thumbnail", headers=h).content)).size == (192, 128)

        def nearest() -> list[str]:
            hits = gw.post(f"/v1/apps/{A}/search/image", json={"input_id": ids[0], "page_size": 3}, headers=h).json().get("hits", [])
            return [x["input_id"] for x in hits]

        # The same cat, one stored sideways: among each other's nearest neighbours once both are
        # indexed (an embedding of a sideways cat would not be).
        eventually(lambda: ids[1] in nearest(), 120, what="the AVIF near the HEIC in the index")
        jpeg = io.BytesIO()
        cat.save(jpeg, "JPEG", quality=90)
        images = [b64(x.getvalue()) for x in (jpeg, heic, avif)]
        js = gw.post("/v1/models/general/predict", json={"images": images, "top_k": 1}, headers=h).json()
        assert len({p["concepts"][0]["name"] for p in js["predictions"]}) == 1, js  # what the upright JPEG gets
    finally:
        for input_id in ids:
            gw.delete(f"/v1/apps/{A}/inputs/{input_id}", headers=h)


def test_dataset_train_progress_evaluate_and_curation(gw: httpx.Client, keys: dict[str, str]) -> None:
    h = bearer(keys[A])
    ds = gw.post(
        f"/v1/apps/{A}/datasets", json={"id": "main", "concepts": CLASSES, "split": {"train_count": 18, "validation_count": 6, "test_count": 6}}, headers=h
    )
    assert ds.status_code == 201, ds.text
    assert {c["concept"]: c["train"] for c in ds.json()["counts"]} == dict.fromkeys(CLASSES, 6)
    assert gw.get(f"/v1/apps/{A}/datasets/main", headers=h).json()["version"] == ds.json()["version"]
    assert gw.get(f"/v1/apps/{A}/datasets/missing", headers=h).status_code == 404
    # The gallery filtered by the version: exactly its 30 inputs, paged through once; the other
    # filters apply to its frozen splits; tenancy and tokens checked.
    version = ds.json()["version"]
    seen, token = [], ""
    while True:
        params = {"dataset_id": "main", "dataset_version": version, "page_size": 7} | ({"page_token": token} if token else {})
        body = gw.get(f"/v1/apps/{A}/inputs", params=params, headers=h).json()
        assert body["total_size"] == 30 and body["dataset_version"] == version, body
        seen += [i["id"] for i in body["inputs"]]
        assert all(set(i["concepts"]) & set(CLASSES) for i in body["inputs"])
        token = body["next_page_token"]
        if not token:
            break
    assert len(seen) == len(set(seen)) == 30
    latest = gw.get(f"/v1/apps/{A}/inputs", params={"dataset_id": "main", "split": "validation", "page_size": 100}, headers=h).json()
    assert latest["total_size"] == 6 == len(latest["inputs"]) and latest["dataset_version"] == version
    assert gw.get(f"/v1/apps/{A}/inputs", params={"dataset_id": "main"}, headers=bearer(keys[B])).status_code == 403
    assert gw.get(f"/v1/apps/{A}/inputs", params={"dataset_id": "missing"}, headers=h).status_code == 404
    assert gw.get(f"/v1/apps/{A}/inputs", params={"dataset_id": "main", "page_token": "dv1:other:x:7"}, headers=h).status_code == 400
    r = gw.post(f"/v1/apps/{A}/models", json={"id": "animals", "concepts": CLASSES}, headers=h)
    assert r.status_code == 201, r.text
    r = gw.post(f"/v1/apps/{A}/models", json={"id": "bad", "concepts": ["cat"]}, headers=h)
    assert r.status_code == 400 and err(r)["code"] == "INVALID_ARGUMENT"
    job = gw.post(f"/v1/apps/{A}/models/animals/train", json={"dataset_id": "main"}, headers=h)
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    events = []
    with gw.stream("GET", f"/v1/apps/{A}/jobs/{job_id}/events", headers=h) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append([line[7:], None])
            elif line.startswith("data: "):
                events[-1][1] = json.loads(line[6:])
    kinds = [k for k, _ in events]
    assert kinds[-1] == "end" and "progress" in kinds, kinds
    final = events[-1][1]
    assert final["state"] == "JOB_STATE_SUCCEEDED" and final["version"], final
    version = final["version"]
    assert gw.get(f"/v1/apps/{A}/jobs/{job_id}", headers=h).json()["state"] == "JOB_STATE_SUCCEEDED"
    r = gw.post(f"/v1/apps/{A}/jobs/{job_id}/cancel", headers=h)
    assert r.status_code == 409 and err(r)["code"] == "FAILED_PRECONDITION"
    assert gw.get(f"/v1/apps/{A}/jobs/nope/events", headers=h).status_code == 404
    versions = gw.get(f"/v1/apps/{A}/models/animals", headers=h).json()
    assert versions["model"]["serving_version"] == version and versions["versions"][0]["validation_metrics"]["accuracy"] > 0
    ev = gw.get(f"/v1/apps/{A}/models/animals/versions/serving/evaluations/test", headers=h).json()
    assert ev["split"] == "SPLIT_TEST" and ev["count"] == 6 and len(ev["confusion_matrix"]) == 9 and "confusion_matrix_png" not in ev
    png = gw.get(f"/v1/apps/{A}/models/animals/versions/{version}/evaluations/validation/confusion.png", headers=h)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert gw.get(f"/v1/apps/{A}/models/animals/compare", params={"split": "validation"}, headers=h).json()["best_version"] == version
    assert gw.get(f"/v1/apps/{A}/models/animals/versions/999/evaluations/test", headers=h).status_code == 404
    # Predict with the app's model, on bytes and on a stored input (which feeds curation).
    cat = gw.get(f"/v1/apps/{A}/inputs", params={"concept": "cat", "page_size": 1}, headers=h).json()["inputs"][0]["id"]
    with httpx.Client(base_url=str(gw.base_url), timeout=120, headers=h) as api:
        stored = predict_stored(api, A, cat, "animals")
        assert stored["model_id"] == "animals" and len(stored["predictions"][0]["concepts"]) == 3
        # Curation.
        assert api.get(f"/v1/apps/{A}/curation/policy").status_code == 404
        policy = api.put(f"/v1/apps/{A}/curation/policy", json={"model_id": "animals", "strategy": "entropy", "threshold": 0.0001, "budget": 50})
        assert policy.status_code == 200 and policy.json()["model_id"] == "animals", policy.text
        assert api.get(f"/v1/apps/{A}/curation/policy").json()["budget"] == 50
        unlabeled = [i["id"] for i in api.get(f"/v1/apps/{A}/inputs", params={"labeled": "unlabeled"}).json()["inputs"]]
        for input_id in unlabeled[:2]:
            predict_stored(api, A, input_id, "animals")
        queue = wait_queued(api, A, 1)
    assert queue["items"][0]["model_id"] == "animals" and queue["stats"]["queued"] >= 1
    sugg = gw.post(f"/v1/apps/{A}/curation/suggestions", json={"model_id": "animals", "batch_size": 3}, headers=h).json()
    assert len(sugg["suggestions"]) == 3 and sugg["pool_size"] >= 3
    errs = gw.get(f"/v1/apps/{A}/curation/label-errors", params={"folds": 3, "concept": CLASSES}, headers=h).json()
    assert errs["examined"] >= 30
    drift = gw.get(f"/v1/apps/{A}/curation/drift", params={"recent_count": 6}, headers=h).json()
    assert "p_value" in drift and drift["reference_count"] > 0
    assert gw.get(f"/v1/apps/{A}/curation/rounds", headers=h).json() == {"rounds": []}


def test_queue_leases_labelers_scoring_promotion_and_cells(gw: httpx.Client, keys: dict[str, str]) -> None:
    """After the training test: two labelers lease different queue items, a label records its
    key, the pool is scored and filtered, a confusion cell lists exactly its inputs, promotion
    goes through the rule, and two models (here: one against itself) compare."""
    h = bearer(keys[A])
    eventually(
        lambda: gw.get(f"/v1/apps/{A}/curation/queue", params={"state": "queued"}, headers=h).json()["stats"]["queued"] >= 2, 60, what="two items queued"
    )
    alice = gw.post(f"/v1/apps/{A}/curation/queue/lease", json={"holder": "alice"}, headers=h).json()
    bob = gw.post(f"/v1/apps/{A}/curation/queue/lease", json={"holder": "bob", "lease_seconds": 60}, headers=h).json()
    assert alice["item"]["input_id"] != bob["item"]["input_id"] and bob["leased_to_others"] >= 1, (alice, bob)
    assert gw.post(f"/v1/apps/{A}/curation/queue/lease", json={"holder": "alice"}, headers=h).json()["item"]["input_id"] == alice["item"]["input_id"]
    r = gw.post(f"/v1/apps/{A}/curation/queue/lease", json={"holder": "no spaces"}, headers=h)
    assert r.status_code == 400 and "holder" in err(r)["message"]
    assert gw.post(f"/v1/apps/{B}/curation/queue/lease", json={"holder": "x"}, headers=h).status_code == 403
    item = alice["item"]["input_id"]
    r = gw.post(f"/v1/apps/{A}/annotations", json={"annotations": [{"input_id": item, "add_concepts": ["reviewed"]}]}, headers=h)
    assert r.status_code == 200, r.text
    records = {x["concept"]: x for x in gw.get(f"/v1/apps/{A}/inputs/{item}", headers=h).json()["label_records"]}
    assert records["reviewed"]["labeled_by"].startswith("tests (") and records["reviewed"]["labeled_at"], records
    # Alice names the item she labeled (curation sees the label a moment later): she gets another
    # one, and bob still cannot get hers meanwhile.
    nxt = gw.post(f"/v1/apps/{A}/curation/queue/lease", json={"holder": "alice", "exclude_input_ids": [item]}, headers=h).json()
    assert nxt["item"] is None or nxt["item"]["input_id"] not in (item, bob["item"]["input_id"]), nxt
    carol = gw.post(f"/v1/apps/{A}/curation/queue/lease", json={"holder": "carol"}, headers=h).json()
    assert carol["item"] is None or carol["item"]["input_id"] not in (item, bob["item"]["input_id"]), carol
    # Score the pool, then filter and sort by the stored predictions.
    job = gw.post(f"/v1/apps/{A}/curation/score-pool", json={"model_id": "animals"}, headers=h)
    assert job.status_code == 202, job.text
    job = job.json()
    eventually(lambda: gw.get(f"/v1/apps/{A}/curation/score-pool/{job['id']}", headers=h).json()["state"] != "running", 60, what="pool scored")
    done = gw.get(f"/v1/apps/{A}/curation/score-pool/{job['id']}", headers=h).json()
    assert done["state"] == "succeeded" and done["scored"] == done["total"] >= 37 and done["progress"] == 1, done
    every = gw.get(f"/v1/apps/{A}/curation/predictions", params={"model_id": "animals", "page_size": 1000}, headers=h).json()
    assert every["total_size"] == done["total"] and every["model_version"] == done["model_version"]
    wanted = {"model_id": "animals", "concept": "cat", "min_score": 0.2, "order": "uncertainty"}
    cats = gw.get(f"/v1/apps/{A}/curation/predictions", params=wanted, headers=h).json()
    assert cats["predictions"] and all(p["predicted_concept"] == "cat" and p["score"] >= 0.2 for p in cats["predictions"])
    unsure = [p["uncertainty"] for p in cats["predictions"]]
    assert unsure == sorted(unsure, reverse=True)
    r = gw.get(f"/v1/apps/{A}/curation/predictions", params={"model_id": "animals", "min_score": 0.9, "max_score": 0.1}, headers=h)
    assert r.status_code == 400
    assert done["resumed"] is False
    # The prediction filters combine with the label and split filters (one query in curation).
    labeled = {i["id"] for i in gw.get(f"/v1/apps/{A}/inputs", params={"labeled": "labeled", "page_size": 1000}, headers=h).json()["inputs"]}
    params = {"model_id": "animals", "order": "uncertainty", "page_size": 1000}
    unl = gw.get(f"/v1/apps/{A}/curation/predictions", params={**params, "labeled": "unlabeled"}, headers=h).json()["predictions"]
    lab = gw.get(f"/v1/apps/{A}/curation/predictions", params={**params, "labeled": "labeled", "concept": "cat"}, headers=h).json()["predictions"]
    assert unl and not {p["input_id"] for p in unl} & labeled and {p["input_id"] for p in lab} <= labeled
    assert all(p["predicted_concept"] == "cat" for p in lab)
    # The stored scores as a labeling source are leased too: two labelers get two unlabeled inputs,
    # most uncertain first (stream items still leased to alice, bob or carol are passed over).
    dan, eve = (gw.post(f"/v1/apps/{A}/curation/queue/lease", json={"holder": who, "model_id": "animals"}, headers=h).json()["item"] for who in ("dan", "eve"))
    rank = [p["input_id"] for p in unl]
    assert rank.index(dan["input_id"]) < rank.index(eve["input_id"]) and dan["model_version"] == done["model_version"], (dan, eve)
    assert gw.get(f"/v1/apps/{A}/curation/score-pool/nope", headers=h).status_code == 404
    # A confusion cell: exactly the inputs of true X predicted as Y, as many as the matrix counts.
    ev = gw.get(f"/v1/apps/{A}/models/animals/versions/serving/evaluations/test", headers=h).json()
    assert len(ev["predictions"]) == ev["count"]
    order, cm = ev["concept_order"], ev["confusion_matrix"]
    for i, t in enumerate(order):
        for j, p in enumerate(order):
            cell = gw.get(f"/v1/apps/{A}/models/animals/versions/serving/evaluations/test/inputs", params={"true": t, "predicted": p}, headers=h).json()
            assert cell["count"] == cm[i * len(order) + j] and all(x["true_concept"] == t and x["predicted_concept"] == p for x in cell["inputs"])
    # Promotion by hand: the serving version stays ("already serving"); unknown versions are 404.
    version = ev["version"]
    r = gw.post(f"/v1/apps/{A}/models/animals/versions/{version}/promote", json={}, headers=h)
    assert r.status_code == 200 and r.json()["promoted"] and "already serving" in r.json()["note"], r.text
    assert gw.post(f"/v1/apps/{A}/models/animals/versions/999/promote", json={}, headers=h).status_code == 404
    r = gw.post(f"/v1/apps/{A}/models/animals/versions/{version}/promote", json={"metric": "vibes"}, headers=h)
    assert r.status_code == 400
    both = gw.get(f"/v1/apps/{A}/compare-models", params={"a": "animals", "b": f"animals:{version}", "split": "test"}, headers=h).json()
    assert [e["version"] for e in both["evaluations"]] == [version, version]


def test_rate_limit_is_429_with_retry_after(stack, gw: httpx.Client, keys: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    key = gw.post(f"/v1/apps/{B}/keys", json={"name": "burst"}, headers=bearer(keys["admin"])).json()["secret"]
    h = bearer(key)

    def hit(_: int) -> httpx.Response:
        return gw.get(f"/v1/apps/{B}", headers=h)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(hit, range(400)))
    limited = [r for r in responses if r.status_code == 429]
    assert limited, {r.status_code for r in responses}
    assert int(limited[0].headers["retry-after"]) >= 1 and err(limited[0])["code"] == "RESOURCE_EXHAUSTED"
    assert {r.status_code for r in responses} <= {200, 429}


def test_portal_session_cookie_and_csrf(stack, gw: httpx.Client, keys: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as browser:
        assert browser.get("/portal/", follow_redirects=False).headers["location"] == "/portal/sign-in"
        bad = browser.post("/portal/sign-in", data={"api_key": "nonsense"})
        assert bad.status_code == 401 and COOKIE not in browser.cookies
        r = browser.post("/portal/sign-in", data={"api_key": keys[A]}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/portal/apps/{A}/gallery"
        set_cookie = r.headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie and "Max-Age=" in set_cookie and keys[A] not in set_cookie
        page = browser.get(f"/portal/apps/{A}/gallery")
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        # The cookie authenticates API calls; state changes also need the page's CSRF token.
        assert browser.get(f"/v1/apps/{A}/inputs", params={"page_size": 1}).status_code == 200
        body = {"annotations": [{"input_id": "hostile", "add_concepts": ["csrf-test"]}]}
        r = browser.post(f"/v1/apps/{A}/annotations", json=body)
        assert r.status_code == 403 and "CSRF" in err(r)["message"]
        assert browser.post(f"/v1/apps/{A}/annotations", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
        assert browser.post(f"/v1/apps/{A}/annotations", json=body, headers={"X-CSRF-Token": csrf}).status_code == 200
        body["annotations"][0] = {"input_id": "hostile", "remove_concepts": ["csrf-test"]}
        assert browser.post(f"/v1/apps/{A}/annotations", json=body, headers={"X-CSRF-Token": csrf}).status_code == 200
        # A session for app A never sees app B, in pages or through the API.
        assert browser.get(f"/portal/apps/{B}/gallery").status_code == 403
        assert browser.get(f"/v1/apps/{B}/inputs").status_code == 403
        # The pages the gateway renders itself over the RPCs (comparison, curation), and A only.
        cmp = browser.get(f"/portal/apps/{A}/models/animals/compare")
        assert cmp.status_code == 200 and 'id="compare-form"' in cmp.text and ("compare-metrics" in cmp.text or "train another to compare" in cmp.text)
        cur = browser.get(f"/portal/apps/{A}/curation", params={"drift": "1", "recent_count": "6"})
        assert cur.status_code == 200 and 'id="rounds-card"' in cur.text and 'id="drift-verdict"' in cur.text, cur.text[-2000:]
        assert browser.get(f"/portal/apps/{B}/curation").status_code == 403
        assert browser.get(f"/portal/apps/{B}/models/animals/compare").status_code == 403
        # Hostile strings are never echoed into a page as markup.
        inp = browser.get(f"/portal/apps/{A}/inputs/hostile")
        assert inp.status_code == 200 and "<script>alert" not in inp.text
        # Tampered cookie: signed out.
        value = browser.cookies[COOKIE]
        browser.cookies.set(COOKIE, value[:-3] + ("AAA" if value[-3:] != "AAA" else "BBB"))
        assert browser.get(f"/v1/apps/{A}").status_code == 401
        assert browser.get(f"/portal/apps/{A}/gallery", follow_redirects=False).headers["location"] == "/portal/sign-in"
        browser.cookies.set(COOKIE, value)
        out = browser.post("/portal/sign-out", data={"csrf": csrf}, follow_redirects=False)
        assert (out.status_code == 303 and 'fl_session=""' in out.headers["set-cookie"]) or "Max-Age=0" in out.headers["set-cookie"]
    # The admin key may sign in without an app and pick one.
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as admin:
        r = admin.post("/portal/sign-in", data={"api_key": keys["admin"]}, follow_redirects=False)
        assert r.headers["location"] == "/portal/apps"
        page = admin.get("/portal/apps")
        assert page.status_code == 200 and "create-app" in page.text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = admin.post("/portal/apps", data={"csrf": csrf, "action": "key", "app_id": B, "name": "portal"})
        assert r.status_code == 200 and re.search(r"flk_[0-9a-f]{12}_", r.text)
        r = admin.post("/portal/apps", data={"csrf": csrf, "action": "open", "app_id": B}, follow_redirects=False)
        assert r.headers["location"] == f"/portal/apps/{B}/gallery"
        assert admin.get(f"/v1/apps/{B}").json()["id"] == B
        assert admin.post("/portal/apps", data={"csrf": "wrong", "action": "create", "app_id": "zzz"}).status_code == 403


def test_gateway_answers_503_when_a_service_is_down(stack, gw: httpx.Client, keys: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    stack.kill_service("inference")
    try:
        t0 = time.monotonic()
        r = gw.get(f"/v1/apps/{A}/models", headers=bearer(keys[A]))
        assert r.status_code == 503 and err(r)["code"] == "UNAVAILABLE" and r.headers["retry-after"] == "1", r.text
        assert time.monotonic() - t0 < 60
    finally:
        stack.start_service("inference")
    assert gw.get(f"/v1/apps/{A}/models", headers=bearer(keys[A])).status_code == 200


def test_data_quality_routes(gw: httpx.Client, keys: dict[str, str]) -> None:
    """The health check over HTTP finds the hostile input as an exact copy of the first animal;
    keep one refuses either way (each carries a label the other lacks) and deletes nothing."""
    h = bearer(keys[A])
    r = gw.get(f"/v1/apps/{A}/quality/health", params={"max_examples": 50}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["examined"] >= 30 and body["status"] in ("pass", "warn", "fail") and body["markdown"]
    assert {c["name"] for c in body["checks"]} >= {"duplicates", "outliers", "corrupt_or_blank"}
    group = next(g for g in body["duplicate_groups"] if "hostile" in g["input_ids"])
    assert group["kind"] == "exact" and len(group["input_ids"]) == 2 and group["similarity"] == 1.0
    for keep in group["input_ids"]:
        drop = [i for i in group["input_ids"] if i != keep]
        r = gw.post(f"/v1/apps/{A}/quality/duplicates/keep-one", json={"keep": keep, "drop": drop}, headers=h)
        assert r.status_code == 409 and err(r)["code"] == "FAILED_PRECONDITION" and "lacks labels" in err(r)["message"], r.text
    for i in group["input_ids"]:
        assert gw.get(f"/v1/apps/{A}/inputs/{i}", headers=h).status_code == 200
    others = [i["id"] for i in gw.get(f"/v1/apps/{A}/inputs", params={"page_size": 5}, headers=h).json()["inputs"] if i["id"] not in group["input_ids"]]
    r = gw.post(f"/v1/apps/{A}/quality/duplicates/keep-one", json={"keep": others[0], "drop": [others[1]]}, headers=h)
    assert r.status_code == 409 and "not duplicates" in err(r)["message"], r.text
    r = gw.post(f"/v1/apps/{A}/quality/duplicates/keep-one", json={"keep": others[0], "drop": ["no-such-input"]}, headers=h)
    assert r.status_code == 404 and err(r)["code"] == "NOT_FOUND"
    r = gw.post(f"/v1/apps/{A}/quality/duplicates/keep-one", json={"keep": others[0], "drop": [others[0]]}, headers=h)
    assert r.status_code == 400 and err(r)["code"] == "INVALID_ARGUMENT"
    assert gw.get(f"/v1/apps/{A}/quality/health", params={"near_duplicate_threshold": 2}, headers=h).status_code == 400
    r = gw.get(f"/v1/apps/{A}/models/no-such-model/versions/serving/slices", headers=h)
    assert r.status_code == 404 and err(r)["code"] == "NOT_FOUND", r.text
