"""A batch for labeling (active learning, curation) with no two near-duplicates of the same
moment: candidates in priority order, each taken unless it is within ``min_gap_s`` of an
already taken frame of the same video, or its embedding is within ``max_cosine`` of one taken."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Candidate:
    input_id: str
    video_id: str = ""  # "" for a still image
    t: float = 0.0


def diverse_batch(
    candidates: Sequence[Candidate],
    size: int,
    *,
    embeddings: np.ndarray | None = None,
    min_gap_s: float = 5.0,
    max_cosine: float = 0.95,
) -> list[int]:
    """Indices of the chosen candidates (``candidates`` ordered best first; ``embeddings`` one
    row per candidate, optional)."""
    unit = None
    if embeddings is not None:
        e = np.asarray(embeddings, dtype=np.float32)
        unit = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    taken: list[int] = []
    times: dict[str, list[float]] = {}
    for i, c in enumerate(candidates):
        if len(taken) >= size:
            break
        if c.video_id and any(abs(c.t - t) < min_gap_s for t in times.get(c.video_id, ())):
            continue
        if unit is not None and taken and float((unit[taken] @ unit[i]).max()) > max_cosine:
            continue
        taken.append(i)
        if c.video_id:
            times.setdefault(c.video_id, []).append(c.t)
    return taken


def thin_near_duplicates(
    ids: Sequence[str],
    ranked: Sequence[int],
    size: int,
    *,
    moment_of: Callable[[str], tuple[str, float] | None],
    embeddings: np.ndarray | None = None,
    min_gap_s: float = 5.0,
    max_cosine: float = 0.95,
) -> list[int]:
    """A strategy's ranked pool rows (indices into ``ids``/``embeddings``, best first, usually
    a few times ``size``) thinned to ``size`` with :func:`diverse_batch`; ``moment_of`` gives a
    frame's (video id, time) from its input id, None for a still image."""
    cands = []
    for i in ranked:
        moment = moment_of(ids[i])
        cands.append(Candidate(ids[i], *moment) if moment else Candidate(ids[i]))
    rows = None if embeddings is None else np.asarray(embeddings)[list(ranked)]
    chosen = diverse_batch(cands, size, embeddings=rows, min_gap_s=min_gap_s, max_cosine=max_cosine)
    return [ranked[k] for k in chosen]
