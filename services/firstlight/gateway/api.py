"""``/v1``: the HTTP/JSON API. Each route converts JSON to the request message, calls one or two
RPCs through :mod:`firstlight.clients` with the caller's key, and converts the answer back
(field names as in the protos; enums by name). Errors: :mod:`firstlight.gateway.errors`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel, Field

from firstlight import errors
from firstlight.clients import Clients
from firstlight.gateway.media import Media, content_type
from firstlight.gateway.session import COOKIE, CSRF_HEADER, Session, SessionCodec, csrf_ok
from firstlight.v1 import auth_pb2, common_pb2, curation_pb2, inference_pb2, ingestion_pb2, search_pb2, training_pb2

router = APIRouter(prefix="/v1")
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>` (the admin key or an app's key).")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

SPLITS = {"": 0, "train": 1, "validation": 2, "test": 3}
LABELED = {"": 0, "any": 0, "labeled": 1, "unlabeled": 2}
QUEUE_STATES = {"": 0, "all": 0, "queued": 1, "labeled": 2}


# -- who is calling ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Caller:
    key: str
    session: Session | None = None


async def caller(request: Request, bearer: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Caller:
    """The API key of the request: ``Authorization: Bearer`` (or ``X-Api-Key``), else the Portal's
    session cookie — which, for a state-changing method, needs the session's CSRF token too."""
    if bearer is not None and bearer.credentials.strip():
        return Caller(bearer.credentials.strip())
    header_key = request.headers.get("x-api-key", "").strip()
    if header_key:
        return Caller(header_key)
    codec: SessionCodec = request.app.state.sessions
    session = codec.decode(request.cookies.get(COOKIE))
    if session is not None:
        if request.method not in SAFE_METHODS and not csrf_ok(session, request.headers.get(CSRF_HEADER)):
            raise errors.PermissionDenied("missing or wrong CSRF token: send the session's X-CSRF-Token header")
        return Caller(session.key, session)
    raise errors.Unauthenticated("no API key: send `Authorization: Bearer <key>`")


def clients(request: Request) -> Clients:
    return request.app.state.clients


def media(request: Request) -> Media:
    return request.app.state.media


# -- conversions ------------------------------------------------------------------------------------
def to_json(msg: Message) -> dict[str, Any]:
    """The proto3 JSON mapping (proto field names, enums by name, timestamps RFC 3339), except that
    64-bit integers are JSON numbers, not strings (counts here never pass 2^53)."""
    out = json_format.MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    _int64_as_numbers(msg, out)
    return out


_INT64 = {FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64}


