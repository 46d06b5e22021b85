"""Vector search: latency p50/p99 and recall@10 against exact numpy brute force.

Three layers, each timed on the same vectors in the same run:

* numpy brute force — the exact answer (ground truth) and the latency baseline of one query;
* the bare adapter — ``Searcher`` (the service's own search logic: app filter, paging) over
  ``QdrantEdgeStore`` (the embedded default) and ``QdrantClientStore(":memory:")`` (its twin),
  before and after the edge HNSW index is built (``optimize()``);
* the SearchService end to end — points indexed the real way (``embeddings.computed`` events on
  Kafka, consumed by the service's indexer), then ``SearchByImage(input_id=…)``, which reads the
  stored vector and searches (gRPC + servicer + engine), compared with the bare adapter doing the
  same two calls on the same data.

Data: 10k = the 1,000 real embeddings of the ingest benchmark + 9,000 derived from them
(``common.jittered``); 100k and 1M = a clustered Gaussian mixture shaped like real embeddings
(``common.clustered``). 1M is at a reduced dimension by default (see SIZES): at 1,280-d it is
5 GB of float32 and the adapter upsert plus the HNSW build take far longer than this benchmark's
budget on the 2-core machine.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import Row, clustered, jittered, lat_text, latency, ms, real_embeddings, top_k_exact
from firstlight.messaging import topics
from firstlight.messaging.bus import EventProducer, new_header
from firstlight.models.backbone import BACKBONE_VERSION, EMBEDDING_DIM
from firstlight.sdk import Firstlight
from firstlight.search.core import Searcher, make_filter
from firstlight.search.indexer import COLLECTION, payload_for
from firstlight.search.qdrant_client_store import QdrantClientStore
from firstlight.search.qdrant_edge_store import QdrantEdgeStore
from firstlight.search.vector_store import Point, VectorStore, point_id
from firstlight.v1 import events_pb2, search_pb2

QUERIES = 200
K = 10
GOAL_P99_S = 0.050
GOAL_RECALL = 0.99

# (name, points, dim) per mode. The service path indexes the "mid" set through Kafka.
SIZES = {
    "full": {"real": 10_000, "mid": (100_000, EMBEDDING_DIM), "large": (1_000_000, 128), "client_mid_queries": 0},
    "quick": {"real": 10_000, "mid": (30_000, EMBEDDING_DIM), "large": (200_000, 128), "client_mid_queries": 0},
}


# -- measurement helpers ----------------------------------------------------------------------


def recall_at_k(X: np.ndarray, q: np.ndarray, returned: list[int], kth_score: float) -> float:
    """Fraction of the k returned points whose exact score reaches the exact k-th best score
    (ties and float32 rounding at the boundary count as correct)."""
    if not returned:
        return 0.0
    scores = X[np.asarray(returned)] @ q
    return float(np.sum(scores >= kth_score - 1e-5)) / K


def kth_scores(X: np.ndarray, Q: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return np.einsum("qd,qd->q", X[gt[:, -1]], Q)


def upsert_all(store: VectorStore, app: str, X: np.ndarray, batch: int = 1000) -> float:
    """Adapter upsert of every row (id = row index); returns points/s."""
    store.ensure_collection(COLLECTION, X.shape[1])
    start = time.perf_counter()
    for s in range(0, len(X), batch):
        store.upsert(
            COLLECTION,
            [Point(point_id(app, str(i)), X[i], payload_for(app, str(i), [], 0, 0, "bench")) for i in range(s, min(len(X), s + batch))],
        )
    return len(X) / (time.perf_counter() - start)


def time_searcher(searcher: Searcher, app: str, X: np.ndarray, Q: np.ndarray, kth: np.ndarray) -> dict:
    flt = make_filter(app)
    for q in Q[:3]:  # warm-up: first touches of the segments
        searcher.search(q, flt, K, "")
    lat, rec = [], []
    for q, kth_q in zip(Q, kth):
        t = time.perf_counter()
        hits, _ = searcher.search(q, flt, K, "")
        lat.append(time.perf_counter() - t)
        rec.append(recall_at_k(X, q, [int(h.input_id) for h in hits], kth_q))
    return {**latency(lat), "recall": float(np.mean(rec))}


def time_by_input_id(searcher: Searcher, app: str, X: np.ndarray, ids: np.ndarray, kth: np.ndarray) -> dict:
    """What SearchByImage(input_id) does inside the service, minus gRPC: vector_of + search."""
    flt = make_filter(app)

    def by_id(i: int):  # type: ignore[no-untyped-def]
        vector, model = searcher.vector_of(app, str(i))  # the app's active index and its model
        return searcher.search(vector, flt, K, "", model)

    for i in ids[:3]:
        by_id(i)
    lat, rec = [], []
    for i, kth_q in zip(ids, kth):
        t = time.perf_counter()
        hits, _ = by_id(i)
        lat.append(time.perf_counter() - t)
        rec.append(recall_at_k(X, X[i], [int(h.input_id) for h in hits], kth_q))
    return {**latency(lat), "recall": float(np.mean(rec))}


def time_numpy(X: np.ndarray, Q: np.ndarray, n: int = 30) -> dict:
    """One query at a time, as a service would answer it: X @ q, then the top 10."""
    lat = []
    for q in Q[:n]:
        t = time.perf_counter()
        s = X @ q
        top = np.argpartition(-s, K)[:K]
        top[np.argsort(-s[top])]
        lat.append(time.perf_counter() - t)
    return latency(lat)


def engine_row(label: str, stats: dict, base: dict, base_label: str, goal: bool = False) -> Row:
    met = None
    goal_text = ""
    if goal:
        met = stats["p99_s"] < GOAL_P99_S and stats["recall"] >= GOAL_RECALL
        goal_text = f"p99 < {GOAL_P99_S * 1e3:.0f} ms, recall ≥ {GOAL_RECALL}"
    return Row(
        label,
        f"{lat_text(stats)}, recall@10 {stats['recall']:.3f}",
        f"{base_label} p50 {ms(base['p50_s'])}",
        f"{stats['p50_s'] / base['p50_s']:.2f}× time",
        goal_text,
        met,
    )


# -- the service path ---------------------------------------------------------------------------


def index_through_kafka(client: Firstlight, bootstrap: str, app: str, X: np.ndarray, timeout_s: float, log) -> dict:  # type: ignore[no-untyped-def]
    """Produce one EmbeddingComputed per row to embeddings.computed and wait until the search
    service reports them all indexed (GetIndexStats). Returns produce and indexing rates."""
    producer = EventProducer(bootstrap, "bench-search")
    start = time.perf_counter()
    done = threading.Event()
    seen: list[tuple[float, int]] = []

    def watch() -> None:
        while not done.wait(0.5):
            try:
                seen.append((time.perf_counter(), client.indexed_count(app)))
            except Exception:  # noqa: BLE001
                pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for i in range(len(X)):
            producer.send(
                topics.EMBEDDINGS_COMPUTED,
                topics.event_key(app, str(i)),
                events_pb2.EmbeddingComputed(
                    header=new_header("bench", f"bench-search:{app}:{i}"),
                    app_id=app,
                    input_id=str(i),
                    model=BACKBONE_VERSION,
                    vector=X[i].tolist(),
                ),
            )
        producer.flush(timeout=600)
        produced_s = time.perf_counter() - start
        log(f"  produced {len(X):,} events in {produced_s:.1f}s; waiting for the index…")
        n = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = client.indexed_count(app)
            if n >= len(X):
                break
            time.sleep(0.5)
        indexed_s = time.perf_counter() - start
    finally:
        done.set()
        watcher.join()
        producer.close()
    return {
        "events": len(X),
        "indexed": n,
        "produce_s": produced_s,
        "produce_events_per_s": len(X) / produced_s,
        "indexed_s": indexed_s,
        "index_points_per_s": n / indexed_s,
        "complete": n >= len(X),
    }


def wait_ann_current(client: Firstlight, app: str, timeout_s: float) -> float | None:
    """Seconds until the search service reports its HNSW graph current (its background build,
    firstlight.search.index_builder, swapped in), or None on timeout."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        stats = client.search.GetIndexStats(search_pb2.GetIndexStatsRequest(app_id=app), timeout=60)
        if stats.ann_current:
            return time.perf_counter() - start
        time.sleep(1.0)
    return None


