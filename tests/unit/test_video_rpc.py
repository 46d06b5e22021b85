"""The video RPCs over a real in-process gRPC server (no stack): UploadVideo spooled from chunks
into the real ingestion core, AnnotateVideoSegment, and PredictVideo streaming frame results and
segments from a stand-in predictor; errors arrive as their status codes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.inference.servicer import InferenceServicer
from firstlight.ingestion.core import Ingestion
from firstlight.ingestion.servicer import IngestionServicer
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.v1 import inference_pb2, inference_pb2_grpc, ingestion_pb2_grpc, video_pb2
from firstlight.video import synth


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    synth.encode(path, synth.default_shots(1.0), kind="mp4-h264")
    return path


def chunks(path: Path, header, size: int = 20_000):  # type: ignore[no-untyped-def]
    yield header
    data = path.read_bytes()
    for i in range(0, len(data), size):
        yield type(header)(chunk=data[i : i + size])


class StandInPredictor:
    def predict_regions(self, images, **kw):  # type: ignore[no-untyped-def]
        return None, [[("thing", 0.9)] for _ in images], [[] for _ in images]

    def workflow(self, images, app_id, steps):  # type: ignore[no-untyped-def]
        # step 0 sees a "thing" in every frame; step 1 (gated on a concept never seen) never runs
        assert [s.model_id for s in steps] == ["general", "pets"] and steps[1].gate_concepts == ("dog",)
        return [[(True, [("thing", 0.8)]), (False, [])] for _ in images]


def serve(servicer, add) -> tuple[grpc.aio.Server, int]:  # type: ignore[no-untyped-def]
    server = grpc.aio.server()
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    return server, port


def test_upload_annotate_and_predict_over_grpc(tmp_path: Path, clip: Path) -> None:
    store = MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}"))
    core = Ingestion(store, LocalBlobStore(tmp_path / "blobs"), ImageLimits())
    core.create_app("app")

    async def main() -> None:
        servicer = IngestionServicer(core)
        servicer._labeler = lambda: "alice (k1)"  # type: ignore[method-assign]  # who the auth interceptor would name
        ing, ing_port = serve(servicer, ingestion_pb2_grpc.add_IngestionServiceServicer_to_server)
        inf, inf_port = serve(InferenceServicer(StandInPredictor(), threads=2), inference_pb2_grpc.add_InferenceServiceServicer_to_server)
        await ing.start()
        await inf.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ing_port}") as ch:
                stub = ingestion_pb2_grpc.IngestionServiceStub(ch)
                header = video_pb2.UploadVideoRequest(header=video_pb2.VideoHeader(app_id="app", video_id="c1"))
                r = await stub.UploadVideo(chunks(clip, header))
                assert r.frames_added == r.frames_kept == 4 and r.info.codec == "h264" and r.blob_uri == "video:app/c1"
                seg = await stub.AnnotateVideoSegment(
                    video_pb2.AnnotateVideoSegmentRequest(app_id="app", video_id="c1", start_s=1.0, end_s=2.0, add_concepts=["x"])
                )
                assert list(seg.input_ids) == ["c1.t0000001000", "c1.t0000002000"]
                assert [(c, by) for c, by, _ in core.get_input("app", "c1.t0000002000").label_records] == [("x", "alice (k1)")]
                junk = video_pb2.UploadVideoRequest(header=video_pb2.VideoHeader(app_id="app", video_id="junk"))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.UploadVideo(iter([junk, video_pb2.UploadVideoRequest(chunk=b"not a video" * 50)]))
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a video" in err.value.details()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.UploadVideo(iter([video_pb2.UploadVideoRequest(chunk=b"x")]))
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "header" in err.value.details()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{inf_port}") as ch:
                stub = inference_pb2_grpc.InferenceServiceStub(ch)
                header = inference_pb2.PredictVideoRequest(header=inference_pb2.PredictVideoHeader(model_id="general"))
                kinds, segments = [], []
                async for item in stub.PredictVideo(chunks(clip, header)):
                    kinds.append(item.WhichOneof("item"))
                    if item.segment.concept:
                        segments.append((item.segment.concept, item.segment.start_s, item.segment.end_s))
                assert kinds.count("frame") == 4 and kinds[-1] == "end"
                assert segments == [("thing", 0.0, 3.0)]
                # A workflow on every sampled frame: frames carry each step's output, segments their step.
                steps = [inference_pb2.WorkflowStep(model_id="general"), inference_pb2.WorkflowStep(model_id="pets", gate_concepts=["dog"], gate_step=0)]
                header = inference_pb2.PredictVideoRequest(header=inference_pb2.PredictVideoHeader(app_id="app", workflow=steps))
                items = [item async for item in stub.PredictVideo(chunks(clip, header))]
                frames = [i.frame for i in items if i.WhichOneof("item") == "frame"]
                assert len(frames) == 4 and all(list(f.workflow.ran) == [True, False] and f.workflow.steps[0].concepts[0].name == "thing" for f in frames)
                segs = [(i.segment.step, i.segment.concept, i.segment.start_s, i.segment.end_s) for i in items if i.WhichOneof("item") == "segment"]
                assert segs == [(0, "thing", 0.0, 3.0)]
                bad = inference_pb2.PredictVideoRequest(header=inference_pb2.PredictVideoHeader(model_id="general", workflow=steps))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    _ = [i async for i in stub.PredictVideo(chunks(clip, bad))]
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "workflow" in err.value.details()
        finally:
            await ing.stop(None)
            await inf.stop(None)

    asyncio.run(main())
