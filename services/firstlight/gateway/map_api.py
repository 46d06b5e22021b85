"""``/v1`` routes of the embedding map: start (or reuse) the app's 2-D map in the curation
service, follow the job, and read its points in pages (labels now, a dataset version's splits,
a model version's predictions)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from firstlight.clients import Clients
from firstlight.gateway.api import Caller, _version, caller, clients, to_json
from firstlight.v1 import curation_pb2

router = APIRouter(prefix="/v1")


class StartMapBody(BaseModel):
    method: Literal["", "pca", "tsne"] = Field("", description="pca (default) or tsne (at most 20,000 inputs)")
    force: bool = Field(False, description="compute again even if the cached map is current")


@router.post(
    "/apps/{app_id}/map",
    tags=["quality"],
    status_code=202,
    summary="Start the app's 2-D embedding map in the background (returns at once, `cached`, while the app's inputs have not changed); returns the job",
)
async def start_map(app_id: str, body: StartMapBody, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    req = curation_pb2.StartEmbeddingMapRequest(app_id=app_id, method=body.method, force=body.force)
    return to_json(await cl.curation.start_embedding_map(req, key=c.key))


@router.get("/apps/{app_id}/map/jobs/{job_id}", tags=["quality"], summary="A map job's progress")
async def map_job(app_id: str, job_id: str, c: Caller = Depends(caller), cl: Clients = Depends(clients)) -> dict:
    return to_json(await cl.curation.get_embedding_map_job(curation_pb2.GetEmbeddingMapJobRequest(app_id=app_id, job_id=job_id), key=c.key))


@router.get(
    "/apps/{app_id}/map/points",
    tags=["quality"],
    summary="A page of the app's map: input, x and y in [-1, 1], concepts and split now (or in a dataset version), a model version's prediction",
)
async def map_points(
    app_id: str,
    method: Literal["", "pca", "tsne"] = "",
    page_size: int = Query(1000, ge=1, le=5000),
    page_token: str = "",
    dataset_id: str = Query("", description="give each point its split in this dataset's version"),
    dataset_version: str = Query("", description="that version (default: the latest)"),
    model_id: str = Query("", description="give each point this model's predicted concept and score"),
    model_version: str = Query("", description="its version (default: the latest that scored the pool, else the serving one)"),
    c: Caller = Depends(caller),
    cl: Clients = Depends(clients),
) -> dict:
    req = curation_pb2.ListEmbeddingMapPointsRequest(
        app_id=app_id,
        method=method,
        page_size=page_size,
        page_token=page_token,
        dataset_id=dataset_id,
        dataset_version=dataset_version,
        model_id=model_id,
        model_version=_version(model_version),
    )
    return to_json(await cl.curation.list_embedding_map_points(req, key=c.key))
