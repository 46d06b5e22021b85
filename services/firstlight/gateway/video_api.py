"""``/v1`` video routes: upload a video, label a time segment, predict on a video with results
streamed back (NDJSON, or server-sent events when asked), and a stored video's summary.

An upload is read as it arrives: the multipart body is parsed incrementally and the file part is
forwarded to the service in 1 MiB chunks while the client is still sending, so the gateway never
holds the file (nor a spooled copy of it). Form fields go before the ``file`` part (or in the
query string): the service needs them in the stream's first message."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from firstlight import errors
from firstlight.clients import Clients
from firstlight.clients.errors import code_of
from firstlight.domain import validation
from firstlight.domain.frames import parse_frame_input_id, video_id
from firstlight.gateway.api import Caller, caller, clients, media, to_json
from firstlight.gateway.errors import error_body, http_status
from firstlight.gateway.media import Media
from firstlight.v1 import inference_pb2, ingestion_pb2, video_pb2

router = APIRouter(prefix="/v1")

#: Bytes per message to the service (it takes at most 4 MiB).
CHUNK_BYTES = 1 << 20
#: A text field of the form (concepts, metadata JSON) is small.
MAX_FIELD_BYTES = 64 * 1024
#: Multipart framing and text fields on top of the video's own byte limit.
FORM_SLACK_BYTES = 1 << 20
_UPLOAD_PATH = re.compile(r"/v1/apps/[^/]+/(videos|predict/video|videos/uploads/[^/]+)")


def is_video_upload(path: str) -> bool:
    """Routes whose body is a video: the gateway's body limit is the video limit there."""
    return _UPLOAD_PATH.fullmatch(path) is not None


