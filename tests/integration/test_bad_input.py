"""Bad input never crashes a service or vanishes: each RPC case gets a precise status and a
readable message; each malformed event lands on the topic's dead-letter queue with a reason."""

from __future__ import annotations

import hashlib
import io
import sys
import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from firstlight import datasets
from firstlight.messaging import topics
from firstlight.runtime.channels import client_channel
from firstlight.sdk import Firstlight, FirstlightError, UploadItem
from firstlight.stack import SERVICES
from firstlight.v1 import (
    common_pb2,
    embedding_pb2,
    embedding_pb2_grpc,
    events_pb2,
    inference_pb2,
    ingestion_pb2,
    search_pb2,
)

from .helpers import eventually
from .kafka_io import api_key_header, find_record, find_records_by_key, produce, produce_many, signed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
import make_bad_inputs as corpus

pytestmark = pytest.mark.integration

APP = "hostile"
CODE = grpc.StatusCode


def png(size: tuple[int, int] = (32, 32), seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


GOOD = png()
NOISE_PNG_3MB = png((1100, 1000), seed=3)  # incompressible: over the stack's 2 MiB limit


@pytest.fixture(scope="module", autouse=True)
def app(client: Firstlight) -> None:
    client.create_app(APP)


def post(client: Firstlight, data: bytes, app: str = APP, **kw) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    req = ingestion_pb2.PostInputsRequest(app_id=app, inputs=[common_pb2.InputSpec(image_bytes=data, **kw)])
    with pytest.raises(grpc.RpcError) as err:
        client.ingestion.PostInputs(req, timeout=30)
    return err.value


def test_post_inputs_over_the_byte_limit(client: Firstlight) -> None:
    # Hostile image contents are in the corpus tests below; this one is about size alone.
    assert len(NOISE_PNG_3MB) > 2 * 1024 * 1024
    err = post(client, NOISE_PNG_3MB)
    assert err.code() == CODE.RESOURCE_EXHAUSTED and "over the limit" in err.details() and "input 0" in err.details()


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
        client.ingestion.PostInputs(ingestion_pb2.PostInputsRequest(app_id=APP, inputs=[common_pb2.InputSpec(image_bytes=huge)]), timeout=60)
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
    produce(bootstrap, topics.INPUTS_INGESTED, key, ghost.SerializeToString(), sign_with=stack.event_keys)
    assert "ghost" in _dead_letter(stack, topics.INPUTS_INGESTED, key).error

    key = f"{APP}/short-vector".encode()
    short = events_pb2.EmbeddingComputed(app_id=APP, input_id="short", vector=[0.1, 0.2])
    produce(bootstrap, topics.EMBEDDINGS_COMPUTED, key, short.SerializeToString(), sign_with=stack.event_keys)
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


# -- the hostile-input corpus (tests/corpus/bad_inputs, generated by tests/corpus/make_bad_inputs.py) --

CORPUS_APP = "corpus"


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory, client: Firstlight) -> dict[str, bytes]:
    client.create_app(CORPUS_APP, exist_ok=True)
    large = tmp_path_factory.mktemp("large-corpus")
    corpus.write_large(large)  # 100 MP and the bomb: generated now, never committed
    loaded = corpus.load(corpus.CORPUS, large)
    assert set(loaded) == set(corpus.EXPECTED), "regenerate: python tests/corpus/make_bad_inputs.py"
    return loaded


def _outcome(call) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    try:
        call()
        return "OK", ""
    except FirstlightError as exc:
        return exc.code.name, exc.message
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""  # type: ignore[attr-defined]


def _check_all(results: dict[str, tuple[str, str]]) -> None:
    wrong = {
        case: got for case, got in results.items()
        if got[0] != corpus.EXPECTED[case][0] or corpus.EXPECTED[case][1] not in got[1]
    }  # fmt: skip
    assert not wrong, {case: (corpus.EXPECTED[case], wrong[case]) for case in wrong}


