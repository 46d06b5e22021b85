"""InferenceService.PredictVideo (transport only): the upload is spooled, then per-frame
predictions and time segments are streamed back while the video decodes (the decode and the
model calls run in a worker thread; a bounded queue paces them to the client). Mixed into
:class:`firstlight.inference.servicer.InferenceServicer` (it provides ``predictor``)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from firstlight.config import VideoLimits
from firstlight.errors import InvalidArgument
from firstlight.inference.steps import step_from_proto
from firstlight.runtime.status import map_errors
from firstlight.v1 import common_pb2, inference_pb2, video_pb2
from firstlight.video.decode import open_video
from firstlight.video.predict import FrameResult, VideoDone, predict_video
from firstlight.video.segments import Segment
from firstlight.video.spool import iterate_in_thread, spool_stream


def _jpeg(image) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def workflow_output(outs: Sequence) -> inference_pb2.WorkflowOutput:
    """One frame's workflow result (per step: ran, concepts), as PredictWorkflow returns it."""
    return inference_pb2.WorkflowOutput(
        steps=[inference_pb2.Prediction(concepts=[common_pb2.ScoredConcept(name=n, score=sc) for n, sc in ranked]) for _, ranked in outs],
        ran=[ran for ran, _ in outs],
    )


@map_errors
class VideoPredictions:
    predictor: object
    #: Where uploads are spooled (None: the system's temp dir).
    spool_dir: Path | None = None

    async def PredictVideo(self, request_iterator: AsyncIterator, context):  # type: ignore[no-untyped-def]
        limits = VideoLimits()
        header, spool = await spool_stream(request_iterator, limits.max_video_bytes, "PredictVideo", directory=self.spool_dir)
        threshold = header.segment_threshold or 0.5
        if not 0 < threshold <= 1:
            spool.close()
            raise InvalidArgument(f"segment_threshold {header.segment_threshold} is not in (0, 1]")
        steps = [step_from_proto(s) for s in header.workflow]
        if steps and (header.model_id or header.model_version or header.top_k or header.concepts or header.min_score):
            spool.close()
            raise InvalidArgument("a workflow names its models in its steps: leave model_id, model_version, top_k, concepts and min_score empty")
        predictor = self.predictor

        def score_workflow(images: Sequence) -> list:
            # The same core call as PredictWorkflow; segments are per (step, concept).
            per_image = predictor.workflow([_jpeg(im) for im in images], header.app_id, steps)  # type: ignore[attr-defined]
            return [({(n, c): sc for n, (_, ranked) in enumerate(outs) for c, sc in ranked}, workflow_output(outs)) for outs in per_image]

        def score(images: Sequence) -> list:
            # The same core call as Predict (its errors are already domain errors).
            _, ranked, found = predictor.predict_regions(  # type: ignore[attr-defined]
                [_jpeg(im) for im in images], app_id=header.app_id, model_id=header.model_id, version=header.model_version,
                top_k=header.top_k, concepts=list(header.concepts), min_score=header.min_score,
            )  # fmt: skip
            return [
                (
                    dict(r),
                    inference_pb2.Prediction(
                        concepts=[common_pb2.ScoredConcept(name=n, score=s) for n, s in r],
                        regions=[
                            common_pb2.Region(concept=g.concept, score=g.score, box=common_pb2.BoundingBox(x0=g.box[0], y0=g.box[1], x1=g.box[2], y1=g.box[3]))
                            for g in regs
                        ],
                    ),
                )
                for r, regs in zip(ranked, found)
            ]

        def results():  # type: ignore[no-untyped-def]
            with open_video(spool.path, limits) as reader:
                info = reader.info
                for item in predict_video(reader, limits, score_workflow if steps else score, threshold=threshold):
                    if isinstance(item, VideoDone):
                        yield item, info
                    else:
                        yield item, None

        try:
            async for item, info in iterate_in_thread(results):
                if isinstance(item, FrameResult):
                    frame = inference_pb2.FramePrediction(t=item.t, keep_reason=item.reason)
                    (frame.workflow if steps else frame.prediction).CopyFrom(item.detail)
                    yield inference_pb2.PredictVideoResponse(frame=frame)
                elif isinstance(item, Segment):
                    step, concept = item.concept if steps else (0, item.concept)
                    yield inference_pb2.PredictVideoResponse(
                        segment=video_pb2.TimeSegment(
                            concept=concept,
                            step=step,
                            start_s=item.start_s,
                            end_s=item.end_s,
                            max_score=item.max_score,
                            mean_score=item.mean_score,
                            frames=item.frames,
                        )
                    )
                else:
                    out = item.outcome
                    yield inference_pb2.PredictVideoResponse(
                        end=video_pb2.VideoDecodeEnd(
                            info=video_pb2.VideoInfo(
                                container=info.container,
                                codec=info.codec,
                                width=info.width,
                                height=info.height,
                                duration_s=info.duration_s or 0.0,
                                fps=info.fps or 0.0,
                                bytes=info.bytes,
                            ),
                            frames_decoded=out.frames,
                            partial=out.partial,
                            error=out.error,
                            last_good_s=out.last_good_s or 0.0,
                        )
                    )
        finally:
            spool.close()
