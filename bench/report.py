"""`python -m bench.report`: the last run's results (bench/results/*.json) as a Markdown table,
for the README's Benchmarks section."""

from __future__ import annotations

import json
import sys

from bench.__main__ import RESULTS, SECTIONS, machine_text


def markdown() -> str:
    rows, info = [], None
    for name in SECTIONS:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        info = info or data.get("machine")
        rows += data["rows"]
    if not rows:
        raise SystemExit(f"no results in {RESULTS}: run `make bench` first")
    out = [f"Machine: {machine_text(info)}" if info else "", "", "| benchmark | figure | baseline (same run) | ratio | goal |", "|---|---|---|---|---|"]
    for r in rows:
        goal = r.get("goal") or ""
        if goal and r.get("met") is not None:
            goal = f"{'**met**' if r['met'] else '**below**'}: {goal}"
        cells = [r["benchmark"], r["figure"], r["baseline"], r["ratio"], goal]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(markdown() + "\n")