def time_service(client: Firstlight, app: str, X: np.ndarray, ids: np.ndarray, kth: np.ndarray) -> dict:
    def call(i: int) -> search_pb2.SearchResponse:
        return client.search.SearchByImage(search_pb2.SearchByImageRequest(app_id=app, input_id=str(i), page_size=K), timeout=60)

    for i in ids[:3]:
        call(int(i))
    lat, rec = [], []
    for i, kth_q in zip(ids, kth):
        t = time.perf_counter()
        resp = call(int(i))
        lat.append(time.perf_counter() - t)
        rec.append(recall_at_k(X, X[i], [int(h.input_id) for h in resp.hits], kth_q))
    return {**latency(lat), "recall": float(np.mean(rec))}


# -- the benchmark ------------------------------------------------------------------------------


def run(client: Firstlight, bootstrap: str, quick: bool = False, full_hnsw: bool = False, log=print, work_dir: Path | None = None) -> dict:  # type: ignore[no-untyped-def]
    sizes = SIZES["quick" if quick else "full"]
    rows: list[Row] = []
    data: dict = {"sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()}, "queries": QUERIES}
    tmp = Path(tempfile.mkdtemp(prefix="bench-search-", dir=work_dir))
    rng = np.random.default_rng(0)
    try:
        # ---- 10k: real embeddings + vectors derived from them --------------------------------
        _ids, real, labels = real_embeddings(client, log)
        n_real = sizes["real"]
        extra, _, _ = jittered(real, labels, n_real - len(real) + QUERIES, seed=1)
        X = np.concatenate([real, extra[: n_real - len(real)]])
        Q = extra[n_real - len(real) :]
        gt = top_k_exact(X, Q, K)
        kth = kth_scores(X, Q, gt)
        log(f"  10k: {len(real)} real embeddings + {len(X) - len(real):,} derived, {QUERIES} held-out queries")
        base = time_numpy(X, Q)
        edge = QdrantEdgeStore(tmp / "edge10k")
        data["real10k"] = {"numpy": base, "edge_upsert_points_per_s": upsert_all(edge, "b", X)}
        data["real10k"]["edge_exact"] = time_searcher(Searcher(edge, X.shape[1]), "b", X, Q, kth)
        edge.close()
        client_store = QdrantClientStore(":memory:")
        data["real10k"]["client_upsert_points_per_s"] = upsert_all(client_store, "b", X)
        data["real10k"]["client_memory"] = time_searcher(Searcher(client_store, X.shape[1]), "b", X, Q, kth)
        client_store.close()
        rows.append(engine_row(f"search {len(X) // 1000}k real-derived, edge (exact <20k)", data["real10k"]["edge_exact"], base, "numpy brute force"))
        rows.append(engine_row(f"search {len(X) // 1000}k real-derived, client :memory:", data["real10k"]["client_memory"], base, "numpy brute force"))

        # ---- mid (100k × 1280): service via Kafka, bare edge scan vs HNSW, client twin ---------
        n_mid, dim_mid = sizes["mid"]
        tag = f"{n_mid // 1000}k×{dim_mid}"
        t0 = time.perf_counter()
        XQ = clustered(n_mid + QUERIES, dim_mid, clusters=max(10, n_mid // 100), seed=2)
        X, Q = XQ[:n_mid], XQ[n_mid:]
        del XQ
        t1 = time.perf_counter()
        gt = top_k_exact(X, Q, K)
        kth = kth_scores(X, Q, gt)
        mid: dict = {"generate_s": t1 - t0, "numpy_batched_ms_per_query": (time.perf_counter() - t1) / len(Q) * 1e3}
        mid["numpy"] = base = time_numpy(X, Q)
        probe = rng.choice(n_mid, QUERIES, replace=False)  # stored points queried by input_id
        probe_kth = kth_scores(X, X[probe], top_k_exact(X, X[probe], K))
        log(f"  {tag}: generated in {t1 - t0:.1f}s; indexing through Kafka → search service…")

        app = f"bench-search-{n_mid // 1000}k"
        mid["kafka_indexing"] = index_through_kafka(client, bootstrap, app, X, timeout_s=900, log=log)
        if mid["kafka_indexing"]["indexed"] >= n_mid * 0.99:
            # Right after the bulk load the service scans; its background HNSW build starts once
            # writes have paused (the bench's stack sets that pause to 30 s, so this is a clean scan).
            mid["service"] = time_service(client, app, X, probe, probe_kth)
            log(f"  {tag}: service scan p99 {ms(mid['service']['p99_s'])}; waiting for its background HNSW build…")
            mid["service_ann_wait_s"] = wait_ann_current(client, app, timeout_s=900)
            if mid["service_ann_wait_s"] is not None:
                mid["service_hnsw"] = time_service(client, app, X, probe, probe_kth)

        edge = QdrantEdgeStore(tmp / "edge-mid")
        mid["edge_upsert_points_per_s"] = upsert_all(edge, "b", X)
        searcher = Searcher(edge, dim_mid)
        mid["edge_scan"] = time_searcher(searcher, "b", X, Q, kth)
        mid["edge_scan_by_input_id"] = time_by_input_id(searcher, "b", X, probe, probe_kth)
        log(f"  {tag}: edge scan p99 {ms(mid['edge_scan']['p99_s'])}; building HNSW (optimize)…")
        t = time.perf_counter()
        edge.optimize(COLLECTION)
        mid["edge_optimize_s"] = time.perf_counter() - t
        mid["edge_hnsw"] = time_searcher(searcher, "b", X, Q, kth)
        mid["edge_hnsw_by_input_id"] = time_by_input_id(searcher, "b", X, probe, probe_kth)
        edge.close()

        at_goal_size = n_mid == 100_000  # the goal is stated at 100k points
        rows.append(engine_row(f"search {tag}, edge scan (as served)", mid["edge_scan"], base, "numpy brute force", goal=at_goal_size))
        h = mid["edge_hnsw"]
        goal_text = f"p99 < {GOAL_P99_S * 1e3:.0f} ms, recall ≥ {GOAL_RECALL}" if at_goal_size else ""
        rows.append(
            Row(
                f"search {tag}, edge HNSW (after optimize {mid['edge_optimize_s']:.0f}s)",
                f"{lat_text(h)}, recall@10 {h['recall']:.3f}",
                f"edge scan p50 {ms(mid['edge_scan']['p50_s'])}",
                f"{mid['edge_scan']['p50_s'] / h['p50_s']:.1f}× faster",
                goal_text,
                (h["p99_s"] < GOAL_P99_S and h["recall"] >= GOAL_RECALL) if at_goal_size else None,
            )
        )
        if "service_hnsw" in mid:
            s, b = mid["service_hnsw"], mid["edge_hnsw_by_input_id"]
            rows.append(
                Row(
                    f"SearchByImage(input_id) {tag}, service, HNSW (background build, ready {mid['service_ann_wait_s']:.0f}s after the scan timing)",
                    f"{lat_text(s)}, recall@10 {s['recall']:.3f}",
                    f"bare Searcher vector_of+search, edge HNSW p50 {ms(b['p50_s'])}, p99 {ms(b['p99_s'])}",
                    f"{s['p50_s'] / b['p50_s']:.2f}× time",
                    goal_text,
                    (s["p99_s"] < GOAL_P99_S and s["recall"] >= GOAL_RECALL) if at_goal_size else None,
                )
            )
        if "service" in mid:
            s, b = mid["service"], mid["edge_scan_by_input_id"]
            rows.append(
                Row(
                    f"SearchByImage(input_id) {tag}, service, scan (right after the bulk load)",
                    f"{lat_text(s)}, recall@10 {s['recall']:.3f}",
                    f"bare Searcher vector_of+search, edge scan p50 {ms(b['p50_s'])}, p99 {ms(b['p99_s'])}",
                    f"{s['p50_s'] / b['p50_s']:.2f}× time",
                    goal_text,
                    (s["p99_s"] < GOAL_P99_S and s["recall"] >= GOAL_RECALL) if at_goal_size else None,
                )
            )
        k = mid["kafka_indexing"]
        rows.append(
            Row(
                f"indexing {tag} via Kafka → search service",
                f"{k['index_points_per_s']:,.0f} points/s ({k['indexed']:,} in {k['indexed_s']:.0f}s; produce {k['produce_events_per_s']:,.0f} ev/s)",
                f"bare edge adapter upsert {mid['edge_upsert_points_per_s']:,.0f} points/s",
                f"{k['index_points_per_s'] / mid['edge_upsert_points_per_s']:.2f}×",
            )
        )
        nq = sizes["client_mid_queries"]
        if nq:
            cs = QdrantClientStore(":memory:")
            mid["client_upsert_points_per_s"] = upsert_all(cs, "b", X)
            mid["client_memory"] = time_searcher(Searcher(cs, dim_mid), "b", X, Q[:nq], kth[:nq])
            cs.close()
            rows.append(engine_row(f"search {tag}, client :memory: ({nq} queries)", mid["client_memory"], base, "numpy brute force"))
        data["mid"] = mid
        del X, Q

        # ---- large (1M, reduced dim): edge scan; HNSW only with full_hnsw ----------------------
        n_large, dim_large = sizes["large"]
        tag = f"{n_large // 1000}k×{dim_large}" if n_large < 1_000_000 else f"{n_large // 1_000_000}M×{dim_large}"
        XQ = clustered(n_large + QUERIES, dim_large, clusters=max(10, n_large // 100), seed=3)
        X, Q = XQ[:n_large], XQ[n_large:]
        del XQ
        gt = top_k_exact(X, Q, K)
        kth = kth_scores(X, Q, gt)
        large: dict = {"numpy": time_numpy(X, Q)}
        log(f"  {tag}: upserting into the edge adapter…")
        edge = QdrantEdgeStore(tmp / "edge-large")
        large["edge_upsert_points_per_s"] = upsert_all(edge, "b", X, batch=2000)
        searcher = Searcher(edge, dim_large)
        large["edge_scan"] = time_searcher(searcher, "b", X, Q, kth)
        rows.append(engine_row(f"search {tag}, edge scan (as served)", large["edge_scan"], large["numpy"], "numpy brute force"))
        if full_hnsw:
            log(f"  {tag}: building HNSW (optimize; ~10 min on 2 cores)…")
            t = time.perf_counter()
            edge.optimize(COLLECTION)
            large["edge_optimize_s"] = time.perf_counter() - t
            large["edge_hnsw"] = h = time_searcher(searcher, "b", X, Q, kth)
            rows.append(
                Row(
                    f"search {tag}, edge HNSW (after optimize {large['edge_optimize_s']:.0f}s)",
                    f"{lat_text(h)}, recall@10 {h['recall']:.3f}",
                    f"edge scan p50 {ms(large['edge_scan']['p50_s'])}",
                    f"{large['edge_scan']['p50_s'] / h['p50_s']:.1f}× faster",
                )
            )
        edge.close()
        data["large"] = large
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": [r.as_dict() for r in rows], **data}
