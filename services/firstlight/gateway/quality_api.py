"""``/v1`` data-quality routes: the health check of an app or a dataset version, a model
version's worst slices, and "keep one" of a duplicate group (the others deleted, after the
curation service checks again that they are duplicates and that no label is lost)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from firstlight.clients import Clients
from firstlight.errors import InvalidArgument
from firstlight.gateway.api import Caller, _version, b64, caller, clients, to_json
from firstlight.v1 import curation_pb2, ingestion_pb2

router = APIRouter(prefix="/v1")


def health_request(
    app_id: str, dataset_id: str = "", dataset_version: str = "", images: bool = True, threshold: float = 0.0, max_examples: int = 20, group_key: str = ""
) -> curation_pb2.HealthCheckRequest:
    return curation_pb2.HealthCheckRequest(
        app_id=app_id,
        dataset_id=dataset_id,
        dataset_version=dataset_version,
        images=images,
        near_duplicate_threshold=threshold,
        max_examples=max_examples,
        group_key=group_key,
    )


@router.get(
    "/apps/{app_id}/quality/health",
    tags=["quality"],
    summary="Health check of the app's inputs or of a dataset version: pass / warn / fail per check, duplicate groups, outliers, flagged images",
)
async def health(
    app_id: str,
    dataset_id: str = Query("", description="check this dataset (default: every indexed input of the app)"),
    dataset_version: str = Query("", description="its version (default: the latest)"),
    images: bool = Query(True, description="read the images too: exact copies, blur, blank, dark… (the first check of an app decodes each once)"),
    near_duplicate_threshold: float = Query(0.0, ge=0.0, le=1.0, description="embedding cosine of a near-duplicate (0: 0.985)"),
    max_examples: int = Query(20, ge=1, le=1000, description="examples per check and list"),
    group_key: str = Query("", description="metadata key of inputs that belong together (e.g. video_id): never duplicates of each other"),
    c: Caller = Depends(caller),
    cl: Clients = Depends(clients),
) -> dict:
    req = health_request(app_id, dataset_id, dataset_version, images, near_duplicate_threshold, max_examples, group_key)
    return to_json(await cl.curation.run_health_check(req, key=c.key))


class KeepOneBody(BaseModel):
    keep: str = Field(..., description="the input to keep")
    drop: list[str] = Field(..., min_length=1, max_length=1000, description="its duplicates, to delete")
    near_duplicate_threshold: float = Field(0.0, ge=0.0, le=1.0, description="embedding cosine of the re-check (0: 0.985)")


@router.post(
    "/apps/{app_id}/quality/duplicates/keep-one",
    tags=["quality"],
    summary="Keep one input of a duplicate group, delete the others (409, nothing deleted, if one is no duplicate or has a label the kept one lacks)",
)
async def keep_one(app_id: str, body: KeepOneBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = curation_pb2.KeepOneRequest(app_id=app_id, keep=body.keep, drop=body.drop, near_duplicate_threshold=body.near_duplicate_threshold)
    return to_json(await cl.curation.keep_one_duplicate(req, key=c.key))


def slices_request(
    app_id: str, model_id: str, version: str, split: str, min_size: int, limit: int, rank_by: str = "", metadata_keys: Sequence[str] = ()
) -> curation_pb2.WorstSlicesRequest:
    return curation_pb2.WorstSlicesRequest(
        app_id=app_id,
        model_id=model_id,
        model_version=_version(version),
        split=split,
        min_size=min_size,
        limit=limit,
        rank_by=rank_by,
        metadata_keys=list(metadata_keys),
    )


@router.get(
    "/apps/{app_id}/models/{model_id}/versions/{version}/slices",
    tags=["quality"],
    summary="Where a version (`serving`: the serving one) does worst on a split: per concept, cluster, metadata value, quality quartile; accuracy, F1, Brier",
)
async def worst_slices(
    app_id: str,
    model_id: str,
    version: str,
    split: str = Query("validation", description="validation, test or train"),
    min_size: int = Query(20, ge=1, description="smallest slice reported"),
    limit: int = Query(20, ge=1, le=1000),
    rank_by: str = Query("", description="brier (default: the head's least reliable slices), accuracy or f1; 400 otherwise"),
    metadata_key: list[str] = Query(
        [], description="input metadata key to slice by, repeatable (at most 8); none: the categorical keys are chosen, listed in metadata_keys"
    ),
    c: Caller = Depends(caller),
    cl: Clients = Depends(clients),
) -> dict:
    req = slices_request(app_id, model_id, version, split, min_size, limit, rank_by, metadata_key)
    return to_json(await cl.curation.get_worst_slices(req, key=c.key))


@router.get(
    "/apps/{app_id}/quality/histogram",
    tags=["quality"],
    summary="Histogram of one image-quality metric (blur, brightness, contrast, ...) stored with the app's inputs: bucket edges and counts",
)
async def quality_histogram(
    app_id: str,
    metric: str = Query(..., description="blur, brightness, highlight, contrast, saturation, noise, aspect_ratio, width, height, grayscale or blank_fraction"),
    bins: int = Query(20, ge=1, le=100, description="equal-width buckets"),
    c: Caller = Depends(caller),
    cl: Clients = Depends(clients),
) -> dict:
    req = ingestion_pb2.GetQualityHistogramRequest(app_id=app_id, metric=metric, bins=bins)
    return to_json(await cl.ingestion.get_quality_histogram(req, key=c.key))


class ExplainBody(BaseModel):
    input_id: str = Field("", description="an input of the app; or base64")
    base64: str = Field("", description="an encoded image (JPEG, PNG, WebP, HEIC, AVIF…), not stored")
    top_k: int = Field(3, ge=1, le=10, description="top predicted concepts explained")
    evidence_count: int = Field(6, ge=1, le=50, description="nearest labeled training examples per concept")
    method: str = Field("", description="gradcam++ (default) or gradcam")


def explain_request(
    app_id: str, model_id: str, version: str, input_id: str, image: bytes, top_k: int, evidence: int, method: str
) -> curation_pb2.ExplainPredictionRequest:
    req = curation_pb2.ExplainPredictionRequest(
        app_id=app_id, model_id=model_id, model_version=_version(version), top_k=top_k, evidence_count=evidence, method=method
    )  # fmt: skip
    if image:
        req.image_bytes = image
    elif input_id:
        req.input_id = input_id
    return req


@router.post(
    "/apps/{app_id}/models/{model_id}/versions/{version}/explain",
    tags=["quality"],
    summary="Why a version (`serving`: the serving one) predicts what it does on an input or image: per top concept a saliency overlay PNG "
    "(base64), the raw map and the nearest labeled training examples; `?format=png`: only the grid PNG (image | map | overlay per concept)",
    response_model=None,
)
async def explain(
    app_id: str,
    model_id: str,
    version: str,
    body: ExplainBody,
    format: Literal["json", "png"] = Query("json", description="json (everything) or png (the grid)"),
    c: Caller = Depends(caller),
    cl: Clients = Depends(clients),
) -> dict | Response:
    if body.base64 and body.input_id:
        raise InvalidArgument("give input_id or base64, not both")
    image = b64(body.base64, "base64") if body.base64 else b""
    req = explain_request(app_id, model_id, version, body.input_id, image, body.top_k, body.evidence_count, body.method)
    resp = await cl.curation.explain_prediction(req, key=c.key)
    if format == "png":
        return Response(resp.grid_png, media_type="image/png")
    return to_json(resp)


def uniqueness_request(
    app_id: str, scope: str = "", order: str = "", concept: str = "", page_size: int = 0, page_token: str = "", per_concept: int = 0
) -> curation_pb2.ScoreUniquenessRequest:
    return curation_pb2.ScoreUniquenessRequest(
        app_id=app_id, scope=scope, order=order, concept=concept, page_size=page_size, page_token=page_token, per_concept=per_concept
    )


@router.get(
    "/apps/{app_id}/quality/uniqueness",
    tags=["quality"],
    summary="Every indexed input's uniqueness (kNN distance app-wide and within its concept), most unusual or most typical first, paged; "
    "the most representative inputs per concept on the first page",
)
async def uniqueness(
    app_id: str,
    scope: str = Query("app", description="app (among all inputs) or concept (within the input's only concept); 400 otherwise"),
    order: str = Query("unusual", description="unusual (highest score first) or typical; 400 otherwise"),
    concept: str = Query("", description="list only the inputs labeled with this concept"),
    page_size: int = Query(100, ge=1, le=1000),
    page_token: str = Query(""),
    per_concept: int = Query(0, ge=0, le=50, description="representatives per concept (0: none)"),
    c: Caller = Depends(caller),
    cl: Clients = Depends(clients),
) -> dict:
    req = uniqueness_request(app_id, scope, order, concept, page_size, page_token, per_concept)
    return to_json(await cl.curation.score_uniqueness(req, key=c.key))
