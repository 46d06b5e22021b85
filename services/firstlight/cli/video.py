"""Videos: upload one (``firstlight upload APP clip.mp4`` lands here), label a time segment, and
predictions on a video (``firstlight predict clip.mp4``) with time segments as they close."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from firstlight.cli.app import command
from firstlight.cli.errors import fail
from firstlight.cli.options import DEFAULT_DATA_DIR, DataDir, client
from firstlight.cli.output import console
from firstlight.sdk.video import VIDEO_SUFFIXES, video_id_for
from firstlight.video.decode import format_clock


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def upload_video_file(
    app_id: str, path: Path, *, video_id: str = "", concepts: list[str] | None = None, wait: bool = True, data_dir: Path = DEFAULT_DATA_DIR
) -> None:
    """Upload one video; print what was kept; wait until its frames are searchable."""
    vid = video_id or video_id_for(path)
    with client(data_dir) as fl:
        fl.create_app(app_id, exist_ok=True)
        before = fl.indexed_count(app_id)
        start = time.perf_counter()
        with console.status(f"uploading and sampling {path.name} ({path.stat().st_size / 1e6:.1f} MB)"):
            r = fl.upload_video(app_id, path, video_id=vid, concepts=concepts or [])
        i = r.info
        console.print(
            f"video [bold]{r.video_id}[/bold]: {i.container} {i.codec} {i.width}x{i.height}, {format_clock(i.duration_s)}; "
            f"{r.frames_decoded} frames decoded, {r.frames_kept} kept ({r.scene_changes} scene changes, "
            f"{r.duplicates_dropped} near-duplicates dropped), {r.frames_added} new inputs"
        )
        if r.partial:
            console.print(f"[yellow]partial[/yellow]: {r.error} (frames up to {format_clock(r.last_good_s)} kept)")
        if wait and r.frames_added:
            with console.status("indexing frames"):
                fl.wait_indexed(app_id, before + r.frames_added, timeout=3600)
            console.print(f"all frames searchable after {time.perf_counter() - start:.1f}s")


@command("label-segment")
def label_segment(
    app_id: str,
    video_id: str,
    start_s: Annotated[float, typer.Argument(help="Segment start, seconds")],
    end_s: Annotated[float, typer.Argument(help="Segment end, seconds")],
    concept: Annotated[list[str], typer.Option("--add", help="Concept(s) to add to every frame in it")],
    remove: Annotated[list[str] | None, typer.Option(help="Concept(s) to remove")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Label every frame of a video from START_S to END_S at once."""
    with client(data_dir) as fl:
        ids = fl.label_video_segment(app_id, video_id, start_s, end_s, add=concept, remove=remove or [])
    console.print(f"labeled {len(ids)} frames of {video_id} ({format_clock(start_s)}–{format_clock(end_s)}) with {', '.join(concept)}")


def predict_video_file(
    path: Path, *, model: str, version: str, app_id: str, top_k: int, concepts: list[str], threshold: float, frames: bool, data_dir: Path
) -> None:
    """Stream a video's predictions: segments as they close (and each frame with --frames)."""
    with client(data_dir) as fl:
        console.print(f"[bold]{path}[/bold]")
        for item in fl.predict_video_stream(path, model=model, version=version, app_id=app_id, top_k=top_k, concepts=concepts, segment_threshold=threshold):
            kind = item.WhichOneof("item")
            if kind == "frame" and frames:
                f = item.frame
                console.print(f"  {format_clock(f.t)}  " + ", ".join(f"{c.name} {c.score:.2f}" for c in f.prediction.concepts))
            elif kind == "segment":
                s = item.segment
                console.print(
                    f"  [green]{s.concept}[/green] from {format_clock(s.start_s)} to {format_clock(s.end_s)}, max score {s.max_score:.2f} ({s.frames} frames)"
                )
            elif kind == "end":
                e = item.end
                if e.partial:
                    console.print(f"  [yellow]partial[/yellow]: {e.error}")
                console.print(f"  {e.frames_decoded} frames decoded, {format_clock(e.info.duration_s)}")


@command("search-video")
def search_video(app_id: str, clip: Path, top_k: int = 10, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Videos and moments most like a clip (its frames matched in temporal order)."""
    if not is_video(clip):
        fail(f"{clip} is not a video file ({', '.join(VIDEO_SUFFIXES)})")
    with client(data_dir) as fl:
        matches = fl.search_by_video(app_id, clip, top_k=top_k)
    for n, m in enumerate(matches, 1):
        console.print(f"{n}. {m.video_id} {format_clock(m.start_s)}–{format_clock(m.end_s)}  score {m.score:.3f} ({len(m.pairs)} frames aligned)")
