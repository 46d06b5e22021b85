"""ReembedInputs' rules (the upgrade path of docs/results/photos.md, "Decode equivalence"): which
inputs a selection picks — rotated photos found from their stored headers — and that each is
re-announced on ``inputs.ingested`` through the outbox, one page per call, over the real SQLite
store and local blob store."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageFile

from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.errors import InvalidArgument, NotFound
from firstlight.ingestion import events
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.ports import utcnow
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.media.orientation import HEADER_BYTES, header_orientation, is_rotated, needs_whole_blob
from firstlight.messaging import topics
from firstlight.v1 import events_pb2, ingestion_pb2


def image(fmt: str, orientation: int = 0, size: tuple[int, int] = (48, 32), seed: int = 0) -> bytes:
    """An image in ``fmt``; with ``orientation``, an EXIF block carrying that tag."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    extra = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    Image.fromarray(pixels).save(buf, fmt, **extra)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "orientation", "rotated"),
    [("JPEG", 6, True), ("JPEG", 8, True), ("JPEG", 2, True), ("JPEG", 1, False), ("JPEG", 0, False),
     ("PNG", 0, False), ("PNG", 6, True), ("WEBP", 6, True), ("TIFF", 3, True)],
)  # fmt: skip
def test_rotation_is_read_from_the_header(fmt: str, orientation: int, rotated: bool) -> None:
    data = image(fmt, orientation)
    assert header_orientation(data) == (orientation or 1)
    assert is_rotated(header_orientation(data)) is rotated


def test_a_photos_header_is_enough_and_no_pixel_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    photo = image("JPEG", 6, size=(1600, 1200))  # noise: ~1.5 MB, far past the header read
    png = image("PNG")
    assert len(photo) > 2 * HEADER_BYTES
    for cls in (Image.Image, ImageFile.ImageFile):
        monkeypatch.setattr(cls, "load", lambda self: pytest.fail("a pixel was decoded"))
    head = photo[:HEADER_BYTES]
    assert header_orientation(head) == 6 and not needs_whole_blob(head, 6)
    assert header_orientation(png) == 1  # PngImageFile.getexif() would decode


def test_unreadable_headers_are_none() -> None:
    assert header_orientation(b"") is None and header_orientation(b"not an image") is None
    assert header_orientation(image("JPEG", 6)[:20]) is None  # cut before the header's end
    assert not needs_whole_blob(b"short", None)  # the whole blob was read: nothing more to try
    assert needs_whole_blob(b"x" * HEADER_BYTES, None)


@pytest.fixture
def core(tmp_path: Path) -> Ingestion:
    core = Ingestion(MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}")), LocalBlobStore(tmp_path / "blobs"), ImageLimits())
    core.create_app("app")
    core.create_app("other")
    core.post_inputs(
        "app",
        [
            NewInput(image("JPEG", 6, seed=1), id="turned", concepts=["cat"]),
            NewInput(image("JPEG", 1, seed=2), id="upright"),
            NewInput(image("PNG", seed=3), id="png"),
            NewInput(image("JPEG", 8, seed=4), id="turned-left"),
            NewInput(image("JPEG", seed=5), id="no-exif"),
        ],
    )
    core.post_inputs("other", [NewInput(image("JPEG", 6, seed=6), id="theirs")])
    drain(core)
    return core


def drain(core: Ingestion) -> None:
    core.store.outbox_ack([seq for seq, _ in core.store.outbox_batch(1000)])


def announced(core: Ingestion) -> list[events_pb2.InputIngested]:
    return [events_pb2.InputIngested.FromString(e.value) for _, e in core.store.outbox_batch(1000) if e.topic == topics.INPUTS_INGESTED]


def scan(core: Ingestion, **selection: object) -> tuple[list[str], int, list[int]]:
    """Every page of a scan: (queued ids, scanned, total per page)."""
    queued: list[str] = []
    scanned, totals, token = 0, [], ""
    while True:
        page = core.reembed_inputs("app", page_token=token, **selection)  # type: ignore[arg-type]
        queued += page.queued_ids
        scanned += page.scanned
        totals.append(page.total)
        token = page.next_page_token
        if not token:
            return queued, scanned, totals


