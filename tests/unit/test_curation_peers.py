"""curation.peers: the core's synchronous calls reach the asyncio clients on the server's loop,
in the core's types; training's NOT_FOUND becomes "unknown" where the core expects it."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from firstlight.curation import peers
from firstlight.errors import NotFound
from firstlight.v1 import training_pb2


class FakeTrainingClient:
    def __init__(self) -> None:
        self.score_calls: list[list[str]] = []

    async def score_inputs(self, req, key=None):  # type: ignore[no-untyped-def]
        self.score_calls.append(list(req.input_ids))
        ids = [i for i in req.input_ids if i != "unindexed"]
        proba = [p for k in range(len(ids)) for p in (0.25, 0.75)]
        return training_pb2.ScoreInputsResponse(version="3", concepts=["a", "b"], input_ids=ids, probabilities=proba)

    async def list_model_versions(self, req, key=None):  # type: ignore[no-untyped-def]
        if req.model_id != "m":
            raise NotFound(f"model {req.model_id!r} does not exist")
        return training_pb2.ListModelVersionsResponse(
            model=training_pb2.Model(app_id=req.app_id, id="m", template="transfer_classifier", concepts=["a", "b"], serving_version="3"),
            versions=[training_pb2.ModelVersion(version="3", dataset_id="d", dataset_version="h", validation_metrics={"accuracy": 0.9})],
        )

    async def list_dataset_rows(self, req, key=None):  # type: ignore[no-untyped-def]
        raise NotFound("no such dataset version")

    async def evaluate_model_version(self, req, key=None):  # type: ignore[no-untyped-def]
        assert req.stored_only and req.split == 3
        raise NotFound("no stored evaluation")


@pytest.fixture
def bridge():  # type: ignore[no-untyped-def]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    b = peers.Bridge("127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:1")
    loop.call_soon_threadsafe(b.bind, loop)
    assert b._ready.wait(5)
    b.training = FakeTrainingClient()  # type: ignore[assignment]
    yield b, loop
    asyncio.run_coroutine_threadsafe(b.close(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_scores_are_paged_and_stacked_in_order(bridge, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    b, _ = bridge
    monkeypatch.setattr(peers, "SCORES_PER_CALL", 2)
    s = peers.GrpcTraining(b).scores("app", "m", "", ["x", "unindexed", "y", "z"])
    assert b.training.score_calls == [["x", "unindexed"], ["y", "z"]]
    assert s.version == "3" and s.input_ids == ["x", "y", "z"] and s.proba.shape == (3, 2)
    np.testing.assert_allclose(s.proba.sum(axis=1), 1.0)
    assert s.predict() == ["b", "b", "b"]


def test_training_answers_in_the_cores_types(bridge) -> None:  # type: ignore[no-untyped-def]
    b, _ = bridge
    t = peers.GrpcTraining(b)
    assert t.model("app", "m").serving_version == "3"
    v = t.version("app", "m", "3")
    assert v is not None and (v.dataset_id, v.dataset_version, v.validation_metrics) == ("d", "h", {"accuracy": 0.9})
    assert t.version("app", "m", "7") is None
    with pytest.raises(NotFound):
        t.model("app", "other")
    assert t.dataset_rows("app", "d", "h") == []
    assert t.stored_test_metrics("app", "m", "3") == {}


def test_calls_from_the_event_loop_thread_are_refused(bridge) -> None:  # type: ignore[no-untyped-def]
    b, loop = bridge

    async def on_loop() -> None:
        peers.GrpcTraining(b).model("app", "m")

    with pytest.raises(RuntimeError, match="event loop thread"):
        asyncio.run_coroutine_threadsafe(on_loop(), loop).result(5)


class FakeIngestionClient:
    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    async def list_inputs(self, req, key=None):  # type: ignore[no-untyped-def]
        from firstlight.v1 import common_pb2, ingestion_pb2

        self.asked.append(list(req.input_ids))
        found = [common_pb2.Input(id=i, metadata={"camera": i[-1]}) for i in req.input_ids if i != "gone"]
        return ingestion_pb2.ListInputsResponse(inputs=found)


def test_metadata_of_lists_inputs_by_id_in_pages(bridge, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    b, _ = bridge
    b.ingestion = FakeIngestionClient()
    monkeypatch.setattr(peers, "PAGE", 2)
    got = peers.GrpcPlatform(b).metadata_of("app", ["i1", "gone", "i3"])
    assert got == {"i1": {"camera": "1"}, "i3": {"camera": "3"}}  # an input deleted meanwhile is left out
    assert b.ingestion.asked == [["i1", "gone"], ["i3"]]
