"""`make bench`: run the benchmarks, print a table, write bench/results/<name>.json."""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import ingest

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str]) -> int:
    console = Console()
    RESULTS.mkdir(exist_ok=True)
    machine = f"{platform.machine()}, {__import__('os').cpu_count()} cores, {platform.python_version()}"
    with tempfile.TemporaryDirectory() as tmp:
        console.print("[bold]ingest → searchable[/bold] (1,000 animal-mnist images)…")
        result = ingest.run(Path(tmp) / "ingest")
    (RESULTS / "ingest.json").write_text(json.dumps({"machine": machine, **result}, indent=2))
    table = Table(title=f"Firstlight benchmarks ({machine})")
    for col in ("benchmark", "figure", "baseline", "ratio"):
        table.add_column(col)
    table.add_row(
        "ingest → searchable",
        f"{result['full_path_img_per_s']:.1f} img/s (p50 {result['latency_p50_s']:.2f}s, p99 {result['latency_p99_s']:.2f}s upload→searchable)",
        f"bare backbone {result['bare_backbone_img_per_s']:.1f} img/s (batch {result['batch']})",
        f"{result['ratio_vs_bare']:.2f}×",
    )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
