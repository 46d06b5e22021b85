"""Command line for the active-learning benchmark on cached real embeddings.

    python -m firstlight.curation.al_data                      # once: embed and cache the sets
    python -m firstlight.curation.benchmark animal-mnist fashion-mnist \
        --seeds 0 1 2 3 4 --out .cache/al/results

Writes ``<out>/<dataset>.{json,md,png}`` per dataset (see simulate.BenchmarkResult).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from firstlight.curation import al_data, simulate
from firstlight.curation import strategies as st

DEFAULT_COMPARE = ["random", "margin", "entropy", "least_confidence", "diversity", "kmeanspp",
                   "margin_kmeanspp", "badge", "typiclust", "typiclust_margin", "mc_dropout"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="active-learning benchmark on cached embeddings")
    ap.add_argument("datasets", nargs="*", default=["animal-mnist", "fashion-mnist"])
    ap.add_argument("--strategies", nargs="+", default=DEFAULT_COMPARE, choices=st.STRATEGIES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--seed-per-class", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--size", type=int, default=224, help="embedding resolution of the cache")
    ap.add_argument("--out", type=Path, default=al_data.default_cache_dir() / "results")
    ap.add_argument("--C", type=float, default=1.0, help="logistic regression inverse regularisation")
    ap.add_argument("--balanced", action="store_true", help="class_weight='balanced'")
    ap.add_argument("--tag", default="", help="suffix for the output file names")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        X, y, Xt, yt = al_data.load_cached(name, size=args.size)
        print(f"== {name}: pool {X.shape}, test {Xt.shape}", flush=True)
        res = simulate.run_benchmark(
            X, y, Xt, yt, strategies=args.strategies, seeds=args.seeds, seed_per_class=args.seed_per_class,
            rounds=args.rounds, batch=args.batch,
            fit=simulate.logreg_fit(args.C, "balanced" if args.balanced else None), log=lambda m: print(m, flush=True),
        )  # fmt: skip
        res.settings.update(dataset=name, embedding=f"efficientnet-lite0 {args.size}px")
        stem = args.out / f"{name}{args.tag}"
        stem.with_suffix(".json").write_text(res.to_json())
        md = f"### {name} ({args.size}px EfficientNet-Lite0 embeddings, {res.settings['fit']})\n\n" + res.to_markdown()
        stem.with_suffix(".md").write_text(md)
        res.plot(stem.with_suffix(".png"), title=f"{name}: active learning ({len(args.seeds)} seeds)")
        print(md, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