def _int64_as_numbers(msg: Message, out: dict[str, Any]) -> None:
    for f in msg.DESCRIPTOR.fields:
        if f.name not in out:
            continue
        value = getattr(msg, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            if vf.cpp_type in _INT64:
                out[f.name] = {k: int(v) for k, v in out[f.name].items()}
            elif vf.message_type is not None:
                for k, sub in out[f.name].items():
                    if isinstance(sub, dict):
                        _int64_as_numbers(value[k], sub)
        elif f.cpp_type in _INT64:
            out[f.name] = [int(x) for x in out[f.name]] if f.is_repeated else int(out[f.name])
        elif f.message_type is not None:
            if f.is_repeated:
                for sub_msg, sub in zip(value, out[f.name]):
                    if isinstance(sub, dict):
                        _int64_as_numbers(sub_msg, sub)
            elif isinstance(out[f.name], dict):
                _int64_as_numbers(value, out[f.name])


def split_value(name: str) -> int:
    name = (name or "").lower().removeprefix("split_")
    if name not in SPLITS:
        raise errors.InvalidArgument(f"unknown split {name!r}: one of train, validation, test")
    return SPLITS[name]


def b64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise errors.InvalidArgument(f"{what} is not valid base64") from None


def input_filter(concepts: list[str] | None = None, split: str = "", labeled: str = "") -> common_pb2.InputFilter:
    if labeled not in LABELED:
        raise errors.InvalidArgument(f"unknown labeled filter {labeled!r}: labeled, unlabeled or any")
    return common_pb2.InputFilter(concepts=concepts or [], split=split_value(split), labeled=LABELED[labeled])  # type: ignore[arg-type]


class BoxModel(BaseModel):
    concept: str
    box: list[float] = Field(..., min_length=4, max_length=4, description="x0, y0, x1, y1 normalised to the image")


def regions(boxes: list[BoxModel]) -> list[common_pb2.Region]:
    return [common_pb2.Region(concept=b.concept, box=common_pb2.BoundingBox(x0=b.box[0], y0=b.box[1], x1=b.box[2], y1=b.box[3])) for b in boxes]


class FilterModel(BaseModel):
    concepts: list[str] = []
    split: str = ""
    labeled: Literal["", "any", "labeled", "unlabeled"] = ""

    def proto(self) -> common_pb2.InputFilter:
        return input_filter(self.concepts, self.split, self.labeled)


# -- health -----------------------------------------------------------------------------------------
health_router = APIRouter()


@health_router.get("/healthz", tags=["health"], summary="Liveness and readiness of the gateway")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


# -- apps and keys ----------------------------------------------------------------------------------
class CreateAppBody(BaseModel):
    id: str
    name: str = ""
    description: str = ""


@router.post("/apps", tags=["apps"], status_code=201, summary="Create an app (admin key)")
async def create_app(body: CreateAppBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.ingestion.create_app(ingestion_pb2.CreateAppRequest(id=body.id, name=body.name, description=body.description), key=c.key))


@router.get("/apps/{app_id}", tags=["apps"], summary="Read an app")
async def get_app(app_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.ingestion.get_app(ingestion_pb2.GetAppRequest(id=app_id), key=c.key))


class CreateKeyBody(BaseModel):
    name: str = ""


@router.post("/apps/{app_id}/keys", tags=["apps"], status_code=201, summary="Issue an API key for an app (admin key); the secret is shown once")
async def create_key(app_id: str, body: CreateKeyBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.auth.create_api_key(auth_pb2.CreateApiKeyRequest(app_id=app_id, name=body.name), key=c.key))


@router.get("/apps/{app_id}/keys", tags=["apps"], summary="An app's API keys, without secrets (admin key)")
async def list_keys(app_id: str, include_revoked: bool = False, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.auth.list_api_keys(auth_pb2.ListApiKeysRequest(app_id=app_id, include_revoked=include_revoked), key=c.key))


@router.delete("/apps/{app_id}/keys/{key_id}", tags=["apps"], summary="Revoke an API key (admin key)")
async def revoke_key(app_id: str, key_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.auth.revoke_api_key(auth_pb2.RevokeApiKeyRequest(app_id=app_id, key_id=key_id), key=c.key))


# -- inputs -----------------------------------------------------------------------------------------
class InputBody(BaseModel):
    id: str = ""
    base64: str = Field(..., description="The encoded image (JPEG, PNG, WebP, HEIC/HEIF, AVIF, BMP, GIF, TIFF), base64")
    concepts: list[str] = []
    metadata: dict[str, str] = {}
    split: str = ""
    regions: list[BoxModel] = []


class PostInputsBody(BaseModel):
    inputs: list[InputBody]


@router.post(
    "/apps/{app_id}/inputs",
    tags=["inputs"],
    status_code=201,
    summary="Upload images: JSON with base64 (all-or-nothing) or multipart/form-data `file` parts (each file on its own)",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": PostInputsBody.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                            "concepts": {"type": "string", "description": "comma-separated concepts for every file"},
                            "split": {"type": "string"},
                        },
                    }
                },
            }
        }
    },
)
async def post_inputs(app_id: str, request: Request, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        concepts = [s.strip() for s in str(form.get("concepts") or "").split(",") if s.strip()]
        split = split_value(str(form.get("split") or ""))
        files = [f for f in form.getlist("file") if not isinstance(f, str)]
        if not files:
            raise errors.InvalidArgument("no `file` parts in the form")
        specs = []
        for f in files:
            data = await f.read()
            specs.append(
                ingestion_pb2.StreamInputsRequest(
                    app_id=app_id,
                    input=common_pb2.InputSpec(image_bytes=data, concepts=concepts, split=split, metadata={"filename": f.filename or ""}),  # type: ignore[arg-type]
                )
            )
        resp = await cl.ingestion.stream_inputs(specs, key=c.key)
        return {
            "input_ids": list(resp.input_ids),
            "failures": [{"index": x.index, "filename": files[x.index].filename or "", "code": x.code, "message": x.message} for x in resp.failures],
        }
    try:
        body = PostInputsBody.model_validate(await request.json())
    except (ValueError, json.JSONDecodeError) as exc:
        raise errors.InvalidArgument(f'the body must be JSON {{"inputs": [...]}} or multipart/form-data: {exc}') from None
    req = ingestion_pb2.PostInputsRequest(
        app_id=app_id,
        inputs=[
            common_pb2.InputSpec(
                id=i.id,
                image_bytes=b64(i.base64, f"inputs[{n}].base64"),
                concepts=i.concepts,
                metadata=i.metadata,
                split=split_value(i.split),
                regions=regions(i.regions),  # type: ignore[arg-type]
            )
            for n, i in enumerate(body.inputs)
        ],
    )
    resp = await cl.ingestion.post_inputs(req, key=c.key)
    return {"inputs": [to_json(i) for i in resp.inputs]}


@router.get("/apps/{app_id}/inputs", tags=["inputs"], summary="List inputs, oldest first, paged, with filters")
async def list_inputs(
    app_id: str,
    page_size: int = Query(100, ge=1, le=1000),
    page_token: str = "",
    concept: list[str] = Query([], description="keep inputs with any of these concepts"),
    split: str = "",
    labeled: Literal["", "any", "labeled", "unlabeled"] = "",
    dataset_id: str = Query("", description="only the inputs of this dataset's version (the filters then apply to the version's frozen labels and splits)"),
    dataset_version: str = Query("", description="with dataset_id: the version (content hash); empty: the latest"),
    quality_metric: str = Query(
        "", description="keep inputs whose stored image-quality metric (blur, brightness, contrast, ...) is within quality_min..quality_max"
    ),
    quality_min: float | None = Query(None, description="with quality_metric: lower bound (inclusive)"),
    quality_max: float | None = Query(None, description="with quality_metric: upper bound (inclusive)"),
    c: Caller = Depends(caller),
    cl: Clients = Depends(clients),
) -> dict:
    flt = input_filter(concept, split, labeled)
    quality = quality_range(quality_metric, quality_min, quality_max)
    if dataset_id:
        if quality is not None:
            raise errors.InvalidArgument("quality filters apply to the app's inputs, not to a dataset version's rows")
        return await _dataset_inputs(app_id, dataset_id, dataset_version, page_size, page_token, flt, c, cl)
    if dataset_version:
        raise errors.InvalidArgument("dataset_version needs dataset_id")
    req = ingestion_pb2.ListInputsRequest(app_id=app_id, page_size=page_size, page_token=page_token, filter=flt, quality=quality)
    return to_json(await cl.ingestion.list_inputs(req, key=c.key))


def quality_range(metric: str, low: float | None, high: float | None) -> common_pb2.QualityRange | None:
    """The listing's quality filter (ingestion checks the metric's name and the bounds)."""
    if not metric:
        if low is not None or high is not None:
            raise errors.InvalidArgument("quality_min / quality_max need quality_metric")
        return None
    q = common_pb2.QualityRange(metric=metric)
    if low is not None:
        q.min = low
    if high is not None:
        q.max = high
    return q


async def _dataset_inputs(app_id: str, dataset_id: str, version: str, size: int, token: str, flt: common_pb2.InputFilter, c: Caller, cl: Clients) -> dict:
    """A gallery page of a dataset version's inputs: a page of its frozen rows from training
    (filtered and paged there; the token pins the version the first page resolved), then the
    page's inputs in their current state from ingestion (an input deleted since the freeze is
    left out of its page); both with the caller's key (app scoping is theirs)."""
    req = training_pb2.ListDatasetRowsRequest(app_id=app_id, dataset_id=dataset_id, version=version, page_size=size, page_token=token, filter=flt)
    rows = await cl.training.list_dataset_rows(req, key=c.key)
    ids = [r.input_id for r in rows.rows]
    found: dict[str, common_pb2.Input] = {}
    if ids:
        resp = await cl.ingestion.list_inputs(ingestion_pb2.ListInputsRequest(app_id=app_id, page_size=len(ids), input_ids=ids), key=c.key)
        found = {i.id: i for i in resp.inputs}
    return {
        "inputs": [to_json(found[i]) for i in ids if i in found],
        "next_page_token": rows.next_page_token,
        "total_size": rows.total_size,
        "dataset_version": rows.version,
    }


@router.get("/apps/{app_id}/inputs/{input_id}", tags=["inputs"], summary="Read an input")
async def get_input(app_id: str, input_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.ingestion.get_input(ingestion_pb2.GetInputRequest(app_id=app_id, input_id=input_id), key=c.key))


@router.delete("/apps/{app_id}/inputs/{input_id}", tags=["inputs"], summary="Delete an input")
async def delete_input(app_id: str, input_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.ingestion.delete_inputs(ingestion_pb2.DeleteInputsRequest(app_id=app_id, input_ids=[input_id]), key=c.key))


class ReembedBody(BaseModel):
    input_ids: list[str] = Field([], description="these inputs; or only_rotated, or all_inputs")
    only_rotated: bool = Field(False, description="inputs whose stored photo has an EXIF orientation other than 1")
    all_inputs: bool = False
    page_size: int = 0
    page_token: str = ""


@router.post(
    "/apps/{app_id}/reembed",
    tags=["inputs"],
    summary="Embed inputs again and re-index them (a list, the EXIF-rotated photos, or all): one page per call, next_page_token to go on",
)
async def reembed(app_id: str, body: ReembedBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = ingestion_pb2.ReembedInputsRequest(
        app_id=app_id, input_ids=body.input_ids, only_rotated=body.only_rotated, all_inputs=body.all_inputs,
        page_size=body.page_size, page_token=body.page_token,
    )  # fmt: skip
    return to_json(await cl.ingestion.reembed_inputs(req, key=c.key))


@router.get("/apps/{app_id}/indexing-backlog", tags=["inputs"], summary="Inputs announced for embedding and not yet searchable")
async def indexing_backlog(app_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.ingestion.get_indexing_backlog(ingestion_pb2.GetIndexingBacklogRequest(app_id=app_id), key=c.key))


async def _stored(app_id: str, input_id: str, c: Caller, cl: Clients) -> common_pb2.Input:
    return await cl.ingestion.get_input(ingestion_pb2.GetInputRequest(app_id=app_id, input_id=input_id), key=c.key)


def _image_response(request: Request, data: bytes, ctype: str, etag: str) -> Response:
    headers = {"ETag": f'"{etag}"', "Cache-Control": "private, max-age=86400"}
    if request.headers.get("if-none-match") == f'"{etag}"':
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=ctype, headers=headers)


@router.get(
    "/apps/{app_id}/inputs/{input_id}/image",
    tags=["inputs"],
    summary="The input's original image bytes",
    description="`view=browser`: for a format most browsers cannot show (HEIC/HEIF) an upright JPEG of it, at most 2048 px; other formats as uploaded.",
    response_class=Response,
)
async def input_image(
    app_id: str,
    input_id: str,
    request: Request,
    view: Literal["original", "browser"] = "original",
    c: Caller = Depends(caller),
    cl: Clients = Depends(clients),
    m: Media = Depends(media),
) -> Response:
    inp = await _stored(app_id, input_id, c, cl)
    if view == "browser":
        data, ctype = await asyncio.to_thread(m.for_browser, inp.app_id, inp.blob_uri, inp.sha256, inp.format)
        return _image_response(request, data, ctype, f"b-{inp.sha256}")
    data = await asyncio.to_thread(m.original, inp.app_id, inp.blob_uri)
    return _image_response(request, data, content_type(inp.format), inp.sha256)


@router.get("/apps/{app_id}/inputs/{input_id}/thumbnail", tags=["inputs"], summary="A small JPEG of the input", response_class=Response)
async def input_thumbnail(
    app_id: str, input_id: str, request: Request, c: Caller = Depends(caller), cl: Clients = Depends(clients), m: Media = Depends(media)
) -> Response:
    inp = await _stored(app_id, input_id, c, cl)
    data = await asyncio.to_thread(m.thumbnail, inp.app_id, inp.blob_uri, inp.sha256, inp.thumbnail_uri)
    return _image_response(request, data, "image/jpeg", f"t{m.px}-{inp.sha256}")


class PredictStoredBody(BaseModel):
    model_id: str = "general"
    model_version: str = ""
    top_k: int = 5
    min_score: float = 0.0


@router.post("/apps/{app_id}/inputs/{input_id}/predict", tags=["predict"], summary="Predict on a stored input (app models report it to curation)")
async def predict_stored(
    app_id: str, input_id: str, body: PredictStoredBody, c: Caller = Depends(caller), cl: Clients = Depends(clients), m: Media = Depends(media)
) -> dict:
    inp = await _stored(app_id, input_id, c, cl)
    data = await asyncio.to_thread(m.original, inp.app_id, inp.blob_uri)
    resp = await cl.inference.predict(
        inference_pb2.PredictRequest(
            app_id=app_id,
            model_id=body.model_id,
            model_version=body.model_version,
            images=[data],
            top_k=body.top_k,
            min_score=body.min_score,
            input_ids=[input_id] if body.model_id not in ("", "general") else [],
        ),
        key=c.key,
    )
    return to_json(resp)


@router.get("/apps/{app_id}/concepts", tags=["annotations"], summary="Concepts of the app with input counts")
async def list_concepts(app_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.ingestion.list_concepts(ingestion_pb2.ListConceptsRequest(app_id=app_id), key=c.key))


# -- annotations ------------------------------------------------------------------------------------
class AnnotationBody(BaseModel):
    input_id: str
    add_concepts: list[str] = []
    remove_concepts: list[str] = []
    split: str = ""
    add_regions: list[BoxModel] = []
    clear_regions: bool = False


class PostAnnotationsBody(BaseModel):
    annotations: list[AnnotationBody]


@router.post("/apps/{app_id}/annotations", tags=["annotations"], summary="Add/remove concepts, boxes or the split on inputs (all-or-nothing)")
async def post_annotations(app_id: str, body: PostAnnotationsBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = ingestion_pb2.PostAnnotationsRequest(
        app_id=app_id,
        annotations=[
            ingestion_pb2.Annotation(
                input_id=a.input_id,
                add_concepts=a.add_concepts,
                remove_concepts=a.remove_concepts,
                split=split_value(a.split),  # type: ignore[arg-type]
                add_regions=regions(a.add_regions),
                clear_regions=a.clear_regions,
            )
            for a in body.annotations
        ],
    )
    return {"inputs": [to_json(i) for i in (await cl.ingestion.post_annotations(req, key=c.key)).inputs]}


class BulkBody(BaseModel):
    add_concepts: list[str] = []
    remove_concepts: list[str] = []
    input_ids: list[str] = Field([], description="hand-picked inputs; or one of the search fields below")
    search_text: str = ""
    search_input_id: str = ""
    search_image_base64: str = ""
    min_score: float = 0.0
    max_results: int = 100
    filter: FilterModel = FilterModel()
    dry_run: bool = False


@router.post("/apps/{app_id}/annotations/bulk", tags=["annotations"], summary="Label or un-label many inputs: a list, or a search's results above a score")
async def bulk_annotate(app_id: str, body: BulkBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    sel = ingestion_pb2.BulkSelection(
        input_ids=body.input_ids,
        search_text=body.search_text,
        search_input_id=body.search_input_id,
        search_image=b64(body.search_image_base64, "search_image_base64") if body.search_image_base64 else b"",
        min_score=body.min_score,
        max_results=body.max_results,
        filter=body.filter.proto(),
    )
    req = ingestion_pb2.BulkAnnotateRequest(
        app_id=app_id, selection=sel, add_concepts=body.add_concepts, remove_concepts=body.remove_concepts, dry_run=body.dry_run
    )
    return to_json(await cl.ingestion.bulk_annotate(req, key=c.key))


# -- search -----------------------------------------------------------------------------------------
class TextSearchBody(BaseModel):
    text: str
    page_size: int = 10
    page_token: str = ""
    filter: FilterModel = FilterModel()


@router.post("/apps/{app_id}/search/text", tags=["search"], summary="Inputs that match a text query, best first")
async def search_text(app_id: str, body: TextSearchBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = search_pb2.SearchByTextRequest(app_id=app_id, text=body.text, page_size=body.page_size, page_token=body.page_token, filter=body.filter.proto())
    return to_json(await cl.search.search_by_text(req, key=c.key))


class ImageSearchBody(BaseModel):
    input_id: str = Field("", description="an indexed input of the app; or base64")
    base64: str = ""
    page_size: int = 10
    page_token: str = ""
    filter: FilterModel = FilterModel()


@router.post("/apps/{app_id}/search/image", tags=["search"], summary="Inputs most similar to an image (bytes, or an indexed input)")
async def search_image(app_id: str, body: ImageSearchBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = search_pb2.SearchByImageRequest(app_id=app_id, page_size=body.page_size, page_token=body.page_token, filter=body.filter.proto())
    if body.base64:
        req.image_bytes = b64(body.base64, "base64")
    else:
        req.input_id = body.input_id
    return to_json(await cl.search.search_by_image(req, key=c.key))


@router.get("/apps/{app_id}/index", tags=["search"], summary="How many inputs are searchable, and the index's model")
async def index_stats(app_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.search.get_index_stats(search_pb2.GetIndexStatsRequest(app_id=app_id), key=c.key))


# -- predict ----------------------------------------------------------------------------------------
class PredictBody(BaseModel):
    images: list[str] = Field(..., description="encoded images, base64")
    model_version: str = ""
    top_k: int = 5
    concepts: list[str] = []
    min_score: float = 0.0
    input_ids: list[str] = Field([], description="the app's ids of these images (app models: curation may queue them)")


PREDICT_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": PredictBody.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}, "top_k": {"type": "integer"}},
                }
            },
        }
    }
}


