"""Video over the HTTP API (firstlight.gateway.video_api) against the real stack: a clip uploaded
as multipart becomes frames, search hits carry the video and time, a segment is labeled, the
video's frames are listed, PredictVideo streams NDJSON back; a bad file is a 400, a body over the
video limit a 413 unread, and another app's key is refused on every video route. In the browser:
search hits and the input page show a frame's video and time and link to the video's page
(screenshots in test-artifacts/portal/video-*.png)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from firstlight import datasets
from firstlight.video import synth

from .helpers import b64, eventually
from .test_portal_browser import browser, no_alert, shot, wait  # noqa: F401 - the browser fixture

pytestmark = pytest.mark.integration

A, B = "gwv-a", "gwv-b"
#: photo index in synth.photo_arrays(): 0 chelsea (cat), 1 coffee (cup), 2 astronaut, 3 rocket
ORDER = [1, 0, 3, 2]
SHOT_S = 2.0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def gw(stack) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=stack.gateway_url, timeout=180) as c:
        yield c


@pytest.fixture(scope="module")
def keys(stack, gw: httpx.Client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = {}
    for app in (A, B):
        assert gw.post("/v1/apps", json={"id": app}, headers=bearer(stack.admin_key)).status_code == 201
        r = gw.post(f"/v1/apps/{app}/keys", json={"name": "tests"}, headers=bearer(stack.admin_key))
        out[app] = r.json()["secret"]
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    photos = synth.photo_arrays()
    path = tmp_path_factory.mktemp("gwv") / "walk.mp4"
    synth.encode(path, [synth.Shot(photos[i], SHOT_S) for i in ORDER])
    return path


@pytest.fixture(scope="module")
def uploaded(gw: httpx.Client, keys: dict[str, str], clip: Path) -> dict:
    h = bearer(keys[A])
    before = gw.get(f"/v1/apps/{A}/index", headers=h).json()["indexed_count"]
    # fields first, then the file (curl -F keeps this order)
    r = gw.post(
        f"/v1/apps/{A}/videos",
        data={"concepts": "walk", "metadata": '{"camera": "door"}'},
        files={"file": ("walk.mp4", clip.read_bytes(), "video/mp4")},
        headers=h,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    eventually(lambda: gw.get(f"/v1/apps/{A}/index", headers=h).json()["indexed_count"] >= before + body["frames_added"], 180, what="frames indexed")
    return body


def test_upload_returns_the_summary_and_frames_are_inputs(gw: httpx.Client, keys: dict[str, str], uploaded: dict) -> None:
    assert uploaded["video_id"] == "walk" and not uploaded["partial"] and uploaded["error"] == ""
    assert uploaded["frames_kept"] == uploaded["frames_added"] == 8 and uploaded["info"]["codec"] == "h264"
    frame = gw.get(f"/v1/apps/{A}/inputs/walk.t0000002000", headers=bearer(keys[A])).json()
    assert frame["metadata"]["video_id"] == "walk" and frame["metadata"]["camera"] == "door" and frame["concepts"] == ["walk"]
    listed = gw.get(f"/v1/apps/{A}/videos/walk", headers=bearer(keys[A])).json()
    assert [f["t"] for f in listed["frames"]] == [float(t) for t in range(8)] and listed["frames"][2]["input_id"] == "walk.t0000002000"


def test_search_hits_carry_video_and_time_and_a_segment_is_labeled(gw: httpx.Client, keys: dict[str, str], uploaded: dict) -> None:
    h = bearer(keys[A])
    hits = gw.post(f"/v1/apps/{A}/search/image", json={"base64": b64(datasets.sample_photo("chelsea")), "page_size": 2}, headers=h).json()["hits"]
    assert hits[0]["video_id"] == "walk" and 2.0 <= hits[0]["video_t"] < 4.0, hits  # chelsea is the second shot
    r = gw.post(f"/v1/apps/{A}/videos/walk/segments", json={"start_s": 2.0, "end_s": 3.99, "add_concepts": ["cat"]}, headers=h)
    assert r.status_code == 200 and r.json()["input_ids"] == ["walk.t0000002000", "walk.t0000003000"], r.text
    assert "cat" in gw.get(f"/v1/apps/{A}/inputs/walk.t0000003000", headers=h).json()["concepts"]
    r = gw.post(f"/v1/apps/{A}/videos/walk/segments", json={"start_s": 50, "end_s": 60, "add_concepts": ["cat"]}, headers=h)
    assert r.status_code == 404
    assert gw.get(f"/v1/apps/{A}/videos/nope", headers=h).status_code == 404
    assert gw.get(f"/v1/apps/{A}/videos/..%2Fx", headers=h).status_code in (400, 404)


def test_predict_on_a_video_streams_ndjson(gw: httpx.Client, keys: dict[str, str], clip: Path) -> None:
    with gw.stream(
        "POST", f"/v1/apps/{A}/predict/video", data={"top_k": "3"}, files={"file": ("walk.mp4", clip.read_bytes(), "video/mp4")}, headers=bearer(keys[A])
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    kinds = [next(iter(x)) for x in lines]
    assert kinds[-1] == "end" and kinds.count("frame") == 8 and not lines[-1]["end"]["partial"], kinds
    assert all(len(x["frame"]["prediction"]["concepts"]) == 3 for x in lines if "frame" in x)


def test_bad_file_413_and_cross_app_denial(stack, gw: httpx.Client, keys: dict[str, str], clip: Path) -> None:  # type: ignore[no-untyped-def]
    h = bearer(keys[A])
    junk = {"file": ("junk.mp4", b"not a video at all" * 100, "video/mp4")}
    r = gw.post(f"/v1/apps/{A}/videos", files=junk, headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT" and "not a video" in r.json()["error"]["message"]
    r = gw.post(f"/v1/apps/{A}/predict/video", files=junk, headers=h)
    assert r.status_code == 400 and "not a video" in r.json()["error"]["message"]
    # Over FIRSTLIGHT_MAX_VIDEO_BYTES (2 GiB): refused from the Content-Length, unread.
    host, port = stack.gateway.address.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST /v1/apps/{A}/videos HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {keys[A]}\r\n"
            f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {3 * 1024**3}\r\n\r\n".encode()
        )
        assert b" 413 " in sock.recv(4096).split(b"\r\n")[0]
    video = {"file": ("walk.mp4", clip.read_bytes(), "video/mp4")}
    for path in (f"/v1/apps/{B}/videos", f"/v1/apps/{B}/predict/video"):
        r = gw.post(path, files=video, headers=h)
        assert r.status_code == 403 and r.json()["error"]["code"] == "PERMISSION_DENIED", (path, r.text)
    r = gw.post(f"/v1/apps/{B}/videos/walk/segments", json={"start_s": 0, "end_s": 1, "add_concepts": ["x"]}, headers=h)
    assert r.status_code == 403
    assert gw.get(f"/v1/apps/{B}/videos/walk", headers=h).status_code == 403
    assert gw.get(f"/v1/apps/{B}/inputs", headers=bearer(keys[B])).json()["inputs"] == []  # nothing reached B


def test_portal_links_frames_to_their_video(stack, keys: dict[str, str], uploaded: dict, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811 - the fixture imported above
    from selenium.webdriver.common.by import By

    d, base = browser, stack.gateway_url
    d.get(f"{base}/portal/sign-in")
    d.find_element(By.ID, "api-key").send_keys(keys[A])
    d.find_element(By.ID, "sign-in").click()
    wait(d, lambda d: "/gallery" in d.current_url, what="signed in")
    d.get(f"{base}/portal/apps/{A}/search?q=cat")
    links = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .tile a.video"), what="frame hits with their video")
    assert all(re.fullmatch(r"▶ walk · 00:0[0-7]\.0", a.text) for a in links), [a.text for a in links]
    shot(d, "video-01-search")
    links[0].click()
    tiles = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#video-frames .tile"), what="the video page")
    assert len(tiles) == 8 and len(d.find_elements(By.CSS_SELECTOR, "#video-frames .tile.focus")) == 1
    assert [t.text for t in tiles] == [f"00:0{n}.0" for n in range(8)]
    shot(d, "video-02-video-page")
    tiles[2].find_element(By.TAG_NAME, "a").click()
    line = wait(d, lambda d: d.find_elements(By.ID, "input-video"), what="the input page's video line")
    assert line[0].text == "Frame of ▶ walk · 00:02.0"
    shot(d, "video-03-input")
    no_alert(d)
