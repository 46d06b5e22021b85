"""Switching an app's embedding model to a trained visual_embedder, through the real stack: the
embedder is trained by the training service on the app's own labeled inputs (tiny: frozen
backbone, 16-d), exported to Triton, and the app is switched to that version with
SetEmbeddingModel. Inputs are re-embedded through Triton and re-indexed via the event flow while
searches keep answering."""

from __future__ import annotations

import time

import grpc
import pytest

from firstlight import datasets
from firstlight.sdk import Firstlight, FirstlightError, UploadItem
from firstlight.v1 import embedding_pb2, ingestion_pb2, search_pb2, training_pb2

pytestmark = pytest.mark.integration

APP = "embswitch"
MODEL_ID = "emb"
CLASSES = ["bear", "bird", "giraffe", "zebra"]
DIM = 16


@pytest.fixture(scope="module")
def app_inputs(client: Firstlight) -> dict[str, str]:
    client.create_app(APP, "embedding switch")
    animals = datasets.animal_mnist(5, seed=3, classes=CLASSES)  # 20 inputs
    report = client.upload(APP, [UploadItem(data, [name], id=input_id, split="train") for input_id, name, data in animals])
    assert not report.failures
    client.wait_indexed(APP, len(animals), timeout=180)
    return {input_id: name for input_id, name, _ in animals}


def test_bad_embedding_models_are_refused(client: Firstlight, app_inputs: dict[str, str]) -> None:
    with pytest.raises(FirstlightError) as bad:
        client.set_embedding_model(APP, "no spaces allowed")
    assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(FirstlightError) as triton_name:  # clients never name Triton models
        client.set_embedding_model(APP, f"fl.{APP}.{MODEL_ID}")
    assert triton_name.value.code == grpc.StatusCode.INVALID_ARGUMENT and "Triton model name" in triton_name.value.message
    with pytest.raises(FirstlightError) as missing:
        client.set_embedding_model(APP, "nothing")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(FirstlightError) as app_missing:
        client.set_embedding_model("no-such-app", "backbone")
    assert app_missing.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(FirstlightError) as not_ours:  # a built-in Triton model is no model of the app
        client.set_embedding_model(APP, "general")
    assert not_ours.value.code == grpc.StatusCode.NOT_FOUND
    assert client.index_stats(APP).switching_to == ""


def _train_embedder(client: Firstlight) -> None:
    client.create_dataset(APP, "d", concepts=CLASSES, counts=(12, 4, 4), seed=0, write_splits=False)
    settings = {"image_size": "64", "embedding_dim": str(DIM), "num_epochs": "2", "batch_size": "8"}
    job = client.train_deep(APP, MODEL_ID, "d", CLASSES, template="visual_embedder", settings=settings)
    assert job.state == training_pb2.JOB_STATE_SUCCEEDED and job.version == "1"


def _ensure_switched(client: Firstlight, app_inputs: dict[str, str]) -> None:
    """The app switched to its trained embedder, whether or not the switch test ran first (tests
    must not depend on their order)."""
    target = f"{MODEL_ID}@1"  # clients see the app's model id (IndexStats.model)
    if client.index_stats(APP).model == target:
        return
    try:
        client.versions(APP, MODEL_ID)
    except FirstlightError as exc:
        if exc.code != grpc.StatusCode.NOT_FOUND:
            raise
        _train_embedder(client)
    client.set_embedding_model(APP, MODEL_ID, "1")
    deadline = time.monotonic() + 180
    while (stats := client.index_stats(APP)).model != target or stats.switching_to:
        assert time.monotonic() < deadline, f"the switch did not complete: {stats}"
        time.sleep(0.2)


