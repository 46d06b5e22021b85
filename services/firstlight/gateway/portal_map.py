"""The Portal's map page: the app's embeddings in 2-D, coloured by concept, split (the inputs'
own, or a dataset version's) or a model's prediction, with a legend; a point opens its input.
The page is a form and an empty SVG rendered here; portal.js starts (or reuses) the map job
through ``/v1/apps/{app}/map``, shows its progress, reads the points page by page and draws
them (no library, nothing downloaded)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from firstlight import errors
from firstlight.clients import Clients
from firstlight.gateway import portal
from firstlight.v1 import inference_pb2

router = APIRouter(prefix="/portal", include_in_schema=False)
COLOURS = ("concept", "split", "prediction")


@router.get("/apps/{app_id}/map", response_class=HTMLResponse)
async def map_page(
    request: Request, app_id: str, color: str = "concept", model: str = "", model_version: str = "", dataset: str = "", method: str = "pca"
) -> Response:
    s = portal._require(request, app_id)
    cl: Clients = request.app.state.clients
    models: list[str] = []
    try:
        listed = await cl.inference.list_models(inference_pb2.ListModelsRequest(app_id=app_id), key=s.key)
        models = [m.id for m in listed.models if m.id != "general"]
    except (errors.Unauthenticated, errors.PermissionDenied):
        raise
    except errors.FirstlightError:
        pass  # the form then takes a typed model id
    q = {
        "color": color if color in COLOURS else "concept",
        "model": model.strip(),
        "model_version": model_version.strip(),
        "dataset": dataset.strip(),
        "method": method if method in ("pca", "tsne") else "pca",
    }
    return portal._page(request, "map.html", s, app_id=app_id, page="map", q=q, models=models)