# -- the multipart body, as it arrives -------------------------------------------------------------
async def _multipart_events(request: Request) -> AsyncIterator[tuple[str, object]]:
    """("begin", headers) / ("data", bytes) / ("end", None) per part, as the body streams in."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise errors.InvalidArgument("send the video as multipart/form-data with a `file` part (curl -F file=@clip.mp4)")
    out: list[tuple[str, object]] = []
    cur: dict = {"field": b"", "value": b"", "headers": {}}

    def header_end() -> None:
        cur["headers"][bytes(cur["field"]).lower()] = bytes(cur["value"])
        cur["field"], cur["value"] = b"", b""

    def headers_done() -> None:
        out.append(("begin", cur["headers"]))
        cur["headers"] = {}

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": lambda d, s, e: cur.__setitem__("field", cur["field"] + d[s:e]),
            "on_header_value": lambda d, s, e: cur.__setitem__("value", cur["value"] + d[s:e]),
            "on_header_end": header_end,
            "on_headers_finished": headers_done,
            "on_part_data": lambda d, s, e: out.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: out.append(("end", None)),
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            for ev in out:
                yield ev
            out.clear()
        parser.finalize()
    except MultipartParseError as exc:
        raise errors.InvalidArgument(f"malformed multipart body: {exc}") from None
    for ev in out:
        yield ev


@dataclass
class VideoForm:
    fields: dict[str, str]
    filename: str
    chunks: AsyncIterator[bytes]


async def read_video_form(request: Request, max_bytes: int) -> VideoForm:
    """The text fields before the ``file`` part, then (``chunks``) the file's bytes as they come,
    in chunks of :data:`CHUNK_BYTES`; over ``max_bytes`` raises RESOURCE_EXHAUSTED, a field or
    file after the file INVALID_ARGUMENT (one video per request, nothing silently dropped)."""
    events = _multipart_events(request)
    fields: dict[str, str] = dict(request.query_params)
    name, value = "", bytearray()
    async for kind, val in events:
        if kind == "begin":
            _, opts = parse_options_header(val.get(b"content-disposition", b""))  # type: ignore[union-attr]
            name = opts.get(b"name", b"").decode("utf-8", "replace")
            if b"filename" in opts or name == "file":
                if name != "file":
                    raise errors.InvalidArgument(f"file part {name!r}: the video goes in the part named `file`")
                filename = opts.get(b"filename", b"").decode("utf-8", "replace")
                return VideoForm(fields, filename, _file_chunks(events, max_bytes))
            value = bytearray()
        elif kind == "data":
            value += val  # type: ignore[operator]
            if len(value) > MAX_FIELD_BYTES:
                raise errors.InvalidArgument(f"form field {name!r} is over {MAX_FIELD_BYTES:,} bytes")
        else:
            try:
                fields[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise errors.InvalidArgument(f"form field {name!r} is not UTF-8") from None
    raise errors.InvalidArgument("no `file` part in the form")


async def _file_chunks(events: AsyncIterator[tuple[str, object]], max_bytes: int) -> AsyncIterator[bytes]:
    buf, total, ended = bytearray(), 0, False
    async for kind, val in events:
        if kind == "data":
            total += len(val)  # type: ignore[arg-type]
            if total > max_bytes:
                raise errors.ResourceExhausted(f"the video is over the limit of {max_bytes:,} bytes (FIRSTLIGHT_MAX_VIDEO_BYTES)")
            buf += val  # type: ignore[operator]
            while len(buf) >= CHUNK_BYTES:
                yield bytes(buf[:CHUNK_BYTES])
                del buf[:CHUNK_BYTES]
        elif kind == "end":
            ended = True
            break
    if not ended:
        raise errors.InvalidArgument("the body ended inside the `file` part (upload cut short)")
    async for kind, _ in events:
        if kind == "begin":
            raise errors.InvalidArgument("a part after the `file` part: send the fields before the file (or as query parameters), one video per request")
    if buf:
        yield bytes(buf)


def _csv(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def _number(fields: dict[str, str], name: str, default: float, kind: type = float) -> float:
    raw = fields.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise errors.InvalidArgument(f"form field {name!r} is not a number: {raw[:40]!r}") from None


def _video_id_from(filename: str) -> str:
    """A video id from the file name (``My clip (1).mp4`` -> ``My-clip-1``), as the SDK makes it."""
    stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:100] or "video"


def _max_bytes(request: Request) -> int:
    return request.app.state.settings.max_video_bytes


VIDEO_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "video_id": {"type": "string", "description": "default: from the file name; the same id again adds only missing frames"},
                        "concepts": {"type": "string", "description": "comma-separated concepts for every frame"},
                        "metadata": {"type": "string", "description": "a JSON object of strings copied to every frame"},
                        "file": {"type": "string", "format": "binary", "description": "MP4/MOV, WebM/Matroska or AVI; the last part"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/apps/{app_id}/videos",
    tags=["videos"],
    status_code=201,
    summary="Upload a video (multipart, streamed): sampled frames become inputs `<video id>.t<ms>`; returns the summary (frames kept, partial + error)",
    description=(
        "Fields before the `file` part (or as query parameters). 400: not a video, corrupt, no video stream, zero frames, unsupported codec. "
        "413: over the byte, duration or resolution limits. A file that breaks part-way keeps the frames before the break: "
        "201 with `partial`, `error` and `last_good_s`."
    ),
    openapi_extra=VIDEO_FORM,
)
async def upload_video(app_id: str, request: Request, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    form = await read_video_form(request, _max_bytes(request))
    f = form.fields
    try:
        metadata = json.loads(f["metadata"]) if f.get("metadata", "").strip() else {}
    except json.JSONDecodeError as exc:
        raise errors.InvalidArgument(f"form field 'metadata' is not JSON: {exc}") from None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise errors.InvalidArgument('form field \'metadata\' must be a JSON object of strings, e.g. {"camera": "door"}')
    header = video_pb2.VideoHeader(
        app_id=app_id, video_id=f.get("video_id", "").strip() or _video_id_from(form.filename), concepts=_csv(f.get("concepts", "")), metadata=metadata
    )

    async def requests() -> AsyncIterator[video_pb2.UploadVideoRequest]:
        yield video_pb2.UploadVideoRequest(header=header)
        async for chunk in form.chunks:
            yield video_pb2.UploadVideoRequest(chunk=chunk)

    return to_json(await cl.ingestion.upload_video(requests(), key=c.key))


# -- resumable uploads (tus-like) ------------------------------------------------------------------
def _header_int(request: Request, name: str) -> int:
    raw = request.headers.get(name, "").strip()
    n = validation.whole_number(raw)
    if n is None:
        raise errors.InvalidArgument(f"header {name} is required: a whole number of bytes (got {raw[:30]!r})")
    return n


async def _body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The raw body in chunks of :data:`CHUNK_BYTES` as it arrives."""
    buf = bytearray()
    async for data in request.stream():
        buf += data
        while len(buf) >= CHUNK_BYTES:
            yield bytes(buf[:CHUNK_BYTES])
            del buf[:CHUNK_BYTES]
    if buf:
        yield bytes(buf)