async def _predict(request: Request, app_id: str, model_id: str, c: Caller, cl: Clients) -> dict:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        images = [await f.read() for f in form.getlist("file") if not isinstance(f, str)]
        if not images:
            raise errors.InvalidArgument("no `file` parts in the form")
        try:
            body = PredictBody(
                images=[],
                top_k=int(form.get("top_k") or 5),
                model_version=str(form.get("model_version") or ""),
                concepts=[s for s in str(form.get("concepts") or "").split(",") if s],
                min_score=float(form.get("min_score") or 0),
            )
        except ValueError as exc:
            raise errors.InvalidArgument(f"bad form field: {exc}") from None
    else:
        try:
            body = PredictBody.model_validate(await request.json())
        except (ValueError, json.JSONDecodeError) as exc:
            raise errors.InvalidArgument(f'the body must be JSON {{"images": [base64, ...]}} or multipart/form-data: {exc}') from None
        images = [b64(s, f"images[{n}]") for n, s in enumerate(body.images)]
    req = inference_pb2.PredictRequest(
        app_id=app_id,
        model_id=model_id,
        model_version=body.model_version,
        images=images,
        top_k=body.top_k,
        concepts=body.concepts,
        min_score=body.min_score,
        input_ids=body.input_ids,
    )
    return to_json(await cl.inference.predict(req, key=c.key))


