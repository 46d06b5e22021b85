"""Bad input never crashes a service or vanishes: each RPC case gets a precise status and a
readable message; each malformed event lands on the topic's dead-letter queue with a reason."""

from __future__ import annotations

import io
import uuid

import grpc
import numpy as np
import pytest
from PIL import Image

from firstlight import datasets
from firstlight.messaging import topics
from firstlight.runtime.channels import client_channel
from firstlight.sdk import Firstlight, UploadItem
from firstlight.v1 import (
    common_pb2,
    embedding_pb2,
    embedding_pb2_grpc,
    events_pb2,
    ingestion_pb2,
    search_pb2,
)

from .helpers import eventually
from .kafka_io import api_key_header, find_record, produce

pytestmark = pytest.mark.integration

APP = "hostile"
CODE = grpc.StatusCode


def png(size: tuple[int, int] = (32, 32), seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


GOOD = png()
TRUNCATED = png((256, 256))[:2000]
BOMB = (lambda: (b := io.BytesIO(), Image.new("L", (20_000, 20_000)).save(b, "PNG"), b.getvalue())[2])()
NOISE_PNG_3MB = png((1100, 1000), seed=3)  # incompressible: over the stack's 2 MiB limit


@pytest.fixture(scope="module", autouse=True)
def app(client: Firstlight) -> None:
    client.create_app(APP)


def post(client: Firstlight, data: bytes, app: str = APP, **kw) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    req = ingestion_pb2.PostInputsRequest(app_id=app, inputs=[common_pb2.InputSpec(image_bytes=data, **kw)])
    with pytest.raises(grpc.RpcError) as err:
        client.ingestion.PostInputs(req, timeout=30)
    return err.value


@pytest.mark.parametrize(
    "data, code, words",
    [
        (b"", CODE.INVALID_ARGUMENT, "empty"),
        (b"GIF89a not really", CODE.INVALID_ARGUMENT, "not a recognised image"),
        (b"hello, I am a text file\n" * 20, CODE.INVALID_ARGUMENT, "not a recognised image"),
        (TRUNCATED, CODE.INVALID_ARGUMENT, "truncated"),
        (NOISE_PNG_3MB, CODE.RESOURCE_EXHAUSTED, "over the limit"),
        (BOMB, CODE.RESOURCE_EXHAUSTED, "pixels"),
    ],
    ids=["empty", "corrupt-header", "text-file", "truncated-png", "over-size", "decompression-bomb"],
)
def test_post_inputs_rejects_bad_images(client: Firstlight, data: bytes, code: grpc.StatusCode, words: str) -> None:
    assert len(NOISE_PNG_3MB) > 2 * 1024 * 1024
    err = post(client, data)
    assert err.code() == code and words in err.details() and "input 0" in err.details()


def test_bad_ids_concepts_and_apps(client: Firstlight) -> None:
    assert post(client, GOOD, app="no-such-app").code() == CODE.NOT_FOUND
    assert post(client, GOOD, id="../../etc/passwd").code() == CODE.INVALID_ARGUMENT
    assert post(client, GOOD, concepts=["x" * 300]).code() == CODE.INVALID_ARGUMENT
    assert post(client, GOOD, concepts=["bad\x00name"]).code() == CODE.INVALID_ARGUMENT
    ok = client.ingestion.PostInputs(
        ingestion_pb2.PostInputsRequest(app_id=APP, inputs=[common_pb2.InputSpec(image_bytes=GOOD, id="dup", concepts=["猫 ünïcødé"])])
    )
    assert list(ok.inputs[0].concepts) == ["猫 ünïcødé"]
    assert post(client, GOOD, id="dup").code() == CODE.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as err:
        client.ingestion.CreateApp(ingestion_pb2.CreateAppRequest(id="Bad App!"))
    assert err.value.code() == CODE.INVALID_ARGUMENT
    for call, req in [
        (client.ingestion.GetInput, ingestion_pb2.GetInputRequest(app_id=APP, input_id="missing")),
        (client.ingestion.GetApp, ingestion_pb2.GetAppRequest(id="missing")),
        (client.ingestion.DeleteInputs, ingestion_pb2.DeleteInputsRequest(app_id=APP, input_ids=["missing"])),
        (client.search.SearchByImage, search_pb2.SearchByImageRequest(app_id=APP, input_id="missing")),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            call(req, timeout=30)
        assert err.value.code() == CODE.NOT_FOUND, call
        assert "missing" in err.value.details()


def test_stream_upload_reports_bad_items_and_keeps_the_good(client: Firstlight) -> None:
    items = [UploadItem(png(seed=10)), UploadItem(b"junk"), UploadItem(png(seed=11)), UploadItem(b"")]
    report = client.upload(APP, items)
    assert len(report.input_ids) == 2
    assert [(f.index, f.code) for f in report.failures] == [(1, "INVALID_ARGUMENT"), (3, "INVALID_ARGUMENT")]


def test_grpc_message_over_the_server_limit(client: Firstlight) -> None:
    huge = b"\xff" * (65 * 1024 * 1024)
    with pytest.raises(grpc.RpcError) as err:
        client.ingestion.PostInputs(
            ingestion_pb2.PostInputsRequest(app_id=APP, inputs=[common_pb2.InputSpec(image_bytes=huge)]), timeout=60
        )
    assert err.value.code() == CODE.RESOURCE_EXHAUSTED


def test_predict_and_search_errors(client: Firstlight, stack) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (lambda: client.predict([b"junk"]), CODE.INVALID_ARGUMENT),
        (lambda: client.predict([]), CODE.INVALID_ARGUMENT),
        (lambda: client.predict([GOOD], model="no-such-model"), CODE.NOT_FOUND),
        (lambda: client.predict([GOOD], concepts=["unicorn-xyz"]), CODE.NOT_FOUND),
        (lambda: client.predict([GOOD], top_k=5000), CODE.INVALID_ARGUMENT),  # over MAX_TOP_K
        (lambda: client.search_by_image(APP, image=b"junk"), CODE.INVALID_ARGUMENT),
        (lambda: client.search_by_image("no-such-app", image=GOOD), CODE.OK),  # empty result, not an error
        (lambda: client.search_by_text(APP, "   "), CODE.INVALID_ARGUMENT),
        (lambda: client.search_by_image(APP, input_id="x", top_k=5000), CODE.INVALID_ARGUMENT),
    ]
    for call, code in cases:
        if code == CODE.OK:
            assert len(call().hits) == 0
            continue
        with pytest.raises(Exception) as err:
            call()
        assert getattr(err.value, "code", None) == code, (err.value, code)
    with client_channel(stack.addresses["embedding"], api_key=stack.admin_key) as channel:
        with pytest.raises(grpc.RpcError) as err:
            embedding_pb2_grpc.EmbeddingServiceStub(channel).EmbedImages(embedding_pb2.EmbedImagesRequest(), timeout=30)
        assert err.value.code() == CODE.INVALID_ARGUMENT


def _dead_letter(stack, topic: str, key: bytes) -> events_pb2.DeadLetter:  # type: ignore[no-untyped-def]
    record = find_record(stack.addresses["kafka"], topics.dlq(topic), lambda r: r.key == key)
    letter = events_pb2.DeadLetter.FromString(record.value)
    assert letter.source_topic == topic and letter.key == key and letter.error
    return letter


def test_malformed_events_go_to_dead_letter_queues(client: Firstlight, stack) -> None:  # type: ignore[no-untyped-def]
    bootstrap = stack.addresses["kafka"]
    garbage = b"\xff\x00 this is not protobuf \xff"
    for topic in (topics.INPUTS_INGESTED, topics.EMBEDDINGS_COMPUTED, topics.ANNOTATIONS_CHANGED, topics.INPUTS_SUBMIT):
        key = f"{APP}/garbage-{uuid.uuid4().hex[:6]}".encode()
        produce(bootstrap, topic, key, garbage)
        letter = _dead_letter(stack, topic, key)
        assert letter.value == garbage  # the original bytes are kept for replay

    # Well-formed protobuf, impossible content.
    key = f"{APP}/ghost".encode()
    ghost = events_pb2.InputIngested(app_id=APP, input_id="ghost", blob_uri="file:///nowhere/ghost")
    produce(bootstrap, topics.INPUTS_INGESTED, key, ghost.SerializeToString())
    assert "ghost" in _dead_letter(stack, topics.INPUTS_INGESTED, key).error

    key = f"{APP}/short-vector".encode()
    short = events_pb2.EmbeddingComputed(app_id=APP, input_id="short", vector=[0.1, 0.2])
    produce(bootstrap, topics.EMBEDDINGS_COMPUTED, key, short.SerializeToString())
    assert "dimensions" in _dead_letter(stack, topics.EMBEDDINGS_COMPUTED, key).error

    key = f"{APP}/bad-submission".encode()
    bad = events_pb2.InputSubmitted(app_id=APP, input=common_pb2.InputSpec(image_bytes=b"junk", id="bad-sub"))
    produce(bootstrap, topics.INPUTS_SUBMIT, key, bad.SerializeToString(), api_key_header(stack.admin_key))
    assert "InvalidArgument" in _dead_letter(stack, topics.INPUTS_SUBMIT, key).error


def test_services_stay_healthy_and_working_after_abuse(client: Firstlight) -> None:
    before = client.indexed_count(APP)
    client.upload(APP, [UploadItem(datasets.sample_photo("coffee"), id="after-abuse")])
    eventually(lambda: client.indexed_count(APP) > before, timeout=60, what="upload indexed after abuse")
    assert client.search_by_image(APP, input_id="after-abuse", top_k=1).hits[0].input_id == "after-abuse"
