"""The InferenceService runs Predict calls on its own thread pool (InferenceSettings.predict_threads):
asyncio's default pool (cores + 4 threads) held concurrent requests back from Triton's batcher."""

import asyncio
import threading

import grpc
import pytest

from firstlight.config import InferenceSettings
from firstlight.inference.core import Resolved
from firstlight.inference.servicer import InferenceServicer
from firstlight.v1 import inference_pb2


class BarrierPredictor:
    """Every call waits until ``parties`` calls are running at the same time."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)

    def predict_regions(self, images, **kwargs):  # type: ignore[no-untyped-def]
        self.barrier.wait()  # raises BrokenBarrierError if fewer calls can run at once
        return Resolved("general", "1", ["cat"]), [[("cat", 0.9)] for _ in images], [[] for _ in images]


class Aborted(Exception):
    pass


class FakeContext:
    async def abort(self, code, message):  # type: ignore[no-untyped-def]
        raise Aborted(code)


def _predict_many(servicer: InferenceServicer, n: int) -> list:
    async def go() -> list:
        request = inference_pb2.PredictRequest(model_id="general", images=[b"x"])
        return await asyncio.gather(*(servicer.Predict(request, FakeContext()) for _ in range(n)))

    return asyncio.run(go())


def test_sixteen_concurrent_predicts_run_at_once() -> None:
    servicer = InferenceServicer(BarrierPredictor(16), threads=16)  # type: ignore[arg-type]
    try:
        responses = _predict_many(servicer, 16)
    finally:
        servicer.close()
    assert len(responses) == 16
    assert all(r.predictions[0].concepts[0].name == "cat" for r in responses)


def test_pool_size_bounds_concurrency() -> None:
    # The barrier needs 4 at once; with 3 threads it can never fill, so the calls fail
    # (the test proves the pool, not asyncio's default one, runs the calls).
    servicer = InferenceServicer(BarrierPredictor(4), threads=3)  # type: ignore[arg-type]
    servicer.predictor.barrier._timeout = 0.5  # type: ignore[attr-defined]
    try:
        with pytest.raises(Aborted) as err:
            _predict_many(servicer, 4)
        assert err.value.args[0] == grpc.StatusCode.INTERNAL  # BrokenBarrierError: unmapped
    finally:
        servicer.close()


def test_predict_threads_setting_default() -> None:
    settings = InferenceSettings(triton_url="127.0.0.1:1", kafka_bootstrap="127.0.0.1:2")
    assert settings.predict_threads >= 16