@router.patch(
    "/apps/{app_id}/videos/uploads/{upload_id}",
    tags=["videos"],
    summary="Resumable upload (tus-like): append the body's bytes at `Upload-Offset`; the video is processed once `Upload-Length` bytes are in",
    description=(
        "`upload_id`: chosen by the client, 8-64 of [A-Za-z0-9_-]. Headers `Upload-Offset` (must equal the bytes held: "
        "0 to begin, else HEAD says) and `Upload-Length` (the file's size, the same every time); body: the bytes from "
        "that offset (`application/offset+octet-stream` or any type). Query: `video_id`, `concepts`, `metadata` as for the "
        "multipart upload. 200 `{pending, bytes_held}` while bytes are missing; 201 with the summary once processed; "
        "409 when the offset is not the bytes held (the message names the offset to resume from) or another request "
        "is writing the upload; 400/413 as the multipart upload."
    ),
    responses={200: {"description": "bytes held, not complete yet"}, 201: {"description": "complete and processed"}},
)
async def upload_video_part(app_id: str, upload_id: str, request: Request, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> Response:
    q = request.query_params
    try:
        metadata = json.loads(q["metadata"]) if q.get("metadata", "").strip() else {}
    except json.JSONDecodeError as exc:
        raise errors.InvalidArgument(f"query parameter 'metadata' is not JSON: {exc}") from None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise errors.InvalidArgument("query parameter 'metadata' must be a JSON object of strings")
    header = video_pb2.VideoHeader(
        app_id=app_id, video_id=q.get("video_id", "").strip(), concepts=_csv(q.get("concepts", "")), metadata=metadata,
        upload_id=upload_id, offset=_header_int(request, "Upload-Offset"), total_bytes=_header_int(request, "Upload-Length"),
    )  # fmt: skip
    if not header.video_id:
        raise errors.InvalidArgument("query parameter video_id is required for a resumable upload")

    async def requests() -> AsyncIterator[video_pb2.UploadVideoRequest]:
        yield video_pb2.UploadVideoRequest(header=header)
        async for chunk in _body_chunks(request):
            yield video_pb2.UploadVideoRequest(chunk=chunk)

    r = await cl.ingestion.upload_video(requests(), key=c.key)
    body = {"pending": True, "bytes_held": r.bytes_held} if r.pending else to_json(r)
    return JSONResponse(body, status_code=200 if r.pending else 201, headers={"Upload-Offset": str(r.bytes_held)})


_UPLOAD_STATUS = "Where a resumable upload stands: `Upload-Offset` (bytes held) and `Upload-Length` headers, and as JSON; 404 once processed"


@router.head("/apps/{app_id}/videos/uploads/{upload_id}", tags=["videos"], summary=_UPLOAD_STATUS, operation_id="head_video_upload")
@router.get("/apps/{app_id}/videos/uploads/{upload_id}", tags=["videos"], summary=_UPLOAD_STATUS, operation_id="get_video_upload")
async def get_video_upload(app_id: str, upload_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> Response:
    st = await cl.ingestion.get_video_upload(video_pb2.GetVideoUploadRequest(app_id=app_id, upload_id=upload_id), key=c.key)
    headers = {"Upload-Offset": str(st.bytes_held), "Upload-Length": str(st.total_bytes), "Cache-Control": "no-store"}
    return JSONResponse(to_json(st), headers=headers)


class SegmentBody(BaseModel):
    start_s: float = Field(..., ge=0, description="seconds from the start of the video")
    end_s: float = Field(..., ge=0)
    add_concepts: list[str] = []
    remove_concepts: list[str] = []


@router.post(
    "/apps/{app_id}/videos/{video}/segments",
    tags=["videos"],
    summary="Label (or un-label) every stored frame of a video from start_s to end_s; returns the frames changed",
)
async def label_segment(app_id: str, video: str, body: SegmentBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = video_pb2.AnnotateVideoSegmentRequest(
        app_id=app_id, video_id=video, start_s=body.start_s, end_s=body.end_s, add_concepts=body.add_concepts, remove_concepts=body.remove_concepts
    )
    return to_json(await cl.ingestion.annotate_video_segment(req, key=c.key))


@router.get(
    "/apps/{app_id}/videos/{video}",
    tags=["videos"],
    summary="A stored video's summary (info, counts, partial) and its frames in time order: input id and seconds",
)
async def get_video(app_id: str, video: str, c: Caller = Depends(caller), cl: Clients = Depends(clients), m: Media = Depends(media)) -> dict:
    return await video_summary(cl, m, c.key, app_id, video)


async def video_summary(cl: Clients, m: Media, key: str, app_id: str, video: str) -> dict:
    """The stored summary of a video with its frames (input id, seconds) in time order."""
    # The app's scoping is the services' own (GetApp with the caller's key), then the summary is
    # read from that app's folder of the blob store, as images are (gateway/media.py).
    await cl.ingestion.get_app(ingestion_pb2.GetAppRequest(id=app_id), key=key)
    summary = json.loads(await asyncio.to_thread(m.blobs.get_video_summary, app_id, video_id(video)))
    frames = [{"input_id": fid, "t": p[1]} for fid in summary.pop("frame_ids", []) if (p := parse_frame_input_id(fid))]
    return {**summary, "frames": frames}


def clock(t: float) -> str:
    """Seconds as ``mm:ss.s`` (``hh:mm:ss.s`` past an hour), as the Portal shows frame times."""
    tenths = round(max(0.0, t) * 10)
    h, rest = divmod(tenths, 36000)
    mm, ss = divmod(rest, 600)
    out = f"{mm:02d}:{ss // 10:02d}.{ss % 10}"
    return f"{h}:{out}" if h else out


PREDICT_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "model_id": {"type": "string", "description": "`general` (default) or an app model"},
                        "model_version": {"type": "string"},
                        "top_k": {"type": "integer"},
                        "concepts": {"type": "string", "description": "comma-separated concept filter"},
                        "min_score": {"type": "number"},
                        "segment_threshold": {"type": "number", "description": "a frame scoring this counts towards a segment (default 0.5)"},
                        "workflow": {
                            "type": "string",
                            "description": "instead of model_id…: a JSON array of workflow steps (as POST /workflows/predict) run on every sampled frame",
                        },
                        "file": {"type": "string", "format": "binary", "description": "the video; the last part"},
                    },
                }
            }
        },
    }
}