def test_switch_reindexes_every_input_without_interrupting_search(client: Firstlight, app_inputs: dict[str, str]) -> None:
    before = client.index_stats(APP)
    assert before.model.startswith("efficientnet-lite0") and before.indexed_count == len(app_inputs)
    _train_embedder(client)
    [version] = client.versions(APP, MODEL_ID).versions
    assert "oneshot_accuracy" in version.validation_metrics and "knn_accuracy" in version.validation_metrics

    probe = sorted(app_inputs)[0]
    probe_bytes = {i: d for i, _, d in datasets.animal_mnist(5, seed=3, classes=CLASSES)}[probe]
    resp = client.set_embedding_model(APP, MODEL_ID, "1")
    assert resp.changed and resp.inputs_to_reembed == len(app_inputs)
    assert resp.app.embedding_model == f"{MODEL_ID}@1"  # the app's model id, never the Triton name

    # During the switch every search answers, from whichever index is active, with results.
    seen_models, searches = set(), 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        stats = client.index_stats(APP)
        seen_models.add(stats.model)
        by_input = client.search_by_image(APP, input_id=probe, top_k=5).hits
        by_image = client.search_by_image(APP, image=probe_bytes, top_k=5).hits
        searches += 2
        assert by_input and by_image
        assert by_input[0].input_id == probe
        if stats.model == resp.app.embedding_model and not stats.switching_to:
            break
        assert stats.indexed_count == len(app_inputs)  # the old index stays whole until the flip
        time.sleep(0.1)
    else:
        pytest.fail(f"the switch did not complete: {client.index_stats(APP)}")
    assert searches >= 2

    after = client.index_stats(APP)
    assert after.model == f"{MODEL_ID}@1" and after.indexed_count == len(app_inputs)
    # Results come from the new model: its vectors have its dimension, and match the exported
    # module run in-process on the same pixels.
    vectors = client.search.GetVectors(search_pb2.GetVectorsRequest(app_id=APP, input_ids=sorted(app_inputs)), timeout=30)
    assert vectors.model == after.model and len(vectors.vectors) == len(app_inputs)
    assert {len(v.vector) for v in vectors.vectors} == {DIM}
    # Every input is searchable exactly once (no leftovers of the old index, no duplicates).
    hits = client.search_by_image(APP, input_id=probe, top_k=100).hits
    assert sorted(h.input_id for h in hits) == sorted(app_inputs)
    assert hits[0].input_id == probe and hits[0].score == pytest.approx(1.0, abs=1e-4)
    # A query image is embedded with the new model too: its own input comes first.
    assert client.search_by_image(APP, image=probe_bytes, top_k=1).hits[0].input_id == probe
    # A new upload is embedded with the app's model.
    extra = datasets.animal_mnist(1, seed=9, classes=["zebra"])[0]
    client.upload(APP, [UploadItem(extra[2], ["zebra"], id="late-zebra")])
    client.wait_indexed(APP, len(app_inputs) + 1, timeout=120)
    # Text search in a trained space goes through the app's labeled examples.
    text = client.search_by_text(APP, "zebra", top_k=3)
    assert text.hits and "app prototype" in text.interpreted_as[0].name
    # Switching to the same model again changes nothing.
    again = client.set_embedding_model(APP, MODEL_ID, "1")
    assert not again.changed and again.inputs_to_reembed == 0


