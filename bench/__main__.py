"""`make bench`: run the benchmarks, print a table, write bench/results/<name>.json."""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import ingest, text_search
from firstlight.sdk import Firstlight
from firstlight.stack import LocalStack

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str]) -> int:
    console = Console()
    RESULTS.mkdir(exist_ok=True)
    machine = f"{platform.machine()}, {__import__('os').cpu_count()} cores, {platform.python_version()}"
    with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp)) as stack:
        console.print("[bold]ingest → searchable[/bold] (1,000 animal-mnist images)…")
        result = ingest.run(stack)
        console.print("[bold]text search[/bold] (precision@10, zero labels vs 5 labels per concept)…")
        with Firstlight.from_addresses(stack.addresses) as client:
            text = text_search.run(client)
    (RESULTS / "ingest.json").write_text(json.dumps({"machine": machine, **result}, indent=2))
    (RESULTS / "text_search.json").write_text(json.dumps({"machine": machine, **text}, indent=2))
    table = Table(title=f"Firstlight benchmarks ({machine})")
    for col in ("benchmark", "figure", "baseline", "ratio"):
        table.add_column(col)
    table.add_row(
        "ingest → searchable",
        f"{result['full_path_img_per_s']:.1f} img/s (p50 {result['latency_p50_s']:.2f}s, p99 {result['latency_p99_s']:.2f}s upload→searchable)",
        f"bare backbone {result['bare_backbone_img_per_s']:.1f} img/s (batch {result['batch']})",
        f"{result['ratio_vs_bare']:.2f}×",
    )
    table.add_row(
        "text search p@10 (10 animals)",
        f"{text['labeled_mean']:.2f} with {text['shots']} labels/concept",
        f"zero labels (ImageNet-name bridge) {text['zero_label_mean']:.2f}",
        f"{text['labeled_mean'] / max(text['zero_label_mean'], 1e-9):.2f}×",
    )
    console.print(table)
    per = Table(title="text search precision@10 per concept")
    for col in ("concept", "zero labels", f"{text['shots']} labels"):
        per.add_column(col)
    for concept in text["zero_label_p10"]:
        per.add_row(concept, f"{text['zero_label_p10'][concept]:.1f}", f"{text['labeled_p10'][concept]:.1f}")
    console.print(per)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
