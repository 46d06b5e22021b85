"""The Portal's data-quality page: the health check of the app or of a dataset version (its
verdicts, duplicate groups as thumbnails with "keep one", leaks across splits, outliers and
flagged images), the most unusual and most representative inputs (uniqueness), a model
version's worst slices, and a histogram of one image-quality metric
stored with the inputs (SVG bars drawn server-side). The check runs when asked (``?run=1``):
the first check of an app reads and decodes every image once. Rendered server-side
(autoescaped); "keep one" is a plain form POST with the session's CSRF token, so the page needs
no script."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from firstlight import errors
from firstlight.clients import Clients
from firstlight.domain import validation
from firstlight.gateway import portal, quality_views
from firstlight.gateway.api import to_json
from firstlight.gateway.quality_api import health_request, slices_request, uniqueness_request
from firstlight.gateway.session import Session, csrf_ok
from firstlight.v1 import curation_pb2, inference_pb2, ingestion_pb2, training_pb2

router = APIRouter(prefix="/portal", include_in_schema=False)
MAX_MESSAGE = 600
#: Tiles of the uniqueness card: most unusual (or typical) inputs, representatives per concept.
UNIQUE_TILES, REPRESENTATIVES = 12, 4


async def _describe(cl: Clients, key: str, app_id: str, ids: list[str]) -> dict[str, tuple[list[str], int]]:
    async def one(i: str) -> tuple[str, tuple[list[str], int]] | None:
        try:
            inp = await cl.ingestion.get_input(ingestion_pb2.GetInputRequest(app_id=app_id, input_id=i), key=key)
        except errors.NotFound:
            return None
        return i, (list(inp.concepts), int(inp.split))

    found = await asyncio.gather(*(one(i) for i in ids))
    return dict(f for f in found if f is not None)


async def _render(request: Request, s: Session, app_id: str, q: dict[str, Any], message: str = "", status_code: int = 200) -> Response:
    cl: Clients = request.app.state.clients
    ctx: dict[str, Any] = {
        "q": q,
        "message": message,
        "health": None,
        "health_error": "",
        "slices": None,
        "slices_meta": None,
        "slices_error": "",
        "models": [],
        "histogram": None,
        "histogram_error": "",
        "uniqueness": None,
        "uniqueness_error": "",
        "histogram_metrics": quality_views.HISTOGRAM_METRICS,
        "rank_by_choices": quality_views.RANK_BY,
        "rank_by_words": quality_views.RANK_BY_WORDS,
    }
    try:
        listed = await cl.inference.list_models(inference_pb2.ListModelsRequest(app_id=app_id), key=s.key)
        ctx["models"] = [m.id for m in listed.models if m.id != "general"]
    except (errors.Unauthenticated, errors.PermissionDenied):
        raise
    except errors.FirstlightError:
        pass  # the slices form then takes a typed model id
    if q["dataset"]:  # the check recorded with the version when it was frozen
        try:
            ds = await cl.training.get_dataset(training_pb2.GetDatasetRequest(app_id=app_id, dataset_id=q["dataset"]), key=s.key)
            if ds.HasField("health") and (not q["version"] or q["version"] == ds.version):
                ctx["recorded"] = quality_views.recorded_health(to_json(ds))
        except (errors.Unauthenticated, errors.PermissionDenied):
            raise
        except errors.FirstlightError:
            pass  # the check below reports an unknown dataset
    if q["run"]:
        try:
            req = health_request(app_id, q["dataset"], q["version"], q["images"], 0.0, q["examples"], q["group_key"])
            report = to_json(await cl.curation.run_health_check(req, key=s.key))
            facts = await _describe(cl, s.key, app_id, quality_views.ids_to_describe(report))
            ctx["health"] = quality_views.health_view(report, facts)
        except (errors.Unauthenticated, errors.PermissionDenied):
            raise
        except errors.FirstlightError as exc:
            ctx["health_error"] = str(exc)
    if q["uniq"]:
        try:
            scope = "concept" if q["uniq_concept"] else "app"
            req = uniqueness_request(app_id, scope, q["uniq_order"], q["uniq_concept"], UNIQUE_TILES, "", REPRESENTATIVES)
            ctx["uniqueness"] = quality_views.uniqueness_view(to_json(await cl.curation.score_uniqueness(req, key=s.key)))
        except (errors.Unauthenticated, errors.PermissionDenied):
            raise
        except errors.FirstlightError as exc:
            ctx["uniqueness_error"] = str(exc)
    if q["model"]:
        try:
            resp = to_json(
                await cl.curation.get_worst_slices(
                    slices_request(app_id, q["model"], q["model_version"], q["split"], q["min_size"], 20, q["rank_by"], q["metadata_keys"]), key=s.key
                )
            )
            ctx["slices"] = quality_views.slices_view(resp)
            ctx["slices_meta"] = resp
        except (errors.Unauthenticated, errors.PermissionDenied):
            raise
        except errors.FirstlightError as exc:
            ctx["slices_error"] = str(exc)
    if q["metric"]:
        try:
            req = ingestion_pb2.GetQualityHistogramRequest(app_id=app_id, metric=q["metric"], bins=20)
            ctx["histogram"] = quality_views.histogram_view(to_json(await cl.ingestion.get_quality_histogram(req, key=s.key)))
        except (errors.Unauthenticated, errors.PermissionDenied):
            raise
        except errors.FirstlightError as exc:
            ctx["histogram_error"] = str(exc)
    return portal._page(request, "quality.html", s, app_id=app_id, page="quality", status_code=status_code, **ctx)


def _query(params: Mapping[str, str]) -> dict:
    """The page's state from its query string (every field optional; bounded and checked here)."""

    def text(name: str, default: str = "") -> str:
        return params.get(name, default)

    def number(name: str, default: int, hi: int) -> int:
        n = validation.whole_number(text(name))
        return max(1, min(n, hi)) if n is not None else default

    split, rank_by, metric, order = text("split", "validation"), text("rank_by"), text("metric"), text("uniq_order")
    return {
        "run": text("run").strip() in ("1", "true", "on"),
        "dataset": text("dataset").strip(),
        "version": text("version").strip(),
        "images": text("images", "1").strip() not in ("0", "false", "off"),
        "group_key": text("group_key").strip(),
        "examples": number("examples", 20, 200),
        "model": text("model").strip(),
        "model_version": text("model_version").strip(),
        "split": split if split in ("validation", "test", "train") else "validation",
        "min_size": number("min_size", 20, 100_000),
        "rank_by": rank_by if rank_by in quality_views.RANK_BY else quality_views.RANK_BY[0],
        "metric": metric if metric in quality_views.HISTOGRAM_METRICS else "",
        # as typed (the service validates each key and says which is wrong); bounded here
        "metadata_keys": [k.strip()[:100] for k in text("metadata_keys")[:1000].split(",") if k.strip()][:20],
        "uniq": text("uniq").strip() in ("1", "true", "on"),
        "uniq_concept": text("uniq_concept").strip(),
        "uniq_order": order if order in ("unusual", "typical") else "unusual",
    }