def test_another_apps_embedder_is_out_of_reach(stack, client: Firstlight, app_inputs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Issue 14, item 1: with its own key, another app can neither embed with, describe, nor
    switch to this app's trained embedder, by Triton name or by model id."""
    _ensure_switched(client, app_inputs)
    other = "embswitch-other"
    client.create_app(other, exist_ok=True)
    _, key = client.create_api_key(other, "attacker")
    image = datasets.sample_photo("coffee")
    with Firstlight.from_addresses(stack.addresses, api_key=key, timeout_s=60) as attacker:
        embed = attacker.embedding
        assert embed is not None

        def code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
            try:
                call()
            except (FirstlightError, grpc.RpcError) as exc:
                return exc.code if isinstance(exc, FirstlightError) else exc.code()  # type: ignore[attr-defined]
            return grpc.StatusCode.OK

        triton_name = f"fl.{APP}.{MODEL_ID}"
        for ref in (triton_name, f"{triton_name}@1"):  # the raw Triton name: refused, whoever asks
            assert code(lambda: attacker.embed_images([image], model=ref)) == grpc.StatusCode.INVALID_ARGUMENT
            describe = embedding_pb2.DescribeEmbeddingModelRequest(model=ref)
            assert code(lambda: embed.DescribeEmbeddingModel(describe, timeout=30)) == grpc.StatusCode.INVALID_ARGUMENT
            assert code(lambda: attacker.set_embedding_model(other, ref)) == grpc.StatusCode.INVALID_ARGUMENT
            assert code(lambda: client.embed_images([image], model=ref, app_id=APP)) == grpc.StatusCode.INVALID_ARGUMENT
        # By model id, in the attacker's own app: not its model.
        assert code(lambda: attacker.embed_images([image], model=f"{MODEL_ID}@1")) == grpc.StatusCode.NOT_FOUND
        assert code(lambda: attacker.set_embedding_model(other, MODEL_ID, "1")) == grpc.StatusCode.NOT_FOUND
        # By model id, naming the other app: the interceptor stops it.
        assert code(lambda: attacker.embed_images([image], model=MODEL_ID, app_id=APP)) == grpc.StatusCode.PERMISSION_DENIED
        describe = embedding_pb2.DescribeEmbeddingModelRequest(model=MODEL_ID, app_id=APP)
        assert code(lambda: embed.DescribeEmbeddingModel(describe, timeout=30)) == grpc.StatusCode.PERMISSION_DENIED
        assert attacker.ingestion.GetApp(ingestion_pb2.GetAppRequest(id=other), timeout=30).embedding_model == ""
    # The owner embeds with its model by model id.
    assert {len(v) for v in client.embed_images([image], model=f"{MODEL_ID}@1", app_id=APP)} == {DIM}
    # A made-up model is NOT_FOUND from the service's own registry (the model repository) before
    # Triton is asked anything (tests/unit/test_embedding_models.py checks no load is attempted).
    for made_up in ("general", "nothing", "nothing@3", f"{MODEL_ID}@9"):
        assert code(lambda: client.embed_images([image], model=made_up, app_id=APP)) == grpc.StatusCode.NOT_FOUND


def test_a_head_trained_after_the_switch_predicts_with_the_apps_embedder(client: Firstlight, app_inputs: dict[str, str]) -> None:
    """A transfer head trained on a switched app's vectors (16-d) must be fed that embedder's
    vectors by Predict, not the backbone's 1280-d ones."""
    _ensure_switched(client, app_inputs)
    client.create_model(APP, "head", CLASSES, exist_ok=True)
    job = client.train(APP, "head", "d")
    assert job.state == training_pb2.JOB_STATE_SUCCEEDED, job.error
    animals = datasets.animal_mnist(5, seed=3, classes=CLASSES)
    # Inference learns of the version from model.version.ready: wait until it serves it.
    deadline = time.monotonic() + 60
    while True:
        try:
            predictions = client.predict([data for _, _, data in animals], model="head", app_id=APP, top_k=1)
            break
        except FirstlightError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    right = sum(p[0][0] == name for p, (_, name, _) in zip(predictions, animals))
    # The 16-d embedder is trained in this run (its vectors, hence how well a head fits them,
    # vary with the machine's numerics); fed the wrong vectors the head would be at chance (5/20)
    # or refuse the shape. 12/20 is far above chance (P(>=12 | p=0.25) < 0.001) and below what
    # the head reached on every run seen (15-20).
    assert right >= 12, f"{right}/20 of the head's own inputs predicted as labeled"
    # Evaluation reads the same embedder's vectors from the index.
    evaluation = client.evaluate(APP, "head", job.version, split="validation")
    assert evaluation.count == 4 and 0.0 <= evaluation.metrics["accuracy"] <= 1.0
    # The version records the embedding model it was trained on (what Predict embeds with).
    [*_, head_version] = client.versions(APP, "head").versions
    assert head_version.version == job.version and head_version.embedding_model == f"{MODEL_ID}@1"
