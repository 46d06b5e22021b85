"""The Portal's video page: the frames of one video in time order (thumbnail, ``mm:ss.s``, link
to each frame's input page) and what the upload said (codec, size, partial). Search results and
the input page link here from a frame. Rendered server-side (autoescaped)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from firstlight.clients import Clients
from firstlight.gateway import portal
from firstlight.gateway.video_api import clock, video_summary

router = APIRouter(prefix="/portal", include_in_schema=False)


@router.get("/apps/{app_id}/videos/{video}", response_class=HTMLResponse)
async def video_page(request: Request, app_id: str, video: str, t: float = -1.0) -> Response:
    """``t``: the frame the visitor came from (highlighted)."""
    s = portal._require(request, app_id)
    cl: Clients = request.app.state.clients
    summary = await video_summary(cl, request.app.state.media, s.key, app_id, video)
    frames = [dict(f, clock=clock(f["t"]), here=abs(f["t"] - t) < 0.0005) for f in summary["frames"]]
    info = summary.get("info") or {}
    return portal._page(
        request,
        "video.html",
        s,
        app_id=app_id,
        page="video",
        video_id=summary["video_id"],
        frames=frames,
        info=info,
        duration=clock(info.get("duration_s") or 0.0),
        summary=summary,
        last_good=clock(summary.get("last_good_s") or 0.0),
    )