@router.get("/apps/{app_id}/quality", response_class=HTMLResponse)
async def quality_page(request: Request, app_id: str, done: str = "") -> Response:
    """The page's fields come from the query string (:func:`_query`). ``done``: what the last
    "keep one" did (it redirects here, so a reload does not post again)."""
    s = portal._require(request, app_id)
    q = _query(request.query_params)
    return await _render(request, s, app_id, q, message=done[:MAX_MESSAGE])


@router.post("/apps/{app_id}/quality/keep-one", response_class=HTMLResponse)
async def keep_one_action(
    request: Request,
    app_id: str,
    csrf: str = Form(""),
    keep: str = Form(""),
    members: list[str] = Form([]),
    dataset: str = Form(""),
    version: str = Form(""),
    images: str = Form("1"),
    group_key: str = Form(""),
    examples: str = Form("20"),
) -> Response:
    """Keep the chosen member of a group, delete the others; the page is shown again with the
    check re-run (the group gone) and what was deleted, or why nothing was."""
    s = portal._require(request, app_id)
    if not csrf_ok(s, csrf) or not portal._same_origin(request):
        raise errors.PermissionDenied("missing or wrong CSRF token")
    q = _query({"run": "1", "dataset": dataset, "version": version, "images": images, "group_key": group_key, "examples": examples})
    drop = [m for m in dict.fromkeys(members) if m != keep]
    cl: Clients = request.app.state.clients
    try:
        if not keep or keep not in members:
            raise errors.InvalidArgument("pick the input to keep")
        r = await cl.curation.keep_one_duplicate(curation_pb2.KeepOneRequest(app_id=app_id, keep=keep, drop=drop), key=s.key)
    except (errors.Unauthenticated, errors.PermissionDenied):
        raise
    except errors.FirstlightError as exc:
        return await _render(request, s, app_id, q, message=f"Nothing deleted: {exc}", status_code=409 if isinstance(exc, errors.FailedPrecondition) else 400)
    n = len(r.deleted_input_ids)
    shown = ", ".join(r.deleted_input_ids[:20]) + (", …" if n > 20 else "")
    done = f"Kept {r.kept}; deleted its {n} duplicate{'s' if n != 1 else ''}: {shown}."
    params = {"run": "1", "dataset": q["dataset"], "version": q["version"], "images": "1" if q["images"] else "0", "group_key": q["group_key"]}
    params |= {"examples": str(q["examples"]), "done": done}
    return RedirectResponse(f"/portal/apps/{app_id}/quality?{urlencode(params)}", status_code=303)