@router.post("/models/general/predict", tags=["predict"], summary="The general model (1,000 ImageNet concepts) on images", openapi_extra=PREDICT_BODY)
async def predict_general(request: Request, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return await _predict(request, "", "general", c, cl)


@router.post("/apps/{app_id}/models/{model_id}/predict", tags=["predict"], summary="An app's model (or `general`) on images", openapi_extra=PREDICT_BODY)
async def predict_app(app_id: str, model_id: str, request: Request, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return await _predict(request, app_id, model_id, c, cl)


class WorkflowStepBody(BaseModel):
    model_id: str
    model_version: str = ""
    concepts: list[str] = []
    top_k: int = 5
    min_score: float = 0.0
    gate_concepts: list[str] = []
    gate_step: int = 0
    gate_min_score: float = 0.0


class WorkflowBody(BaseModel):
    images: list[str]
    steps: list[WorkflowStepBody]


@router.post("/apps/{app_id}/workflows/predict", tags=["predict"], summary="A chain of models on each image (steps gated on earlier steps)")
async def predict_workflow(app_id: str, body: WorkflowBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = inference_pb2.PredictWorkflowRequest(
        app_id=app_id,
        images=[b64(s, f"images[{n}]") for n, s in enumerate(body.images)],
        steps=[inference_pb2.WorkflowStep(**s.model_dump()) for s in body.steps],
    )
    return to_json(await cl.inference.predict_workflow(req, key=c.key))


# -- datasets, models, training ---------------------------------------------------------------------
@router.get("/apps/{app_id}/models", tags=["models"], summary="Models that can serve predictions (built-in and the app's), with ready versions")
async def list_models(app_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.inference.list_models(inference_pb2.ListModelsRequest(app_id=app_id), key=c.key))


class CreateModelBody(BaseModel):
    id: str
    template: str = "transfer_classifier"
    concepts: list[str]
    settings: dict[str, str] = {}


@router.post("/apps/{app_id}/models", tags=["models"], status_code=201, summary="Declare a model: template, concepts, settings")
async def create_model(app_id: str, body: CreateModelBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = training_pb2.CreateModelRequest(app_id=app_id, model_id=body.id, template=body.template, concepts=body.concepts, settings=body.settings)
    return to_json(await cl.training.create_model(req, key=c.key))


@router.get("/apps/{app_id}/models/{model_id}", tags=["models"], summary="A model and its versions with validation metrics, newest first")
async def model_versions(app_id: str, model_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.training.list_model_versions(training_pb2.ListModelVersionsRequest(app_id=app_id, model_id=model_id), key=c.key))


class SplitBody(BaseModel):
    train_fraction: float = 0.0
    validation_fraction: float = 0.0
    test_fraction: float = 0.0
    train_count: int = 0
    validation_count: int = 0
    test_count: int = 0
    seed: int = 0
    from_inputs: bool = False
    group_duplicates: bool = False  # keep exact and near-duplicates in one split (no leaks)


class CreateDatasetBody(BaseModel):
    id: str
    concepts: list[str] = []
    split: SplitBody = SplitBody()
    write_splits_to_inputs: bool = True


@router.post("/apps/{app_id}/datasets", tags=["datasets"], status_code=201, summary="Freeze the labeled inputs into a dataset version with splits")
async def create_dataset(app_id: str, body: CreateDatasetBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = training_pb2.CreateDatasetRequest(
        app_id=app_id,
        dataset_id=body.id,
        concepts=body.concepts,
        split=training_pb2.SplitSpec(**body.split.model_dump()),
        write_splits_to_inputs=body.write_splits_to_inputs,
    )
    return to_json(await cl.training.create_dataset(req, key=c.key))


@router.get("/apps/{app_id}/datasets/{dataset_id}", tags=["datasets"], summary="A dataset's latest version")
async def get_dataset(app_id: str, dataset_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.training.get_dataset(training_pb2.GetDatasetRequest(app_id=app_id, dataset_id=dataset_id), key=c.key))


class TrainBody(BaseModel):
    dataset_id: str
    settings: dict[str, str] = {}
    require_passing_check: bool = Field(False, description="refuse (409) a dataset version whose recorded health check failed")


@router.post("/apps/{app_id}/models/{model_id}/train", tags=["training"], status_code=202, summary="Start training a version; returns the job at once")
async def train(app_id: str, model_id: str, body: TrainBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = training_pb2.TrainModelRequest(
        app_id=app_id, model_id=model_id, dataset_id=body.dataset_id, settings=body.settings, require_passing_check=body.require_passing_check
    )
    return to_json(await cl.training.train_model(req, key=c.key))


@router.get("/apps/{app_id}/jobs/{job_id}", tags=["training"], summary="A training job's state")
async def get_job(app_id: str, job_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.training.get_training_job(training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job_id), key=c.key))


@router.post("/apps/{app_id}/jobs/{job_id}/cancel", tags=["training"], summary="Cancel a queued or running job")
async def cancel_job(app_id: str, job_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.training.cancel_training_job(training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job_id), key=c.key))


@router.get(
    "/apps/{app_id}/jobs/{job_id}/events",
    tags=["training"],
    summary="Server-sent events: one `progress` event per progress step, then `end` (or `error`)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(app_id: str, job_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> StreamingResponse:
    req = training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job_id)
    # Fail before the stream starts (404/403 as a JSON error), not inside it.
    await cl.training.get_training_job(req, key=c.key)

    async def events() -> AsyncIterator[bytes]:
        try:
            async for step in cl.training.stream_training_progress(req, key=c.key):
                yield f"event: progress\ndata: {json.dumps(to_json(step))}\n\n".encode()
            job = await cl.training.get_training_job(req, key=c.key)
            yield f"event: end\ndata: {json.dumps(to_json(job))}\n\n".encode()
        except errors.FirstlightError as exc:
            yield f"event: error\ndata: {json.dumps({'message': str(exc)})}\n\n".encode()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _version(v: str) -> str:
    return "" if v in ("", "serving") else v


async def _evaluate(app_id: str, model_id: str, version: str, split: str, c: Caller, cl: Clients) -> training_pb2.Evaluation:
    req = training_pb2.EvaluateModelVersionRequest(app_id=app_id, model_id=model_id, version=_version(version), split=split_value(split))  # type: ignore[arg-type]
    return await cl.training.evaluate_model_version(req, key=c.key)


@router.get(
    "/apps/{app_id}/models/{model_id}/versions/{version}/evaluations/{split}",
    tags=["evaluations"],
    summary="Evaluate a version (`serving` for the serving one) on a split: metrics, per-concept table, confusion matrix",
)
async def evaluation(app_id: str, model_id: str, version: str, split: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    out = to_json(await _evaluate(app_id, model_id, version, split, c, cl))
    out.pop("confusion_matrix_png", None)  # served as image/png by the route below
    return out


@router.get(
    "/apps/{app_id}/models/{model_id}/versions/{version}/evaluations/{split}/confusion.png",
    tags=["evaluations"],
    summary="The evaluation's confusion matrix as a PNG",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def evaluation_png(app_id: str, model_id: str, version: str, split: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> Response:
    ev = await _evaluate(app_id, model_id, version, split, c, cl)
    return Response(ev.confusion_matrix_png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


@router.get("/apps/{app_id}/models/{model_id}/compare", tags=["evaluations"], summary="Several versions side by side on one split")
async def compare(
    app_id: str, model_id: str, version: list[str] = Query([]), split: str = "validation", c: Caller = Depends(caller), cl: Clients = Depends(clients)
) -> dict:
    req = training_pb2.CompareModelVersionsRequest(app_id=app_id, model_id=model_id, versions=version, split=split_value(split))  # type: ignore[arg-type]
    out = to_json(await cl.training.compare_model_versions(req, key=c.key))
    for ev in out["evaluations"]:
        ev.pop("confusion_matrix_png", None)
    return out


@router.get(
    "/apps/{app_id}/models/{model_id}/versions/{version}/evaluations/{split}/inputs",
    tags=["evaluations"],
    summary="The inputs of one confusion-matrix cell: true concept `true`, predicted `predicted` (either may be left out)",
)
async def evaluation_inputs(
    app_id: str, model_id: str, version: str, split: str, true: str = "", predicted: str = "", c: Caller = Depends(caller), cl: Clients = Depends(clients)
) -> dict:
    ev = await _evaluate(app_id, model_id, version, split, c, cl)
    if not ev.predictions and ev.count:
        raise errors.FailedPrecondition(f"model {model_id!r} reports no per-input predictions (multi-label or deep template): open the row instead")
    picked = [p for p in ev.predictions if (not true or p.true_concept == true) and (not predicted or p.predicted_concept == predicted)]
    return {
        "model_id": model_id,
        "version": ev.version,
        "split": split,
        "count": len(picked),
        "inputs": [to_json(p) for p in sorted(picked, key=lambda p: -p.score)],
    }


class PromoteBody(BaseModel):
    metric: str = ""
    min_gain: float = 0.0
    override_reason: str = Field("", description="promote even if the promotion rule refuses, and say why (kept in the version's note)")


@router.post(
    "/apps/{app_id}/models/{model_id}/versions/{version}/promote",
    tags=["models"],
    summary="Make a version the serving one; the promotion rule decides (409 with its verdict) unless override_reason is given",
)
async def promote(app_id: str, model_id: str, version: str, body: PromoteBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = training_pb2.PromoteModelVersionRequest(app_id=app_id, model_id=model_id, version=version, **body.model_dump())
    return to_json(await cl.training.promote_model_version(req, key=c.key))


@router.get(
    "/apps/{app_id}/compare-models",
    tags=["evaluations"],
    summary="Two models (or versions) side by side on one split: `a` and `b` are `model` or `model:version` (serving when left out)",
)
async def compare_models(app_id: str, a: str, b: str, split: str = "validation", c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    out = []
    for ref in (a, b):
        model_id, _, version = ref.partition(":")
        ev = to_json(await _evaluate(app_id, model_id, version, split, c, cl))
        ev.pop("confusion_matrix_png", None)
        out.append(ev)
    return {"evaluations": out}


# -- curation ---------------------------------------------------------------------------------------
class SuggestBody(BaseModel):
    model_id: str
    model_version: str = ""
    strategy: str = ""
    batch_size: int = 50
    seed: int = 0
    record_round: bool = False


@router.post("/apps/{app_id}/curation/suggestions", tags=["curation"], summary="Unlabeled inputs worth labeling next (pool-based active learning)")
async def suggest(app_id: str, body: SuggestBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.curation.suggest_inputs(curation_pb2.SuggestInputsRequest(app_id=app_id, **body.model_dump()), key=c.key))


@router.get("/apps/{app_id}/curation/label-errors", tags=["curation"], summary="Labeled inputs whose label is probably wrong")
async def label_errors(
    app_id: str, concept: list[str] = Query([]), folds: int = 5, max_results: int = 100, c: Caller = Depends(caller), cl: Clients = Depends(clients)
) -> dict:
    req = curation_pb2.FindLabelErrorsRequest(app_id=app_id, concepts=concept, folds=folds, max_results=max_results)
    return to_json(await cl.curation.find_label_errors(req, key=c.key))


@router.get("/apps/{app_id}/curation/drift", tags=["curation"], summary="Drift of recent inputs (or, with stream, recent predictions) against training data")
async def drift(
    app_id: str, stream: bool = False, recent_count: int = 200, reference_split: str = "train", c: Caller = Depends(caller), cl: Clients = Depends(clients)
) -> dict:
    req = curation_pb2.GetDriftReportRequest(app_id=app_id, stream=stream, recent_count=recent_count, reference_split=split_value(reference_split))
    return to_json(await cl.curation.get_drift_report(req, key=c.key))


class PolicyBody(BaseModel):
    model_id: str
    strategy: str = ""
    threshold: float = 0.0
    max_per_minute: int = 0
    budget: int = 0
    retrain_after_labels: int = 0
    dataset_id: str = ""
    promotion_metric: str = ""
    promotion_min_gain: float = 0.0
    drift_window: int = 0


@router.put("/apps/{app_id}/curation/policy", tags=["curation"], summary="Set the stream policy (labeling queue, retraining, promotion)")
async def set_policy(app_id: str, body: PolicyBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.curation.set_curation_policy(curation_pb2.CurationPolicy(app_id=app_id, **body.model_dump()), key=c.key))


@router.get("/apps/{app_id}/curation/policy", tags=["curation"], summary="The stream policy (404 if none)")
async def get_policy(app_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.curation.get_curation_policy(curation_pb2.GetCurationPolicyRequest(app_id=app_id), key=c.key))


@router.get("/apps/{app_id}/curation/queue", tags=["curation"], summary="The labeling queue (oldest first, paged) and its counters")
async def queue(
    app_id: str,
    state: Literal["", "all", "queued", "labeled"] = "",
    page_size: int = Query(100, ge=1, le=1000),
    page_token: str = "",
    c: Caller = Depends(caller),
    cl: Clients = Depends(clients),
) -> dict:
    req = curation_pb2.ListLabelingQueueRequest(app_id=app_id, state=QUEUE_STATES[state], page_size=page_size, page_token=page_token)  # type: ignore[arg-type]
    return to_json(await cl.curation.list_labeling_queue(req, key=c.key))


@router.get("/apps/{app_id}/curation/rounds", tags=["curation"], summary="Active-learning rounds, newest first")
async def rounds(app_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.curation.list_learning_rounds(curation_pb2.ListLearningRoundsRequest(app_id=app_id), key=c.key))


def holder_of(c: Caller, given: str = "") -> str:
    """Who holds queue leases: the Portal session (one browser), else what the caller names,
    else its key — hashed, so no secret reaches curation's tables."""
    if c.session is not None:
        return "s-" + hashlib.sha256(c.session.csrf.encode()).hexdigest()[:24]
    return given or "k-" + hashlib.sha256(c.key.encode()).hexdigest()[:24]


class LeaseBody(BaseModel):
    holder: str = Field("", description="your labeler id (default: the Portal session, or your key)")
    lease_seconds: int = 0
    release_input_id: str = ""
    exclude_input_ids: list[str] = []
    model_id: str = Field("", description="lease from this model's stored pool scores (unlabeled inputs, most uncertain first) instead of the stream queue")
    model_version: str = Field("", description="with model_id: the scored version (empty: the one scored most recently)")


@router.post(
    "/apps/{app_id}/curation/queue/lease",
    tags=["curation"],
    summary="Lease the next waiting queue item nobody else holds (renews your own); `item` is absent when none is free",
)
async def lease(app_id: str, body: LeaseBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = curation_pb2.LeaseQueueItemRequest(
        app_id=app_id,
        holder=holder_of(c, body.holder),
        lease_seconds=body.lease_seconds,
        release_input_id=body.release_input_id,
        exclude_input_ids=body.exclude_input_ids,
        model_id=body.model_id,
        model_version=body.model_version,
    )
    resp = await cl.curation.lease_queue_item(req, key=c.key)
    out = to_json(resp)
    if not resp.HasField("item"):
        out["item"] = None
        out["lease_expires_at"] = None
    return out


class ScorePoolBody(BaseModel):
    model_id: str
    model_version: str = ""
    unlabeled_only: bool = False


@router.post(
    "/apps/{app_id}/curation/score-pool",
    tags=["curation"],
    status_code=202,
    summary="Score the app's inputs (or the unlabeled ones) with a model version in the background; returns the job",
)
async def score_pool(app_id: str, body: ScorePoolBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.curation.score_pool(curation_pb2.ScorePoolRequest(app_id=app_id, **body.model_dump()), key=c.key))


@router.get("/apps/{app_id}/curation/score-pool/{job_id}", tags=["curation"], summary="A pool-scoring job's progress")
async def scoring_job(app_id: str, job_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.curation.get_scoring_job(curation_pb2.GetScoringJobRequest(app_id=app_id, job_id=job_id), key=c.key))


@router.get(
    "/apps/{app_id}/curation/predictions",
    tags=["curation"],
    summary="Stored pool predictions of a model version: by predicted concept and score range, and the inputs' labels and split now; "
    "most confident or most uncertain first",
)
async def pool_predictions(
    app_id: str,
    model_id: str,
    model_version: str = "",
    concept: str = "",
    min_score: float = 0.0,
    max_score: float = 0.0,
    order: Literal["", "score", "uncertainty"] = "",
    label: list[str] = Query([], description="keep inputs labeled with any of these concepts now"),
    split: str = "",
    labeled: Literal["", "any", "labeled", "unlabeled"] = "",
    page_size: int = Query(100, ge=1, le=1000),
    page_token: str = "",
    c: Caller = Depends(caller),
    cl: Clients = Depends(clients),
) -> dict:
    req = curation_pb2.ListPoolPredictionsRequest(
        filter=input_filter(label, split, labeled),
        app_id=app_id,
        model_id=model_id,
        model_version=model_version,
        predicted_concept=concept,
        min_score=min_score,
        max_score=max_score,
        order=order,
        page_size=page_size,
        page_token=page_token,
    )
    return to_json(await cl.curation.list_pool_predictions(req, key=c.key))
