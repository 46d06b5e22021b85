"""`make bench`: start one local stack, run the benchmarks, print a table per section as it
finishes and one at the end, write bench/results/<name>.json.

    python -m bench                          # everything (9-13 min on the shared 2-core dev machine)
    python -m bench --only search,inference  # a subset (names: see SECTIONS)
    python -m bench --quick                  # smaller sizes and shorter levels
    python -m bench --hnsw-1m                # also build the HNSW index at 1M points (~10 min more here)
    python -m bench --only gateway           # HTTP vs gRPC predict, gallery and thumbnail latency, first paint
    python -m bench --only deep_training     # deep-template training images/s alone: no stack started
                                             # (cuda when available; also python -m bench.deep_training)
    python -m bench --only deep_serving      # a deep version's predict, ONNX Runtime vs TorchScript: no stack
    python -m bench --only int8              # an int8 backbone's accuracy cost and speed vs fp32 (+ OpenVINO if importable): no stack
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import (
    common,
    data_quality,
    deep_serving,
    deep_training,
    embedding_map,
    gateway,
    inference,
    ingest,
    int8,
    kafka,
    photos,
    search,
    text_search,
    training,
    video,
)
from firstlight.sdk import Firstlight
from firstlight.stack import LocalStack

RESULTS = Path(__file__).parent / "results"
SECTIONS = (
    "ingest",
    "photos",
    "text_search",
    "search",
    "inference",
    "training",
    "gateway",
    "deep_training",
    "deep_serving",
    "int8",
    "kafka",
    "data_quality",
    "embedding_map",
    "video",
)
#: Sections that need no running stack (a GPU host can run them alone, no broker or Triton).
STACKLESS = ("deep_training", "deep_serving", "int8", "data_quality", "embedding_map", "video")


def machine() -> dict:
    mem_gb = 0.0
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - no torch/CUDA: a CPU host
        pass
    return {
        "gpu": gpu,
        "cpu": common.cpu_name(),
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in load],
    }


def machine_text(m: dict) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return f"{m['arch']} {m['cpu'] or '?'}, {m['cores']} cores, {m['memory_gb']:.0f} GB{gpu}, Python {m['python']}"


def ingest_rows(r: dict) -> list[common.Row]:
    return [
        common.Row(
            "ingest → searchable",
            f"{r['full_path_img_per_s']:.1f} img/s (p50 {r['latency_p50_s']:.2f}s, p99 {r['latency_p99_s']:.2f}s upload→searchable)",
            f"bare backbone {r['bare_backbone_img_per_s']:.1f} img/s (batch {r['batch']}; mean of "
            + " and ".join(f"{x:.1f}" for x in r.get("bare_backbone_before_after_img_per_s", []))
            + " measured before and after)",
            f"{r['ratio_vs_bare']:.2f}×",
            "≥ 0.85× bare",
            r["ratio_vs_bare"] >= 0.85,
        ),
        *(
            [
                common.Row(
                    "ingest → searchable, CPU cost",
                    f"{r['full_path_img_per_cpu_s']:.1f} img per CPU-s (every stack process)",
                    f"bare backbone {r['bare_backbone_img_per_cpu_s']:.1f} img per CPU-s",
                    f"{r['full_path_img_per_cpu_s'] / r['bare_backbone_img_per_cpu_s']:.2f}×",
                )
            ]
            if r.get("bare_backbone_img_per_cpu_s")
            else []
        ),
        *(
            [
                common.Row(
                    f"ingest → searchable vs bare at the served batch {r['served_batch']} (diagnostic)",
                    f"{r['full_path_img_per_s']:.1f} img/s",
                    f"bare backbone batch {r['served_batch']}: {r['bare_backbone_at_served_batch_img_per_s']:.1f} img/s (measured once, after the full path)",
                    f"{r['full_path_img_per_s'] / r['bare_backbone_at_served_batch_img_per_s']:.2f}×",
                )
            ]
            if r.get("bare_backbone_at_served_batch_img_per_s")
            else []
        ),
    ]


def text_rows(t: dict) -> list[common.Row]:
    return [
        common.Row(
            "text search p@10 (10 animals)",
            f"{t['labeled_mean']:.2f} with {t['shots']} labels/concept",
            f"zero labels (ImageNet-name bridge) {t['zero_label_mean']:.2f}",
            f"{t['labeled_mean'] / max(t['zero_label_mean'], 1e-9):.2f}×",
        )
    ]


def with_rows(result: dict, make: Callable[[dict], list[common.Row]]) -> dict:
    return {**result, "rows": [r.as_dict() for r in make(result)]}


def per_concept(t: dict) -> Table:
    tab = Table(title="text search precision@10 per concept")
    for col in ("concept", "zero labels", f"{t['shots']} labels"):
        tab.add_column(col)
    for concept in t["zero_label_p10"]:
        tab.add_row(concept, f"{t['zero_label_p10'][concept]:.1f}", f"{t['labeled_p10'][concept]:.1f}")
    return tab


def table(title: str, rows: list[dict]) -> Table:
    tab = Table(title=title, show_lines=False)
    for col in ("benchmark", "figure", "baseline (same run)", "ratio", "goal"):
        tab.add_column(col, overflow="fold")
    for r in rows:
        goal = r.get("goal") or ""
        if goal and r.get("met") is not None:
            goal = f"{'[green]met[/green]' if r['met'] else '[red]below[/red]'}: {goal}"
        tab.add_row(r["benchmark"], r["figure"], r["baseline"], r["ratio"], goal)
    return tab


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="smaller sizes, shorter concurrency levels")
    p.add_argument("--hnsw-1m", action="store_true", help="also build and time the HNSW index on the largest search set")
    args = p.parse_args(argv)
    wanted = [s.strip().replace("-", "_") for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if not wanted or s in wanted]
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    console = Console()
    if not console.is_terminal:  # logs and CI: keep table rows on one line each
        console = Console(width=220)
    RESULTS.mkdir(exist_ok=True)
    info = machine()
    all_rows: list[dict] = []
    timings: dict[str, float] = {}
    failed: list[str] = []
    began = time.perf_counter()

    def log(msg: str) -> None:
        console.print(msg, highlight=False)

    def run_section(name: str, runner: Callable[[], dict]) -> None:
        log(f"\n[bold]{name}[/bold] …")
        t = time.perf_counter()
        try:
            result = runner()
        except Exception as exc:  # noqa: BLE001 — one broken section must not cost the others
            console.print_exception(max_frames=8)
            failed.append(name)
            result = {"error": repr(exc), "rows": [common.Row(name, f"FAILED: {exc!r}", "", "").as_dict()]}
        timings[name] = time.perf_counter() - t
        result = {"machine": info, "quick": args.quick, "seconds": timings[name], **result}
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=float))
        console.print(table(f"{name} ({timings[name]:.0f}s)", result["rows"]))
        if name == "text_search" and "error" not in result:
            console.print(per_concept(result))
        all_rows.extend(result["rows"])

    stacked = [s for s in args.sections if s not in STACKLESS]
    if stacked:
        # The search service builds its HNSW graph once writes pause; a longer pause than the default
        # lets the search benchmark time the scan right after its bulk load before the build starts.
        env = {"FIRSTLIGHT_ANN_BUILD_QUIET_S": "30"}
        with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp) / "stack", extra_env=env) as stack:
            log(f"stack up in {time.perf_counter() - began:.0f}s; sections: {', '.join(args.sections)}{' (quick)' if args.quick else ''}")
            with Firstlight.from_addresses(stack.addresses) as client:
                runners: dict[str, Callable[[], dict]] = {
                    "ingest": lambda: with_rows(ingest.run(stack), ingest_rows),
                    "photos": lambda: photos.run(stack, quick=args.quick, log=log),
                    "text_search": lambda: with_rows(text_search.run(client), text_rows),
                    "search": lambda: search.run(client, stack.addresses["kafka"], quick=args.quick, full_hnsw=args.hnsw_1m, log=log, work_dir=Path(tmp)),
                    "inference": lambda: inference.run(stack.addresses, quick=args.quick, log=log, pids=_pids(stack), triton_token=stack.triton_token),
                    "training": lambda: training.run(*_real(client, log), quick=args.quick, log=log),
                    "kafka": lambda: kafka.run(stack.addresses["kafka"], quick=args.quick, log=log),
                    # issue 16: HTTP vs gRPC predict, gallery page and thumbnails at 10,000 inputs, first paint
                    "gateway": lambda: with_rows(
                        gateway.run(
                            stack.addresses,
                            stack.gateway_url,
                            stack.admin_key,
                            inputs=2_000 if args.quick else 10_000,
                            seconds=4.0 if args.quick else 10.0,
                            log=log,
                        ),
                        gateway.rows,
                    ),
                }
                for name in stacked:
                    run_section(name, runners[name])
    # After the stack is down: training throughput is measured on a host with nothing else of ours.
    if "deep_training" in args.sections:
        run_section("deep_training", lambda: deep_training.run(quick=args.quick, log=log))
    if "deep_serving" in args.sections:  # an exported deep version: ONNX Runtime vs TorchScript (issue 17)
        run_section("deep_serving", lambda: deep_serving.run(quick=args.quick, log=log))
    if "int8" in args.sections:  # an int8-quantised backbone against fp32: accuracy cost and speed (issue 17)
        run_section("int8", lambda: int8.run(quick=args.quick, log=log))
    if "data_quality" in args.sections:  # planted problems and the 100k duplicate/outlier passes (issue 19)
        run_section("data_quality", lambda: data_quality.run(quick=args.quick, log=log))
    if "embedding_map" in args.sections:  # the map's projection on 10k and 100k embeddings (issue 19)
        run_section("embedding_map", lambda: embedding_map.run(quick=args.quick, log=log))
    if "video" in args.sections:  # decode + sample + embed against bare decode; memory on a long clip (issue 18)
        run_section("video", lambda: video.run(quick=args.quick, log=log))

    total = time.perf_counter() - began
    console.print()
    console.print(table(f"Firstlight benchmarks — {machine_text(info)} — {total / 60:.1f} min", all_rows))
    log(
        f"load average at start {info['load_avg_at_start']} (the machine is shared: absolute figures move with "
        "other work; ratios are measured in the same run). Per section: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
    )
    if failed:
        log(f"[red]failed sections: {', '.join(failed)}[/red]")
    return 1 if failed else 0


def _pids(stack: LocalStack) -> dict[str, int]:
    """Triton's server pid (its process group holds the model stubs) and the inference service's."""
    out: dict[str, int] = {}
    if stack.triton is not None and stack.triton.pid:
        out["triton"] = stack.triton.pid
    proc = stack.services["inference"].proc if "inference" in stack.services else None
    if proc is not None:
        out["inference"] = proc.pid
    return out


def _real(client: Firstlight, log):  # type: ignore[no-untyped-def]
    _, X, labels = common.real_embeddings(client, log)
    return X, labels


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
