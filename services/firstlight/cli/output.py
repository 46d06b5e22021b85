"""What the commands print with: one console, the progress bar, the search-hit table."""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from firstlight import progress
from firstlight.v1 import search_pb2

console = Console()


def progress_bar() -> Progress:
    return progress.progress_bar(console)


def print_hits(resp: search_pb2.SearchResponse, title: str) -> None:
    from firstlight.video.decode import format_clock

    table = Table(title=title)
    video = any(hit.video_id for hit in resp.hits)  # frames of videos: say which video and when
    for col in ("#", "input", "score", "concepts", *(("video", "at") if video else ())):
        table.add_column(col)
    for n, hit in enumerate(resp.hits, 1):
        where = (hit.video_id, format_clock(hit.video_t)) if hit.video_id else ("", "")
        table.add_row(str(n), hit.input_id, f"{hit.score:.3f}", ", ".join(hit.concepts), *(where if video else ()))
    console.print(table)
