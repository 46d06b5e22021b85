"""Leases on the labeling queue: a team works one queue at once, and each waiting item is handed
to one labeler (a browser session: the ``holder``) for a while, so two labelers never label the
same item at the same time. A lease ends when the item gets a label, when its holder releases it
(skips it) or when it expires; the holder's live lease is handed back on the next call (a reload
shows the same item) and renewed.

Labels reach curation as events, a moment after the annotation: the Portal asks for its next
item right after labeling, when curation may still see the item waiting. So it names the items
it labeled in ``exclude`` without releasing them: they stay leased to it (nobody else gets them)
until the label arrives, and it gets the next free item.

The same leases hand out a model's stored pool scores (:class:`PoolSource`): its inputs that are
unlabeled now (curation/input_labels.py), most uncertain first, one labeler each. No grpc here;
the RPC is in ``servicer``."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, delete, insert, select, true, update
from sqlalchemy.engine import Connection

from firstlight.curation.input_labels import matching as input_labels_matching
from firstlight.curation.pool_scores import latest_scored_version
from firstlight.curation.store import QUEUED, aware, input_labels, leases, pool_scores, queue
from firstlight.curation.stream import StreamCuration
from firstlight.domain import validation
from firstlight.errors import InvalidArgument

DEFAULT_LEASE_S = 300
LEASE_RANGE_S = (10, 3600)
_HOLDER = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MAX_EXCLUDED = 1000


@dataclass(frozen=True)
class PoolSource:
    """Lease from a model's stored pool scores instead of the stream queue: its unlabeled
    inputs, most uncertain first (``version`` "": the version scored most recently)."""

    model_id: str
    version: str = ""


class QueueLeases:
    def __init__(self, stream: StreamCuration, clock: Callable[[], datetime] | None = None) -> None:
        self.stream = stream
        self.clock = clock or stream.clock

    def lease(
        self, app_id: str, holder: str, lease_seconds: int = 0, release: str = "", exclude: Sequence[str] = (), pool: PoolSource | None = None
    ) -> tuple[dict | None, datetime | None, int]:
        """(the leased item, a queue row or None, when its lease ends, waiting items other holders have)."""
        validation.app_id(app_id)
        if not _HOLDER.fullmatch(holder or ""):
            raise InvalidArgument("holder must be 1-128 characters of A-Z a-z 0-9 _ . : -")
        seconds = lease_seconds or DEFAULT_LEASE_S
        if not LEASE_RANGE_S[0] <= seconds <= LEASE_RANGE_S[1]:
            raise InvalidArgument(f"lease_seconds must be between {LEASE_RANGE_S[0]} and {LEASE_RANGE_S[1]} (got {lease_seconds})")
        if len(exclude) > MAX_EXCLUDED:
            raise InvalidArgument(f"at most {MAX_EXCLUDED} exclude_input_ids (got {len(exclude)})")
        for i in [release, *exclude]:
            if i:
                validation.input_id(i)
        if pool is not None:
            validation.input_id(pool.model_id)
        skip = set(exclude) | ({release} if release else set())
        # One writer at a time on the queue's tables (SQLite), like screening and labels.
        with self.stream._lock, self.stream.store.engine.begin() as conn:
            now = self.clock()
            expires = now + timedelta(seconds=seconds)
            mine = leases.c.app_id == app_id
            conn.execute(delete(leases).where(mine, leases.c.expires_at <= now))
            # Leases of items that got a label meanwhile are over: queue items no longer waiting,
            # and pool inputs labeled now (a waiting queue item may be a labeled input: the stream
            # queues predictions on any input, and its item waits for a label given after it).
            waiting_ids = select(queue.c.input_id).where(queue.c.app_id == app_id, queue.c.state == QUEUED)
            labeled = select(queue.c.input_id).where(queue.c.app_id == app_id, queue.c.state != QUEUED)
            conn.execute(delete(leases).where(mine, leases.c.input_id.in_(labeled)))
            labeled_now = select(input_labels.c.input_id).where(input_labels.c.app_id == app_id, input_labels.c.labeled == true())
            conn.execute(delete(leases).where(mine, leases.c.input_id.in_(labeled_now), leases.c.input_id.notin_(waiting_ids)))
            if release:
                conn.execute(delete(leases).where(mine, leases.c.input_id == release, leases.c.holder == holder))
            held: dict[str, str] = dict(map(tuple, conn.execute(select(leases.c.input_id, leases.c.holder).where(mine))))
            others = sum(1 for h in held.values() if h != holder)
            if pool is not None and not pool.version:
                pool = PoolSource(pool.model_id, latest_scored_version(conn, app_id, pool.model_id))
            waiting = _pool_waiting(app_id, pool) if pool is not None else _queue_waiting(app_id)
            # The holder's own lease on an item of this source comes back (a reload), renewed.
            own = [i for i, h in held.items() if h == holder and i not in skip]
            input_id = conn.execute(waiting.where(waiting.selected_columns.input_id.in_(own)).limit(1)).scalar_one_or_none() if own else None
            if input_id is not None:
                conn.execute(update(leases).where(mine, leases.c.input_id == input_id).values(expires_at=expires))
            else:
                taken = [i for i, h in held.items() if h != holder] + sorted(skip)
                free = waiting.where(waiting.selected_columns.input_id.notin_(taken)) if taken else waiting
                input_id = conn.execute(free.limit(1)).scalar_one_or_none()
                if input_id is None:
                    return None, None, others
                conn.execute(insert(leases).values(app_id=app_id, input_id=input_id, holder=holder, expires_at=expires))
            row = _pool_item(conn, app_id, pool, input_id) if pool is not None else _queue_item(conn, app_id, input_id)
        return row, expires, others


def _queue_waiting(app_id: str) -> Select:
    """The stream queue's waiting items, oldest first."""
    return select(queue.c.input_id).where(queue.c.app_id == app_id, queue.c.state == QUEUED).order_by(queue.c.seq)


def _queue_item(conn: Connection, app_id: str, input_id: str) -> dict:
    row = conn.execute(select(queue).where(and_(queue.c.app_id == app_id, queue.c.input_id == input_id))).mappings().one()
    return dict(row, queued_at=aware(row["queued_at"]))


def _pool_key(app_id: str, pool: PoolSource) -> tuple:
    return (pool_scores.c.app_id == app_id, pool_scores.c.model_id == pool.model_id, pool_scores.c.version == pool.version)


def _pool_waiting(app_id: str, pool: PoolSource) -> Select:
    """The scored inputs that are unlabeled now, most uncertain first."""
    unlabeled = input_labels_matching(app_id, pool_scores.c.input_id, labeled=False)
    return select(pool_scores.c.input_id).where(*_pool_key(app_id, pool), *unlabeled).order_by(pool_scores.c.uncertainty.desc(), pool_scores.c.input_id)


def _pool_item(conn: Connection, app_id: str, pool: PoolSource, input_id: str) -> dict:
    """A pool input as a waiting queue item: its uncertainty as the score, its scoring time."""
    r = conn.execute(select(pool_scores).where(*_pool_key(app_id, pool), pool_scores.c.input_id == input_id)).mappings().one()
    return {
        "app_id": app_id, "input_id": input_id, "model_id": pool.model_id, "model_version": pool.version,
        "score": r["uncertainty"], "strategy": f"margin, v{pool.version}, scored pool", "predicted": r["predicted"], "state": QUEUED,
        "concepts": [], "queued_at": aware(r["scored_at"]), "round": 0,
    }  # fmt: skip


__all__ = ["DEFAULT_LEASE_S", "LEASE_RANGE_S", "PoolSource", "QueueLeases", "leases"]