def _workflow_steps(raw: str) -> list[inference_pb2.WorkflowStep]:
    """The ``workflow`` form field: a JSON array of steps, as POST /workflows/predict takes them."""
    from pydantic import TypeAdapter, ValidationError

    from firstlight.gateway.api import WorkflowStepBody

    try:
        steps = TypeAdapter(list[WorkflowStepBody]).validate_json(raw)
    except ValidationError as exc:
        raise errors.InvalidArgument(f"form field 'workflow' must be a JSON array of steps ({{\"model_id\": …}}): {exc.errors()[0]['msg']}") from None
    if not steps:
        raise errors.InvalidArgument("form field 'workflow' has no step")
    return [inference_pb2.WorkflowStep(**s.model_dump()) for s in steps]


def _sse(kind: str, data: dict) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _ndjson(data: dict) -> bytes:
    return (json.dumps(data) + "\n").encode()


@router.post(
    "/apps/{app_id}/predict/video",
    tags=["videos", "predict"],
    summary="Predict on a video (multipart, streamed): per-frame results and time segments streamed back as NDJSON while it decodes",
    description=(
        'The answer is `application/x-ndjson`: one JSON object per line, `{"frame": {t, keep_reason, prediction}}` per sampled frame, '
        '`{"segment": {concept, start_s, end_s, max_score, mean_score, frames}}` as each closes, and `{"end": {info, frames_decoded, '
        "partial, error, last_good_s}}` last. With `Accept: text/event-stream` the same as server-sent events (`event: frame|segment|end`). "
        "A file refused before its first frame answers a JSON error (400/413) instead; a failure later ends the stream with "
        '`{"error": {code, status, message}}` (SSE: `event: error`).'
    ),
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/event-stream": {}}}},
    openapi_extra=PREDICT_FORM,
)
async def predict_video(app_id: str, request: Request, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> StreamingResponse:
    form = await read_video_form(request, _max_bytes(request))
    f = form.fields
    if f.get("workflow", "").strip():  # the steps of POST /workflows/predict, on every sampled frame
        header = inference_pb2.PredictVideoHeader(
            app_id=app_id, segment_threshold=_number(f, "segment_threshold", 0.0), workflow=_workflow_steps(f["workflow"])
        )
    else:
        header = inference_pb2.PredictVideoHeader(
            app_id=app_id,
            model_id=f.get("model_id", "").strip() or "general",
            model_version=f.get("model_version", "").strip(),
            top_k=int(_number(f, "top_k", 5, int)),
            concepts=_csv(f.get("concepts", "")),
            min_score=_number(f, "min_score", 0.0),
            segment_threshold=_number(f, "segment_threshold", 0.0),
        )

    async def requests() -> AsyncIterator[inference_pb2.PredictVideoRequest]:
        yield inference_pb2.PredictVideoRequest(header=header)
        async for chunk in form.chunks:
            yield inference_pb2.PredictVideoRequest(chunk=chunk)

    results = cl.inference.predict_video(requests(), key=c.key)
    # The first result comes once the whole body is in and the file opened: a refused file is
    # still a plain JSON error here, and the body is fully read before the response starts.
    try:
        first: inference_pb2.PredictVideoResponse | None = await anext(results)
    except StopAsyncIteration:
        first = None
    sse = "text/event-stream" in request.headers.get("accept", "")

    def encode(item: inference_pb2.PredictVideoResponse) -> bytes:
        kind = item.WhichOneof("item") or "end"
        return _sse(kind, to_json(getattr(item, kind))) if sse else _ndjson(to_json(item))

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield encode(first)
            async for item in results:
                yield encode(item)
        except errors.FirstlightError as exc:
            code = code_of(exc)
            err = error_body(code, http_status(code), getattr(exc, "message", None) or str(exc))
            yield _sse("error", err["error"]) if sse else _ndjson(err)
        finally:
            await results.aclose()  # type: ignore[attr-defined]

    media_type = "text/event-stream" if sse else "application/x-ndjson"
    return StreamingResponse(body(), media_type=media_type, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
