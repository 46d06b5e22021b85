"""``python -m firstlight.search.edge_build DIR``: build the HNSW index of the qdrant-edge shard
in DIR (a copy made by QdrantEdgeStore.build_index_in_background). A separate process because
``EdgeShard.optimize()`` holds the GIL for the whole build."""

from __future__ import annotations

import sys
import time

import qdrant_edge as qe


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m firstlight.search.edge_build SHARD_DIR", file=sys.stderr)
        return 2
    start = time.perf_counter()
    shard = qe.EdgeShard.load(argv[0], None)
    try:
        shard.optimize()
        shard.flush()
        info = shard.info()
    finally:
        shard.close()
    print(f"built {info.indexed_vectors_count}/{info.points_count} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