def test_only_rotated_picks_the_turned_photos_page_by_page(core: Ingestion) -> None:
    queued, scanned, totals = scan(core, only_rotated=True, page_size=2)
    assert queued == ["turned", "turned-left"] and scanned == 5 and totals == [5, 5, 5]
    events = announced(core)
    assert [e.input_id for e in events] == ["turned", "turned-left"]
    first = events[0]
    # A fresh announcement from the stored state: labels, the original blob (no preview: the
    # worker decodes the original, upright), an idempotency key of its own.
    assert first.app_id == "app" and list(first.concepts) == ["cat"] and first.blob_uri and not first.preview_uri
    assert ":reembed-" in first.header.idempotency_key


def test_all_pages_every_input_and_tokens_belong_to_their_scan(core: Ingestion) -> None:
    page = core.reembed_inputs("app", all_inputs=True, page_size=3)
    assert page.queued_ids == ["turned", "upright", "png"] and page.next_page_token
    with pytest.raises(InvalidArgument):  # a token of the all-inputs scan does not continue another
        core.reembed_inputs("app", only_rotated=True, page_token=page.next_page_token)
    with pytest.raises(InvalidArgument):  # nor another app's scan
        core.reembed_inputs("other", all_inputs=True, page_token=page.next_page_token)
    rest = core.reembed_inputs("app", all_inputs=True, page_size=3, page_token=page.next_page_token)
    assert rest.queued_ids == ["turned-left", "no-exif"] and rest.next_page_token == ""
    assert sorted(e.input_id for e in announced(core)) == sorted(["turned", "upright", "png", "turned-left", "no-exif"])


def test_listed_ids_are_checked_all_or_nothing(core: Ingestion) -> None:
    page = core.reembed_inputs("app", input_ids=["png", "upright", "png"])
    assert page.queued_ids == ["png", "upright"] and page.scanned == 2 and page.next_page_token == ""
    drain(core)
    with pytest.raises(NotFound, match="nope"):
        core.reembed_inputs("app", input_ids=["png", "nope"])
    with pytest.raises(NotFound, match="theirs"):  # another app's input is not this app's
        core.reembed_inputs("app", input_ids=["theirs"])
    with pytest.raises(InvalidArgument, match="input id"):
        core.reembed_inputs("app", input_ids=["png", "../etc"])
    with pytest.raises(InvalidArgument, match="input id"):
        core.reembed_inputs("app", input_ids=["png\n"])  # fullmatch: no trailing newline
    assert announced(core) == []


