"""Security and limits against the real services (docs/security.md).

* Cross-app isolation on the session stack: app A's key reaches A's inputs, searches,
  predictions, labels, datasets, models and curation, and gets PERMISSION_DENIED for app B's in
  every service; no key or a bad key is UNAUTHENTICATED; only the admin key creates apps and
  keys; a revoked key stops working; the Kafka entry point (``inputs.submit``) and the embedding
  consumer keep apps apart too.
* TLS and limits on a second, real ingestion process (the stack's broker, its own topics via
  FIRSTLIGHT_TOPIC_PREFIX, its own database) serving TLS with a self-signed certificate made
  here, with small limits: message size, batch size, repeated items and a per-key rate; and a
  TLS inference process that resolves app keys at it over TLS (service to service).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from firstlight import datasets
from firstlight.hosting.keys import new_key
from firstlight.messaging import topics
from firstlight.runtime.channels import client_channel
from firstlight.sdk import Firstlight, FirstlightError, UploadItem
from firstlight.stack import free_port
from firstlight.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    curation_pb2,
    embedding_pb2,
    embedding_pb2_grpc,
    events_pb2,
    inference_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    search_pb2,
    training_pb2,
)

from .helpers import eventually
from .kafka_io import api_key_header, find_record, produce, signed

pytestmark = pytest.mark.integration

CODE = grpc.StatusCode
A, B = "sec-a", "sec-b"


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except FirstlightError as exc:
        return exc.code
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined]
    return CODE.OK


@pytest.fixture(scope="module")
def apps(stack, client: Firstlight) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Two apps with one labeled, indexed image each, and a key for each: {app: key}."""
    out = {}
    for app, photo in ((A, "astronaut"), (B, "coffee")):
        client.create_app(app, exist_ok=True)
        client.upload(app, [UploadItem(datasets.sample_photo(photo), [photo], id=f"{app}-1")])
        _, out[app] = client.create_api_key(app, "tests")
    for app in (A, B):
        client.wait_indexed(app, 1, timeout=120)
    return out


@pytest.fixture(scope="module")
def as_a(stack, apps: dict[str, str]) -> Iterator[Firstlight]:  # type: ignore[no-untyped-def]
    with Firstlight.from_addresses(stack.addresses, api_key=apps[A], timeout_s=60) as c:
        yield c


def test_no_key_or_bad_key_is_unauthenticated_in_every_service(stack) -> None:  # type: ignore[no-untyped-def]
    calls = {
        "ingestion": lambda c: c.get_input(A, "x"),
        "search": lambda c: c.indexed_count(A),
        "inference": lambda c: c.predict([datasets.sample_photo("coffee")]),
        "training": lambda c: c.versions(A, "m"),
        "curation": lambda c: c.suggest(A, "m"),
        "auth": lambda c: c.list_api_keys(A),
    }
    for key in ("", "flk_0123456789ab_" + "x" * 43, "not-a-key"):
        with Firstlight.from_addresses(stack.addresses, api_key=key) as anonymous:
            for name, call in calls.items():
                assert code_of(lambda: call(anonymous)) == CODE.UNAUTHENTICATED, (name, key)
    with grpc.insecure_channel(stack.addresses["embedding"]) as channel:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        assert code_of(lambda: stub.EmbedTexts(embedding_pb2.EmbedTextsRequest(texts=["cat"]), timeout=30)) == CODE.UNAUTHENTICATED
        # Health stays open for orchestrators' probes.
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_app_key_reaches_its_own_app(as_a: Firstlight) -> None:
    assert as_a.get_input(A, f"{A}-1").app_id == A
    assert [i.id for i in as_a.list_inputs(A)] == [f"{A}-1"]
    assert as_a.search_by_image(A, input_id=f"{A}-1", top_k=1).hits[0].input_id == f"{A}-1"
    assert as_a.search_by_text(A, "astronaut", top_k=1).hits  # search → embedding with the internal key
    assert as_a.predict([datasets.sample_photo("coffee")], top_k=1)  # the general model needs no app
    # Bulk labeling by search: ingestion → search with the internal key, for the caller's app only.
    assert as_a.bulk_label(A, add=["person"], text="astronaut", max_results=1).input_ids == [f"{A}-1"]
    assert code_of(lambda: as_a.versions(A, "nothing-yet")) == CODE.NOT_FOUND  # reached training, for its own app
    # A request naming no app is scoped to the key's app (an empty app_id never means "any app").
    assert as_a.ingestion.GetApp(ingestion_pb2.GetAppRequest(), timeout=30).id == A
    job = training_pb2.GetTrainingJobRequest(job_id="no-such-job")
    assert code_of(lambda: as_a.training.GetTrainingJob(job, timeout=30)) == CODE.NOT_FOUND  # type: ignore[union-attr]