def test_corpus_through_every_image_rpc(client: Firstlight, stack, cases: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    with client_channel(stack.addresses["embedding"], api_key=stack.admin_key, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        embed = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        entry_points = {
            "PostInputs": lambda data: client.ingestion.PostInputs(
                ingestion_pb2.PostInputsRequest(app_id=CORPUS_APP, inputs=[common_pb2.InputSpec(image_bytes=data)]), timeout=60
            ),
            "Predict": lambda data: client.predict([data], top_k=1),
            "SearchByImage": lambda data: client.search_by_image(CORPUS_APP, image=data, top_k=1),
            "EmbedImages": lambda data: embed.EmbedImages(embedding_pb2.EmbedImagesRequest(images=[data]), timeout=60),
            "PredictWorkflow": lambda data: client.workflow("", [data], [inference_pb2.WorkflowStep(model_id="general", top_k=1)]),
        }
        for name, call in entry_points.items():
            results = {case: _outcome(lambda data=data: call(data)) for case, data in cases.items()}
            _check_all(results)
            if name == "PostInputs":  # the message says which input of the request was bad
                assert all("input 0" in msg for status, msg in results.values() if status != "OK")
    # StreamInputs: one stream, every case; bad items are reported by index, the rest stored.
    names = list(cases)
    report = client.upload(CORPUS_APP, [UploadItem(cases[c], id=f"stream-{n}") for n, c in enumerate(names)])
    got = {names[f.index]: (f.code, f.message) for f in report.failures}
    _check_all({case: got.get(case, ("OK", "")) for case in names})
    assert sorted(report.input_ids) == sorted(f"stream-{n}" for n, c in enumerate(names) if corpus.EXPECTED[c][0] == "OK")


def test_corpus_on_the_submit_topic(client: Firstlight, stack, cases: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    """Each rejected image sent as an ``inputs.submit`` event lands in its DLQ with the reason."""
    bootstrap = stack.addresses["kafka"]
    run = uuid.uuid4().hex[:6]
    bad = {c: d for c, d in cases.items() if corpus.EXPECTED[c][0] != "OK"}
    keys = {c: f"{CORPUS_APP}/{run}-{c}".encode() for c in bad}
    auth = [(k, v.encode()) for k, v in api_key_header(stack.admin_key).items()]
    produce_many(bootstrap, [
        (topics.INPUTS_SUBMIT, keys[c], events_pb2.InputSubmitted(
            header=events_pb2.EventHeader(idempotency_key=f"{run}-{c}"), app_id=CORPUS_APP, input=common_pb2.InputSpec(image_bytes=d, id=f"{run}-{c}"),
        ).SerializeToString(), auth)
        for c, d in bad.items()
    ])  # fmt: skip
    letters = find_records_by_key(bootstrap, topics.dlq(topics.INPUTS_SUBMIT), set(keys.values()))
    assert set(letters) == set(keys.values()), f"not dead-lettered: {sorted(c for c in bad if keys[c] not in letters)}"
    exception_names = {"INVALID_ARGUMENT": "InvalidArgument", "RESOURCE_EXHAUSTED": "ResourceExhausted"}
    for case, key in keys.items():
        error = events_pb2.DeadLetter.FromString(letters[key].value).error  # type: ignore[attr-defined]
        status, words = corpus.EXPECTED[case]
        assert exception_names[status] in error and words in error, (case, error)


def test_concept_names_in_uploads_and_annotations(client: Firstlight) -> None:
    client.upload(CORPUS_APP, [UploadItem(png(seed=99), id="concept-target")])
    for n, (name, status, words) in enumerate(corpus.CONCEPT_NAMES):
        for how, call in {
            "PostInputs": lambda: client.ingestion.PostInputs(ingestion_pb2.PostInputsRequest(
                app_id=CORPUS_APP, inputs=[common_pb2.InputSpec(image_bytes=png(seed=100 + n), id=f"concept-{n}", concepts=[name])]), timeout=30),
            "PostAnnotations": lambda: client.ingestion.PostAnnotations(ingestion_pb2.PostAnnotationsRequest(
                app_id=CORPUS_APP, annotations=[ingestion_pb2.Annotation(input_id="concept-target", add_concepts=[name])]), timeout=30),
        }.items():  # fmt: skip
            got = _outcome(call)
            assert got[0] == status and words in got[1], (how, name[:40], got)
    stored = {c.name for c in client.list_concepts(CORPUS_APP)}
    assert {name.strip() for name, status, _ in corpus.CONCEPT_NAMES if status == "OK"} <= stored


def test_duplicate_ids(client: Firstlight, stack) -> None:  # type: ignore[no-untyped-def]
    spec = lambda i, seed: common_pb2.InputSpec(image_bytes=png(seed=seed), id=i)  # noqa: E731
    twice = _outcome(lambda: client.ingestion.PostInputs(ingestion_pb2.PostInputsRequest(app_id=CORPUS_APP, inputs=[spec("dup-a", 1), spec("dup-a", 2)])))
    assert twice[0] == "INVALID_ARGUMENT" and "appears twice" in twice[1]
    assert _outcome(lambda: client.get_input(CORPUS_APP, "dup-a"))[0] == "NOT_FOUND"  # all or nothing
    client.ingestion.PostInputs(ingestion_pb2.PostInputsRequest(app_id=CORPUS_APP, inputs=[spec("dup-b", 3)]))
    again = _outcome(lambda: client.ingestion.PostInputs(ingestion_pb2.PostInputsRequest(app_id=CORPUS_APP, inputs=[spec("dup-b", 4)])))
    assert again[0] == "ALREADY_EXISTS" and "dup-b" in again[1]
    report = client.upload(CORPUS_APP, [UploadItem(png(seed=5), id="dup-c"), UploadItem(png(seed=6), id="dup-c")])
    assert report.input_ids == ["dup-c"] and [(f.index, f.code) for f in report.failures] == [(1, "ALREADY_EXISTS")]
    # On the submit topic: the same bytes again is a redelivery (ignored); other bytes under a
    # taken id is dead-lettered, not dropped.
    bootstrap = stack.addresses["kafka"]
    key = f"{CORPUS_APP}/dup-b-other".encode()
    event = events_pb2.InputSubmitted(header=events_pb2.EventHeader(idempotency_key="dup-b-other"), app_id=CORPUS_APP, input=spec("dup-b", 99))
    produce(bootstrap, topics.INPUTS_SUBMIT, key, event.SerializeToString(), api_key_header(stack.admin_key))
    assert "AlreadyExists" in _dead_letter(stack, topics.INPUTS_SUBMIT, key).error
    assert client.get_input(CORPUS_APP, "dup-b").sha256 == hashlib.sha256(png(seed=3)).hexdigest()


def test_malformed_events_on_every_consumed_topic(stack) -> None:  # type: ignore[no-untyped-def]
    """Garbage, truncated protobuf, a wrong message-type header and an empty value, on each topic
    a service consumes: every one lands in ``<topic>.dlq`` with its reason."""
    bootstrap = stack.addresses["kafka"]
    consumed = [topics.INPUTS_SUBMIT, topics.INPUTS_INGESTED, topics.EMBEDDINGS_COMPUTED,
                topics.ANNOTATIONS_CHANGED, topics.INPUTS_DELETED, topics.MODEL_VERSION_READY]  # fmt: skip
    valid = events_pb2.InputIngested(app_id=APP, input_id="x" * 50, blob_uri="file:///nowhere/" + "y" * 100).SerializeToString()
    run = uuid.uuid4().hex[:6]
    kinds = {
        "garbage": (b"\xff\x00 not protobuf \xff\xfe", [], "cannot parse"),
        "truncated": (valid[: len(valid) // 2], [], "cannot parse"),
        "wrong-type": (valid, [("message-type", b"firstlight.v1.Nonsense")], "message-type header"),
        "empty": (None, [], "no value"),
    }
    records, expect = [], {}
    for topic in consumed:
        for kind, (value, headers, reason) in kinds.items():
            key = f"{APP}/{run}-{kind}".encode()
            # Signed as a service would (internal topics refuse unsigned records before parsing).
            signed_headers = headers if topic == topics.INPUTS_SUBMIT else signed(stack.event_keys, topic, key, value, headers)
            records.append((topic, key, value, signed_headers))
            expect[(topic, key)] = reason
    produce_many(bootstrap, records)
    for topic in consumed:
        keys = {k for t, k in expect if t == topic}
        letters = find_records_by_key(bootstrap, topics.dlq(topic), keys)
        assert set(letters) == keys, f"{topic}: not dead-lettered: {sorted(keys - set(letters))}"
        for key, record in letters.items():
            letter = events_pb2.DeadLetter.FromString(record.value)  # type: ignore[attr-defined]
            assert letter.source_topic == topic and expect[(topic, key)] in letter.error, (topic, key, letter.error)


def test_every_service_serving_after_the_corpus(stack) -> None:  # type: ignore[no-untyped-def]
    for name in SERVICES:
        with grpc.insecure_channel(stack.services[name].address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING, name
