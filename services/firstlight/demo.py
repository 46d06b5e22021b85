"""The demo `make run` shows: zero-data predictions, visual search and text search over
bundled images, all through the running services."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from firstlight import datasets
from firstlight.progress import progress_bar
from firstlight.sdk import Firstlight, UploadItem

DEMO_APP = "demo"


def run_demo(client: Firstlight, console: Console, per_class: int = 30) -> dict:
    console.rule("[bold]Firstlight demo")
    client.create_app(DEMO_APP, "Demo: animal-mnist and sample photos", exist_ok=True)
    animals = datasets.animal_mnist(per_class, seed=0)
    items = [UploadItem(data, [name], id=input_id) for input_id, name, data in animals]
    photos = {name: datasets.sample_photo(name) for name in datasets.SAMPLE_PHOTOS}
    items += [UploadItem(data, [], id=f"photo-{name}") for name, data in photos.items()]

    start = time.perf_counter()
    with progress_bar(console) as bar:
        task = bar.add_task("uploading", total=len(items), rate="")
        report = client.upload(DEMO_APP, items, on_progress=lambda n: bar.advance(task, n))
        again = [f for f in report.failures if f.code == "ALREADY_EXISTS"]  # a re-run keeps earlier uploads
        other = [f for f in report.failures if f.code != "ALREADY_EXISTS"]
        for failure in other:
            console.print(f"[yellow]refused[/yellow] item {failure.index}: {failure.message}")
        expected = len(report.input_ids) + len(again)
        itask = bar.add_task("indexing", total=expected, rate="")
        client.wait_indexed(DEMO_APP, expected, timeout=600, on_progress=lambda n: bar.update(itask, completed=n))
    seconds = time.perf_counter() - start
    console.print(f"{expected} images searchable in {seconds:.1f}s ({expected / seconds:.1f} img/s end to end)")

    # 1. Zero data: the general model predicts right away.
    table = Table(title="Zero data: the general model (ImageNet, 1,000 concepts)")
    table.add_column("photo")
    table.add_column("top 3")
    predictions = client.predict(list(photos.values()), top_k=3)
    for name, concepts in zip(photos, predictions):
        table.add_row(name, ", ".join(f"{c} {s:.2f}" for c, s in concepts))
    console.print(table)

    # 2. One example: visual similarity search.
    resp = client.search_by_image(DEMO_APP, image=photos["chelsea"], top_k=5)
    table = Table(title="One example: images most similar to the 'chelsea' photo")
    for col in ("#", "input", "score", "concepts"):
        table.add_column(col)
    for n, hit in enumerate(resp.hits, 1):
        table.add_row(str(n), hit.input_id, f"{hit.score:.3f}", ", ".join(hit.concepts))
    console.print(table)
    first = resp.hits[0].input_id if resp.hits else ""

    # 3. Text search without CLIP: the concept-name bridge.
    text = client.search_by_text(DEMO_APP, "elephant", top_k=10)
    read_as = ", ".join(f"{c.name} ({c.score:.2f})" for c in text.interpreted_as)
    table = Table(title=f"Text search “elephant” (read as: {read_as})")
    for col in ("#", "input", "score", "true concept"):
        table.add_column(col)
    for n, hit in enumerate(text.hits, 1):
        table.add_row(str(n), hit.input_id, f"{hit.score:.3f}", ", ".join(hit.concepts))
    console.print(table)
    elephants = sum("elephant" in h.concepts for h in text.hits)
    console.print(
        f"chelsea's own upload ranked first: {'yes' if first == 'photo-chelsea' else 'NO'}; "
        f"elephants in the text top 10: {elephants}/10 (chance: 1/10 of the animals)"
    )
    return {"indexed": expected, "seconds": seconds, "self_first": first == "photo-chelsea", "elephants_top10": elephants}