def test_app_key_cannot_reach_another_app_in_any_service(stack, as_a: Firstlight, apps: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    image = datasets.sample_photo("coffee")
    calls: dict[str, Callable[[], object]] = {
        "GetApp": lambda: as_a.ingestion.GetApp(ingestion_pb2.GetAppRequest(id=B), timeout=30),
        "GetInput": lambda: as_a.get_input(B, f"{B}-1"),
        "ListInputs": lambda: list(as_a.list_inputs(B)),
        "ListConcepts": lambda: as_a.list_concepts(B),
        "PostInputs": lambda: as_a.ingestion.PostInputs(
            ingestion_pb2.PostInputsRequest(app_id=B, inputs=[common_pb2.InputSpec(image_bytes=image)]), timeout=30
        ),
        "StreamInputs": lambda: as_a.upload(B, [UploadItem(image)]),
        "PostAnnotations": lambda: as_a.ingestion.PostAnnotations(
            ingestion_pb2.PostAnnotationsRequest(app_id=B, annotations=[ingestion_pb2.Annotation(input_id=f"{B}-1", add_concepts=["x"])]),
            timeout=30,
        ),
        "BulkAnnotate": lambda: as_a.bulk_label(B, add=["x"], input_ids=[f"{B}-1"]),
        "ReembedInputs": lambda: as_a.reembed(B, [f"{B}-1"]),
        "GetIndexingBacklog": lambda: as_a.indexing_backlog(B),
        "DeleteInputs": lambda: as_a.ingestion.DeleteInputs(ingestion_pb2.DeleteInputsRequest(app_id=B, input_ids=[f"{B}-1"]), timeout=30),
        "SearchByImage": lambda: as_a.search_by_image(B, image=image),
        "SearchByText": lambda: as_a.search_by_text(B, "coffee"),
        "GetIndexStats": lambda: as_a.indexed_count(B),
        "GetVectors": lambda: as_a.search.GetVectors(search_pb2.GetVectorsRequest(app_id=B), timeout=30),
        "Predict": lambda: as_a.predict([image], app_id=B),
        "ListModels": lambda: as_a.inference.ListModels(inference_pb2.ListModelsRequest(app_id=B), timeout=30),
        "CreateDataset": lambda: as_a.create_dataset(B, "d"),
        "TrainModel": lambda: as_a.training.TrainModel(training_pb2.TrainModelRequest(app_id=B, model_id="m"), timeout=30),  # type: ignore[union-attr]
        "ListModelVersions": lambda: as_a.versions(B, "m"),
        # training RPCs the curation service calls (issue 15): the same app scoping
        "ExtendDataset": lambda: as_a.training.ExtendDataset(training_pb2.ExtendDatasetRequest(app_id=B, dataset_id="d"), timeout=30),  # type: ignore[union-attr]
        "ListDatasetRows": lambda: as_a.training.ListDatasetRows(training_pb2.ListDatasetRowsRequest(app_id=B, dataset_id="d"), timeout=30),  # type: ignore[union-attr]
        "ScoreInputs": lambda: as_a.training.ScoreInputs(  # type: ignore[union-attr]
            training_pb2.ScoreInputsRequest(app_id=B, model_id="m", input_ids=[f"{B}-1"]), timeout=30
        ),
        "SuggestInputs": lambda: as_a.suggest(B, "m"),
        "FindLabelErrors": lambda: as_a.label_errors(B),
        "GetDriftReport": lambda: as_a.curation.GetDriftReport(curation_pb2.GetDriftReportRequest(app_id=B), timeout=30),  # type: ignore[union-attr]
        "GetHeadWeights": lambda: as_a.training.GetHeadWeights(training_pb2.GetHeadWeightsRequest(app_id=B, model_id="m"), timeout=30),  # type: ignore[union-attr]
        "GetDeepExplainer": lambda: as_a.training.GetDeepExplainer(training_pb2.GetHeadWeightsRequest(app_id=B, model_id="m"), timeout=30),  # type: ignore[union-attr]
        "ExplainPrediction": lambda: as_a.explain(B, "m", input_id=f"{B}-1"),
        "ScoreUniqueness": lambda: as_a.uniqueness(B),
    }
    codes = {name: code_of(call) for name, call in calls.items()}
    assert codes == dict.fromkeys(calls, CODE.PERMISSION_DENIED)
    # Nothing of B changed.
    with Firstlight.from_addresses(stack.addresses, api_key=apps[B]) as as_b:
        assert [(i.id, list(i.concepts)) for i in as_b.list_inputs(B)] == [(f"{B}-1", ["coffee"])]
        assert as_b.indexed_count(B) == 1


def test_admin_only_rpcs(as_a: Firstlight, client: Firstlight) -> None:
    assert code_of(lambda: as_a.create_app("sec-c")) == CODE.PERMISSION_DENIED
    assert code_of(lambda: as_a.create_api_key(A)) == CODE.PERMISSION_DENIED
    assert code_of(lambda: as_a.list_api_keys(A)) == CODE.PERMISSION_DENIED
    resolve = auth_pb2.ResolveApiKeyRequest(key_sha256="0" * 64)
    assert code_of(lambda: as_a.auth.ResolveApiKey(resolve, timeout=30)) == CODE.PERMISSION_DENIED
    assert client.create_app("sec-c", exist_ok=True).id == "sec-c"
    assert code_of(lambda: client.create_api_key("no-such-app")) == CODE.NOT_FOUND
    record, secret = client.create_api_key("sec-c", "ci")
    assert secret.startswith(f"flk_{record.id}_") and record.app_id == "sec-c"
    listed = client.list_api_keys("sec-c")
    assert [k.id for k in listed] == [record.id]
    assert all(secret not in str(k) for k in listed)  # listed without the secret


def test_revoked_key_is_refused(stack, client: Firstlight) -> None:  # type: ignore[no-untyped-def]
    record, secret = client.create_api_key(A, "short-lived")
    with Firstlight.from_addresses(stack.addresses, api_key=secret) as c:
        assert c.get_input(A, f"{A}-1").id == f"{A}-1"
        client.revoke_api_key(A, record.id)
        # The ingestion service owns the keys: refused at once. Others within FIRSTLIGHT_AUTH_CACHE_S.
        assert code_of(lambda: c.get_input(A, f"{A}-1")) == CODE.UNAUTHENTICATED
    assert [k.id for k in client.list_api_keys(A, include_revoked=True) if k.HasField("revoked_at")] == [record.id]


def _dead_letter(bootstrap: str, topic: str, key: bytes) -> events_pb2.DeadLetter:
    record = find_record(bootstrap, topics.dlq(topic), lambda r: r.key == key)
    return events_pb2.DeadLetter.FromString(record.value)


def test_kafka_submissions_and_events_keep_apps_apart(stack, apps: dict[str, str], client: Firstlight) -> None:  # type: ignore[no-untyped-def]
    bootstrap = stack.addresses["kafka"]
    image = datasets.sample_photo("chelsea")
    cases = {
        "no-key": ({}, "Unauthenticated"),
        "other-app": (api_key_header(apps[A]), "PermissionDenied"),
    }
    for name, (headers, error) in cases.items():
        event = events_pb2.InputSubmitted(app_id=B, input=common_pb2.InputSpec(image_bytes=image, id=f"sub-{name}"))
        key = f"{B}/{name}-{uuid.uuid4().hex[:6]}".encode()
        produce(bootstrap, topics.INPUTS_SUBMIT, key, event.SerializeToString(), headers)
        assert error in _dead_letter(bootstrap, topics.INPUTS_SUBMIT, key).error
    # The right key gets in.
    ok = events_pb2.InputSubmitted(app_id=A, input=common_pb2.InputSpec(image_bytes=image, id="sub-ok"))
    produce(bootstrap, topics.INPUTS_SUBMIT, f"{A}/sub-ok".encode(), ok.SerializeToString(), api_key_header(apps[A]))
    eventually(lambda: code_of(lambda: client.get_input(A, "sub-ok")) == CODE.OK, timeout=60, what="keyed submission stored")
    assert code_of(lambda: client.get_input(B, "sub-no-key")) == CODE.NOT_FOUND
    assert code_of(lambda: client.get_input(B, "sub-other-app")) == CODE.NOT_FOUND

    # An event naming app A but pointing at app B's image: the embedding worker refuses it.
    assert client.get_input(B, f"{B}-1").blob_uri == f"blob:{B}/{B}-1"  # clients never see server paths
    b_blob = (stack.data_dir / "blobs" / B / f"{B}-1").as_uri()  # an attacker who guesses the layout
    key = f"{A}/stolen-{uuid.uuid4().hex[:6]}".encode()
    forged = events_pb2.InputIngested(app_id=A, input_id="stolen", blob_uri=b_blob)
    produce(bootstrap, topics.INPUTS_INGESTED, key, forged.SerializeToString())
    assert "unsigned record" in _dead_letter(bootstrap, topics.INPUTS_INGESTED, key).error
    # Even signed (an insider holding the event key), the worker checks the blob's app.
    key = f"{A}/stolen-{uuid.uuid4().hex[:6]}".encode()
    produce(bootstrap, topics.INPUTS_INGESTED, key, forged.SerializeToString(), sign_with=stack.event_keys)
    assert "does not belong to app" in _dead_letter(bootstrap, topics.INPUTS_INGESTED, key).error


# -- issue 14: what an attacker with one app's key found ----------------------------------------

# Whole-string cases: a trailing newline / CR, a NUL, a look-alike letter (Cyrillic "е").
NOT_WHOLE = ("\n", "\r", "\x00", "\u0435")


def test_identifiers_match_the_whole_string_through_the_rpcs(stack, as_a: Firstlight, client: Firstlight) -> None:  # type: ignore[no-untyped-def]
    """Item 2: ``re.match("^…$")`` accepted "evil\n" as an app id, "x\n" as an input id (a blob
    file named "x\n"), "m\n" as a model id and "backbone\n" as an embedding model."""
    image = datasets.sample_photo("coffee")
    embed = as_a.embedding
    assert embed is not None
    codes: dict[str, grpc.StatusCode] = {}
    for n, end in enumerate(NOT_WHOLE):
        calls: dict[str, Callable[[], object]] = {
            "CreateApp": lambda: client.create_app(f"evil{end}"),
            "CreateApp(lead)": lambda: client.create_app(f"{end}evil"),
            "PostInputs": lambda: as_a.ingestion.PostInputs(
                ingestion_pb2.PostInputsRequest(app_id=A, inputs=[common_pb2.InputSpec(id=f"x{end}", image_bytes=image)]), timeout=30
            ),
            "DeleteInputs": lambda: as_a.ingestion.DeleteInputs(ingestion_pb2.DeleteInputsRequest(app_id=A, input_ids=[f"{A}-1{end}"]), timeout=30),
            "PostAnnotations": lambda: as_a.ingestion.PostAnnotations(
                ingestion_pb2.PostAnnotationsRequest(app_id=A, annotations=[ingestion_pb2.Annotation(input_id=f"{A}-1", add_concepts=[f"ca{end}t"])]),
                timeout=30,
            ),
            "CreateModel": lambda: as_a.create_model(A, f"m{end}", ["a", "b"]),
            "CreateDataset": lambda: as_a.create_dataset(A, f"d{end}"),
            "SetEmbeddingModel": lambda: as_a.set_embedding_model(A, f"backbone{end}"),
            "EmbedImages": lambda: embed.EmbedImages(embedding_pb2.EmbedImagesRequest(images=[image], model=f"backbone{end}"), timeout=30),
            "DescribeEmbeddingModel": lambda: embed.DescribeEmbeddingModel(embedding_pb2.DescribeEmbeddingModelRequest(model=f"emb{end}"), timeout=30),
            "CreateApiKey(name)": lambda: client.create_api_key(A, f"ci{end}x"),
        }
        if end == "\u0435":  # a look-alike in a concept or key name is a legitimate (Cyrillic) name
            calls.pop("PostAnnotations")
            calls.pop("CreateApiKey(name)")
        for name, call in calls.items():
            codes[f"{name}[{n}]"] = code_of(call)
    assert codes == dict.fromkeys(codes, CODE.INVALID_ARGUMENT)
    # Nothing was written: no such app, input, blob file or model.
    assert code_of(lambda: client.ingestion.GetApp(ingestion_pb2.GetAppRequest(id="evil"), timeout=30)) == CODE.NOT_FOUND
    blobs = stack.data_dir / "blobs" / A
    assert all(name.isprintable() and name.isascii() for name in os.listdir(blobs)), os.listdir(blobs)
    assert all(i.id.isprintable() and i.id.isascii() for i in as_a.list_inputs(A))


def test_no_rpc_names_a_triton_model(as_a: Firstlight) -> None:
    """Item 1: EmbedImages / DescribeEmbeddingModel / SetEmbeddingModel took Triton model names,
    so app A's key could embed with, describe and switch to app B's trained models. A Triton
    name is refused whoever asks; a model id names the caller's app's model only (the interceptor
    refuses app_id B). tests/integration/test_embedding_model_switch.py repeats this against a
    really trained embedder of another app."""
    image = datasets.sample_photo("coffee")
    embed = as_a.embedding
    assert embed is not None
    for ref in (f"fl.{B}.emb", f"fl.{B}.emb@1", f"fl.{A}.emb", "fl.x"):
        assert code_of(lambda: as_a.embed_images([image], model=ref)) == CODE.INVALID_ARGUMENT, ref
        describe = embedding_pb2.DescribeEmbeddingModelRequest(model=ref)
        assert code_of(lambda: embed.DescribeEmbeddingModel(describe, timeout=30)) == CODE.INVALID_ARGUMENT, ref
        assert code_of(lambda: as_a.set_embedding_model(A, ref)) == CODE.INVALID_ARGUMENT, ref
    assert code_of(lambda: as_a.embed_images([image], model="emb", app_id=B)) == CODE.PERMISSION_DENIED
    describe = embedding_pb2.DescribeEmbeddingModelRequest(model="emb@1", app_id=B)
    assert code_of(lambda: embed.DescribeEmbeddingModel(describe, timeout=30)) == CODE.PERMISSION_DENIED
    # A model id the app does not have is NOT_FOUND; the built-in backbone's names still work.
    assert code_of(lambda: as_a.embed_images([image], model="emb@1")) == CODE.NOT_FOUND
    assert {len(v) for v in as_a.embed_images([image], model="backbone")} == {1280}
    info = embed.DescribeEmbeddingModel(embedding_pb2.DescribeEmbeddingModelRequest(), timeout=30)
    assert (info.dim, info.image_size) == (1280, 224)


def test_state_directory_is_owner_only(stack, apps: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Item 5: metadata.db, training.db, the logs and the model repository were 0644, Triton's
    /dev/shm regions too. Every directory of the stack's state is 0700, every file 0600 (or
    0700), and so are Triton's shared-memory regions."""
    loose = []
    for directory, dirnames, filenames in os.walk(stack.data_dir):
        for name in [directory, *(os.path.join(directory, n) for n in (*dirnames, *filenames))]:
            st = os.lstat(name)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                loose.append(f"{oct(stat.S_IMODE(st.st_mode))} {name}")
    assert stat.S_IMODE(os.stat(stack.data_dir).st_mode) == 0o700
    for must in ("ingestion/metadata.db", "logs/triton.log", "logs/ingestion.log", "model_repository/backbone/config.pbtxt", "stack.json"):
        assert (stack.data_dir / must).exists(), must
    assert not loose, "\n".join(loose[:20])
    # Triton's Python backend sets 0644 on its regions itself (umask does not apply): the stack
    # makes them owner-only within a fraction of a second of their creation.
    shm = sorted(Path("/dev/shm").glob(f"{stack.triton._shm_prefix}*")) if stack.triton else []
    assert shm, "no Triton shared-memory regions found"

    def shm_private() -> bool:
        return not [p for p in Path("/dev/shm").glob(f"{stack.triton._shm_prefix}*") if p.stat().st_mode & 0o077]

    eventually(shm_private, timeout=2, interval=0.1, what="Triton's /dev/shm regions owner-only")


def test_triton_refuses_clients_without_the_services_token(stack) -> None:  # type: ignore[no-untyped-def]
    """Item 4: anyone local could list every app's models on Triton, infer with them and unload
    them. Triton now refuses every protocol but health without the token only the embedding and
    inference services hold (FIRSTLIGHT_TRITON_TOKEN); its ports, metrics included, are bound
    to loopback."""
    import urllib.error
    import urllib.request

    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from firstlight.triton.client import TOKEN_HEADER, TOKEN_KEY

    triton = stack.triton
    assert triton is not None and stack.triton_token
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    image = grpcclient.InferInput("IMAGE", [1, 224, 224, 3], "UINT8")
    image.set_data_from_numpy(np.zeros((1, 224, 224, 3), np.uint8))
    calls: dict[str, Callable[[dict | None], object]] = {
        "repository index": lambda h: client.get_model_repository_index(headers=h),
        "model metadata": lambda h: client.get_model_metadata("general", headers=h),
        "model config": lambda h: client.get_model_config("general", headers=h),
        "infer": lambda h: client.infer("general", [image], headers=h),
        "unload": lambda h: client.unload_model("general", headers=h),
        "load": lambda h: client.load_model("general", headers=h),
        "statistics": lambda h: client.get_inference_statistics(headers=h),
    }
    try:
        for headers in (None, {TOKEN_HEADER: "flt_wrong"}, {"authorization": f"Bearer {stack.admin_key}"}):
            for name, call in calls.items():
                with pytest.raises(InferenceServerException, match="restricted") as refused:
                    call(headers)
                assert refused.value.status() == "StatusCode.UNAVAILABLE", name
        assert client.is_server_live() and client.is_model_ready("general")  # health stays open (probes)
        assert "general" in {m.name for m in client.get_model_repository_index(headers={TOKEN_HEADER: stack.triton_token}).models}
    finally:
        client.close()
    index = f"{triton.http_url}/v2/repository/index"
    with pytest.raises(urllib.error.HTTPError) as http_refused:
        urllib.request.urlopen(urllib.request.Request(index, data=b"{}", method="POST"), timeout=10)
    assert http_refused.value.code == 403
    ok = urllib.request.urlopen(urllib.request.Request(index, data=b"{}", method="POST", headers={TOKEN_KEY: stack.triton_token}), timeout=10)
    assert ok.status == 200
    # Bound to loopback: gRPC, HTTP and metrics (which no header protects).
    args = Path(f"/proc/{triton.pid}/cmdline").read_bytes().split(b"\0")
    for flag in (b"--grpc-address", b"--http-address", b"--metrics-address"):
        assert flag + b"=127.0.0.1" in args, flag
    # Only the services that call Triton hold the token; stack.json does not.
    assert stack.triton_token not in (stack.data_dir / "stack.json").read_text()
    # Its command line is the one place it shows (docs/security.md): not repeated in any log.
    assert not [p.name for p in stack.log_dir.rglob("*.log") if stack.triton_token.encode() in p.read_bytes()]
    assert [n for n in stack.services if "FIRSTLIGHT_TRITON_TOKEN" in stack.env_for(n)] == ["embedding", "inference"]


def test_smaller_holes(stack, as_a: Firstlight, client: Firstlight, apps: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Item 7: admin TrainModel(app_id="") was NOT_FOUND "in app ''"; page tokens were
    base64("s:<global row number>") and worked in another app's listing; blob_uri showed the
    server's absolute path to clients."""
    import base64

    train = training_pb2.TrainModelRequest(app_id="", model_id="m", dataset_id="d")
    assert code_of(lambda: client.training.TrainModel(train, timeout=30)) == CODE.INVALID_ARGUMENT  # type: ignore[union-attr]
    # Page tokens: opaque, and only for the listing (app) they came from.
    client.upload(A, [UploadItem(datasets.sample_photo("chelsea"), id=f"{A}-page")])
    page = as_a.ingestion.ListInputs(ingestion_pb2.ListInputsRequest(app_id=A, page_size=1), timeout=30)
    token = page.next_page_token
    # Opaque: not the old plain "s:<row>" (a ':' byte can occur by chance in the ciphertext).
    assert token and not re.fullmatch(rb"[a-z]:\d+", base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert as_a.ingestion.ListInputs(ingestion_pb2.ListInputsRequest(app_id=A, page_size=1, page_token=token), timeout=30).inputs
    with Firstlight.from_addresses(stack.addresses, api_key=apps[B]) as as_b:
        elsewhere = ingestion_pb2.ListInputsRequest(app_id=B, page_size=1, page_token=token)
        assert code_of(lambda: as_b.ingestion.ListInputs(elsewhere, timeout=30)) == CODE.INVALID_ARGUMENT
    forged = base64.urlsafe_b64encode(b"s:0").decode()
    assert code_of(lambda: as_a.ingestion.ListInputs(ingestion_pb2.ListInputsRequest(app_id=A, page_token=forged), timeout=30)) == CODE.INVALID_ARGUMENT
    # No server path in what clients see (app key and admin alike).
    for c in (as_a, client):
        shown = c.get_input(A, f"{A}-1").blob_uri
        assert shown == f"blob:{A}/{A}-1" and str(stack.data_dir) not in shown


def test_forged_internal_events_are_dead_lettered_and_change_nothing(stack, apps: dict[str, str], client: Firstlight) -> None:  # type: ignore[no-untyped-def]
    """Item 3: anyone who could reach the broker removed B's input from search (inputs.deleted),
    put concept "pwned" on B's search hit (annotations.changed) and made B's Predict answer with
    A's model (model.version.ready). Internal topics now take only records signed with the
    services' event key: unsigned, forged (another key), altered and replayed (stale) records
    are dead-lettered with the reason, and B's data does not change."""
    from kafka import KafkaConsumer, KafkaProducer

    bootstrap = stack.addresses["kafka"]
    run = uuid.uuid4().hex[:6]
    header = events_pb2.EventHeader(idempotency_key=f"forged-{run}")
    attacks = {
        topics.INPUTS_DELETED: events_pb2.InputsDeleted(header=header, app_id=B, input_ids=[f"{B}-1"]),
        topics.ANNOTATIONS_CHANGED: events_pb2.AnnotationsChanged(header=header, app_id=B, input_id=f"{B}-1", concepts=["pwned"], label_revision=99),
        topics.MODEL_VERSION_READY: events_pb2.ModelVersionReady(
            header=header, app_id=B, model_id="m", version="1", triton_model="general", concepts=["made", "up"], serving=True
        ),
        topics.INPUTS_INGESTED: events_pb2.InputIngested(header=header, app_id=B, input_id="planted", blob_uri=f"file:///tmp/{run}"),
        topics.EMBEDDINGS_COMPUTED: events_pb2.EmbeddingComputed(header=header, app_id=B, input_id="planted", vector=[0.0] * 1280),
        topics.PREDICTIONS_MADE: events_pb2.PredictionMade(header=header, app_id=B, input_id=f"{B}-1", model_id="m"),
        topics.EMBEDDING_MODEL_CHANGED: events_pb2.EmbeddingModelChanged(header=header, app_id=B, embedding_model=f"fl.{A}.x"),
    }
    other_key = f"kx:{'z' * 40}"  # a key the stack does not have
    eight_days_ago = int((time.time() - 8 * 86400) * 1000)
    expected: dict[tuple[str, bytes], str] = {}
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for topic, event in attacks.items():
            value = event.SerializeToString()
            mt = [("message-type", event.DESCRIPTOR.full_name.encode())]
            genuine = lambda key, now_ms=None: signed(stack.event_keys, topic, key, value, mt, now_ms=now_ms)  # noqa: E731
            variants: dict[str, tuple[bytes, Callable[[bytes], list], str]] = {
                "unsigned": (value, lambda key: mt, "unsigned record"),
                "other-key": (value, lambda key: signed(other_key, topic, key, value, mt), "signed with unknown event key"),
                # A genuine signature, sent with another value (the attacker's edit).
                "altered": (value + b"\x10\x01", genuine, "forged or altered"),
                # A genuine record captured more than the freshness window ago. (model.version.ready
                # is replayed from its start by design: there the registry ignores serving changes
                # older than the one it applied, tests/unit/test_event_signing.py.)
                "replayed": (value, lambda key: genuine(key, eight_days_ago), "replayed or stale"),
            }
            for name, (body, headers_for, reason) in variants.items():
                if name == "replayed" and topic == topics.MODEL_VERSION_READY:
                    continue
                key = f"{B}/{run}-{name}".encode()
                producer.send(topic, key=key, value=body, headers=headers_for(key))
                expected[(topic, key)] = reason
        producer.flush(timeout=30)
    finally:
        producer.close()
    # Every DLQ read by one consumer (one group join, not one per topic).
    reader = KafkaConsumer(
        *(topics.dlq(t) for t in attacks), bootstrap_servers=bootstrap, group_id=f"test-{run}", auto_offset_reset="earliest",
        enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )  # fmt: skip
    letters: dict[tuple[str, bytes], str] = {}
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not set(expected) <= set(letters):
            for records in reader.poll(timeout_ms=500).values():
                for record in records:
                    letter = events_pb2.DeadLetter.FromString(record.value)
                    letters.setdefault((letter.source_topic, record.key), letter.error)
    finally:
        reader.close()
    missing = sorted(set(expected) - set(letters))
    assert not missing, f"not dead-lettered: {missing}"
    for where, reason in expected.items():
        assert reason in letters[where], (where, letters[where])
    # Nothing of B changed: its input is searchable with its own label, and B has no model "m".
    with Firstlight.from_addresses(stack.addresses, api_key=apps[B]) as as_b:
        hit = as_b.search_by_image(B, input_id=f"{B}-1", top_k=1).hits[0]
        assert (hit.input_id, list(hit.concepts)) == (f"{B}-1", ["coffee"])
        assert as_b.indexed_count(B) == 1
        assert code_of(lambda: as_b.predict([datasets.sample_photo("coffee")], model="m", app_id=B)) == CODE.NOT_FOUND
        assert as_b.ingestion.GetApp(ingestion_pb2.GetAppRequest(id=B), timeout=30).embedding_model == ""


def _replay(bootstrap: str, records: list) -> dict[tuple[str, int, int], str]:  # type: ignore[type-arg]
    """Send captured records again byte for byte (signature headers included), as an attacker on
    the broker would, and return the dead letters they became: {(topic, partition, offset): error}."""
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        sent = [producer.send(r.topic, key=r.key, value=r.value, headers=list(r.headers)).get(timeout=30) for r in records]
    finally:
        producer.close()
    want = {(m.topic, m.partition, m.offset) for m in sent}
    reader = KafkaConsumer(
        *{topics.dlq(m.topic) for m in sent}, bootstrap_servers=bootstrap, group_id=f"test-replay-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )  # fmt: skip
    letters: dict[tuple[str, int, int], str] = {}
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not want <= set(letters):
            for polled in reader.poll(timeout_ms=500).values():
                for record in polled:
                    letter = events_pb2.DeadLetter.FromString(record.value)
                    where = (letter.source_topic, letter.source_partition, letter.source_offset)
                    if where in want:
                        letters[where] = letter.error
    finally:
        reader.close()
    assert want <= set(letters), f"replayed records not dead-lettered: {sorted(want - set(letters))}"
    return {w: letters[w] for w in sorted(want)}


def test_replayed_genuine_records_of_undone_changes_change_nothing(stack, apps: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Item 3, replays inside the freshness window: genuine signed records captured off the broker
    (an ``annotations.changed`` of labels changed again since; after a delete and a re-upload of
    the same id, that record again and the ``inputs.deleted``) are sent again with their own
    signature headers. Each is older than the state it would change (domain.generations):
    dead-lettered as a stale record with why, and the input keeps its state."""
    bootstrap = stack.addresses["kafka"]
    input_id = f"replay-{uuid.uuid4().hex[:6]}"
    key = topics.event_key(B, input_id)
    with Firstlight.from_addresses(stack.addresses, api_key=apps[B], timeout_s=60) as as_b:

        def concepts() -> list[str] | None:
            try:
                hits = as_b.search_by_image(B, input_id=input_id, top_k=5).hits
            except (FirstlightError, grpc.RpcError):
                return None
            mine = [h for h in hits if h.input_id == input_id]
            return sorted(mine[0].concepts) if mine else None

        as_b.upload(B, [UploadItem(datasets.sample_photo("chelsea"), ["cat"], id=input_id)])
        eventually(lambda: concepts() == ["cat"], timeout=120, what="the input searchable with its label")
        as_b.annotate(B, {input_id: ["kitten"]})  # revision 2
        eventually(lambda: concepts() == ["cat", "kitten"], timeout=60, what="revision 2 indexed")
        as_b.annotate(B, remove={input_id: ["kitten"]})  # revision 3 undoes it
        eventually(lambda: concepts() == ["cat"], timeout=60, what="revision 3 indexed")
        relabel = find_record(
            bootstrap, topics.ANNOTATIONS_CHANGED,
            lambda r: r.key == key and events_pb2.AnnotationsChanged.FromString(r.value).label_revision == 2,
        )  # fmt: skip
        [why] = _replay(bootstrap, [relabel]).values()
        assert "stale record" in why and "label revision 2 is older" in why, why
        assert concepts() == ["cat"]

        as_b.ingestion.DeleteInputs(ingestion_pb2.DeleteInputsRequest(app_id=B, input_ids=[input_id]), timeout=30)
        eventually(lambda: concepts() is None, timeout=60, what="the input gone from search")
        deletion = find_record(
            bootstrap, topics.INPUTS_DELETED,
            lambda r: r.key == topics.event_key(B) and input_id in events_pb2.InputsDeleted.FromString(r.value).input_ids,
        )  # fmt: skip
        as_b.upload(B, [UploadItem(datasets.sample_photo("chelsea"), ["lynx"], id=input_id)])  # the same id again
        eventually(lambda: concepts() == ["lynx"], timeout=120, what="the re-upload searchable")

        relabeled, deleted = _replay(bootstrap, [relabel, deletion]).values()
        assert "stale record" in relabeled and "was deleted" in relabeled, relabeled
        assert "stale record" in deleted and "was stored since" in deleted, deleted
        assert concepts() == ["lynx"]  # the re-upload keeps its own label and stays searchable
        as_b.ingestion.DeleteInputs(ingestion_pb2.DeleteInputsRequest(app_id=B, input_ids=[input_id]), timeout=30)
        eventually(lambda: concepts() is None, timeout=60, what="cleaned up")


# -- TLS and limits on a second ingestion process ------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


LIMITS = {
    "FIRSTLIGHT_MAX_MESSAGE_BYTES": str(256 * 1024),
    "FIRSTLIGHT_MAX_BATCH_SIZE": "4",
    "FIRSTLIGHT_MAX_REPEATED_ITEMS": "50",
    "FIRSTLIGHT_RATE_LIMIT_PER_S": "2",
    "FIRSTLIGHT_RATE_LIMIT_BURST": "5",
}


def _start_tls_service(stack, name: str, work: Path, env_extra: dict[str, str]) -> tuple[subprocess.Popen, str]:  # type: ignore[no-untyped-def]
    """Start ``firstlight.<name>.main`` on a free port with the stack's environment plus
    ``env_extra``; wait until its health service answers SERVING over TLS."""
    port = free_port()
    env = stack.env_for(name)
    env.update(env_extra, FIRSTLIGHT_GRPC_PORT=str(port), FIRSTLIGHT_DATA_DIR=str(work / name))
    log_file = work / f"{name}.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", f"firstlight.{name}.main"], env=env, stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    with client_channel(address, tls_root_cert=Path(env["FIRSTLIGHT_TLS_ROOT_CERT_FILE"]).read_bytes()) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited:\n{log_file.read_text()[-3000:]}")
            try:
                return health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                return False

        try:
            eventually(serving, timeout=120, interval=0.3, what=f"TLS {name} SERVING")
        except BaseException:
            _stop(proc)
            raise
    return proc, address


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def tls_ingestion(stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:  # type: ignore[no-untyped-def]
    """A second ingestion process serving TLS with small limits; yields its address and cert."""
    work = tmp_path_factory.mktemp("tls-ingestion")
    cert_file, key_file = _self_signed(work)
    tls = {
        "FIRSTLIGHT_TOPIC_PREFIX": f"tls{uuid.uuid4().hex[:6]}.",  # its own topics: the stack never sees it
        "FIRSTLIGHT_TLS_CERT_FILE": str(cert_file),
        "FIRSTLIGHT_TLS_KEY_FILE": str(key_file),
        "FIRSTLIGHT_TLS_ROOT_CERT_FILE": str(cert_file),  # how its own clients verify the others
    }
    proc, address = _start_tls_service(stack, "ingestion", work, {**LIMITS, **tls, "FIRSTLIGHT_DATABASE_URL": ""})
    try:
        yield {"address": address, "root": cert_file.read_bytes(), "admin_key": stack.admin_key, "work": work, "tls_env": tls}
    finally:
        _stop(proc)


def _ingestion(server: dict, key: str, root: bytes | None = None) -> tuple[grpc.Channel, ingestion_pb2_grpc.IngestionServiceStub]:
    opts = [("grpc.max_send_message_length", 64 << 20)]
    channel = client_channel(server["address"], api_key=key, tls_root_cert=server["root"] if root is None else root, options=opts)
    return channel, ingestion_pb2_grpc.IngestionServiceStub(channel)


def _app_key(server: dict, app: str) -> str:
    channel, stub = _ingestion(server, server["admin_key"])
    with channel:
        try:
            stub.CreateApp(ingestion_pb2.CreateAppRequest(id=app), timeout=30)
        except grpc.RpcError as exc:
            assert exc.code() == CODE.ALREADY_EXISTS  # type: ignore[attr-defined]
        resp = auth_pb2_grpc.AuthServiceStub(channel).CreateApiKey(auth_pb2.CreateApiKeyRequest(app_id=app), timeout=30)
    return resp.secret


def test_tls_works_and_plaintext_or_wrong_ca_does_not(tls_ingestion: dict) -> None:
    key = _app_key(tls_ingestion, "tls-app")
    channel, stub = _ingestion(tls_ingestion, key)
    with channel:
        assert stub.GetApp(ingestion_pb2.GetAppRequest(id="tls-app"), timeout=30).id == "tls-app"
    # The SDK over TLS.
    addr = tls_ingestion["address"]
    with Firstlight(addr, addr, addr, api_key=key, tls_root_cert=tls_ingestion["root"]) as sdk:
        assert sdk.ingestion.GetApp(ingestion_pb2.GetAppRequest(id="tls-app"), timeout=30).id == "tls-app"
    with grpc.insecure_channel(addr) as plain:
        stub = ingestion_pb2_grpc.IngestionServiceStub(plain)
        assert code_of(lambda: stub.GetApp(ingestion_pb2.GetAppRequest(id="tls-app"), timeout=10)) == CODE.UNAVAILABLE
    other_dir = tls_ingestion["work"] / "other-ca"
    other_dir.mkdir(exist_ok=True)
    other_ca = _self_signed(other_dir)[0].read_bytes()
    channel, stub = _ingestion(tls_ingestion, key, root=other_ca)
    with channel:
        assert code_of(lambda: stub.GetApp(ingestion_pb2.GetAppRequest(id="tls-app"), timeout=10)) == CODE.UNAVAILABLE


def test_request_size_limit(tls_ingestion: dict) -> None:
    key = _app_key(tls_ingestion, "lim-size")
    channel, stub = _ingestion(tls_ingestion, key)
    big = ingestion_pb2.PostInputsRequest(app_id="lim-size", inputs=[common_pb2.InputSpec(image_bytes=os.urandom(300 * 1024))])
    with channel, pytest.raises(grpc.RpcError) as err:
        stub.PostInputs(big, timeout=30)
    assert err.value.code() == CODE.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]


def test_batch_and_repeated_item_limits(tls_ingestion: dict) -> None:
    key = _app_key(tls_ingestion, "lim-batch")
    channel, stub = _ingestion(tls_ingestion, key)
    tiny = datasets.animal_mnist(1, seed=0)[0][2]
    five = ingestion_pb2.PostInputsRequest(app_id="lim-batch", inputs=[common_pb2.InputSpec(image_bytes=tiny)] * 5)
    many_ids = ingestion_pb2.DeleteInputsRequest(app_id="lim-batch", input_ids=[f"i{n}" for n in range(51)])
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            stub.PostInputs(five, timeout=30)
        assert err.value.code() == CODE.RESOURCE_EXHAUSTED and "limit of 4" in err.value.details()  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as err:
            stub.DeleteInputs(many_ids, timeout=30)
        assert err.value.code() == CODE.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert "input_ids" in err.value.details() and "FIRSTLIGHT_MAX_REPEATED_ITEMS" in err.value.details()  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as err:
            stub.ListInputs(ingestion_pb2.ListInputsRequest(app_id="lim-batch", page_size=5000), timeout=30)
        assert err.value.code() == CODE.INVALID_ARGUMENT and "page_size" in err.value.details()  # type: ignore[attr-defined]


def test_per_key_rate_limit(tls_ingestion: dict) -> None:
    key, other = _app_key(tls_ingestion, "lim-rate"), _app_key(tls_ingestion, "lim-rate")
    channel, stub = _ingestion(tls_ingestion, key)
    request = ingestion_pb2.GetAppRequest(id="lim-rate")
    with channel:
        outcomes = []
        for _ in range(10):  # burst 5 at 2/s: the calls after the burst are refused
            try:
                stub.GetApp(request, timeout=30)
                outcomes.append("ok")
            except grpc.RpcError as exc:
                assert exc.code() == CODE.RESOURCE_EXHAUSTED, exc  # type: ignore[attr-defined]
                retry_ms = int(dict(exc.trailing_metadata())["retry-after-ms"])  # type: ignore[attr-defined]
                assert "retry in" in exc.details()  # type: ignore[attr-defined]
                outcomes.append("limited")
        assert outcomes[:5] == ["ok"] * 5 and "limited" in outcomes[5:]
        assert 0 < retry_ms <= 500
        # Another key of the same app has its own bucket; the admin key is not limited.
        other_channel, other_stub = _ingestion(tls_ingestion, other)
        with other_channel:
            assert other_stub.GetApp(request, timeout=30).id == "lim-rate"
        time.sleep(retry_ms / 1000 + 0.05)
        assert stub.GetApp(request, timeout=30).id == "lim-rate"  # after the advertised wait
    # The SDK waits out the limit (retry-after-ms) instead of failing (issue 14, item 7).
    addr = tls_ingestion["address"]
    with Firstlight(addr, addr, addr, api_key=key, tls_root_cert=tls_ingestion["root"]) as sdk_client:
        started = time.monotonic()
        assert [sdk_client.ingestion.GetApp(request, timeout=30).id for _ in range(4)] == ["lim-rate"] * 4
        assert time.monotonic() - started > 0.3  # it did wait: 4 calls at 2/s on a bucket just emptied


def test_services_call_each_other_over_tls(stack, tls_ingestion: dict) -> None:  # type: ignore[no-untyped-def]
    """An inference process serving TLS resolves an app key over TLS at the TLS ingestion
    service (ResolveApiKey with the internal key), then predicts through the stack's Triton."""
    env = {**tls_ingestion["tls_env"], "FIRSTLIGHT_INGESTION_ADDR": tls_ingestion["address"]}
    proc, address = _start_tls_service(stack, "inference", tls_ingestion["work"], env)
    try:
        key = _app_key(tls_ingestion, "tls-predict")
        with Firstlight(address, address, address, api_key=key, tls_root_cert=tls_ingestion["root"]) as sdk:
            assert sdk.predict([datasets.sample_photo("coffee")], top_k=1, app_id="tls-predict")[0]
            assert code_of(lambda: sdk.predict([datasets.sample_photo("coffee")], app_id="lim-size")) == CODE.PERMISSION_DENIED
        with Firstlight(address, address, address, api_key=new_key()[1], tls_root_cert=tls_ingestion["root"]) as stranger:
            assert code_of(lambda: stranger.predict([datasets.sample_photo("coffee")])) == CODE.UNAUTHENTICATED
    finally:
        _stop(proc)