@pytest.mark.parametrize(
    ("selection", "match"),
    [
        ({}, "none given"),
        ({"input_ids": ["png"], "only_rotated": True}, "2 given"),
        ({"only_rotated": True, "all_inputs": True}, "2 given"),
        ({"input_ids": ["png"], "page_token": "abc"}, "page_token"),
        ({"input_ids": [f"i{n}" for n in range(1001)]}, "over 1000"),
        ({"all_inputs": True, "page_size": 5000}, "page_size"),
        ({"all_inputs": True, "page_size": -1}, "page_size"),
        ({"all_inputs": True, "page_token": "forged"}, "token"),
    ],
)
def test_bad_selections_are_refused_precisely(core: Ingestion, selection: dict, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        core.reembed_inputs("app", **selection)
    assert announced(core) == []


def test_unknown_app_is_not_found(core: Ingestion) -> None:
    with pytest.raises(NotFound):
        core.reembed_inputs("nope", all_inputs=True)


def test_twice_gives_the_same_keys_and_generation(core: Ingestion) -> None:
    """Re-embedding twice is harmless: both announcements carry the same record key and
    generation (search's point id and stamp), only their idempotency keys differ."""
    core.reembed_inputs("app", input_ids=["turned"])
    core.reembed_inputs("app", input_ids=["turned"])
    rows = [e for _, e in core.store.outbox_batch(1000)]
    assert [r.key for r in rows] == [topics.event_key("app", "turned")] * 2
    first, second = (events_pb2.InputIngested.FromString(r.value) for r in rows)
    assert first.generation == second.generation != 0
    assert first.header.idempotency_key != second.header.idempotency_key


def test_a_missing_blob_is_reported_not_queued(core: Ingestion) -> None:
    row = core.get_input("app", "turned")
    core.blobs.delete(row.blob_uri)
    page = core.reembed_inputs("app", only_rotated=True)
    assert page.queued_ids == ["turned-left"] and page.unreadable_ids == ["turned"]


def test_indexing_backlog_counts_the_apps_announcements_in_flight(core: Ingestion) -> None:
    assert core.indexing_backlog("app") == (0, 0)
    core.reembed_inputs("app", only_rotated=True)
    core.reembed_inputs("other", all_inputs=True)
    assert core.indexing_backlog("app") == (2, 0)  # in the outbox; the other app's not counted
    # The relay publishes them and watches them until search confirms.
    rows = core.store.outbox_batch(1000)
    watch = [w for w in (events.watched(e) for _, e in rows) if w is not None]
    core.store.outbox_ack([seq for seq, _ in rows], watch, lambda attempts: utcnow())
    assert core.indexing_backlog("app") == (0, 2)
    core.store.index_confirmed([("app", "turned", "")])
    assert core.indexing_backlog("app") == (0, 1)
    with pytest.raises(NotFound):
        core.indexing_backlog("nope")


class _Ingestion:
    """The gateway's ingestion client, answered by the real core (its errors as the client raises them)."""

    def __init__(self, core: Ingestion) -> None:
        self.core = core
        self.requests: list[ingestion_pb2.ReembedInputsRequest] = []

    async def reembed_inputs(self, req: ingestion_pb2.ReembedInputsRequest, key: str | None = None) -> ingestion_pb2.ReembedInputsResponse:
        self.requests.append(req)
        page = self.core.reembed_inputs(
            req.app_id, input_ids=list(req.input_ids), only_rotated=req.only_rotated, all_inputs=req.all_inputs,
            page_size=req.page_size, page_token=req.page_token,
        )  # fmt: skip
        return ingestion_pb2.ReembedInputsResponse(
            scanned=page.scanned, queued=len(page.queued_ids), queued_input_ids=page.queued_ids,
            next_page_token=page.next_page_token, total_size=page.total,
        )  # fmt: skip

    async def get_indexing_backlog(self, req: ingestion_pb2.GetIndexingBacklogRequest, key: str | None = None) -> ingestion_pb2.IndexingBacklog:
        unrelayed, awaiting = self.core.indexing_backlog(req.app_id)
        return ingestion_pb2.IndexingBacklog(unrelayed=unrelayed, awaiting_index=awaiting)


def test_http_route_pages_and_refuses_precisely(core: Ingestion, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from gateway_doubles import gateway_settings

    from firstlight.gateway.app import create_app

    fake = _Ingestion(core)
    app = create_app(gateway_settings(tmp_path), clients=SimpleNamespace(ingestion=fake))  # type: ignore[arg-type]
    h = {"Authorization": "Bearer k"}
    with TestClient(app) as http:
        r = http.post("/v1/apps/app/reembed", json={"only_rotated": True, "page_size": 3}, headers=h)
        body = r.json()
        assert r.status_code == 200 and body["queued_input_ids"] == ["turned"] and body["scanned"] == 3 and body["total_size"] == 5
        r = http.post("/v1/apps/app/reembed", json={"only_rotated": True, "page_token": body["next_page_token"]}, headers=h)
        assert r.json()["queued_input_ids"] == ["turned-left"] and r.json()["next_page_token"] == ""
        assert http.get("/v1/apps/app/indexing-backlog", headers=h).json() == {"unrelayed": 2, "awaiting_index": 0}
        both = http.post("/v1/apps/app/reembed", json={"only_rotated": True, "input_ids": ["png"]}, headers=h)
        assert both.status_code == 400 and "exactly one" in both.json()["error"]["message"]
        assert http.post("/v1/apps/app/reembed", json={"input_ids": ["nope"]}, headers=h).status_code == 404
        assert http.post("/v1/apps/app/reembed", json={}, headers=h).status_code == 400
        assert "/v1/apps/{app_id}/reembed" in http.get("/v1/openapi.json").json()["paths"]


class _Stub:
    """The SDK's ingestion stub, answered by the real core."""

    def __init__(self, core: Ingestion) -> None:
        self.http = _Ingestion(core)
        self.core = core

    def ReembedInputs(self, req: ingestion_pb2.ReembedInputsRequest, timeout: float) -> ingestion_pb2.ReembedInputsResponse:
        import asyncio

        return asyncio.run(self.http.reembed_inputs(req))


def sdk_over(core: Ingestion):  # type: ignore[no-untyped-def]
    from firstlight.sdk.ingestion import IngestionCalls

    calls = IngestionCalls()
    calls.ingestion, calls.timeout_s = _Stub(core), 60.0
    return calls


def test_sdk_pages_a_scan_and_splits_long_id_lists(core: Ingestion, monkeypatch: pytest.MonkeyPatch) -> None:
    sdk = sdk_over(core)
    seen: list[int] = []
    report = sdk.reembed("app", only_rotated=True, page_size=2, on_progress=lambda r: seen.append(r.scanned))
    assert report.queued_ids == ["turned", "turned-left"] and report.scanned == report.total == 5 and seen == [2, 4, 5]
    monkeypatch.setattr(type(sdk), "REEMBED_IDS_PER_CALL", 2)
    report = sdk.reembed("app", iter(["png", "upright", "turned", "png"]))
    assert report.queued_ids == ["png", "upright", "turned"] and report.total == 3
    assert [len(r.input_ids) for r in sdk.ingestion.http.requests[-2:]] == [2, 1]


class _FakeClient:
    def __init__(self) -> None:
        self.asked: list[tuple] = []
        self.waited = 0

    def __enter__(self) -> _FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def reembed(self, app_id: str, ids, *, only_rotated: bool, all_inputs: bool, on_progress):  # type: ignore[no-untyped-def]
        from firstlight.sdk import ReembedReport

        self.asked.append((app_id, ids, only_rotated, all_inputs))
        report = ReembedReport(queued_ids=["a", "b"], scanned=7, total=7, unreadable_ids=["gone"])
        on_progress(report)
        return report

    def indexing_backlog(self, app_id: str) -> ingestion_pb2.IndexingBacklog:
        return ingestion_pb2.IndexingBacklog(unrelayed=1, awaiting_index=4)

    def wait_reindexed(self, app_id: str, on_progress) -> float:  # type: ignore[no-untyped-def]
        for left in (2, 1, 0):
            on_progress(left)
        self.waited += 1
        return 0.0


def test_cli_selection_summary_and_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from firstlight.cli import app
    from firstlight.cli import options as cli_options

    fake = _FakeClient()
    monkeypatch.setattr(cli_options.Firstlight, "from_stack", lambda data_dir: fake)
    runner = CliRunner()
    out = runner.invoke(app, ["reembed", "pets", "--rotated", "--no-wait"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert fake.asked[-1] == ("pets", None, True, False) and fake.waited == 0
    assert "2 rotated photos of pets queued for re-embedding (7 scanned" in out.output
    assert "1 stored originals could not be read" in out.output and "firstlight backlog pets" in out.output
    out = runner.invoke(app, ["reembed", "pets", "--ids", "x1,x2", "--ids", "x3"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert fake.asked[-1] == ("pets", ["x1", "x2", "x3"], False, False) and fake.waited == 1 and "all re-indexed" in out.output
    for bad in (["reembed", "pets"], ["reembed", "pets", "--rotated", "--all"], ["reembed", "pets", "--ids", "x", "--all"]):
        out = runner.invoke(app, bad)
        assert out.exit_code != 0 and "exactly one of" in out.output
    assert len(fake.asked) == 2
    out = runner.invoke(app, ["backlog", "pets"], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "5 input(s) of pets in flight: 1 not yet sent to the broker, 4 awaiting indexing" in out.output


def test_a_header_longer_than_the_read_is_read_whole(core: Ingestion) -> None:
    """Segments before the pixels past HEADER_BYTES (here a 200 KB ICC profile): the first read
    cannot tell, the whole original is read."""
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (48, 32), (200, 10, 10)).save(buf, "JPEG", exif=exif.tobytes(), icc_profile=bytes(200_000))
    data = buf.getvalue()
    assert header_orientation(data[:HEADER_BYTES]) is None and header_orientation(data) == 6
    core.post_inputs("app", [NewInput(data, id="long-header")])
    queued, _, _ = scan(core, only_rotated=True)
    assert queued == ["turned", "turned-left", "long-header"]
