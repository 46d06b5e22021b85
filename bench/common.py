"""Shared helpers: result rows, latency percentiles, the real embeddings every benchmark reuses,
and the synthetic vector generators (documented where they are defined)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from firstlight import datasets
from firstlight.sdk import Firstlight, UploadItem
from firstlight.v1 import search_pb2

#: The app the ingest benchmark fills: 1,000 animal-mnist images, 100 per class, seed 3.
INGEST_APP = "bench"
INGEST_PER_CLASS = 100
INGEST_SEED = 3
#: Where the real embeddings come from when the ingest benchmark was not part of this run.
FALLBACK_APP = "bench-real"


@dataclass
class Row:
    """One line of the results table: a figure, the baseline it is compared with (measured in the
    same run), their ratio, and the goal it is held to where the issue states one."""

    benchmark: str
    figure: str
    baseline: str
    ratio: str
    goal: str = ""
    met: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), "" where it cannot be read: named beside every ratio."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"


def latency(samples_s: list[float]) -> dict:
    a = np.asarray(samples_s, dtype=np.float64)
    return {
        "n": int(a.size),
        "p50_s": float(np.percentile(a, 50)),
        "p99_s": float(np.percentile(a, 99)),
        "mean_s": float(a.mean()),
        "max_s": float(a.max()),
    }


def lat_text(stats: dict) -> str:
    return f"p50 {ms(stats['p50_s'])}, p99 {ms(stats['p99_s'])} (n={stats['n']})"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


# -- real embeddings ----------------------------------------------------------------------------


def real_embeddings(client: Firstlight, log=print) -> tuple[list[str], np.ndarray, list[str]]:  # type: ignore[no-untyped-def]
    """(input ids, [1000, 1280] stored embeddings, class names) of the 1,000 animal-mnist images,
    read back from the search service with GetVectors. They come from the ingest benchmark's app;
    if that did not run (``--only``), the same images are uploaded through the stack once."""
    animals = datasets.animal_mnist(INGEST_PER_CLASS, seed=INGEST_SEED)
    truth = {i: c for i, c, _ in animals}
    ids = list(truth)
    for app in (INGEST_APP, FALLBACK_APP):
        found = _vectors(client, app, ids)
        if len(found) == len(ids):
            break
    else:
        log(f"  (no ingest run: uploading {len(ids)} images to app {FALLBACK_APP!r} for real embeddings)")
        client.create_app(FALLBACK_APP, exist_ok=True)
        client.upload(FALLBACK_APP, [UploadItem(d, [c], id=i) for i, c, d in animals], chunk=100)
        client.wait_indexed(FALLBACK_APP, len(ids), timeout=1800)
        found = _vectors(client, FALLBACK_APP, ids)
    got = [i for i in ids if i in found]
    return got, np.stack([found[i] for i in got]).astype(np.float32), [truth[i] for i in got]


def _vectors(client: Firstlight, app: str, ids: list[str]) -> dict[str, np.ndarray]:
    try:
        resp = client.search.GetVectors(search_pb2.GetVectorsRequest(app_id=app, input_ids=ids), timeout=120)
    except Exception:  # noqa: BLE001 — unknown app / empty index
        return {}
    return {v.input_id: np.asarray(v.vector, dtype=np.float32) for v in resp.vectors}


# -- synthetic vectors ---------------------------------------------------------------------------


def jittered(X: np.ndarray, labels: list[str], n: int, seed: int, scale: float = 0.35) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``n`` vectors derived from real ones: x_i + t (x_j - x_k) with j, k of x_i's class and
    t ~ N(0, scale²), re-normalised. The noise lives in the span of the real class differences,
    so the set keeps the real embeddings' low intrinsic dimension and class structure.
    Returns the vectors, their labels (the source row's) and the source row of each."""
    rng = np.random.default_rng(seed)
    lab = np.asarray(labels)
    by_class = {c: np.flatnonzero(lab == c) for c in sorted(set(labels))}
    base = rng.integers(0, len(X), n)
    j = np.empty(n, dtype=np.int64)
    k = np.empty(n, dtype=np.int64)
    for c, members in by_class.items():
        sel = np.flatnonzero(lab[base] == c)
        j[sel] = rng.choice(members, sel.size)
        k[sel] = rng.choice(members, sel.size)
    t = rng.normal(0.0, scale, (n, 1)).astype(np.float32)
    out = np.empty((n, X.shape[1]), dtype=np.float32)
    for s in range(0, n, 20_000):
        e = min(n, s + 20_000)
        out[s:e] = normalise(X[base[s:e]] + t[s:e] * (X[j[s:e]] - X[k[s:e]]))
    return out, [labels[b] for b in base], base


def clustered(n: int, dim: int, clusters: int, seed: int, decay: float = 1.2, offset: float = 1.3, within: float = 0.55) -> np.ndarray:
    """A clustered Gaussian mixture, L2-normalised, shaped like real CNN embeddings.

    Isotropic Gaussians in 1,280-d are a poor stand-in: every point is nearly equidistant from
    every other, which no real embedding set looks like and which is the worst case for HNSW. So
    the per-axis standard deviations decay as k^(-decay/2) in a random orthonormal basis (at
    decay 1.2 and d=1280, 90% of the variance lies in ~115 directions; the real animal-mnist
    embeddings: 137) and every point shares a common offset (real embeddings: mean cosine 0.6).
    Cluster centres are drawn from that spectrum, points are centre + ``within`` × the same
    spectrum."""
    rng = np.random.default_rng(seed)
    k = np.arange(1, dim + 1, dtype=np.float64)
    spec = k ** (-decay / 2)
    spec = (spec / np.sqrt((spec**2).sum())).astype(np.float32)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)).astype(np.float32))
    mean = rng.standard_normal(dim).astype(np.float32)
    mean *= offset / np.linalg.norm(mean)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32) * spec
    member = rng.integers(0, clusters, n)
    out = np.empty((n, dim), dtype=np.float32)
    step = max(1, 40_000_000 // dim)
    for s in range(0, n, step):
        e = min(n, s + step)
        z = rng.standard_normal((e - s, dim)).astype(np.float32) * (spec * within) + centres[member[s:e]]
        out[s:e] = normalise(z @ basis.T + mean)
    return out


def top_k_exact(X: np.ndarray, Q: np.ndarray, k: int = 10, chunk: int = 16) -> np.ndarray:
    """Exact top-k by cosine (rows are normalised): numpy brute force, [len(Q), k] row indices."""
    out = np.empty((len(Q), k), dtype=np.int64)
    for s in range(0, len(Q), chunk):
        scores = Q[s : s + chunk] @ X.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        out[s : s + chunk] = np.take_along_axis(part, order, axis=1)
    return out


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def __bool__(self) -> bool:
        return time.perf_counter() < self.end
