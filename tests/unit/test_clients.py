"""firstlight.clients without servers: a call's deadline, retries only for side-effect-free RPCs
on UNAVAILABLE, every failure mapped to the domain error with its code, message and the rate
limit's retry-after; and the gateway's JSON (int64 as numbers)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from firstlight import errors
from firstlight.clients.policy import IDEMPOTENT_RPCS, RetryPolicy, deadline_for
from firstlight.clients.services import IngestionClient
from firstlight.gateway.api import to_json
from firstlight.v1 import common_pb2, curation_pb2, inference_pb2, inference_pb2_grpc, ingestion_pb2, ingestion_pb2_grpc, video_pb2

FAST = RetryPolicy(attempts=4, initial_s=0.0, max_s=0.0, budget_s=5.0)


def rpc_error(code: grpc.StatusCode, details: str, trailing: tuple = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


class FakeStub:
    def __init__(self, failures: list[grpc.aio.AioRpcError], answer: object) -> None:
        self.failures = list(failures)
        self.answer = answer
        self.calls: list[dict] = []

    def __getattr__(self, rpc: str):  # type: ignore[no-untyped-def]
        async def call(request, *, timeout, metadata):  # type: ignore[no-untyped-def]
            self.calls.append({"rpc": rpc, "timeout": timeout, "metadata": metadata})
            if self.failures:
                raise self.failures.pop(0)
            return self.answer

        return call


def client(stub: FakeStub) -> IngestionClient:
    c = IngestionClient.__new__(IngestionClient)
    c._stub, c._policy, c._default_key = stub, FAST, "internal"
    return c


def test_side_effect_free_calls_retry_on_unavailable_with_the_callers_key_and_a_deadline() -> None:
    stub = FakeStub([rpc_error(grpc.StatusCode.UNAVAILABLE, "restarting")] * 2, common_pb2.App(id="a"))
    app = asyncio.run(client(stub).get_app(ingestion_pb2.GetAppRequest(id="a"), key="flk_user"))
    assert app.id == "a" and len(stub.calls) == 3 and "GetApp" in IDEMPOTENT_RPCS
    assert all(c["metadata"] == (("authorization", "Bearer flk_user"),) and c["timeout"] == deadline_for("GetApp") for c in stub.calls)


def test_calls_with_side_effects_are_sent_once() -> None:
    stub = FakeStub([rpc_error(grpc.StatusCode.UNAVAILABLE, "down")], None)
    with pytest.raises(errors.Unavailable) as exc:
        asyncio.run(client(stub).post_annotations(ingestion_pb2.PostAnnotationsRequest(app_id="a")))
    assert len(stub.calls) == 1 and exc.value.code == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert stub.calls[0]["metadata"] == (("authorization", "Bearer internal"),)  # the default key


def test_failures_become_domain_errors_with_retry_after() -> None:
    limited = rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit; retry in 250 ms", (("retry-after-ms", "250"),))
    with pytest.raises(errors.ResourceExhausted) as exc:
        asyncio.run(client(FakeStub([limited], None)).get_app(ingestion_pb2.GetAppRequest(id="a")))
    assert exc.value.retry_after_s == 0.25 and str(exc.value) == "rate limit; retry in 250 ms"  # type: ignore[attr-defined]
    with pytest.raises(errors.NotFound):
        asyncio.run(client(FakeStub([rpc_error(grpc.StatusCode.NOT_FOUND, "no app")], None)).get_app(ingestion_pb2.GetAppRequest(id="a")))


def test_json_has_int64_as_numbers_everywhere() -> None:
    out = to_json(ingestion_pb2.ListInputsResponse(total_size=12, inputs=[common_pb2.Input(id="x", label_revision=3)], next_page_token="t"))
    assert out["total_size"] == 12 and out["inputs"][0]["label_revision"] == 3 and out["inputs"][0]["split"] == "SPLIT_UNSPECIFIED"
    stats = to_json(curation_pb2.ListLabelingQueueResponse(stats=curation_pb2.QueueStats(screened=2**40)))["stats"]
    assert stats["screened"] == 2**40 and stats["queued"] == 0


class _VideoServer(ingestion_pb2_grpc.IngestionServiceServicer, inference_pb2_grpc.InferenceServiceServicer):
    async def UploadVideo(self, request_iterator, context):  # type: ignore[no-untyped-def]
        n = 0
        async for r in request_iterator:
            n += len(r.chunk)
        return video_pb2.UploadVideoResponse(video_id="v", frames_decoded=n)

    async def PredictVideo(self, request_iterator, context):  # type: ignore[no-untyped-def]
        data = b"".join([r.chunk async for r in request_iterator])
        yield inference_pb2.PredictVideoResponse(frame=inference_pb2.FramePrediction(t=0.0))
        if data == b"bad":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a video")
        yield inference_pb2.PredictVideoResponse(end=video_pb2.VideoDecodeEnd(frames_decoded=len(data)))


def test_client_streams_take_async_requests_and_raise_the_streams_own_error() -> None:
    """A real in-process server: an async request stream goes through; one that raises (the
    gateway's body limit) surfaces as that error, not as grpc's cancellation; PredictVideo's
    results stream back and a status mid-stream becomes the domain error."""
    from firstlight.clients.services import InferenceClient

    async def run() -> None:
        server = grpc.aio.server()
        ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(_VideoServer(), server)
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(_VideoServer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                ing, inf = IngestionClient(ch, FAST), InferenceClient(ch, FAST)

                async def parts(n: int, fail: bool = False):  # type: ignore[no-untyped-def]
                    yield video_pb2.UploadVideoRequest(header=video_pb2.VideoHeader(app_id="a", video_id="v"))
                    for _ in range(n):
                        yield video_pb2.UploadVideoRequest(chunk=b"x" * 10)
                    if fail:
                        raise errors.ResourceExhausted("over the video limit")

                assert (await ing.upload_video(parts(3))).frames_decoded == 30
                with pytest.raises(errors.ResourceExhausted, match="over the video limit"):
                    await ing.upload_video(parts(3, fail=True))

                def pv(data: bytes):  # type: ignore[no-untyped-def]
                    return [inference_pb2.PredictVideoRequest(header=inference_pb2.PredictVideoHeader()), inference_pb2.PredictVideoRequest(chunk=data)]

                got = [r.WhichOneof("item") async for r in inf.predict_video(pv(b"12345"))]
                assert got == ["frame", "end"]
                seen = []
                with pytest.raises(errors.InvalidArgument, match="not a video"):
                    async for r in inf.predict_video(pv(b"bad")):
                        seen.append(r.WhichOneof("item"))
                assert seen == ["frame"]
        finally:
            await server.stop(0)

    asyncio.run(run())
