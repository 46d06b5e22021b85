"""The Portal: server-rendered pages (Jinja2, autoescaped) plus one small script
(``static/portal.js``) that talks to the same ``/v1`` API as everyone else, with the session
cookie and its CSRF token. No build step and no third-party front-end code: nothing to pin,
audit or fetch, every page works in an air-gapped cluster, and user strings reach the page only
through autoescaping or ``textContent`` (the script never assigns HTML)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from firstlight import errors
from firstlight.clients import Clients
from firstlight.domain import validation
from firstlight.gateway import views
from firstlight.gateway.api import split_value, to_json
from firstlight.gateway.session import COOKIE, Session, SessionCodec, csrf_ok
from firstlight.v1 import auth_pb2, curation_pb2, inference_pb2, ingestion_pb2, training_pb2

router = APIRouter(prefix="/portal", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.globals.update(fmt=views.fmt, metric_label=views.metric_label)


def wants_html(request: Request) -> bool:
    return request.url.path.startswith("/portal")


def _session(request: Request) -> Session | None:
    codec: SessionCodec = request.app.state.sessions
    return codec.decode(request.cookies.get(COOKIE))


def _same_origin(request: Request) -> bool:
    """A form POST must come from our own pages (Origin, else Referer, names this host)."""
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    if not origin:
        return True  # non-browser clients send neither; the CSRF token still guards the session
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _page(request: Request, name: str, session: Session | None, status_code: int = 200, **ctx: object) -> HTMLResponse:
    ctx.update(session=session, csrf=session.csrf if session else "", app_id=ctx.get("app_id") or (session.app_id if session else ""))
    resp = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _require(request: Request, app_id: str = "") -> Session:
    s = _session(request)
    if s is None:
        raise errors.Unauthenticated("sign in first")
    if app_id and not s.admin and app_id != s.app_id:
        raise errors.PermissionDenied(f"this session is for app {s.app_id!r}")
    return s


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    s = _session(request)
    if s is None:
        return RedirectResponse("/portal/sign-in", status_code=303)
    if s.app_id:
        return RedirectResponse(f"/portal/apps/{s.app_id}/gallery", status_code=303)
    return RedirectResponse("/portal/apps", status_code=303)


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request) -> Response:
    return _page(request, "sign_in.html", None, error="")


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, api_key: str = Form(""), app_id: str = Form("")) -> Response:
    """Check the key against the services: an app key must reach ``app_id`` (or names its own app
    when none is given); the admin key may leave the app empty and pick one later."""
    if not _same_origin(request):
        raise errors.PermissionDenied("sign-in from another site")
    key, app_id = api_key.strip(), app_id.strip()
    cl: Clients = request.app.state.clients
    try:
        if not key:
            raise errors.Unauthenticated("enter an API key")
        app = None
        try:  # an app key that names no app is scoped to its own (runtime.auth)
            app = await cl.ingestion.get_app(ingestion_pb2.GetAppRequest(id=app_id), key=key)
        except (errors.NotFound, errors.InvalidArgument):
            if app_id:
                raise
        try:  # only the admin key may list an app's keys
            await cl.auth.list_api_keys(auth_pb2.ListApiKeysRequest(app_id=app.id if app else "-"), key=key)
            admin = True
        except errors.PermissionDenied:
            admin = False
        except (errors.NotFound, errors.InvalidArgument):
            admin = True  # past the admin check: asked about an app that does not exist
        if app is None and not admin:
            raise errors.InvalidArgument("enter the app id")
        app_id = app.id if app else ""
    except errors.FirstlightError as exc:
        messages = {errors.Unauthenticated: "That API key is not valid.", errors.PermissionDenied: "That key cannot reach this app."}
        return _page(request, "sign_in.html", None, error=messages.get(type(exc), str(exc)), status_code=401)
    codec: SessionCodec = request.app.state.sessions
    session = codec.new(key, app_id, admin)
    resp = RedirectResponse(f"/portal/apps/{app_id}/gallery" if app_id else "/portal/apps", status_code=303)
    resp.set_cookie(
        COOKIE,
        codec.encode(session),
        max_age=codec.ttl_s,
        httponly=True,
        samesite="lax",
        path="/",
        secure=request.app.state.settings.cookie_secure,
    )
    return resp


@router.post("/sign-out")
async def sign_out(request: Request, csrf: str = Form("")) -> Response:
    s = _session(request)
    if s is not None and not csrf_ok(s, csrf):
        raise errors.PermissionDenied("missing or wrong CSRF token")
    resp = RedirectResponse("/portal/sign-in", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


@router.get("/apps", response_class=HTMLResponse)
async def apps_page(request: Request) -> Response:
    s = _require(request)
    return _page(request, "apps.html", s, created_key=None, message="")


@router.post("/apps", response_class=HTMLResponse)
async def apps_action(request: Request, csrf: str = Form(""), action: str = Form(""), app_id: str = Form(""), name: str = Form("")) -> Response:
    """Admin: create an app, issue a key for one, or open one."""
    s = _require(request)
    if not csrf_ok(s, csrf) or not _same_origin(request):
        raise errors.PermissionDenied("missing or wrong CSRF token")
    cl: Clients = request.app.state.clients
    app_id = app_id.strip()
    created_key = None
    try:
        if action == "create":
            await cl.ingestion.create_app(ingestion_pb2.CreateAppRequest(id=app_id, name=name.strip()), key=s.key)
            message = f"Created app {app_id}."
        elif action == "key":
            resp = await cl.auth.create_api_key(auth_pb2.CreateApiKeyRequest(app_id=app_id, name=name.strip()), key=s.key)
            created_key = {"app_id": app_id, "id": resp.key.id, "name": resp.key.name, "secret": resp.secret}
            message = ""
        elif action == "open":
            await cl.ingestion.get_app(ingestion_pb2.GetAppRequest(id=app_id), key=s.key)
            codec: SessionCodec = request.app.state.sessions
            out = RedirectResponse(f"/portal/apps/{app_id}/gallery", status_code=303)
            opened = Session(s.key, app_id, s.admin, s.csrf, s.expires_at)
            out.set_cookie(
                COOKIE,
                codec.encode(opened),
                max_age=max(60, int(s.expires_at - time.time())),
                httponly=True,
                samesite="lax",
                path="/",
                secure=request.app.state.settings.cookie_secure,
            )
            return out
        else:
            raise errors.InvalidArgument(f"unknown action {action!r}")
    except errors.FirstlightError as exc:
        return _page(request, "apps.html", s, created_key=None, message=str(exc), status_code=400)
    return _page(request, "apps.html", s, created_key=created_key, message=message)


def _app_page(name: str, template: str) -> None:
    async def page(request: Request, app_id: str) -> Response:
        s = _require(request, app_id)
        return _page(request, template, s, app_id=app_id, page=name)

    router.add_api_route(f"/apps/{{app_id}}/{name}", page, methods=["GET"], response_class=HTMLResponse, name=f"portal_{name}")


for _name in ("gallery", "search", "queue", "models"):
    _app_page(_name, f"{_name}.html")


@router.get("/apps/{app_id}/inputs/{input_id}", response_class=HTMLResponse)
async def input_page(request: Request, app_id: str, input_id: str) -> Response:
    s = _require(request, app_id)
    return _page(request, "input.html", s, app_id=app_id, page="gallery", input_id=input_id)


@router.get("/apps/{app_id}/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, app_id: str, job_id: str) -> Response:
    s = _require(request, app_id)
    return _page(request, "job.html", s, app_id=app_id, page="models", job_id=job_id)


@router.get("/apps/{app_id}/models/{model_id}/versions/{version}/evaluation", response_class=HTMLResponse)
async def evaluation_page(request: Request, app_id: str, model_id: str, version: str, split: str = "validation") -> Response:
    s = _require(request, app_id)
    return _page(request, "evaluation.html", s, app_id=app_id, page="models", model_id=model_id, version=version, split=split)


@router.get("/apps/{app_id}/models/{model_id}/compare", response_class=HTMLResponse)
async def compare_page(request: Request, app_id: str, model_id: str, a: str = "", b: str = "", split: str = "validation", b_model: str = "") -> Response:
    """Two versions of a model side by side on one split (``CompareModelVersions``), or, with
    ``b_model``, a version of this model against a version of another (two evaluations on the
    same split), rendered here. Defaults: the newest version (B) against the one before (A)."""
    s = _require(request, app_id)
    cl: Clients = request.app.state.clients
    split = split if split in ("train", "validation", "test") else "validation"
    b_model = b_model.strip() or model_id
    ctx: dict = {
        "model_id": model_id,
        "b_model": b_model,
        "split": split,
        "a": a,
        "b": b,
        "versions": [],
        "b_versions": [],
        "view": None,
        "message": "",
        "models": [],
        "refs": {},
    }
    try:
        listed = await cl.inference.list_models(inference_pb2.ListModelsRequest(app_id=app_id), key=s.key)
        ctx["models"] = [m.id for m in listed.models if m.id != "general"]
        listed_a = await cl.training.list_model_versions(training_pb2.ListModelVersionsRequest(app_id=app_id, model_id=model_id), key=s.key)
        versions = [to_json(v) for v in listed_a.versions]  # newest first
        b_versions = versions
        if b_model != model_id:
            listed_b = await cl.training.list_model_versions(training_pb2.ListModelVersionsRequest(app_id=app_id, model_id=b_model), key=s.key)
            b_versions = [to_json(v) for v in listed_b.versions]
        ctx.update(versions=versions, b_versions=b_versions)
        ids, b_ids = [v["version"] for v in versions], [v["version"] for v in b_versions]
        if b_model == model_id and len(ids) < 2:
            n = len(ids)
            ctx["message"] = f"Model {model_id} has {n} trained version{'s' if n != 1 else ''}: train another to compare, or pick another model for B."
        elif not ids or not b_ids:
            ctx["message"] = f"Model {model_id if not ids else b_model} has no trained version yet."
        else:
            b = b if b in b_ids else b_ids[0]
            a = a if a in ids else next((v for v in ids if v != b or b_model != model_id), ids[0])
            ctx.update(a=a, b=b)
            if a == b and b_model == model_id:
                ctx["message"] = "Pick two different versions."
            elif b_model == model_id:
                req = training_pb2.CompareModelVersionsRequest(app_id=app_id, model_id=model_id, versions=[a, b], split=split_value(split))  # type: ignore[arg-type]
                comparison = to_json(await cl.training.compare_model_versions(req, key=s.key))
                ctx["view"] = views.comparison_view(comparison, a, b)
                ctx["by_version"] = {v["version"]: v for v in versions}
                ctx["refs"] = {a: (model_id, a), b: (model_id, b)}
            else:  # two models: each evaluated on the split of the dataset version it trained on
                la, lb = f"{a} of {model_id}", f"{b} of {b_model}"
                evs = []
                for label, (m, v) in ((la, (model_id, a)), (lb, (b_model, b))):
                    req_e = training_pb2.EvaluateModelVersionRequest(app_id=app_id, model_id=m, version=v, split=split_value(split))  # type: ignore[arg-type]
                    evs.append(dict(to_json(await cl.training.evaluate_model_version(req_e, key=s.key)), version=label))
                ctx["view"] = views.comparison_view({"evaluations": evs}, la, lb)
                ctx["by_version"] = {la: next(v for v in versions if v["version"] == a), lb: next(v for v in b_versions if v["version"] == b)}
                ctx["refs"] = {la: (model_id, a), lb: (b_model, b)}
    except (errors.NotFound, errors.FailedPrecondition, errors.InvalidArgument, KeyError) as exc:
        ctx["message"] = str(exc)
    return _page(request, "compare.html", s, app_id=app_id, page="models", **ctx)


@router.get("/apps/{app_id}/curation", response_class=HTMLResponse)
async def curation_page(request: Request, app_id: str, metric: str = "", drift: bool = False, stream: bool = False, recent_count: str = "200") -> Response:
    """The curation page: the policy form and label errors (script), and, rendered here, the
    active-learning rounds with their learning curve (``ListLearningRounds``) and, when asked
    (``?drift=1``), the drift report in words (``GetDriftReport``)."""
    s = _require(request, app_id)
    cl: Clients = request.app.state.clients
    recent = validation.whole_number(recent_count)
    ctx: dict = {
        "rounds": [],
        "curve": None,
        "metrics": [],
        "rounds_error": "",
        "drift": None,
        "drift_error": "",
        "stream": stream,
        "recent_count": max(1, min(200 if recent is None else recent, 10_000)),
        "drift_asked": drift,
    }
    try:
        rounds = [to_json(r) for r in (await cl.curation.list_learning_rounds(curation_pb2.ListLearningRoundsRequest(app_id=app_id), key=s.key)).rounds]
        metrics = views.curve_metrics(rounds)
        ctx.update(rounds=rounds, metrics=metrics, curve=views.learning_curve(rounds, metric if metric in metrics else ""))
    except (errors.Unauthenticated, errors.PermissionDenied):
        raise
    except errors.FirstlightError as exc:
        ctx["rounds_error"] = str(exc)
    if drift:
        try:
            req = curation_pb2.GetDriftReportRequest(app_id=app_id, stream=stream, recent_count=ctx["recent_count"])
            report = to_json(await cl.curation.get_drift_report(req, key=s.key))
            ctx["drift"] = views.drift_view(report, stream)
        except (errors.Unauthenticated, errors.PermissionDenied):
            raise
        except errors.FirstlightError as exc:
            ctx["drift_error"] = str(exc)
    return _page(request, "curation.html", s, app_id=app_id, page="curation", **ctx)
