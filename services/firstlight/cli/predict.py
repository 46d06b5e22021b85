"""Predictions: concepts (the general model or an app's classifier) and objects (a detector)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from firstlight.cli.app import command
from firstlight.cli.options import DEFAULT_DATA_DIR, DataDir, client
from firstlight.cli.output import console
from firstlight.media.formats import open_image


@command()
def predict(
    files: list[Path],
    top_k: int = 5,
    concept: Annotated[list[str] | None, typer.Option(help="Only score these concepts")] = None,
    model: Annotated[str, typer.Option(help="Model id: 'general' or one of the app's")] = "general",
    version: str = "",
    app_id: Annotated[str, typer.Option("--app", help="App of the model")] = "",
    frames: Annotated[bool, typer.Option(help="Videos: print every sampled frame's concepts too")] = False,
    segment_threshold: Annotated[float, typer.Option(help="Videos: a frame scoring this counts towards a segment")] = 0.5,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Predict concepts with the general model or an app's trained model. A video file gets a
    result per sampled frame (--frames) and its time segments, streamed as it decodes."""
    from firstlight.cli.video import is_video, predict_video_file

    videos = [f for f in files if is_video(f)]
    for f in videos:
        predict_video_file(
            f, model=model, version=version, app_id=app_id, top_k=top_k, concepts=concept or [], threshold=segment_threshold,
            frames=frames, data_dir=data_dir,
        )  # fmt: skip
    files = [f for f in files if f not in videos]
    if not files:
        return
    with client(data_dir) as fl:
        results = fl.predict([f.read_bytes() for f in files], model=model, version=version, app_id=app_id, top_k=top_k, concepts=concept or [])
    for f, concepts in zip(files, results):
        console.print(f"[bold]{f}[/bold]: " + ", ".join(f"{n} {s:.2f}" for n, s in concepts))


@command()
def detect(
    files: list[Path],
    model: Annotated[str, typer.Option(help="A visual_detector model of the app")],
    app_id: Annotated[str, typer.Option("--app", help="App of the model")],
    version: str = "",
    top_k: Annotated[int, typer.Option(help="Regions per image (0: all the model found)")] = 0,
    min_score: Annotated[float, typer.Option(help="Drop regions scoring below this")] = 0.0,
    concept: Annotated[list[str] | None, typer.Option(help="Only these concepts")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Find objects with a detector model: concept, score and box (pixels of each image)."""
    with client(data_dir) as fl:
        results = fl.detect(
            [f.read_bytes() for f in files],
            model=model,
            app_id=app_id,
            version=version,
            top_k=top_k,
            concepts=concept or [],
            min_score=min_score,
        )
    for f, regions in zip(files, results):
        w, h = open_image(f).size  # HEIC too
        console.print(f"[bold]{f}[/bold]: {len(regions)} region(s)")
        for r in regions:
            x0, y0, x1, y1 = r.box
            console.print(f"  {r.concept} {r.score:.2f}  box ({x0 * w:.0f}, {y0 * h:.0f}) – ({x1 * w:.0f}, {y1 * h:.0f})")
